// The WebSocket session with fedgate's edge (docs/websocket.md, protocol fedgate.v1).

import { endpoint } from "./api";
import { openLink, type Link } from "./link";

export interface Welcome {
  type: "welcome";
  protocol: number;
  caller?: string;
  method?: string;
  expires?: number;
}

export interface ReplyFrame {
  type: "reply";
  id: string;
  sender: string;
  statuscode: number;
  statusmsg?: string;
  data?: unknown;
}

export interface DoneFrame {
  type: "done";
  id: string;
  responses: number;
  ok: number;
  failed: number;
  missing?: string[];
  elapsed_ms?: number;
  /** Why fedgate stopped collecting: every reply it waited for, a quiet second after the last
   * reply of a broadcast, the timeout, or a lost connection. */
  ended?: "complete" | "idle" | "timeout" | "closed";
  requestids?: string[];
  refused?: Record<string, string>;
}

export interface ErrorFrame {
  type: "error";
  id?: string;
  code: string;
  message: string;
}

export interface FactCondition {
  fact: string;
  operator: string;
  value: string;
}

export interface RpcFrame {
  type: "rpc";
  id: string;
  collective?: string;
  federation?: string;
  agent: string;
  action: string;
  data?: Record<string, unknown>;
  filter?: {
    fact: FactCondition[];
    cf_class: string[];
    identity: string[];
    agent: string[];
  };
  targets?: string[];
  timeout_ms?: number;
  limit?: number;
}

export interface RequestHandlers {
  reply(frame: ReplyFrame): void;
  done(frame: DoneFrame): void;
  error(frame: ErrorFrame): void;
}

export type SocketState = "closed" | "connecting" | "open";

export const CLOSE_TOKEN_EXPIRED = 4001;

const CLOSE_REASONS: Record<number, string> = {
  1000: "closed",
  1001: "fedgate is shutting down",
  1006: "the connection was lost",
  1008: "protocol error",
  1009: "a frame was too large",
  4000: "idle for too long",
  4001: "the token expired",
  4003: "authentication failed",
  4008: "the client was not reading",
};

export function closeReason(code: number, reason: string): string {
  return reason || CLOSE_REASONS[code] || `closed (${code})`;
}

/**
 * One socket per login. It connects on first use and again after it was closed (idle timeout,
 * restart); requests in flight when it closes end with a local `error` frame. The WebSocket
 * itself runs in a worker (link.ts), which hands over the parsed frames in batches.
 */
export class EdgeSocket {
  private ws: Link | null = null;
  private welcome: Promise<Welcome> | null = null;
  private pending = new Map<string, RequestHandlers>();
  private stopped = false;
  private seq = 0;

  /** The socket closed (not by `stop`). */
  onClose: (code: number, reason: string) => void = () => {};
  onState: (state: SocketState, detail?: string) => void = () => {};
  /** An `error` frame without an id: a frame the server could not take. */
  onStrayError: (frame: ErrorFrame) => void = () => {};

  constructor(private readonly token: string) {}

  nextId(): string {
    this.seq += 1;
    return `r${this.seq}`;
  }

  connect(): Promise<Welcome> {
    if (this.stopped) return Promise.reject(new Error("logged out"));
    if (this.welcome && this.ws && this.ws.state !== "closed") return this.welcome;
    const url = endpoint("ws");
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    this.onState("connecting");
    this.welcome = new Promise<Welcome>((resolve, reject) => {
      let welcomed = false;
      const ws = openLink(url.href, ["fedgate.v1", `bearer.${this.token}`], {
        open: () => {},
        frames: (frames) => {
          for (const f of frames) {
            if (!f || typeof f !== "object") continue;
            const frame = f as { type?: unknown; id?: unknown };
            if (frame.type === "welcome") {
              welcomed = true;
              this.onState("open");
              resolve(frame as Welcome);
              continue;
            }
            this.dispatch(frame as ReplyFrame | DoneFrame | ErrorFrame);
          }
        },
        close: (code, reason) => {
          if (this.ws === ws) {
            this.ws = null;
            this.welcome = null;
          }
          const why = closeReason(code, reason);
          if (!welcomed) reject(new Error(`the connection was refused: ${why}`));
          this.failPending(code === CLOSE_TOKEN_EXPIRED ? "expired" : "disconnected", why);
          if (!this.stopped) {
            this.onState("closed", why);
            this.onClose(code, reason);
          }
        },
      });
      this.ws = ws;
    });
    // A caller that never awaits must not leave an unhandled rejection behind.
    this.welcome.catch(() => {});
    return this.welcome;
  }

  async request(frame: RpcFrame, handlers: RequestHandlers): Promise<void> {
    await this.connect();
    const ws = this.ws;
    if (!ws || ws.state !== "open") throw new Error("the connection closed");
    this.pending.set(frame.id, handlers);
    ws.send(JSON.stringify(frame));
  }

  cancel(id: string): void {
    if (this.ws && this.ws.state === "open" && this.pending.has(id)) {
      this.ws.send(JSON.stringify({ type: "cancel", id }));
    }
  }

  /** Closes for good (log out). */
  stop(): void {
    this.stopped = true;
    this.pending.clear();
    const ws = this.ws;
    this.ws = null;
    this.welcome = null;
    if (ws && ws.state !== "closed") ws.close(1000, "logout");
  }

  private dispatch(frame: ReplyFrame | DoneFrame | ErrorFrame): void {
    const id = typeof frame.id === "string" ? frame.id : undefined;
    const handlers = id ? this.pending.get(id) : undefined;
    if (!handlers) {
      if (frame.type === "error" && !id) this.onStrayError(frame);
      return;
    }
    switch (frame.type) {
      case "reply":
        handlers.reply(frame);
        break;
      case "done":
        this.pending.delete(frame.id);
        handlers.done(frame);
        break;
      case "error":
        this.pending.delete(frame.id ?? "");
        handlers.error(frame);
        break;
      default:
        break;
    }
  }

  private failPending(code: string, why: string): void {
    const pending = [...this.pending.entries()];
    this.pending.clear();
    for (const [id, handlers] of pending) {
      handlers.error({ type: "error", id, code, message: `the connection closed: ${why}` });
    }
  }
}
