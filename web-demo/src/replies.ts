// The replies table of the RPC tab. A federation-wide request can bring tens of thousands of
// replies, so the table keeps every reply as a plain record, sorts those records, and puts in
// the DOM only the rows around the visible part of the scroll area (virtual scrolling: a spacer
// row above and one below stand in for the rest, with a fixed row height). All DOM work happens
// at most once per animation frame. Small results (up to FULL_RENDER_MAX rows) are rendered
// whole.

import { h } from "./dom";
import type { ReplyFrame } from "./socket";

export type SortKey = "order" | "sender" | "status" | "data";

interface Row {
  /** Arrival order, from 1. */
  order: number;
  sender: string;
  statuscode: number;
  statusmsg: string;
  data: unknown;
  /** The data as one compact line; computed when first needed (rendering, sorting by data). */
  text: string | null;
}

export type Outputs = Record<string, { display_as?: string }>;

/** Up to this many replies every row is in the DOM; beyond, only the visible window. */
const FULL_RENDER_MAX = 500;
/** Rows rendered above and below the visible ones. */
const OVERSCAN = 24;
/** The row height the stylesheet sets (`.replies tr.reply > td`); measured again once rendered. */
const DEFAULT_ROW_HEIGHT = 31;
const MAX_VALUE_CHARS = 100;
const MAX_COMPACT_CHARS = 120;

const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

export class RepliesTable {
  /** The scroll area holding the table. */
  readonly root: HTMLElement;
  private readonly table: HTMLTableElement;
  private readonly thead: HTMLTableSectionElement;
  private readonly tbody: HTMLTableSectionElement;
  private readonly topSpacer: HTMLTableRowElement;
  private readonly bottomSpacer: HTMLTableRowElement;
  private readonly heads = new Map<SortKey, HTMLTableCellElement>();
  private readonly empty: HTMLElement;

  /** Every reply, in arrival order. */
  private rows: Row[] = [];
  /** Every reply in display order (the same array as `rows` when sorted by # ascending). */
  private view: Row[] = [];
  /** Replies that arrived since the last frame, not yet in `view`. */
  private pending: Row[] = [];
  private okCount = 0;
  private failedCount = 0;
  private outputs: Outputs = {};
  private sort: { key: SortKey; dir: 1 | -1 } = { key: "order", dir: 1 };
  private cmp: (a: Row, b: Row) => number = byOrder;

  /** The rows in the DOM, in display order, and their elements. */
  private shown: Row[] = [];
  private live = new Map<Row, HTMLTableRowElement>();
  /** Rows whose details are open, with the height they add to a plain row. */
  private opened = new Map<Row, number>();

  private rowHeight = DEFAULT_ROW_HEIGHT;
  private headHeight = 0;
  private measured = false;
  private frame: number | null = null;

  /** Called after each update of the table (at most once per frame). */
  onUpdate: () => void = () => {};

  constructor() {
    this.thead = h("thead");
    const headRow = h("tr", { "aria-rowindex": 1 });
    const columns: [SortKey, string, string][] = [
      ["order", "#", "num"],
      ["sender", "Sender", "sender"],
      ["status", "Status", "status"],
      ["data", "Data", "data"],
    ];
    for (const [key, label, cls] of columns) {
      const th = h(
        "th",
        { scope: "col", class: cls, "aria-sort": key === "order" ? "ascending" : "none" },
        h(
          "button",
          { type: "button", class: "sort", "data-testid": `sort-${key}`, onclick: () => this.sortBy(key) },
          label,
          h("span", { class: "arrow", "aria-hidden": "true" }),
        ),
      );
      this.heads.set(key, th);
      headRow.append(th);
    }
    this.thead.append(headRow);
    this.topSpacer = spacer();
    this.bottomSpacer = spacer();
    this.tbody = h("tbody", null, this.topSpacer, this.bottomSpacer);
    this.table = h(
      "table",
      {
        class: "grid replies",
        "data-testid": "replies-table",
        "aria-label": "Replies",
        "aria-rowcount": 1,
      },
      this.thead,
      this.tbody,
    );
    this.empty = h("div", { class: "empty" }, "No replies yet.");
    this.root = h(
      "div",
      { class: "table-wrap replies-wrap", tabindex: 0, role: "region", "aria-label": "Replies, scrollable" },
      this.table,
      this.empty,
    );
    this.updateSortArrows();
    this.root.addEventListener("scroll", () => this.schedule(), { passive: true });
    new ResizeObserver(() => {
      this.measured = false;
      this.schedule();
    }).observe(this.root);
  }

