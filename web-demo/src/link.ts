// One WebSocket connection for EdgeSocket. The socket itself lives in a dedicated worker
// (socket.worker.ts) that parses the frames and passes them on in batches: a broadcast to a
// big federation brings one text frame per node, and receiving and parsing those on the main
// thread would keep the page busy. Where a worker cannot start, the socket is in the page.

import { parseFrame } from "./frame";

export type LinkState = "connecting" | "open" | "closed";

export interface LinkHandlers {
  open(): void;
  /** Parsed frames, in the order they arrived. */
  frames(frames: unknown[]): void;
  close(code: number, reason: string): void;
}

export interface Link {
  readonly state: LinkState;
  send(text: string): void;
  close(code: number, reason: string): void;
}

/** From the page to the worker. */
export type LinkCommand =
  | { op: "open"; id: number; url: string; protocols: string[] }
  | { op: "send"; id: number; data: string }
  | { op: "close"; id: number; code: number; reason: string };

/** From the worker to the page. */
export type LinkEvent =
  | { id: number; event: "open" }
  | { id: number; event: "frames"; frames: unknown[] }
  | { id: number; event: "close"; code: number; reason: string };

class WorkerLink implements Link {
  state: LinkState = "connecting";

  constructor(
    private readonly hub: WorkerHub,
    readonly id: number,
    readonly handlers: LinkHandlers,
  ) {}

  send(text: string): void {
    if (this.state === "open") this.hub.post({ op: "send", id: this.id, data: text });
  }

  close(code: number, reason: string): void {
    if (this.state !== "closed") this.hub.post({ op: "close", id: this.id, code, reason });
  }
}

class WorkerHub {
  private readonly links = new Map<number, WorkerLink>();
  private seq = 0;

  constructor(
    private readonly worker: Worker,
    private readonly failed: () => void,
  ) {
    worker.addEventListener("message", (event: MessageEvent<LinkEvent>) => this.receive(event.data));
    worker.addEventListener("error", (event) => {
      // The worker did not start (or died): its connections are gone, later ones open in the page.
      event.preventDefault();
      this.failed();
      const links = [...this.links.values()];
      this.links.clear();
      for (const link of links) {
        link.state = "closed";
        link.handlers.close(1006, "");
      }
    });
  }

  open(url: string, protocols: string[], handlers: LinkHandlers): Link {
    this.seq += 1;
    const link = new WorkerLink(this, this.seq, handlers);
    this.links.set(link.id, link);
    this.post({ op: "open", id: link.id, url, protocols });
    return link;
  }

  post(cmd: LinkCommand): void {
    this.worker.postMessage(cmd);
  }

  private receive(msg: LinkEvent): void {
    const link = this.links.get(msg.id);
    if (!link) return;
    switch (msg.event) {
      case "open":
        link.state = "open";
        link.handlers.open();
        break;
      case "frames":
        link.handlers.frames(msg.frames);
        break;
      case "close":
        link.state = "closed";
        this.links.delete(msg.id);
        link.handlers.close(msg.code, msg.reason);
        break;
    }
  }
}

class PageLink implements Link {
  private readonly ws: WebSocket;

  constructor(url: string, protocols: string[], handlers: LinkHandlers) {
    this.ws = new WebSocket(url, protocols);
    this.ws.addEventListener("open", () => handlers.open());
    this.ws.addEventListener("message", (event) => {
      const frame = parseFrame(event.data);
      if (frame !== undefined) handlers.frames([frame]);
    });
    this.ws.addEventListener("close", (event) => handlers.close(event.code, event.reason));
  }

  get state(): LinkState {
    const s = this.ws.readyState;
    return s === WebSocket.CONNECTING ? "connecting" : s === WebSocket.OPEN ? "open" : "closed";
  }

  send(text: string): void {
    this.ws.send(text);
  }

  close(code: number, reason: string): void {
    this.ws.close(code, reason);
  }
}

let hub: WorkerHub | null | undefined;

function workerHub(): WorkerHub | null {
  if (hub === undefined) {
    try {
      const worker = new Worker(new URL("./socket.worker.ts", import.meta.url), {
        type: "module",
        name: "fedgate-socket",
      });
      hub = new WorkerHub(worker, () => {
        hub = null;
        worker.terminate();
      });
    } catch {
      hub = null;
    }
  }
  return hub;
}

/** Opens a WebSocket to `url` (absolute, ws: or wss:). */
export function openLink(url: string, protocols: string[], handlers: LinkHandlers): Link {
  const h = workerHub();
  return h ? h.open(url, protocols, handlers) : new PageLink(url, protocols, handlers);
}
