// fedgate console: log in, pick a realm, make RPC calls over the edge's WebSocket, read the
// audit trail and watch the instances.

import "./style.css";
import { api, ApiError, type Realms } from "./api";
import { AuditView } from "./audit";
import { field, h, replace } from "./dom";
import { InstancesView } from "./instances";
import { RpcView, type Realm } from "./rpc";
import { CLOSE_TOKEN_EXPIRED, EdgeSocket, type SocketState } from "./socket";

const TOKEN_KEY = "fedgate.token";
const REALM_KEY = "fedgate.realm";

const app = document.getElementById("app") as HTMLElement;

let current: Session | null = null;

type TabName = "rpc" | "audit" | "instances";

interface Tab {
  name: TabName;
  label: string;
  button: HTMLButtonElement;
  panel: HTMLElement;
  show?(): void;
  hide?(): void;
}

class Session {
  readonly socket: EdgeSocket;
  private readonly realmSelect: HTMLSelectElement;
  private readonly conn: HTMLElement;
  private readonly rpc: RpcView;
  private readonly audit: AuditView | null;
  private readonly instances: InstancesView | null;
  private readonly tabs: Tab[] = [];
  private ended = false;

  constructor(
    readonly token: string,
    readonly realms: Realms,
  ) {
    this.socket = new EdgeSocket(token);
    const unauthorized = (err: ApiError) => this.expire(err.message);

    this.realmSelect = h("select", { "data-testid": "realm-select", name: "realm", class: "realm-select" });
    const collectives = realms.collectives ?? [];
    const federations = realms.federations ?? [];
    if (collectives.length) {
      this.realmSelect.append(
        h(
          "optgroup",
          { label: "Collectives" },
          collectives.map((c) => h("option", { value: `collective:${c}` }, c)),
        ),
      );
    }
    if (federations.length) {
      this.realmSelect.append(
        h(
          "optgroup",
          { label: "Federations" },
          federations.map((f) => h("option", { value: `federation:${f}` }, `${f} (federation)`)),
        ),
      );
    }
    if (!collectives.length && !federations.length) {
      this.realmSelect.append(h("option", { value: "" }, "no realms"));
      this.realmSelect.disabled = true;
    }
    const saved = sessionStorage.getItem(REALM_KEY);
    if (saved && [...this.realmSelect.options].some((o) => o.value === saved)) this.realmSelect.value = saved;
    let shown = this.realmSelect.value;
    this.realmSelect.addEventListener("change", () => {
      const from = this.realmOf(shown);
      shown = this.realmSelect.value;
      sessionStorage.setItem(REALM_KEY, this.realmSelect.value);
      this.updateRealmKind();
      this.rpc.realmChanged(from);
    });

    this.conn = h("span", { class: "conn", "data-testid": "conn-status", "data-state": "closed" }, "offline");
    this.socket.onState = (state, detail) => this.showConn(state, detail);
    this.socket.onClose = (code, reason) => {
      if (code === CLOSE_TOKEN_EXPIRED) this.expire(reason || "the token expired");
    };

    this.rpc = new RpcView({
      token,
      socket: this.socket,
      realm: () => this.realm(),
      unauthorized,
    });
    this.socket.onStrayError = (frame) => this.rpc.showStray(frame);
    this.audit = realms.audit ? new AuditView({ token, unauthorized }) : null;
    this.instances = realms.instances ? new InstancesView({ token, unauthorized }) : null;

    this.addTab("rpc", "RPC", this.rpc.root);
    if (this.audit) {
      const view = this.audit;
      this.addTab("audit", "Audit", view.root, () => view.show(), () => view.hide());
    }
    if (this.instances) {
      const view = this.instances;
      this.addTab("instances", "Instances", view.root, () => view.show(), () => view.hide());
    }

    const logout = h(
      "button",
      { type: "button", class: "ghost on-dark", "data-testid": "logout", onclick: () => logOut() },
      "Log out",
    );
    const realmId = "realm-select";
    this.realmSelect.id = realmId;
    const tablist = h(
      "div",
      { class: "tabs", role: "tablist", "aria-label": "Views" },
      this.tabs.map((t) => t.button),
    );
    tablist.addEventListener("keydown", (e) => this.tabKeys(e));

    replace(
      app,
      h(
        "header",
        { class: "topbar" },
        h("div", { class: "brand" }, h("span", { class: "logo", "aria-hidden": "true" }, "F"), "fedgate", h("span", { class: "brand-sub" }, "console")),
        h(
          "div",
          { class: "realm" },
          h("label", { for: realmId }, "Realm"),
          this.realmSelect,
          h("span", { class: "realm-kind", "data-testid": "realm-kind" }),
        ),
        h("div", { class: "spacer" }),
        h("span", { class: "caller mono", "data-testid": "caller", title: "your caller id" }, realms.caller),
        this.conn,
        logout,
      ),
      h("nav", { class: "tabbar" }, tablist),
      h("main", { class: "content" }, this.tabs.map((t) => t.panel)),
    );
    this.updateRealmKind();
    this.select("rpc", false);
    void this.rpc.load();
    this.socket.connect().catch(() => {
      /* shown by the connection state */
    });
  }

