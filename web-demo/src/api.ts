// HTTP calls to fedgate's edge (same origin).

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

export interface LoginAnswer {
  token: string;
  expires: number;
  caller: string;
}

export interface Realms {
  caller: string;
  collectives: string[];
  federations: string[];
  audit?: boolean;
  instances?: boolean;
}

export interface DdlInput {
  prompt?: string;
  description?: string;
  type?: string;
  optional?: boolean;
  default?: unknown;
  validation?: string;
  maxlength?: number;
  list?: unknown[];
}

export interface DdlOutput {
  description?: string;
  display_as?: string;
  type?: string;
  default?: unknown;
}

export interface DdlAction {
  action: string;
  description?: string;
  display?: string;
  input?: Record<string, DdlInput>;
  output?: Record<string, DdlOutput>;
}

export interface Ddl {
  metadata: {
    name: string;
    description?: string;
    version?: string;
    timeout?: number;
    [key: string]: unknown;
  };
  actions: DdlAction[];
}

export interface AuditRecord {
  line: number;
  time?: string;
  kind?: string;
  instance?: string;
  edge?: string;
  realm?: string;
  caller?: string;
  mapped_caller?: string;
  collectives?: string[];
  agent?: string;
  action?: string;
  decision?: string | null;
  code?: string;
  rule?: string;
  reason?: string;
  request_id?: string;
  replies?: number;
  [key: string]: unknown;
}

export type Chain =
  | { intact: true; records?: number }
  | { intact: false; broken_at?: number; file?: string; reason?: string; records?: number };

export interface AuditPage {
  records: AuditRecord[];
  chain?: Chain;
  last?: number;
}

export interface AuditQuery {
  caller?: string;
  agent?: string;
  decision?: string;
  after?: number;
  limit?: number;
}

export interface InstanceStats {
  instance: string;
  received?: number;
  sent?: number;
  received_share?: number;
  sent_share?: number;
  /** UNIX time of the last figures. */
  last_seen?: number;
  /** Seconds since the last figures. */
  heard_s?: number;
  status?: string;
  version?: string;
  /** Replies taken from the collective side, and that side's share. */
  replies?: number;
  replies_share?: number;
  [key: string]: unknown;
}

export interface Instances {
  clusters: { cluster: string; instances: InstanceStats[] }[];
}

/** A URL relative to the page, so the console works wherever the edge serves it. */
export function endpoint(path: string): URL {
  return new URL(path.replace(/^\//, ""), document.baseURI);
}

async function call<T>(
  method: "GET" | "POST",
  path: string,
  token: string | null,
  body?: unknown,
  signal?: AbortSignal,
): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res: Response;
  try {
    res = await fetch(endpoint(path), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "same-origin",
      signal,
    });
  } catch (err) {
    if (err instanceof DOMException && err.name === "AbortError") throw err;
    throw new ApiError(0, "network", `cannot reach fedgate (${String(err)})`);
  }
  const text = await res.text();
  let json: unknown = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!res.ok) {
    const o = (json && typeof json === "object" ? json : {}) as { error?: unknown; message?: unknown };
    throw new ApiError(
      res.status,
      typeof o.error === "string" ? o.error : `http_${res.status}`,
      typeof o.message === "string" ? o.message : text.trim() || `${res.status} ${res.statusText}`,
    );
  }
  if (json === null) throw new ApiError(res.status, "invalid", `${path}: the answer is not JSON`);
  return json as T;
}

export const api = {
  login: (user: string, password: string) =>
    call<LoginAnswer>("POST", "login", null, { user, password }),
  realms: (token: string) => call<Realms>("GET", "api/realms", token),
  agents: (token: string) => call<{ agents: string[] }>("GET", "api/ddl", token),
  ddl: (token: string, agent: string) =>
    call<Ddl>("GET", `api/ddl/${encodeURIComponent(agent)}`, token),
  audit: (token: string, query: AuditQuery, signal?: AbortSignal) => {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) {
      if (v !== undefined && v !== "") params.set(k, String(v));
    }
    const qs = params.toString();
    return call<AuditPage>("GET", `api/audit${qs ? `?${qs}` : ""}`, token, undefined, signal);
  },
  instances: (token: string, signal?: AbortSignal) =>
    call<Instances>("GET", "api/instances", token, undefined, signal),
};
