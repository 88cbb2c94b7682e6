// Holds the page's WebSockets off the main thread (see link.ts): it parses every frame and
// hands them to the page in batches, at most one message per BATCH_MS while replies stream,
// so that tens of thousands of `reply` frames cost the page a few dozen messages.

import { parseFrame } from "./frame";
import type { LinkCommand, LinkEvent } from "./link";

const BATCH_MS = 16;

interface Open {
  ws: WebSocket;
  batch: unknown[];
  /** When the oldest frame of the batch arrived. */
  since: number;
  timer: ReturnType<typeof setTimeout> | null;
}

const scope = self as unknown as {
  postMessage(message: LinkEvent): void;
  addEventListener(type: "message", listener: (event: MessageEvent<LinkCommand>) => void): void;
};

const sockets = new Map<number, Open>();

function flush(id: number): void {
  const s = sockets.get(id);
  if (!s) return;
  if (s.timer !== null) clearTimeout(s.timer);
  s.timer = null;
  if (s.batch.length === 0) return;
  const frames = s.batch;
  s.batch = [];
  scope.postMessage({ id, event: "frames", frames });
}

function open(id: number, url: string, protocols: string[]): void {
  let ws: WebSocket;
  try {
    ws = new WebSocket(url, protocols);
  } catch (err) {
    scope.postMessage({ id, event: "close", code: 1006, reason: String((err as Error).message) });
    return;
  }
  const s: Open = { ws, batch: [], since: 0, timer: null };
  sockets.set(id, s);
  ws.addEventListener("open", () => scope.postMessage({ id, event: "open" }));
  ws.addEventListener("message", (event) => {
    const frame = parseFrame(event.data);
    if (frame === undefined) return;
    const now = performance.now();
    if (s.batch.length === 0) s.since = now;
    s.batch.push(frame);
    // Replies wait for the batch (the timer, or the next frame once it is due: while frames
    // stream in, they can hold the timer back); anything else (welcome, done, error) goes at
    // once, after the replies before it.
    if ((frame as { type?: unknown } | null)?.type !== "reply" || now - s.since >= BATCH_MS) {
      flush(id);
    } else if (s.timer === null) {
      s.timer = setTimeout(() => flush(id), BATCH_MS);
    }
  });
  ws.addEventListener("close", (event) => {
    flush(id);
    sockets.delete(id);
    scope.postMessage({ id, event: "close", code: event.code, reason: event.reason });
  });
}

scope.addEventListener("message", (event) => {
  const cmd = event.data;
  switch (cmd.op) {
    case "open":
      open(cmd.id, cmd.url, cmd.protocols);
      break;
    case "send": {
      const ws = sockets.get(cmd.id)?.ws;
      if (ws?.readyState === WebSocket.OPEN) ws.send(cmd.data);
      break;
    }
    case "close":
      sockets.get(cmd.id)?.ws.close(cmd.code, cmd.reason);
      break;
  }
});