  private addTab(name: TabName, label: string, content: HTMLElement, show?: () => void, hide?: () => void): void {
    const button = h(
      "button",
      {
        type: "button",
        role: "tab",
        id: `tab-${name}`,
        "aria-controls": `panel-${name}`,
        "aria-selected": "false",
        tabindex: "-1",
        "data-testid": `tab-${name}`,
        class: "tab",
        onclick: () => this.select(name, true),
      },
      label,
    );
    const panel = h(
      "section",
      { id: `panel-${name}`, role: "tabpanel", "aria-labelledby": `tab-${name}`, class: "tabpanel", hidden: true },
      content,
    );
    this.tabs.push({ name, label, button, panel, show, hide });
  }

  private select(name: TabName, focus: boolean): void {
    for (const tab of this.tabs) {
      const on = tab.name === name;
      tab.button.setAttribute("aria-selected", String(on));
      tab.button.tabIndex = on ? 0 : -1;
      tab.panel.hidden = !on;
      if (on) {
        tab.show?.();
        if (focus) tab.button.focus();
      } else {
        tab.hide?.();
      }
    }
  }

  private tabKeys(e: KeyboardEvent): void {
    const i = this.tabs.findIndex((t) => t.button === document.activeElement);
    if (i < 0) return;
    let j = i;
    if (e.key === "ArrowRight") j = (i + 1) % this.tabs.length;
    else if (e.key === "ArrowLeft") j = (i - 1 + this.tabs.length) % this.tabs.length;
    else if (e.key === "Home") j = 0;
    else if (e.key === "End") j = this.tabs.length - 1;
    else return;
    e.preventDefault();
    this.select(this.tabs[j].name, true);
  }

  realm(): Realm | null {
    return this.realmOf(this.realmSelect.value);
  }

  /** The realm of a `kind:name` option value. */
  private realmOf(value: string): Realm | null {
    const at = value.indexOf(":");
    if (at < 0) return null;
    const kind = value.slice(0, at);
    return { kind: kind === "federation" ? "federation" : "collective", name: value.slice(at + 1) };
  }

  private updateRealmKind(): void {
    const realm = this.realm();
    const badge = app.querySelector<HTMLElement>("[data-testid=realm-kind]");
    if (!badge) return;
    badge.textContent = realm?.kind === "federation" ? "federation" : realm ? "collective" : "";
    badge.className = `realm-kind ${realm?.kind ?? ""}`;
  }

  private showConn(state: SocketState, detail?: string): void {
    this.conn.dataset.state = state;
    this.conn.textContent = state === "open" ? "connected" : state === "connecting" ? "connecting…" : "offline";
    this.conn.title = detail ? `WebSocket: ${detail}` : `WebSocket: ${state}`;
  }

  /** The session is over: the token was refused or expired. */
  expire(why: string): void {
    if (this.ended) return;
    this.end();
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin({ text: `Your session ended (${why}). Please sign in again.`, kind: "warn" });
  }

  end(): void {
    if (this.ended) return;
    this.ended = true;
    for (const tab of this.tabs) tab.hide?.();
    this.socket.stop();
    if (current === this) current = null;
  }
}

