// The RPC tab: a form generated from the agents' DDL, and the replies as they stream in.

import { api, ApiError, type Ddl, type DdlAction } from "./api";
import { ActionInputs } from "./ddlform";
import { field, formatMs, h, plural, replace } from "./dom";
import { extractRule, parseFacts, splitList } from "./parse";
import { RepliesTable, type Outputs } from "./replies";
import type { DoneFrame, EdgeSocket, ErrorFrame, ReplyFrame, RpcFrame } from "./socket";

export interface Realm {
  kind: "collective" | "federation";
  name: string;
}

export interface RpcContext {
  token: string;
  socket: EdgeSocket;
  realm(): Realm | null;
  /** An API call answered 401: the session is over. */
  unauthorized(err: ApiError): void;
}

const ERROR_HINTS: Record<string, string> = {
  denied: "The authorization policy (actionpolicy) refused this request.",
  unmapped: "No identity rule maps your caller id into this collective.",
  unknown_collective: "No such collective or federation here, or your token does not allow it.",
  rate_limited: "Too many requests: wait a moment and try again.",
  too_many_in_flight: "Too many requests in flight on this connection.",
  audit_failed: "The decision could not be recorded in the audit trail, so nothing was sent.",
  unavailable: "Publishing into the collective failed.",
  invalid: "The server refused the request as malformed.",
  disconnected: "The connection to fedgate closed while the request ran.",
  expired: "Your session expired.",
};

export class RpcView {
  readonly root: HTMLElement;
  private readonly agentSelect: HTMLSelectElement;
  private readonly actionSelect: HTMLSelectElement;
  private readonly agentInfo: HTMLElement;
  private readonly inputsBox: HTMLElement;
  private readonly identity: HTMLInputElement;
  private readonly facts: HTMLTextAreaElement;
  private readonly classes: HTMLInputElement;
  private readonly targets: HTMLTextAreaElement;
  private readonly timeout: HTMLInputElement;
  private readonly limit: HTMLInputElement;
  private readonly submit: HTMLButtonElement;
  private readonly cancel: HTMLButtonElement;
  private readonly formError: HTMLElement;
  /** Says that a realm change cleared the filters. */
  private readonly filterNotice: HTMLElement;
  private readonly errorPanel: HTMLElement;
  private readonly summary: HTMLElement;
  /** Announces a request's end to screen readers (the summary itself changes too often). */
  private readonly announcer: HTMLElement;
  private readonly replies = new RepliesTable();
  /** The running summary's changing parts. */
  private readonly live = {
    responses: document.createTextNode(""),
    ok: document.createTextNode(""),
    failed: document.createTextNode(""),
    failedStat: h("span", { class: "stat" }),
    time: document.createTextNode(""),
  };

  private ddls = new Map<string, Promise<Ddl>>();
  private ddl: Ddl | null = null;
  private inputs = new ActionInputs(null);

  private running: {
    id: string;
    started: number;
    label: string;
    cancelled: boolean;
    /** What the request selected nodes by, for the summary. */
    selection: string;
  } | null = null;
  private tick: number | null = null;
  private outputs: Outputs = {};

