// The audit tab: the audit trail as it grows, with filters and the hash chain's state.

import { api, ApiError, type AuditPage, type AuditQuery, type AuditRecord, type Chain } from "./api";
import { field, h, replace } from "./dom";

const POLL_MS = 2000;
const PAGE = 200;
/** Records kept on screen (newest first). */
const KEEP = 1000;

export interface AuditContext {
  token: string;
  unauthorized(err: ApiError): void;
}

export class AuditView {
  readonly root: HTMLElement;
  private readonly caller: HTMLInputElement;
  private readonly agent: HTMLInputElement;
  private readonly decision: HTMLSelectElement;
  private readonly chainBadge: HTMLElement;
  private readonly status: HTMLElement;
  private readonly tbody: HTMLTableSectionElement;
  private readonly empty: HTMLElement;

  private records: AuditRecord[] = [];
  private cursor: number | undefined;
  private timer: number | null = null;
  private abort: AbortController | null = null;
  private generation = 0;
  private active = false;
  private debounce: number | null = null;

  constructor(private readonly ctx: AuditContext) {
    this.caller = h("input", {
      type: "search",
      name: "caller",
      "data-testid": "audit-filter-caller",
      placeholder: "up=alice",
      autocomplete: "off",
      spellcheck: "false",
    });
    this.agent = h("input", {
      type: "search",
      name: "agent",
      "data-testid": "audit-filter-agent",
      placeholder: "rpcutil",
      autocomplete: "off",
      spellcheck: "false",
    });
    this.decision = h(
      "select",
      { name: "decision", "data-testid": "audit-filter-decision" },
      h("option", { value: "" }, "any"),
      h("option", { value: "allow" }, "allow"),
      h("option", { value: "deny" }, "deny"),
    );
    this.chainBadge = h("span", { class: "badge", "data-testid": "chain-status", role: "status" }, "chain: …");
    this.status = h("span", { class: "muted small", "aria-live": "off" });
    const form = h(
      "form",
      { class: "filters", role: "search", "aria-label": "Audit filters" },
      field("Caller", this.caller),
      field("Agent", this.agent),
      field("Decision", this.decision),
      h("div", { class: "actions" }, h("button", { type: "submit", "data-testid": "audit-apply" }, "Apply")),
    );
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.restart();
    });
    this.decision.addEventListener("change", () => this.restart());
    for (const input of [this.caller, this.agent]) {
      input.addEventListener("input", () => {
        if (this.debounce !== null) window.clearTimeout(this.debounce);
        this.debounce = window.setTimeout(() => this.restart(), 500);
      });
    }

    this.tbody = h("tbody");
    const cols = ["Line", "Time", "Kind", "Caller", "Realm", "Request", "Decision", "Rule", "Details", "Instance"];
    this.empty = h("div", { class: "empty" }, "Loading…");
    this.root = h(
      "div",
      { class: "audit-view panel" },
      h(
        "div",
        { class: "toolbar" },
        form,
        h("div", { class: "toolbar-right" }, this.chainBadge, this.status),
      ),
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "grid audit", "data-testid": "audit-table", "aria-label": "Audit records" },
          h("thead", null, h("tr", null, cols.map((c) => h("th", { scope: "col" }, c)))),
          this.tbody,
        ),
        this.empty,
      ),
    );
  }

  /** Starts (or resumes) polling while the tab shows. */
  show(): void {
    if (this.active) return;
    this.active = true;
    if (this.cursor === undefined) this.restart();
    else void this.poll(this.generation);
  }

  hide(): void {
    this.active = false;
    if (this.timer !== null) window.clearTimeout(this.timer);
    this.timer = null;
    this.abort?.abort();
    this.abort = null;
  }

  private query(): AuditQuery {
    return {
      caller: this.caller.value.trim(),
      agent: this.agent.value.trim(),
      decision: this.decision.value,
    };
  }

  private restart(): void {
    if (this.debounce !== null) window.clearTimeout(this.debounce);
    this.debounce = null;
    this.generation += 1;
    this.abort?.abort();
    this.abort = null;
    if (this.timer !== null) window.clearTimeout(this.timer);
    this.timer = null;
    this.records = [];
    this.cursor = undefined;
    replace(this.tbody);
    this.empty.hidden = false;
    this.empty.textContent = "Loading…";
    if (this.active) void this.poll(this.generation);
  }

  private async poll(generation: number): Promise<void> {
    if (!this.active || generation !== this.generation) return;
    const abort = new AbortController();
    this.abort = abort;
    let again = POLL_MS;
    try {
      const page: AuditPage = await api.audit(
        this.ctx.token,
        { ...this.query(), after: this.cursor, limit: PAGE },
        abort.signal,
      );
      if (generation !== this.generation) return;
      const records = page.records ?? [];
      // The answer holds the newest matching records after the cursor; `last` is the trail's
      // last line, so the next poll asks only for what is new.
      const maxLine = records.reduce((m, r) => Math.max(m, r.line ?? 0), this.cursor ?? 0);
      this.cursor = Math.max(maxLine, typeof page.last === "number" ? page.last : 0);
      this.add(records);
      if (page.chain) this.showChain(page.chain);
      this.status.textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      if (err instanceof DOMException && err.name === "AbortError") return;
      if (generation !== this.generation) return;
      if (err instanceof ApiError && err.status === 401) return this.ctx.unauthorized(err);
      if (err instanceof ApiError && err.status === 403) {
        this.empty.hidden = false;
        this.empty.textContent = "You may not read the audit trail.";
        this.status.textContent = "";
        return; // No point in asking again.
      }
      this.status.textContent = `cannot load: ${(err as Error).message}`;
      again = POLL_MS * 2;
    } finally {
      if (this.abort === abort) this.abort = null;
    }
    if (this.active && generation === this.generation) {
      this.timer = window.setTimeout(() => void this.poll(generation), again);
    }
  }

  private add(records: AuditRecord[]): void {
    if (records.length > 0) {
      const seen = new Set(this.records.map((r) => r.line));
      const fresh = records.filter((r) => !seen.has(r.line));
      this.records = [...this.records, ...fresh].sort((a, b) => b.line - a.line).slice(0, KEEP);
      replace(this.tbody, this.records.map((r) => row(r)));
    }
    this.empty.hidden = this.records.length > 0;
    if (!this.records.length) this.empty.textContent = "No matching records.";
  }

  private showChain(chain: Chain): void {
    const b = this.chainBadge;
    if (chain.intact) {
      b.className = "badge good";
      b.textContent = `chain intact${chain.records !== undefined ? ` · ${chain.records} records` : ""}`;
      b.title = "Every record's hash links to the one before it.";
    } else {
      b.className = "badge bad";
      b.textContent =
        chain.broken_at !== undefined && chain.broken_at !== null
          ? `chain broken at line ${chain.broken_at}`
          : `chain not verified${chain.reason ? `: ${chain.reason}` : ""}`;
      b.title = [chain.file, chain.reason].filter(Boolean).join(": ");
    }
  }
}