function logOut(): void {
  current?.end();
  sessionStorage.removeItem(TOKEN_KEY);
  showLogin({ text: "You are logged out.", kind: "info" });
}

interface Notice {
  text: string;
  kind: "info" | "warn" | "error";
}

function showLogin(notice?: Notice): void {
  const user = h("input", {
    type: "text",
    name: "username",
    autocomplete: "username",
    required: true,
    "data-testid": "login-user",
    spellcheck: "false",
    autocapitalize: "none",
  });
  const password = h("input", {
    type: "password",
    name: "password",
    autocomplete: "current-password",
    required: true,
    "data-testid": "login-password",
  });
  const loginButton = h("button", { type: "submit", class: "primary wide", "data-testid": "login-submit" }, "Sign in");
  const token = h("input", {
    type: "text",
    name: "token",
    autocomplete: "off",
    required: true,
    spellcheck: "false",
    "data-testid": "token-input",
    placeholder: "eyJ…",
  });
  const tokenButton = h("button", { type: "submit", class: "wide", "data-testid": "token-submit" }, "Use token");
  const message = h("p", {
    class: `notice ${notice?.kind ?? ""}`,
    role: notice?.kind === "error" ? "alert" : "status",
    "data-testid": "login-message",
    hidden: !notice,
  }, notice?.text ?? "");

  const say = (text: string, kind: Notice["kind"]) => {
    message.hidden = false;
    message.className = `notice ${kind}`;
    message.setAttribute("role", kind === "error" ? "alert" : "status");
    message.textContent = text;
  };
  const busy = (on: boolean) => {
    for (const b of [loginButton, tokenButton]) b.disabled = on;
    loginButton.textContent = on ? "Signing in…" : "Sign in";
  };

  const loginForm = h(
    "form",
    { class: "login-form", "aria-label": "Sign in with a password" },
    field("User", user),
    field("Password", password),
    loginButton,
  );
  loginForm.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(true);
    api
      .login(user.value.trim(), password.value)
      .then((answer) => start(answer.token))
      .catch((err: unknown) => {
        busy(false);
        say(loginError(err), "error");
        password.select();
      });
  });

  const tokenForm = h(
    "form",
    { class: "login-form", "aria-label": "Sign in with a token" },
    field("Token", token, "from fedgate token issue"),
    tokenButton,
  );
  tokenForm.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(true);
    start(token.value.trim()).catch((err: unknown) => {
      busy(false);
      say(loginError(err), "error");
    });
  });

  replace(
    app,
    h(
      "main",
      { class: "login-page" },
      h(
        "div",
        { class: "login-card panel" },
        h("div", { class: "brand big" }, h("span", { class: "logo", "aria-hidden": "true" }, "F"), "fedgate", h("span", { class: "brand-sub" }, "console")),
        h("p", { class: "muted" }, "Choria RPC through fedgate's edge: every request is mapped, authorized and audited."),
        message,
        h("h1", { class: "login-title" }, "Sign in"),
        loginForm,
        h("div", { class: "divider", role: "separator" }, h("span", null, "or paste a token")),
        tokenForm,
      ),
    ),
  );
  user.focus();
}

function loginError(err: unknown): string {
  if (err instanceof ApiError) {
    if (err.status === 401) return err.reason === "token" ? `The token was refused: ${err.message}` : "Unknown user or wrong password.";
    if (err.reason === "rate_limited") return `Too many attempts: ${err.message}`;
    return `${err.message} (${err.status || err.reason})`;
  }
  return String((err as Error)?.message ?? err);
}

/** Checks the token by reading the realms, then opens the console. */
async function start(token: string): Promise<void> {
  const realms = await api.realms(token);
  sessionStorage.setItem(TOKEN_KEY, token);
  current?.end();
  current = new Session(token, realms);
}

function boot(): void {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) {
    showLogin();
    return;
  }
  replace(app, h("p", { class: "loading muted" }, "Loading…"));
  start(token).catch((err: unknown) => {
    sessionStorage.removeItem(TOKEN_KEY);
    const expired = err instanceof ApiError && err.status === 401;
    showLogin(
      expired
        ? { text: "Your session ended. Please sign in again.", kind: "warn" }
        : { text: loginError(err), kind: "error" },
    );
  });
}

boot();