  constructor(private readonly ctx: RpcContext) {
    this.agentSelect = h("select", { "data-testid": "agent-select", name: "agent", required: true });
    this.actionSelect = h("select", { "data-testid": "action-select", name: "action", required: true });
    this.agentInfo = h("p", { class: "muted small desc" });
    this.inputsBox = h("div");
    this.identity = h("input", {
      type: "text",
      name: "identity",
      "data-testid": "filter-identity",
      placeholder: "e.g. web-1, /^db/",
      autocomplete: "off",
      spellcheck: "false",
    });
    this.facts = h("textarea", {
      name: "fact",
      "data-testid": "filter-fact",
      rows: 2,
      placeholder: "e.g. country=uk",
      spellcheck: "false",
    });
    this.classes = h("input", {
      type: "text",
      name: "class",
      "data-testid": "filter-class",
      placeholder: "e.g. role::web",
      autocomplete: "off",
      spellcheck: "false",
    });
    this.targets = h("textarea", {
      name: "targets",
      "data-testid": "targets",
      rows: 2,
      placeholder: "e.g. web-1 web-2",
      spellcheck: "false",
    });
    this.timeout = h("input", {
      type: "number",
      name: "timeout",
      "data-testid": "timeout",
      min: "0.1",
      max: "60",
      step: "any",
      value: "10",
      required: true,
    });
    this.limit = h("input", {
      type: "number",
      name: "limit",
      "data-testid": "limit",
      min: "1",
      step: "1",
      placeholder: "no limit",
    });
    this.submit = h("button", { type: "submit", class: "primary", "data-testid": "rpc-submit" }, "Run");
    this.cancel = h(
      "button",
      { type: "button", "data-testid": "rpc-cancel", disabled: true, onclick: () => this.doCancel() },
      "Cancel",
    );
    this.formError = h("p", { class: "form-error", role: "alert", hidden: true });
    this.filterNotice = h("p", { class: "notice small", role: "status", "data-testid": "filters-cleared", hidden: true });

    this.facts.addEventListener("input", () => {
      const parsed = parseFacts(this.facts.value);
      this.facts.setCustomValidity(parsed.ok ? "" : parsed.error);
    });
    for (const area of [this.facts, this.targets]) {
      area.addEventListener("keydown", (e) => {
        if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
          e.preventDefault();
          form.requestSubmit();
        }
      });
    }
    this.agentSelect.addEventListener("change", () => {
      this.clearResult();
      void this.selectAgent(this.agentSelect.value);
    });
    this.actionSelect.addEventListener("change", () => {
      this.clearResult();
      this.selectAction(this.actionSelect.value);
    });
    for (const el of [this.identity, this.facts, this.classes, this.targets]) {
      el.addEventListener("input", () => (this.filterNotice.hidden = true));
    }

