// Workers: a sortable table (click a header), rows updated in place so that 1,000
// workers redraw in a few milliseconds.

import { memColor } from "./colors";
import { el, setText } from "./dom";
import { bytes, dur, num, pct } from "./format";
import type { Page } from "./main";
import type { Snapshot, Worker } from "./types";

interface Col {
  key: string;
  title: string;
  num?: boolean;
  get: (w: Worker) => number | string | null;
  text: (w: Worker) => string;
  tip?: string;
}

const memFrac = (w: Worker): number | null =>
  w.rss_bytes != null && w.memory_bound_bytes ? w.rss_bytes / w.memory_bound_bytes : null;

const COLS: Col[] = [
  { key: "id", title: "ID", num: true, get: (w) => w.id, text: (w) => String(w.id) },
  { key: "host", title: "Host", get: (w) => w.node ?? w.host, text: (w) => w.node ?? w.host },
  { key: "transport", title: "Link", get: (w) => w.transport, text: (w) => w.transport.toUpperCase(), tip: "QUIC; TCP when UDP does not get through; QUIC+TCP: QUIC, with its results on a TCP lane beside it; UNIX: a Unix socket on the server's host" },
  { key: "batch_job", title: "Batch job", get: (w) => w.batch_job, text: (w) => w.batch_job ?? "–" },
  { key: "pid", title: "PID", num: true, get: (w) => w.pid, text: (w) => String(w.pid) },
  { key: "threads", title: "Cores", num: true, get: (w) => w.threads, text: (w) => String(w.threads), tip: "task slots (threads)" },
  { key: "busy", title: "Busy", num: true, get: (w) => w.busy, text: (w) => String(w.busy), tip: "busy slots" },
  { key: "queued", title: "Queued", num: true, get: (w) => w.queued, text: (w) => String(w.queued), tip: "tasks queued on the worker" },
  { key: "rss", title: "RSS", num: true, get: (w) => w.rss_bytes, text: (w) => bytes(w.rss_bytes), tip: "resident memory" },
  { key: "mem", title: "RSS of bound", num: true, get: memFrac, text: (w) => (w.memory_bound_bytes ? `${pct(memFrac(w), 0)} of ${bytes(w.memory_bound_bytes)}` : "no bound"), tip: "RSS against the memory bound" },
  { key: "cpu", title: "CPU %", num: true, get: (w) => w.cpu_percent, text: (w) => (w.cpu_percent == null ? "–" : w.cpu_percent.toFixed(0)) },
  { key: "tasks_done", title: "Tasks done", num: true, get: (w) => w.tasks_done, text: (w) => num(w.tasks_done) },
  { key: "bytes_read", title: "Read", num: true, get: (w) => w.bytes_read, text: (w) => bytes(w.bytes_read), tip: "bytes read" },
  { key: "walltime", title: "Walltime left", num: true, get: (w) => w.walltime_left_s, text: (w) => dur(w.walltime_left_s) },
  { key: "state", title: "State", get: (w) => w.state, text: (w) => w.state },
];
const MEM_COL = COLS.findIndex((c) => c.key === "mem");
const STATE_COL = COLS.findIndex((c) => c.key === "state");

interface Row {
  tr: HTMLTableRowElement;
  cells: HTMLTableCellElement[];
  memFill: HTMLDivElement;
  memText: HTMLSpanElement;
}

function cmp(a: number | string | null, b: number | string | null): number {
  if (a == null) return b == null ? 0 : 1; // missing values last, whatever the direction
  if (b == null) return -1;
  if (typeof a === "number" && typeof b === "number") return a - b;
  return String(a).localeCompare(String(b), undefined, { numeric: true });
}

export class WorkersPage implements Page {
  private tbody: HTMLTableSectionElement;
  private ths: HTMLTableCellElement[] = [];
  private rows = new Map<number, Row>();
  private order: number[] = [];
  private sortKey = "id";
  private sortDir = 1;
  private filter = "";
  private summary: HTMLElement;
  private filterInput: HTMLInputElement;
  private last: Snapshot | null = null;
  private visible = false;

  constructor(root: HTMLElement) {
    const tr = el("tr");
    COLS.forEach((c) => {
      const th = el("th", { class: (c.num && c.key !== "mem" ? "num " : "") + "sortable", "data-key": c.key, title: c.tip ?? "sort by " + c.title });
      th.textContent = c.title;
      th.addEventListener("click", () => this.sortBy(c.key));
      this.ths.push(th);
      tr.appendChild(th);
    });
    this.tbody = el("tbody");
    this.summary = el("span", { class: "muted" });
    this.filterInput = el("input", { type: "search", id: "workers-filter", placeholder: "filter host, batch job, state…", spellcheck: "false" });
    this.filterInput.addEventListener("input", () => {
      this.filter = this.filterInput.value.trim().toLowerCase();
      if (this.last) this.render(this.last);
    });
    root.append(
      el(
        "div",
        { class: "panel" },
        el("div", { class: "panel-head" }, el("h3", null, "Workers ", this.summary), this.filterInput),
        el("div", { class: "table-wrap" }, el("table", { id: "workers-table", class: "grid sticky" }, el("thead", null, tr), this.tbody)),
      ),
    );
    this.markSort();
  }

