// A tiny DOM helper: h("button", {class: "primary", "data-testid": "x"}, "Label").

export type Child = Node | string | number | null | undefined | false;
export type AttrValue = string | number | boolean | null | undefined;
export type Attrs = Record<string, AttrValue | ((event: Event) => void)>;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs?: Attrs | null,
  ...children: (Child | Child[])[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [key, value] of Object.entries(attrs)) {
      if (typeof value === "function") {
        el.addEventListener(key.replace(/^on/, "").toLowerCase(), value);
      } else if (value === true) {
        el.setAttribute(key, "");
      } else if (value !== false && value !== null && value !== undefined) {
        el.setAttribute(key, String(value));
      }
    }
  }
  append(el, ...children);
  return el;
}

export function append(parent: Node, ...children: (Child | Child[])[]): void {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    parent.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces an element's children. */
export function replace(parent: Node, ...children: (Child | Child[])[]): void {
  while (parent.firstChild) parent.removeChild(parent.firstChild);
  append(parent, ...children);
}

/** A `<label>` + control pair in a `.field` wrapper. */
export function field(
  label: string | Node,
  control: HTMLElement,
  hint?: string | Node | null,
  extraClass = "",
): HTMLDivElement {
  if (!control.id) control.id = uid("f");
  const hintEl = hint ? h("div", { class: "hint", id: `${control.id}-hint` }, hint) : null;
  if (hintEl) control.setAttribute("aria-describedby", hintEl.id);
  return h(
    "div",
    { class: `field ${extraClass}`.trim() },
    h("label", { for: control.id }, label),
    control,
    hintEl,
  );
}

let counter = 0;
export function uid(prefix: string): string {
  counter += 1;
  return `${prefix}-${counter}`;
}

/** "3 s ago", "2 min ago" for a UNIX time. */
export function ago(unix: number, now = Date.now() / 1000): string {
  const s = Math.max(0, Math.round(now - unix));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return new Date(unix * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

export function formatMs(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
}

export function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}