    const form = h(
      "form",
      { class: "rpc-form", "aria-label": "RPC request" },
      h(
        "fieldset",
        null,
        h("legend", null, "Request"),
        h("div", { class: "row2" }, field("Agent", this.agentSelect), field("Action", this.actionSelect)),
        this.agentInfo,
        this.inputsBox,
      ),
      h(
        "fieldset",
        null,
        h("legend", null, "Filters"),
        this.filterNotice,
        field("Identity", this.identity, "comma or space separated; /regex/ allowed"),
        field("Facts", this.facts, "one per line: name=value; == != < > <= >= =~"),
        field("Classes", this.classes, "comma or space separated"),
      ),
      h(
        "fieldset",
        null,
        h("legend", null, "Delivery"),
        field("Targets", this.targets, "directed request to these nodes (Ctrl+Enter runs)"),
        h(
          "div",
          { class: "row2" },
          field("Timeout (s)", this.timeout),
          field("Limit", this.limit, "stop after N replies"),
        ),
      ),
      this.formError,
      h("div", { class: "actions" }, this.submit, this.cancel),
    );
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      void this.run();
    });

    this.errorPanel = h("section", {
      class: "error-panel",
      role: "alert",
      "data-testid": "error-panel",
      hidden: true,
    });
    this.announcer = h("div", { class: "sr-only", role: "status", "aria-live": "polite" });
    this.summary = h(
      "div",
      { class: "summary", "data-testid": "rpc-summary", "data-state": "idle" },
      h("span", { class: "muted" }, "Choose an agent and action, then Run."),
    );
    this.live.failedStat.append(this.live.failed);
    this.replies.onUpdate = () => this.renderRunning();

    this.root = h(
      "div",
      { class: "rpc-view" },
      h("aside", { class: "panel form-panel" }, form),
      h(
        "section",
        { class: "results", "aria-label": "Results" },
        this.errorPanel,
        this.summary,
        this.announcer,
        this.replies.root,
      ),
    );
  }

  /** Loads the agent list; call once after login. */
  async load(): Promise<void> {
    replace(this.agentSelect, h("option", { value: "" }, "loading…"));
    this.agentSelect.disabled = true;
    let agents: string[];
    try {
      agents = (await api.agents(this.ctx.token)).agents ?? [];
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) return this.ctx.unauthorized(err);
      replace(this.agentSelect, h("option", { value: "" }, "unavailable"));
      this.showFormError(`Cannot load the agents' DDL: ${String((err as Error).message)}`);
      return;
    }
    agents = [...agents].sort();
    replace(
      this.agentSelect,
      agents.map((a) => h("option", { value: a }, a)),
    );
    this.agentSelect.disabled = agents.length === 0;
    if (agents.length === 0) {
      this.showFormError("The server knows no agents.");
      return;
    }
    const initial = agents.includes("rpcutil") ? "rpcutil" : agents[0];
    this.agentSelect.value = initial;
    await this.selectAgent(initial);
  }

  private ddlFor(agent: string): Promise<Ddl> {
    let p = this.ddls.get(agent);
    if (!p) {
      p = api.ddl(this.ctx.token, agent);
      this.ddls.set(agent, p);
      p.catch(() => this.ddls.delete(agent));
    }
    return p;
  }

  private async selectAgent(agent: string): Promise<void> {
    this.showFormError(null);
    this.ddl = null;
    replace(this.actionSelect, h("option", { value: "" }, "loading…"));
    this.actionSelect.disabled = true;
    let ddl: Ddl;
    try {
      ddl = await this.ddlFor(agent);
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) return this.ctx.unauthorized(err);
      if (this.agentSelect.value !== agent) return;
      replace(this.actionSelect, h("option", { value: "" }, "unavailable"));
      this.showFormError(`Cannot load the DDL of ${agent}: ${String((err as Error).message)}`);
      return;
    }
    if (this.agentSelect.value !== agent) return; // The user moved on meanwhile.
    this.ddl = ddl;
    const actions = ddl.actions ?? [];
    replace(
      this.actionSelect,
      actions.map((a) => h("option", { value: a.action }, a.action)),
    );
    this.actionSelect.disabled = actions.length === 0;
    const meta = ddl.metadata ?? { name: agent };
    replace(
      this.agentInfo,
      meta.description ?? "",
      meta.version ? h("span", { class: "tag" }, `v${meta.version}`) : null,
    );
    const preferred = actions.find((a) => a.action === "ping") ?? actions[0];
    if (preferred) this.actionSelect.value = preferred.action;
    this.selectAction(preferred?.action ?? "");
  }

  private action(name: string): DdlAction | null {
    return this.ddl?.actions?.find((a) => a.action === name) ?? null;
  }

  private selectAction(name: string): void {
    const action = this.action(name);
    this.inputs = new ActionInputs(action);
    this.outputs = action?.output ?? {};
    replace(
      this.inputsBox,
      action?.description ? h("p", { class: "muted small desc" }, action.description) : null,
      this.inputs.root,
    );
  }

  /**
   * The realm changed from `from`: filters and targets named nodes of the old realm, so they
   * are cleared (and the user told), and a finished result of the old realm goes too.
   */
  realmChanged(from: Realm | null): void {
    const fields = [this.identity, this.facts, this.classes, this.targets];
    if (fields.some((f) => f.value.trim())) {
      for (const f of fields) {
        f.value = "";
        f.setCustomValidity("");
      }
      this.filterNotice.textContent = `Filters and targets were cleared: they were set for ${from?.name ?? "the previous realm"}.`;
      this.filterNotice.hidden = false;
    }
    this.clearResult();
  }

  /** Takes a finished result off the page (its form changed); a running request stays. */
  private clearResult(): void {
    if (this.running) return;
    this.showError(null);
    this.replies.reset(this.outputs, "");
    this.summary.dataset.state = "idle";
    replace(this.summary, h("span", { class: "muted" }, "Choose an agent and action, then Run."));
  }

  private showFormError(message: string | null): void {
    this.formError.hidden = !message;
    this.formError.textContent = message ?? "";
  }

  private buildFrame(realm: Realm): RpcFrame {
    const agent = this.agentSelect.value;
    const action = this.actionSelect.value;
    if (!agent || !action) throw new Error("Choose an agent and an action.");
    const data = this.inputs.data();
    const facts = parseFacts(this.facts.value);
    if (!facts.ok) throw new Error(`Facts: ${facts.error}`);
    const identity = splitList(this.identity.value);
    const classes = splitList(this.classes.value);
    const frame: RpcFrame = {
      type: "rpc",
      id: this.ctx.socket.nextId(),
      ...(realm.kind === "federation" ? { federation: realm.name } : { collective: realm.name }),
      agent,
      action,
      data,
    };
    if (identity.length || classes.length || facts.facts.length) {
      frame.filter = { fact: facts.facts, cf_class: classes, identity, agent: [] };
    }
    const targets = splitList(this.targets.value);
    if (targets.length) frame.targets = targets;
    const seconds = Number(this.timeout.value);
    if (!Number.isFinite(seconds) || seconds < 0.1 || seconds > 60) {
      throw new Error("Timeout: between 0.1 and 60 seconds.");
    }
    frame.timeout_ms = Math.round(seconds * 1000);
    if (this.limit.value.trim()) {
      const limit = Number(this.limit.value);
      if (!Number.isInteger(limit) || limit < 1) throw new Error("Limit: a whole number of at least 1.");
      frame.limit = limit;
    }
    return frame;
  }

  private async run(): Promise<void> {
    if (this.running) return;
    const realm = this.ctx.realm();
    if (!realm) {
      this.showFormError("Choose a realm first.");
      return;
    }
    let frame: RpcFrame;
    try {
      frame = this.buildFrame(realm);
    } catch (err) {
      this.showFormError((err as Error).message);
      return;
    }
    this.showFormError(null);
    this.showError(null);
    const label = `${frame.agent} ${frame.action} on ${realm.kind === "federation" ? "federation " : ""}${realm.name}`;
    this.filterNotice.hidden = true;
    this.running = {
      id: frame.id,
      started: performance.now(),
      label,
      cancelled: false,
      selection: describeSelection(frame, realm),
    };
    this.replies.reset(this.outputs, "Waiting for replies…");
    this.replies.setBusy(true);
    this.submit.disabled = true;
    this.cancel.disabled = false;
    this.startRunning();
    this.tick = window.setInterval(() => this.renderRunning(), 200);
    const id = frame.id;
    try {
      await this.ctx.socket.request(frame, {
        reply: (f) => this.onReply(id, f),
        done: (f) => this.onDone(id, f),
        error: (f) => this.onError(id, f),
      });
    } catch (err) {
      this.onError(id, { type: "error", id, code: "disconnected", message: (err as Error).message });
    }
  }

  private doCancel(): void {
    if (!this.running) return;
    this.running.cancelled = true;
    this.cancel.disabled = true;
    this.ctx.socket.cancel(this.running.id);
  }

  private onReply(id: string, frame: ReplyFrame): void {
    if (this.running?.id !== id) return;
    this.replies.add(frame);
  }

  private finish(): number {
    const elapsed = this.running ? performance.now() - this.running.started : 0;
    this.running = null;
    if (this.tick !== null) window.clearInterval(this.tick);
    this.tick = null;
    this.submit.disabled = false;
    this.cancel.disabled = true;
    this.replies.flush();
    this.replies.setBusy(false);
    return elapsed;
  }

  private onDone(id: string, frame: DoneFrame): void {
    if (this.running?.id !== id) return;
    const { label, selection } = this.running;
    const elapsed = this.finish();
    const s = this.summary;
    s.dataset.state = "done";
    const missing = frame.missing ?? [];
    const refused = Object.entries(frame.refused ?? {});
    replace(
      s,
      h("span", { class: `pill ${frame.failed > 0 ? "warn" : "good"}` }, "done"),
      h("strong", null, label),
      h("span", { class: "stat" }, plural(frame.responses, "response")),
      h("span", { class: "stat good-text" }, `ok ${frame.ok}`),
      h("span", { class: `stat ${frame.failed ? "bad-text" : ""}` }, `failed ${frame.failed}`),
      h(
        "span",
        {
          class: "stat",
          title: `fedgate's elapsed_ms; the page waited ${formatMs(elapsed)} in all (a broadcast ends 1 s after its last reply)`,
        },
        `elapsed ${formatMs(frame.elapsed_ms ?? elapsed)}`,
      ),
      frame.ended === "timeout" || frame.ended === "closed"
        ? h(
            "span",
            {
              class: "stat bad-text",
              "data-testid": "rpc-ended",
              title:
                frame.ended === "timeout"
                  ? "the timeout passed before every reply fedgate waited for came"
                  : "fedgate lost its connection to the collective while collecting",
            },
            frame.ended === "timeout" ? "timed out" : "connection lost",
          )
        : null,
      selectionLine(selection),
      missing.length
        ? h(
            "div",
            { class: "summary-line bad-text", "data-testid": "rpc-missing" },
            `missing ${missing.length}: `,
            h("span", { class: "mono" }, listSome(missing, 25)),
          )
        : null,
      refused.length
        ? h(
            "div",
            { class: "summary-line", "data-testid": "rpc-refused" },
            "refused by member: ",
            refused.map(([member, why]) =>
              h("span", { class: "refused" }, h("strong", null, member), ` — ${why}`),
            ),
          )
        : null,
      frame.requestids?.length
        ? h(
            "div",
            { class: "summary-line muted small" },
            "request ids: ",
            h("span", { class: "mono" }, frame.requestids.join(", ")),
          )
        : null,
    );
    if (this.replies.count === 0) this.replies.setEmpty("No node answered.");
    this.announcer.textContent =
      `${label} done: ${plural(frame.responses, "response")}, ${frame.ok} ok, ${frame.failed} failed` +
      (missing.length ? `, ${missing.length} missing` : "");
  }

  private onError(id: string, frame: ErrorFrame): void {
    if (this.running?.id !== id) return;
    const { label, cancelled } = this.running;
    const elapsed = this.finish();
    const s = this.summary;
    if (frame.code === "cancelled" && cancelled) {
      s.dataset.state = "cancelled";
      replace(
        s,
        h("span", { class: "pill warn" }, "cancelled"),
        h("strong", null, label),
        h("span", { class: "stat" }, `${plural(this.replies.count, "response")} before cancelling`),
        h("span", { class: "stat" }, formatMs(elapsed)),
      );
    } else {
      s.dataset.state = "error";
      replace(
        s,
        h("span", { class: "pill bad" }, "error"),
        h("strong", null, label),
        h("span", { class: "stat bad-text" }, frame.code),
        this.replies.count ? h("span", { class: "stat" }, plural(this.replies.count, "response")) : null,
      );
      this.showError(frame);
    }
    if (this.replies.count === 0) this.replies.setEmpty("No replies.");
    if (frame.code === "cancelled" && cancelled) this.announcer.textContent = `${label} cancelled`;
    if (frame.code === "expired") this.ctx.unauthorized(new ApiError(401, "token", frame.message));
  }

  /** An error that arrived outside a request (an `error` frame without id). */
  showStray(frame: ErrorFrame): void {
    this.showError(frame);
  }

  private showError(frame: ErrorFrame | null): void {
    const panel = this.errorPanel;
    if (!frame) {
      panel.hidden = true;
      replace(panel);
      return;
    }
    const rule = frame.code === "denied" ? extractRule(frame.message) : null;
    const title = frame.code === "denied" ? "Request denied by policy" : "Request failed";
    replace(
      panel,
      h(
        "div",
        { class: "error-head" },
        h("h2", null, title),
        h("code", { class: "code", "data-testid": "error-code" }, frame.code),
        h(
          "button",
          {
            type: "button",
            class: "ghost small",
            "aria-label": "Dismiss the error",
            onclick: () => this.showError(null),
          },
          "Dismiss",
        ),
      ),
      rule
        ? h(
            "div",
            { class: "rule" },
            h("span", { class: "rule-label" }, "Policy rule"),
            h("code", { "data-testid": "error-rule" }, rule),
          )
        : null,
      h("p", { class: "error-message", "data-testid": "error-message" }, highlight(frame.message, rule)),
      ERROR_HINTS[frame.code] ? h("p", { class: "muted small" }, ERROR_HINTS[frame.code]) : null,
    );
    panel.dataset.code = frame.code;
    panel.hidden = false;
  }

  /** Shows the running summary; `renderRunning` then only changes its numbers. */
  private startRunning(): void {
    if (!this.running) return;
    const s = this.summary;
    s.dataset.state = "running";
    const live = this.live;
    replace(
      s,
      h("span", { class: "pill run" }, h("span", { class: "spinner", "aria-hidden": "true" }), "running"),
      h("strong", null, this.running.label),
      h("span", { class: "stat" }, live.responses, " so far"),
      h("span", { class: "stat good-text" }, live.ok),
      live.failedStat,
      h("span", { class: "stat" }, live.time),
      selectionLine(this.running.selection),
    );
    this.renderRunning();
  }

  /** Updates the running summary's numbers (once per frame while replies stream, and every 200 ms). */
  private renderRunning(): void {
    if (!this.running) return;
    const live = this.live;
    const r = this.replies;
    setText(live.responses, plural(r.count, "response"));
    setText(live.ok, `ok ${r.ok}`);
    setText(live.failed, `failed ${r.failed}`);
    const cls = r.failed ? "stat bad-text" : "stat";
    if (live.failedStat.className !== cls) live.failedStat.className = cls;
    setText(live.time, formatMs(performance.now() - this.running.started));
  }
}