  get count(): number {
    return this.rows.length;
  }

  get ok(): number {
    return this.okCount;
  }

  get failed(): number {
    return this.failedCount;
  }

  /** Forgets every reply; `outputs` are the action's DDL outputs (for their descriptions). */
  reset(outputs: Outputs, emptyText: string): void {
    this.cancelFrame();
    this.rows = [];
    this.view = this.sort.key === "order" && this.sort.dir === 1 ? this.rows : [];
    this.pending = [];
    this.okCount = 0;
    this.failedCount = 0;
    this.outputs = outputs;
    this.opened.clear();
    for (const tr of this.live.values()) tr.remove();
    this.live.clear();
    this.shown = [];
    this.setSpacer(this.topSpacer, 0);
    this.setSpacer(this.bottomSpacer, 0);
    this.table.setAttribute("aria-rowcount", "1");
    this.root.scrollTop = 0;
    this.setEmpty(emptyText);
  }

  /** Shows `text` in place of the table while it has no rows. */
  setEmpty(text: string): void {
    this.empty.textContent = text;
    this.empty.hidden = this.rows.length > 0;
  }

  setBusy(busy: boolean): void {
    if (busy) this.table.setAttribute("aria-busy", "true");
    else this.table.removeAttribute("aria-busy");
  }

  add(frame: ReplyFrame): void {
    const row: Row = {
      order: this.rows.length + 1,
      sender: String(frame.sender),
      statuscode: frame.statuscode,
      statusmsg: frame.statusmsg ?? "",
      data: frame.data,
      text: null,
    };
    this.rows.push(row);
    if (this.view !== this.rows) this.pending.push(row);
    if (row.statuscode === 0) this.okCount += 1;
    else this.failedCount += 1;
    this.schedule();
  }

  /** Brings the table up to date now (at the end of a request). */
  flush(): void {
    this.cancelFrame();
    this.update();
  }

  private schedule(): void {
    if (this.frame === null) this.frame = requestAnimationFrame(() => this.update());
  }

  private cancelFrame(): void {
    if (this.frame !== null) cancelAnimationFrame(this.frame);
    this.frame = null;
  }

  private update(): void {
    this.frame = null;
    this.merge();
    this.render();
    this.onUpdate();
  }

  /** Puts the replies that arrived since the last frame into the display order. */
  private merge(): void {
    const batch = this.pending;
    if (batch.length === 0) return;
    this.pending = [];
    const view = this.view;
    const cmp = this.cmp;
    if (this.sort.key === "data") for (const r of batch) textOf(r);
    if (batch.length <= 8) {
      for (const r of batch) view.splice(this.lowerBound(r), 0, r);
      return;
    }
    // Sort the batch, then merge the two sorted lists.
    batch.sort(cmp);
    const merged: Row[] = new Array(view.length + batch.length);
    let i = 0;
    let j = 0;
    let k = 0;
    while (i < view.length && j < batch.length) merged[k++] = cmp(view[i], batch[j]) <= 0 ? view[i++] : batch[j++];
    while (i < view.length) merged[k++] = view[i++];
    while (j < batch.length) merged[k++] = batch[j++];
    this.view = merged;
  }