function row(r: AuditRecord): HTMLTableRowElement {
  const decision = r.decision ?? null;
  const realm = r.collectives?.length ? r.collectives.join(", ") : (r.realm ?? "");
  const details = [
    r.code && !["allowed", "denied", "ok", decision].includes(r.code) ? r.code : null,
    typeof r.replies === "number" ? `${r.replies} replies` : null,
    r.reason ?? null,
  ].filter(Boolean) as string[];
  return h(
    "tr",
    {
      "data-testid": "audit-row",
      "data-line": r.line,
      "data-caller": r.caller ?? "",
      "data-agent": r.agent ?? "",
      "data-action": r.action ?? "",
      "data-decision": decision ?? "",
      "data-kind": r.kind ?? "",
      class: decision === "deny" ? "denied" : "",
    },
    h("td", { class: "num muted" }, r.line),
    h("td", { class: "nowrap", title: r.time ?? "" }, formatTime(r.time)),
    h("td", null, h("span", { class: "tag" }, r.kind ?? "")),
    h(
      "td",
      { class: "mono", title: r.mapped_caller ? `mapped to ${r.mapped_caller}` : "" },
      r.caller ?? "",
      r.mapped_caller && r.mapped_caller !== r.caller ? h("div", { class: "muted small" }, `→ ${r.mapped_caller}`) : null,
    ),
    h("td", null, realm, r.edge ? h("div", { class: "muted small" }, `via ${r.edge}`) : null),
    h("td", { class: "mono" }, [r.agent, r.action].filter(Boolean).join(" ")),
    h(
      "td",
      null,
      decision ? h("span", { class: `pill ${decision === "allow" ? "good" : "bad"}` }, decision) : h("span", { class: "muted" }, "—"),
    ),
    h("td", { class: "mono small" }, r.rule ?? ""),
    h(
      "td",
      { class: "details small", title: [details.join(" · "), r.request_id ? `request ${r.request_id}` : ""].filter(Boolean).join("\n") },
      h("span", { class: "clamp" }, details.join(" · ")),
    ),
    h("td", { class: "muted small" }, r.instance ?? ""),
  );
}

function formatTime(time: string | undefined): string {
  if (!time) return "";
  const d = new Date(time);
  if (Number.isNaN(d.getTime())) return time;
  const today = new Date();
  const sameDay = d.toDateString() === today.toDateString();
  return sameDay ? d.toLocaleTimeString() : d.toLocaleString();
}