  show(): void {
    this.visible = true;
  }
  hide(): void {
    this.visible = false;
  }

  update(s: Snapshot, visible: boolean): void {
    this.last = s;
    if (visible) this.render(s);
  }

  private sortBy(key: string): void {
    if (this.sortKey === key) this.sortDir = -this.sortDir;
    else {
      this.sortKey = key;
      const c = COLS.find((c) => c.key === key)!;
      // Numbers most interesting large first (RSS, CPU, …), except id and pid.
      this.sortDir = c.num && key !== "id" && key !== "pid" ? -1 : 1;
    }
    this.markSort();
    if (this.last && this.visible) this.render(this.last);
  }

  private markSort(): void {
    for (const th of this.ths) {
      const on = th.dataset.key === this.sortKey;
      th.classList.toggle("sorted", on);
      th.classList.toggle("asc", on && this.sortDir > 0);
      th.classList.toggle("desc", on && this.sortDir < 0);
      th.setAttribute("aria-sort", on ? (this.sortDir > 0 ? "ascending" : "descending") : "none");
    }
  }

  private render(s: Snapshot): void {
    const f = this.filter;
    let ws = s.workers ?? [];
    if (f) ws = ws.filter((w) => `${w.id} ${w.node ?? w.host} ${w.host} ${w.batch_job ?? ""} ${w.state} ${w.pid}`.toLowerCase().includes(f));
    const col = COLS.find((c) => c.key === this.sortKey) ?? COLS[0];
    const dir = this.sortDir;
    const keyed = ws.map((w) => ({ w, k: col.get(w) }));
    keyed.sort((a, b) => {
      const r = a.k == null || b.k == null ? cmp(a.k, b.k) : dir * cmp(a.k, b.k);
      return r || a.w.id - b.w.id;
    });
    const seen = new Set<number>();
    const order: number[] = new Array(keyed.length);
    for (let i = 0; i < keyed.length; i++) {
      const w = keyed[i].w;
      order[i] = w.id;
      seen.add(w.id);
      let r = this.rows.get(w.id);
      if (!r) {
        r = this.makeRow(w);
        this.rows.set(w.id, r);
      }
      this.fill(r, w);
    }
    for (const [id, r] of this.rows) {
      if (!seen.has(id)) {
        r.tr.remove();
        this.rows.delete(id);
      }
    }
    let same = order.length === this.order.length && this.tbody.children.length === order.length;
    for (let i = 0; same && i < order.length; i++) if (order[i] !== this.order[i]) same = false;
    if (!same) {
      const frag = document.createDocumentFragment();
      for (const id of order) frag.appendChild(this.rows.get(id)!.tr);
      this.tbody.appendChild(frag);
      this.order = order;
    }
    const total = s.workers?.length ?? 0;
    setText(this.summary, f ? `· ${keyed.length} of ${total} shown` : `· ${total}`);
  }

  private makeRow(w: Worker): Row {
    const cells = COLS.map((c) => el("td", c.num ? { class: "num" } : null));
    const memFill = el("div", { class: "mini-fill" });
    const memText = el("span");
    cells[MEM_COL].className = "cell-mem";
    cells[MEM_COL].append(el("div", { class: "mini" }, memFill), memText);
    const tr = el("tr", { "data-worker-id": w.id });
    tr.append(...cells);
    return { tr, cells, memFill, memText };
  }

  private fill(r: Row, w: Worker): void {
    for (let i = 0; i < COLS.length; i++) {
      if (i === MEM_COL) continue;
      setText(r.cells[i], COLS[i].text(w));
    }
    const frac = memFrac(w);
    setText(r.memText, COLS[MEM_COL].text(w));
    const width = frac == null ? "0%" : Math.min(100, frac * 100).toFixed(1) + "%";
    if (r.memFill.style.width !== width) r.memFill.style.width = width;
    const bg = frac == null ? "" : memColor(frac);
    if (r.memFill.dataset.c !== bg) {
      r.memFill.dataset.c = bg;
      r.memFill.style.background = bg;
    }
    const st = "state state-" + w.state;
    if (r.cells[STATE_COL].className !== st) r.cells[STATE_COL].className = st;
  }
}