  /** Where `row` goes in the display order (which is total: ties go by arrival). */
  private lowerBound(row: Row): number {
    let lo = 0;
    let hi = this.view.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.cmp(this.view[mid], row) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** The display index of a row that is in the display order. */
  private indexOf(row: Row): number {
    if (this.view === this.rows) return row.order - 1;
    const at = this.lowerBound(row);
    return this.view[at] === row ? at : -1;
  }

  /** The open rows' display indexes and extra heights, by index. */
  private marks(): { index: number; extra: number }[] {
    const marks: { index: number; extra: number }[] = [];
    for (const [row, extra] of this.opened) {
      const index = this.indexOf(row);
      if (index >= 0 && extra > 0) marks.push({ index, extra });
    }
    return marks.sort((a, b) => a.index - b.index);
  }

  /** The top of row `i` in the tbody. */
  private offsetOf(i: number, marks: { index: number; extra: number }[]): number {
    let y = i * this.rowHeight;
    for (const m of marks) {
      if (m.index >= i) break;
      y += m.extra;
    }
    return y;
  }

  /** The row at height `y` in the tbody. */
  private indexAt(y: number, marks: { index: number; extra: number }[]): number {
    const H = this.rowHeight;
    let extra = 0;
    for (const m of marks) {
      const top = m.index * H + extra;
      if (y < top) break;
      if (y < top + H + m.extra) return m.index;
      extra += m.extra;
    }
    return Math.floor((y - extra) / H);
  }

  private render(): void {
    const n = this.view.length;
    this.empty.hidden = n > 0;
    setAttr(this.table, "aria-rowcount", String(n + 1));
    let marks = this.marks();
    let start = 0;
    let end = n;
    if (n > FULL_RENDER_MAX) {
      const top = this.root.scrollTop - this.headHeight;
      const bottom = top + this.root.clientHeight;
      start = Math.max(0, this.indexAt(Math.max(0, top), marks) - OVERSCAN);
      end = Math.min(n, this.indexAt(Math.max(0, bottom), marks) + 1 + OVERSCAN);
    }
    this.place(start, end);
    if (n > FULL_RENDER_MAX && (!this.measured || this.opened.size > 0) && this.measure()) {
      // Heights changed: the spacers follow now, the window on the next frame.
      marks = this.marks();
      this.schedule();
    }
    this.setSpacer(this.topSpacer, n > FULL_RENDER_MAX ? this.offsetOf(start, marks) : 0);
    this.setSpacer(
      this.bottomSpacer,
      n > FULL_RENDER_MAX ? this.offsetOf(n, marks) - this.offsetOf(end, marks) : 0,
    );
  }

  /** Makes rows `start` to `end` of the display order the rows in the DOM. */
  private place(start: number, end: number): void {
    const want = this.view.slice(start, end);
    let same = want.length === this.shown.length;
    for (let i = 0; same && i < want.length; i++) same = want[i] === this.shown[i];
    if (!same) {
      const next = new Map<Row, HTMLTableRowElement>();
      for (const row of want) next.set(row, this.live.get(row) ?? this.renderRow(row));
      for (const [row, tr] of this.live) if (!next.has(row)) tr.remove();
      // Walk the remaining rows, moving only those out of place (a focused row stays put).
      let cursor: ChildNode | null = this.topSpacer.nextSibling;
      for (const row of want) {
        const tr = next.get(row) as HTMLTableRowElement;
        if (tr === cursor) cursor = cursor.nextSibling;
        else this.tbody.insertBefore(tr, cursor);
      }
      this.live = next;
      this.shown = want;
    }
    for (let i = 0; i < want.length; i++) {
      const tr = this.live.get(want[i]) as HTMLTableRowElement;
      setAttr(tr, "aria-rowindex", String(start + i + 2));
    }
  }

  /** Measures the row height and the open rows; true when a height changed. */
  private measure(): boolean {
    let changed = false;
    if (!this.measured) {
      const plain = this.shown.find((r) => !this.opened.has(r));
      const tr = plain ? this.live.get(plain) : undefined;
      const height = tr?.getBoundingClientRect().height ?? 0;
      if (height > 0) {
        changed = Math.abs(height - this.rowHeight) > 0.5;
        this.rowHeight = height;
        this.headHeight = this.thead.getBoundingClientRect().height;
        this.measured = true;
      }
    }
    for (const [row, extra] of this.opened) {
      const tr = this.live.get(row);
      if (!tr) continue;
      const now = Math.max(0, tr.getBoundingClientRect().height - this.rowHeight);
      if (Math.abs(now - extra) > 0.5) {
        this.opened.set(row, now);
        changed = true;
      }
    }
    return changed;
  }

  private setSpacer(tr: HTMLTableRowElement, height: number): void {
    const px = `${Math.max(0, Math.round(height))}px`;
    const td = tr.firstElementChild as HTMLElement;
    if (td.style.height !== px) td.style.height = px;
    const hidden = px === "0px";
    if (tr.hidden !== hidden) tr.hidden = hidden;
  }

  private sortBy(key: SortKey): void {
    this.sort = this.sort.key === key ? { key, dir: this.sort.dir === 1 ? -1 : 1 } : { key, dir: 1 };
    this.updateSortArrows();
    this.pending = [];
    if (this.sort.key === "order" && this.sort.dir === 1) {
      this.cmp = byOrder;
      this.view = this.rows;
    } else {
      if (key === "data") for (const r of this.rows) textOf(r);
      this.cmp = comparator(this.sort.key, this.sort.dir);
      this.view = this.rows.slice().sort(this.cmp);
    }
    this.cancelFrame();
    this.update();
  }

  private updateSortArrows(): void {
    for (const [key, th] of this.heads) {
      const active = this.sort.key === key;
      th.setAttribute("aria-sort", active ? (this.sort.dir === 1 ? "ascending" : "descending") : "none");
      const arrow = th.querySelector(".arrow");
      if (arrow) arrow.textContent = active ? (this.sort.dir === 1 ? "▲" : "▼") : "";
    }
  }

  private renderRow(row: Row): HTMLTableRowElement {
    const ok = row.statuscode === 0;
    return h(
      "tr",
      { "data-testid": "reply-row", "data-sender": row.sender, class: ok ? "reply" : "reply failed" },
      h("td", { class: "num muted" }, row.order),
      h("td", { class: "sender mono" }, row.sender),
      h(
        "td",
        { class: "status" },
        h("span", { class: `code ${ok ? "good" : "bad"}` }, row.statuscode),
        " ",
        row.statusmsg,
      ),
      h("td", { class: "data" }, this.renderData(row)),
    );
  }

  private renderData(row: Row): Node {
    const data = row.data;
    const line = h("span", { class: "kv-line" });
    if (data && typeof data === "object" && !Array.isArray(data)) {
      let first = true;
      for (const [k, v] of Object.entries(data as Record<string, unknown>)) {
        if (!first) line.append(h("span", { class: "sep", "aria-hidden": "true" }, " · "));
        first = false;
        const title = this.outputs[k]?.display_as;
        line.append(h("span", { class: "k", title: title ?? null }, `${k}:`), " ", h("span", { class: "v" }, short(v)));
      }
      if (first) line.append(h("span", { class: "muted" }, "—"));
    } else {
      line.append(h("span", { class: "v" }, data === undefined ? "—" : short(data)));
    }
    const nested =
      data !== null &&
      typeof data === "object" &&
      Object.values(data as Record<string, unknown>).some((v) => v !== null && typeof v === "object");
    if (!nested && textOf(row).length <= MAX_COMPACT_CHARS) return line;
    const details = h(
      "details",
      { open: this.opened.has(row) },
      h("summary", null, line),
      h("pre", null, JSON.stringify(data, null, 2)),
    );
    // A row leaves the DOM when it scrolls away: remember which ones are open.
    details.addEventListener("toggle", () => {
      if (!details.open) this.opened.delete(row);
      else if (!this.opened.has(row)) this.opened.set(row, 0);
      this.schedule();
    });
    return details;
  }
}

function byOrder(a: Row, b: Row): number {
  return a.order - b.order;
}

function comparator(key: SortKey, dir: 1 | -1): (a: Row, b: Row) => number {
  switch (key) {
    case "order":
      return (a, b) => (a.order - b.order) * dir;
    case "sender":
      return (a, b) => collator.compare(a.sender, b.sender) * dir || a.order - b.order;
    case "status":
      return (a, b) =>
        (a.statuscode - b.statuscode || collator.compare(a.statusmsg, b.statusmsg)) * dir || a.order - b.order;
    case "data":
      return (a, b) => collator.compare(textOf(a), textOf(b)) * dir || a.order - b.order;
  }
}

function setAttr(el: Element, name: string, value: string): void {
  if (el.getAttribute(name) !== value) el.setAttribute(name, value);
}

function spacer(): HTMLTableRowElement {
  return h("tr", { class: "spacer", "aria-hidden": "true", hidden: true }, h("td", { colspan: 4 }));
}

function textOf(row: Row): string {
  if (row.text === null) row.text = compact(row.data);
  return row.text;
}

function short(v: unknown): string {
  let s: string;
  if (v === null) s = "null";
  else if (Array.isArray(v) && v.every((x) => x === null || typeof x !== "object")) s = v.join(", ");
  else if (typeof v === "object") s = JSON.stringify(v);
  else s = String(v);
  return s.length > MAX_VALUE_CHARS ? `${s.slice(0, MAX_VALUE_CHARS - 1)}…` : s;
}

function compact(data: unknown): string {
  if (data && typeof data === "object" && !Array.isArray(data)) {
    return Object.entries(data as Record<string, unknown>)
      .map(([k, v]) => `${k}: ${short(v)}`)
      .join(" · ");
  }
  return data === undefined ? "" : short(data);
}