function setText(node: Text, text: string): void {
  if (node.data !== text) node.data = text;
}

function listSome(items: string[], n: number): string {
  return items.length <= n ? items.join(", ") : `${items.slice(0, n).join(", ")} … and ${items.length - n} more`;
}

/** The message with every mention of the rule marked. */
function highlight(message: string, rule: string | null): Node {
  const frag = document.createDocumentFragment();
  if (!rule || !message.includes(rule)) {
    frag.append(message);
    return frag;
  }
  message.split(rule).forEach((part, i) => {
    if (i > 0) frag.append(h("mark", null, rule));
    frag.append(part);
  });
  return frag;
}

/** The request's node selection in words: its filters and targets, or every node of the realm. */
function describeSelection(frame: RpcFrame, realm: Realm): string {
  const parts: string[] = [];
  const f = frame.filter;
  if (f?.identity.length) parts.push(`identity ${f.identity.join(", ")}`);
  for (const c of f?.fact ?? []) parts.push(`fact ${c.fact}${c.operator}${c.value}`);
  if (f?.cf_class.length) parts.push(`class ${f.cf_class.join(", ")}`);
  if (frame.targets?.length) parts.push(`targets ${listSome(frame.targets, 5)}`);
  if (frame.limit) parts.push(`at most ${frame.limit}`);
  return parts.length ? parts.join(" · ") : `every node of ${realm.name}`;
}

function selectionLine(selection: string): HTMLElement {
  return h(
    "div",
    { class: "summary-line small", "data-testid": "rpc-filters" },
    "selected: ",
    h("span", { class: "mono" }, selection),
  );
}
