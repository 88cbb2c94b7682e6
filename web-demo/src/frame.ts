// One server frame, as the worker and the in-page fallback both read it.

/** The JSON of a text frame; `undefined` for a binary frame or text that is not JSON (the
 *  server sends neither). */
export function parseFrame(data: unknown): unknown {
  if (typeof data !== "string") return undefined;
  try {
    return JSON.parse(data);
  } catch {
    return undefined;
  }
}
