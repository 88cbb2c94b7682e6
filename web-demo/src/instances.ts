// The instances tab: each fedgate instance's share of the traffic, as `fedgate observe` shows.

import { api, ApiError, type InstanceStats, type Instances } from "./api";
import { ago, h, replace } from "./dom";

const POLL_MS = 2000;

export interface InstancesContext {
  token: string;
  unauthorized(err: ApiError): void;
}

export class InstancesView {
  readonly root: HTMLElement;
  private readonly tbody: HTMLTableSectionElement;
  private readonly status: HTMLElement;
  private readonly empty: HTMLElement;
  private timer: number | null = null;
  private abort: AbortController | null = null;
  private active = false;

  constructor(private readonly ctx: InstancesContext) {
    this.tbody = h("tbody");
    this.status = h("span", { class: "muted small" });
    this.empty = h("div", { class: "empty" }, "Loading…");
    const cols: [string, string][] = [
      ["Cluster", ""],
      ["Instance", ""],
      ["Status", ""],
      ["Received", "num"],
      ["Received share", "share"],
      ["Sent", "num"],
      ["Sent share", "share"],
      ["Replies", "num"],
      ["Last heard", ""],
    ];
    this.root = h(
      "div",
      { class: "instances-view panel" },
      h(
        "div",
        { class: "toolbar" },
        h("h2", null, "fedgate instances"),
        h("div", { class: "toolbar-right" }, h("span", { class: "muted small" }, "refreshed every 2 s"), this.status),
      ),
      h(
        "p",
        { class: "muted small flush" },
        "Requests each instance took from the federation (received) and published into the member collectives (sent), with its share of the cluster's; replies taken from the collectives.",
      ),
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "grid instances", "data-testid": "instances-table", "aria-label": "fedgate instances" },
          h("thead", null, h("tr", null, cols.map(([c, cls]) => h("th", { scope: "col", class: cls }, c)))),
          this.tbody,
        ),
        this.empty,
      ),
    );
  }

  show(): void {
    if (this.active) return;
    this.active = true;
    void this.poll();
  }

  hide(): void {
    this.active = false;
    if (this.timer !== null) window.clearTimeout(this.timer);
    this.timer = null;
    this.abort?.abort();
    this.abort = null;
  }

  private async poll(): Promise<void> {
    if (!this.active) return;
    const abort = new AbortController();
    this.abort = abort;
    try {
      const answer: Instances = await api.instances(this.ctx.token, abort.signal);
      this.render(answer);
      this.status.textContent = `· updated ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      if (err instanceof DOMException && err.name === "AbortError") return;
      if (err instanceof ApiError && err.status === 401) return this.ctx.unauthorized(err);
      this.status.textContent = `· cannot load: ${(err as Error).message}`;
    } finally {
      if (this.abort === abort) this.abort = null;
    }
    if (this.active) this.timer = window.setTimeout(() => void this.poll(), POLL_MS);
  }

  private render(answer: Instances): void {
    const rows: HTMLTableRowElement[] = [];
    const now = Date.now() / 1000;
    for (const cluster of answer.clusters ?? []) {
      const instances = [...(cluster.instances ?? [])].sort((a, b) =>
        a.instance.localeCompare(b.instance, undefined, { numeric: true }),
      );
      for (const inst of instances) rows.push(row(cluster.cluster, inst, now));
      if (instances.length > 1) rows.push(total(cluster.cluster, instances));
    }
    replace(this.tbody, rows);
    this.empty.hidden = rows.length > 0;
    if (!rows.length) this.empty.textContent = "No instances reported yet.";
  }
}

function row(cluster: string, i: InstanceStats, now: number): HTMLTableRowElement {
  const age =
    typeof i.heard_s === "number" ? i.heard_s : typeof i.last_seen === "number" ? now - i.last_seen : null;
  const stale = age !== null && age > 30;
  const status = i.status ?? (stale ? "stale" : null);
  const healthy = ["ok", "running", "serving"].includes((status ?? "").toLowerCase());
  return h(
    "tr",
    { "data-testid": "instance-row", "data-instance": i.instance, class: stale ? "stale" : "" },
    h("td", null, cluster),
    h(
      "td",
      { class: "mono" },
      i.instance,
      i.version ? h("span", { class: "muted small" }, ` v${i.version}`) : null,
    ),
    h(
      "td",
      null,
      status ? h("span", { class: `pill ${stale ? "warn" : healthy ? "good" : ""}` }, stale ? "stale" : status) : "—",
    ),
    h("td", { class: "num" }, fmt(i.received)),
    h("td", { class: "share" }, bar(i.received_share)),
    h("td", { class: "num" }, fmt(i.sent)),
    h("td", { class: "share" }, bar(i.sent_share)),
    h("td", { class: "num", title: share(i.replies_share) }, fmt(i.replies)),
    h("td", { class: "muted nowrap" }, age !== null ? ago(now - age, now) : "—"),
  );
}

function share(v: number | undefined): string {
  return typeof v === "number" && Number.isFinite(v) ? `${(v * 100).toFixed(1)}% of the replies` : "";
}

function total(cluster: string, instances: InstanceStats[]): HTMLTableRowElement {
  const sum = (pick: (i: InstanceStats) => number | undefined) =>
    instances.reduce((n, i) => n + (pick(i) ?? 0), 0);
  return h(
    "tr",
    { class: "total", "data-testid": "instance-total" },
    h("td", null, cluster),
    h("td", { class: "muted" }, `${instances.length} instances`),
    h("td"),
    h("td", { class: "num" }, fmt(sum((i) => i.received))),
    h("td"),
    h("td", { class: "num" }, fmt(sum((i) => i.sent))),
    h("td"),
    h("td", { class: "num" }, fmt(sum((i) => i.replies))),
    h("td"),
  );
}

function fmt(n: number | undefined): string {
  return typeof n === "number" ? n.toLocaleString() : "—";
}

function bar(share: number | undefined): Node {
  if (typeof share !== "number" || !Number.isFinite(share)) return document.createTextNode("—");
  const pct = Math.max(0, Math.min(100, share * 100));
  const fill = h("span", { class: "fill" });
  fill.style.width = `${pct.toFixed(1)}%`;
  const meter = h("span", { class: "bar", "aria-hidden": "true" }, fill);
  return h("span", { class: "share-cell" }, meter, h("span", { class: "pct" }, `${pct.toFixed(1)}%`));
}
