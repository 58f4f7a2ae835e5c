// Task stream: one lane per (worker, lane), a bar per task coloured by job and label.
// Follows "now" by default over the last 2 minutes; drag to pan, wheel to zoom time,
// shift+wheel to zoom lanes; the visible window is fetched from /api/stream.

import { barColor, FAILED_BAR, jobColor, registerLabels } from "./colors";
import { ReportSource, type Source } from "./data";
import { el, fitCanvas, replaceChildren, setText, Tooltip } from "./dom";
import { dur } from "./format";
import type { Page } from "./main";
import type { Bar, Snapshot, StreamData } from "./types";

interface Lane {
  worker: number;
  lane: number;
}

const GUTTER = 78; // lane labels
const AXIS = 22; // time axis
const SPANS: [string, number][] = [
  ["30 s", 30],
  ["2 min", 120],
  ["10 min", 600],
  ["1 h", 3600],
  ["all", Infinity],
];
const STEPS = [0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 21600, 43200, 86400];

type BarT = Bar & { t1: number; running?: boolean };

export class StreamPage implements Page {
  private canvas: HTMLCanvasElement;
  private wrap: HTMLElement;
  private followBtn: HTMLButtonElement;
  private spanBtns: HTMLButtonElement[] = [];
  private stats: HTMLElement;
  private legend: HTMLElement;
  private legendKey = "";
  private tooltip = new Tooltip();

  private visible = false;
  private report: boolean;
  private snap: Snapshot | null = null;
  private now = 0;
  private follow = true;
  private wholeRun = false; // span "all": the left edge stays at the run's start
  private span = 120;
  private v0 = -120;
  private v1 = 0;
  private laneZoom = 1;
  private laneScroll = 0;

  private bars: BarT[] = [];
  private have = { since: 0, until: -1 }; // the window the bars cover
  private thinnedFrom = 0; // the server's count before it thinned the answer, if it did
  private next: number | null = null; // the server's count of tasks at its last answer
  private lanes: Lane[] = [];
  private laneIdx = new Map<string, number>();
  private byLane: BarT[][] = [];
  private hosts = new Map<number, string>();
  private jobNames = new Map<number, string>();

  private inflight = false;
  private pending = false;
  private seq = 0;
  private timer = 0;
  private debounce = 0;
  private drag: { x: number; y: number; v0: number; v1: number; scroll: number; moved: boolean } | null = null;
  private raf = 0;
  private ro: ResizeObserver;
  private plot = { x: GUTTER, y: 0, w: 1, h: 1 };

  constructor(root: HTMLElement, private source: Source) {
    this.report = source.report;
    this.followBtn = el("button", { id: "stream-follow", class: "toggle", title: "keep the view on the newest tasks" }, "Follow");
    this.followBtn.addEventListener("click", () => this.setFollow(!this.follow));
    const spans = el("div", { class: "btn-group", role: "group" });
    for (const [label, secs] of SPANS) {
      const b = el("button", { class: "toggle", "data-span": String(secs), text: label });
      b.addEventListener("click", () => this.setSpan(secs));
      this.spanBtns.push(b);
      spans.appendChild(b);
    }
    const zin = el("button", { title: "zoom in", text: "+" });
    const zout = el("button", { title: "zoom out", text: "−" });
    zin.addEventListener("click", () => this.zoomTime(0.5, 0.5));
    zout.addEventListener("click", () => this.zoomTime(2, 0.5));
    this.stats = el("span", { class: "muted stream-stats" });
    this.legend = el("div", { class: "legend stream-legend" });
    this.canvas = el("canvas", { id: "stream-canvas", "data-bars": "0" });
    this.wrap = el("div", { class: "stream-wrap" }, this.canvas);
    const toolbar = el(
      "div",
      { class: "toolbar" },
      this.report ? null : this.followBtn,
      spans,
      el("div", { class: "btn-group" }, zout, zin),
      el("span", { class: "muted hint", text: "drag to pan · wheel to zoom · shift+wheel to zoom lanes" }),
      this.stats,
    );
    root.append(el("div", { class: "panel" }, toolbar, this.legend, this.wrap));

    if (this.report && source instanceof ReportSource) {
      this.follow = false;
      this.wholeRun = true;
      this.setData(source.all(), -Infinity, Infinity);
      let lo = Infinity;
      let hi = -Infinity;
      for (const b of this.bars) {
        if (b.t0 < lo) lo = b.t0;
        if (b.t1 > hi) hi = b.t1;
      }
      if (!isFinite(lo)) {
        lo = 0;
        hi = Math.max(1, source.all().now);
      }
      const pad = Math.max(0.5, (hi - lo) * 0.01);
      this.v0 = lo - pad;
      this.v1 = hi + pad;
      this.span = this.v1 - this.v0;
    }
    this.markButtons();

    const c = this.canvas;
    c.addEventListener("mousedown", (e) => this.onDown(e));
    window.addEventListener("mousemove", (e) => this.onMove(e));
    window.addEventListener("mouseup", () => this.onUp());
    c.addEventListener("mouseleave", () => {
      if (!this.drag) this.tooltip.hide();
    });
    c.addEventListener("wheel", (e) => this.onWheel(e), { passive: false });
    c.addEventListener("dblclick", () => {
      this.laneZoom = 1;
      this.laneScroll = 0;
      this.redraw();
    });
    this.ro = new ResizeObserver(() => this.redraw());
    this.ro.observe(this.wrap);
  }

  show(): void {
    this.visible = true;
    if (!this.report) {
      window.clearInterval(this.timer);
      this.timer = window.setInterval(() => this.tick(), 1000);
      this.tick();
    }
    this.redraw();
  }

  hide(): void {
    this.visible = false;
    window.clearInterval(this.timer);
    this.tooltip.hide();
  }

  update(s: Snapshot, visible: boolean): void {
    this.snap = s;
    if (s.now > this.now) this.now = s.now;
    this.hosts.clear();
    for (const w of s.workers ?? []) this.hosts.set(w.id, w.node ?? w.host);
    for (const w of s.lost_workers ?? []) if (!this.hosts.has(w.id)) this.hosts.set(w.id, w.host);
    for (const j of s.jobs ?? []) {
      this.jobNames.set(j.id, j.name);
      if (j.stages.length) registerLabels(j.id, j.stages.map((st) => st.label));
    }
    if (visible && this.follow) this.placeFollow();
    if (visible) this.rebuildLanes();
  }

  // ---- the view window ------------------------------------------------------

  private placeFollow(): void {
    this.v1 = this.now;
    this.v0 = this.wholeRun ? Math.min(0, this.earliest()) : this.now - this.span;
  }

  private earliest(): number {
    let lo = 0;
    for (const b of this.bars) if (b.t0 < lo) lo = b.t0;
    return lo;
  }

  private setFollow(on: boolean): void {
    if (this.report) return;
    this.follow = on;
    if (on) {
      this.placeFollow();
      this.fetch(true);
    }
    this.markButtons();
    this.redraw();
  }

  private setSpan(secs: number): void {
    if (secs === Infinity) {
      this.wholeRun = true;
      if (this.report) {
        const src = this.source as ReportSource;
        let lo = Infinity;
        let hi = -Infinity;
        for (const b of src.all().bars) {
          lo = Math.min(lo, b.t0);
          hi = Math.max(hi, b.t1 ?? src.all().now);
        }
        if (!isFinite(lo)) [lo, hi] = [0, Math.max(1, src.all().now)];
        const pad = Math.max(0.5, (hi - lo) * 0.01);
        this.v0 = lo - pad;
        this.v1 = hi + pad;
      } else {
        this.v0 = Math.min(0, this.earliest());
        this.v1 = this.now;
        this.follow = true;
      }
      this.span = this.v1 - this.v0;
    } else {
      this.wholeRun = false;
      const mid = (this.v0 + this.v1) / 2;
      this.span = secs;
      if (this.follow) this.placeFollow();
      else {
        this.v0 = mid - secs / 2;
        this.v1 = mid + secs / 2;
      }
    }
    this.markButtons();
    this.viewChanged(true);
  }

  private zoomTime(factor: number, at: number): void {
    const span = Math.min(Math.max((this.v1 - this.v0) * factor, 0.05), 30 * 86400);
    this.wholeRun = false;
    if (this.follow) {
      this.span = span;
      this.placeFollow();
    } else {
      const t = this.v0 + at * (this.v1 - this.v0);
      this.v0 = t - at * span;
      this.v1 = this.v0 + span;
      this.span = span;
    }
    this.markButtons();
    this.viewChanged(false);
  }

  private markButtons(): void {
    this.followBtn.classList.toggle("on", this.follow);
    this.followBtn.setAttribute("aria-pressed", String(this.follow));
    this.followBtn.textContent = this.follow ? "● Following" : "Follow";
    for (const b of this.spanBtns) {
      const s = Number(b.dataset.span);
      b.classList.toggle("on", s === Infinity ? this.wholeRun : !this.wholeRun && Math.abs(s - this.span) < 1e-6);
    }
  }

  /** After a pan or zoom: redraw now from what we have, fetch the window soon. */
  private viewChanged(now: boolean): void {
    this.redraw();
    if (this.report) return;
    window.clearTimeout(this.debounce);
    this.debounce = window.setTimeout(() => this.fetch(false), now ? 0 : 150);
  }

  // ---- data -------------------------------------------------------------------

  private tick(): void {
    if (!this.visible || this.report) return;
    if (this.follow) {
      this.placeFollow();
      // Following: only the tasks that ended since the last answer.
      if (this.next != null && this.have.until >= 0) this.fetchMore();
      else this.fetch(true);
    }
  }

  private fetchMore(): void {
    if (this.inflight) return;
    this.inflight = true;
    const seq = ++this.seq;
    this.source
      .streamFrom(this.next ?? 0, (this.v1 - this.v0) / Math.max(1, this.plot.w))
      .then(
        (d) => {
          if (seq !== this.seq) return;
          if (d.now > this.now) this.now = d.now;
          this.placeFollow();
          const keep = this.wholeRun ? -Infinity : this.v0 - 0.05 * (this.v1 - this.v0);
          this.bars = this.bars.filter((b) => b.t1 >= keep).concat(d.bars as BarT[]);
          this.next = d.next ?? null;
          this.have = { since: Math.max(this.have.since, keep), until: Math.max(this.have.until, d.now) };
          this.registerBarLabels(d.bars as BarT[]);
          this.rebuildLanes();
          this.redraw();
        },
        () => {},
      )
      .finally(() => this.settled());
  }

  /** An answer came (or failed): the next fetch may go, and one asked meanwhile does. */
  private settled(): void {
    this.inflight = false;
    if (this.pending) {
      this.pending = false;
      this.fetch(false);
    }
  }

  private fetch(force: boolean): void {
    if (this.report) return;
    const span = this.v1 - this.v0;
    const margin = this.follow ? 0.05 * span : 0.5 * span;
    const since = Math.max(this.wholeRun ? -Infinity : -1e12, this.v0 - margin);
    const until = this.follow ? this.now + 5 : this.v1 + margin;
    if (!force && this.have.since <= this.v0 && this.have.until >= this.v1) return;
    if (this.inflight) {
      this.pending = true;
      return;
    }
    this.inflight = true;
    const seq = ++this.seq;
    const lo = isFinite(since) ? since : -1;
    this.source
      .stream(lo, until, (this.v1 - this.v0) / Math.max(1, this.plot.w))
      .then(
        (d) => {
          if (seq !== this.seq) return;
          if (d.now > this.now) this.now = d.now;
          this.setData(d, lo, Math.min(until, d.now));
          if (this.follow) this.placeFollow();
          this.redraw();
        },
        () => {},
      )
      .finally(() => this.settled());
  }

  private setData(d: StreamData, since: number, until: number): void {
    const now = d.now;
    this.bars = d.bars.map((b) => (b.t1 == null ? { ...b, t1: now, running: true } : (b as BarT)));
    this.thinnedFrom = d.thinned && d.total != null ? d.total : 0;
    this.next = d.next ?? null;
    this.have = { since, until };
    this.registerBarLabels(this.bars);
    // Also the stage labels the jobs announce, so shades don't depend on the window.
    for (const j of this.snap?.jobs ?? []) registerLabels(j.id, j.stages.map((st) => st.label));
    this.rebuildLanes();
  }

  private registerBarLabels(bars: BarT[]): void {
    const labels = new Map<number, Set<string>>();
    for (const b of bars) {
      let ls = labels.get(b.job);
      if (!ls) labels.set(b.job, (ls = new Set()));
      ls.add(b.label);
    }
    for (const [job, ls] of labels) registerLabels(job, ls);
  }

  private rebuildLanes(): void {
    const keys = new Map<string, Lane>();
    for (const w of this.snap?.workers ?? []) for (let l = 0; l < Math.max(1, w.threads); l++) keys.set(w.id + ":" + l, { worker: w.id, lane: l });
    for (const b of this.bars) {
      const k = b.worker + ":" + b.lane;
      if (!keys.has(k)) keys.set(k, { worker: b.worker, lane: b.lane });
    }
    const lanes = [...keys.values()].sort((a, b) => a.worker - b.worker || a.lane - b.lane);
    this.lanes = lanes;
    this.laneIdx.clear();
    lanes.forEach((l, i) => this.laneIdx.set(l.worker + ":" + l.lane, i));
    this.byLane = lanes.map(() => []);
    for (const b of this.bars) {
      const i = this.laneIdx.get(b.worker + ":" + b.lane);
      if (i != null) this.byLane[i].push(b);
    }
    for (const arr of this.byLane) arr.sort((a, b) => a.t0 - b.t0);
  }

  // ---- drawing ------------------------------------------------------------------

  private redraw(): void {
    if (!this.visible) return;
    if (this.raf) return;
    this.raf = requestAnimationFrame(() => {
      this.raf = 0;
      this.draw();
    });
  }

  private laneGeom(): { laneH: number; first: number; last: number } {
    const n = Math.max(1, this.lanes.length);
    const laneH = (this.plot.h / n) * this.laneZoom;
    const content = laneH * n;
    this.laneScroll = Math.min(Math.max(0, this.laneScroll), Math.max(0, content - this.plot.h));
    const first = Math.max(0, Math.floor(this.laneScroll / laneH));
    const last = Math.min(n - 1, Math.ceil((this.laneScroll + this.plot.h) / laneH));
    return { laneH, first, last };
  }

  private draw(): void {
    const W = Math.max(300, this.wrap.clientWidth);
    const top = this.wrap.getBoundingClientRect().top;
    const avail = Math.max(260, window.innerHeight - top - 16);
    const H = Math.round(Math.min(avail, Math.max(220, this.lanes.length * 16 + AXIS + 4)));
    const ctx = fitCanvas(this.canvas, W, H);
    this.plot = { x: GUTTER, y: 2, w: W - GUTTER - 8, h: H - AXIS - 4 };
    const p = this.plot;
    const v0 = this.v0;
    const v1 = this.v1;
    const pxs = p.w / Math.max(1e-9, v1 - v0);
    const X = (t: number) => p.x + (t - v0) * pxs;

    ctx.clearRect(0, 0, W, H);
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, W, H);

    const { laneH, first, last } = this.laneGeom();
    const Y = (i: number) => p.y + i * laneH - this.laneScroll;

    // Before the server started and after now: nothing can be there.
    ctx.fillStyle = "#eef0f3";
    if (v0 < 0) ctx.fillRect(p.x, p.y, Math.min(p.w, X(0) - p.x), p.h);
    const end = this.report ? Infinity : this.now;
    if (v1 > end) ctx.fillRect(Math.max(p.x, X(end)), p.y, p.x + p.w - Math.max(p.x, X(end)), p.h);

    // Worker bands and lane labels.
    ctx.save();
    ctx.beginPath();
    ctx.rect(0, p.y, W, p.h);
    ctx.clip();
    let band = 0;
    let prevWorker = NaN;
    let lastLabelY = -Infinity;
    ctx.font = "11px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    ctx.textAlign = "right";
    for (let i = 0; i < this.lanes.length; i++) {
      const l = this.lanes[i];
      if (l.worker !== prevWorker) {
        band++;
        prevWorker = l.worker;
      }
      if (i < first || i > last) continue;
      const y = Y(i);
      if (band % 2 === 0 && laneH >= 1.5) {
        ctx.fillStyle = "#f4f6f9";
        ctx.fillRect(p.x, y, p.w, laneH);
      }
      const isFirst = i === 0 || this.lanes[i - 1].worker !== l.worker;
      const labelEvery = laneH >= 11;
      if ((labelEvery || isFirst) && y + laneH / 2 - lastLabelY >= 12) {
        ctx.fillStyle = isFirst ? "#333" : "#888";
        const host = this.hosts.get(l.worker);
        const text = labelEvery && !isFirst ? `·${l.lane}` : workerName(l.worker) + (host && laneH * 2 >= 11 ? ` ${host}` : "");
        ctx.fillText(clip(ctx, text, GUTTER - 8), GUTTER - 6, Math.max(p.y + 6, y + Math.min(laneH, 14) / 2));
        lastLabelY = y + laneH / 2;
      }
    }
    ctx.restore();

    // Time grid.
    const base = this.snap?.server?.started_unix ?? 0;
    const step = STEPS.find((s) => s * pxs >= 90) ?? 86400 * Math.ceil(90 / pxs / 86400);
    ctx.font = "11px system-ui, sans-serif";
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    const startTick = Math.ceil((base + v0) / step) * step;
    for (let u = startTick; u <= base + v1 + 1e-9; u += step) {
      const x = Math.round(X(u - base)) + 0.5;
      ctx.strokeStyle = "#e6e9ee";
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.moveTo(x, p.y);
      ctx.lineTo(x, p.y + p.h);
      ctx.stroke();
      ctx.fillStyle = "#555";
      const label = tickLabel(u, step, base > 0);
      const half = ctx.measureText(label).width / 2;
      if (x + half <= W - 2 && x - half >= 2) ctx.fillText(label, x, p.y + p.h + 5);
    }
    ctx.strokeStyle = "#c9ced6";
    ctx.beginPath();
    ctx.moveTo(p.x, p.y + p.h + 0.5);
    ctx.lineTo(p.x + p.w, p.y + p.h + 0.5);
    ctx.moveTo(p.x - 0.5, p.y);
    ctx.lineTo(p.x - 0.5, p.y + p.h);
    ctx.stroke();

    // Bars, batched by colour.
    ctx.save();
    ctx.beginPath();
    ctx.rect(p.x, p.y, p.w, p.h);
    ctx.clip();
    const gap = laneH >= 5 ? 1 : 0;
    // Under a pixel per lane, bars keep their true height and antialiasing mixes them.
    const bh = laneH >= 1 ? Math.max(laneH - gap, 1) : laneH;
    const paths = new Map<string, Path2D>();
    const legend = new Map<number, Set<string>>();
    let drawn = 0;
    let failed = 0;
    let running = 0;
    for (let i = first; i <= last; i++) {
      const y = Y(i);
      for (const b of this.byLane[i]) {
        if (b.t1 < v0 || b.t0 > v1) continue;
        const x0 = Math.max(p.x - 1, X(b.t0));
        const x1 = Math.min(p.x + p.w + 1, X(b.t1));
        const w = Math.max(1, x1 - x0 - (x1 - x0 > 3 ? 0.5 : 0));
        const color = b.ok === false ? FAILED_BAR : barColor(b.job, b.label);
        let path = paths.get(color);
        if (!path) paths.set(color, (path = new Path2D()));
        path.rect(x0, y, w, bh);
        drawn += b.n ?? 1;
        if (b.ok === false) failed += b.n ?? 1;
        if (b.running) running++;
        let ls = legend.get(b.job);
        if (!ls) legend.set(b.job, (ls = new Set()));
        ls.add(b.label);
      }
    }
    for (const [color, path] of paths) {
      ctx.fillStyle = color;
      ctx.fill(path);
    }
    // Now.
    if (!this.report && this.now >= v0 && this.now <= v1) {
      const x = Math.round(X(this.now)) - 0.5;
      ctx.strokeStyle = "#d13a2f";
      ctx.setLineDash([3, 3]);
      ctx.beginPath();
      ctx.moveTo(x, p.y);
      ctx.lineTo(x, p.y + p.h);
      ctx.stroke();
      ctx.setLineDash([]);
    }
    ctx.restore();

    const c = this.canvas;
    c.dataset.bars = String(drawn);
    c.dataset.lanes = String(this.lanes.length);
    c.dataset.v0 = v0.toFixed(3);
    c.dataset.v1 = v1.toFixed(3);
    c.dataset.follow = String(this.follow);
    const lanesShown = last - first + 1;
    setText(
      this.stats,
      `${drawn.toLocaleString("en-US")} tasks shown` +
        (failed ? ` (${failed} failed)` : "") +
        (running ? ` · ${running} running` : "") +
        ` · ${this.lanes.length} lanes` +
        (lanesShown < this.lanes.length && laneH >= 1 ? ` (${lanesShown} in view)` : "") +
        ` · ${dur(v1 - v0)} window` +
        (this.thinnedFrom ? ` · thinned: ${this.bars.length.toLocaleString("en-US")} bars for ${this.thinnedFrom.toLocaleString("en-US")} tasks, zoom in for all` : ""),
    );
    this.drawLegend(legend);
  }

  private drawLegend(legend: Map<number, Set<string>>): void {
    const jobs = [...legend.keys()].sort((a, b) => a - b);
    const key = jobs.map((j) => j + ":" + [...legend.get(j)!].sort().join(",")).join(";");
    if (key === this.legendKey) return;
    this.legendKey = key;
    const items: (Node | string)[] = [];
    for (const j of jobs.slice(0, 12)) {
      const labels = [...legend.get(j)!].sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
      const name = this.jobNames.get(j);
      const entry = el("span", { class: "legend-job" }, el("span", { class: "swatch", style: `background:${jobColor(j)}` }), el("b", { text: `job ${j}` + (name ? ` ${name}` : "") }));
      if (labels.length > 1 || (labels.length === 1 && labels[0])) {
        for (const lab of labels.slice(0, 8)) entry.append(" ", el("span", { class: "swatch", style: `background:${barColor(j, lab)}` }), lab);
        if (labels.length > 8) entry.append(` +${labels.length - 8}`);
      }
      items.push(entry);
    }
    if (jobs.length > 12) items.push(el("span", { class: "muted", text: `+${jobs.length - 12} jobs` }));
    items.push(el("span", { class: "legend-job" }, el("span", { class: "swatch", style: `background:${FAILED_BAR}` }), "failed"));
    replaceChildren(this.legend, ...items);
  }

  // ---- interaction --------------------------------------------------------------

  private onDown(e: MouseEvent): void {
    if (e.button !== 0) return;
    e.preventDefault();
    this.drag = { x: e.clientX, y: e.clientY, v0: this.v0, v1: this.v1, scroll: this.laneScroll, moved: false };
    this.tooltip.hide();
  }

  private onMove(e: MouseEvent): void {
    const d = this.drag;
    if (d) {
      const dx = e.clientX - d.x;
      const dy = e.clientY - d.y;
      if (!d.moved && Math.abs(dx) + Math.abs(dy) < 3) return;
      if (!d.moved) {
        d.moved = true;
        this.canvas.classList.add("dragging");
      }
      if (Math.abs(dx) > 0) {
        const dt = (dx / this.plot.w) * (d.v1 - d.v0);
        if (this.follow && dx !== 0) {
          this.follow = false;
          this.wholeRun = false;
          this.markButtons();
        }
        this.v0 = d.v0 - dt;
        this.v1 = d.v1 - dt;
      }
      this.laneScroll = d.scroll - dy;
      this.viewChanged(false);
      return;
    }
    if (e.target !== this.canvas) return;
    this.hover(e);
  }

  private onUp(): void {
    if (this.drag?.moved) this.canvas.classList.remove("dragging");
    this.drag = null;
  }

  private onWheel(e: WheelEvent): void {
    e.preventDefault();
    const rect = this.canvas.getBoundingClientRect();
    const delta = e.deltaMode === 1 ? e.deltaY * 16 : e.deltaMode === 2 ? e.deltaY * 400 : e.deltaY;
    const factor = Math.exp(Math.max(-300, Math.min(300, delta || e.deltaX)) * 0.002);
    if (e.shiftKey) {
      const my = e.clientY - rect.top - this.plot.y;
      const { laneH } = this.laneGeom();
      const at = (this.laneScroll + my) / laneH; // lane under the mouse
      const maxZoom = Math.max(1, (this.lanes.length * 20) / this.plot.h);
      this.laneZoom = Math.min(maxZoom, Math.max(1, this.laneZoom / factor));
      const nh = (this.plot.h / Math.max(1, this.lanes.length)) * this.laneZoom;
      this.laneScroll = at * nh - my;
      this.redraw();
      return;
    }
    const at = Math.min(1, Math.max(0, (e.clientX - rect.left - this.plot.x) / this.plot.w));
    this.zoomTime(factor, at);
  }

  private hover(e: MouseEvent): void {
    const rect = this.canvas.getBoundingClientRect();
    const mx = e.clientX - rect.left;
    const my = e.clientY - rect.top;
    const p = this.plot;
    if (mx < p.x || mx > p.x + p.w || my < p.y || my > p.y + p.h) {
      this.tooltip.hide();
      return;
    }
    const { laneH } = this.laneGeom();
    const i = Math.floor((my - p.y + this.laneScroll) / laneH);
    const lane = this.lanes[i];
    if (!lane) {
      this.tooltip.hide();
      return;
    }
    const sPerPx = (this.v1 - this.v0) / p.w;
    const t = this.v0 + (mx - p.x) * sPerPx;
    const tol = 3 * sPerPx;
    let best: BarT | null = null;
    let bestD = Infinity;
    for (const b of this.byLane[i]) {
      if (b.t0 - tol > t) break;
      if (b.t1 + tol < t) continue;
      const d = t < b.t0 ? b.t0 - t : t > b.t1 ? t - b.t1 : 0;
      if (d < bestD) {
        bestD = d;
        best = b;
      }
    }
    const host = this.hosts.get(lane.worker);
    if (!best) {
      this.tooltip.show(e.clientX, e.clientY, [["worker", workerName(lane.worker) + (host ? ` on ${host}` : "") + ` · lane ${lane.lane}`]]);
      return;
    }
    const name = this.jobNames.get(best.job);
    const base = this.snap?.server?.started_unix ?? 0;
    this.tooltip.show(e.clientX, e.clientY, [
      ["job", `${best.job}` + (name ? ` (${name})` : "")],
      ["label", best.label || "–"],
      ["worker", workerName(best.worker) + (host ? ` on ${host}` : "") + ` · lane ${best.lane}`],
      ["start", tickLabel(base + best.t0, 0.1, base > 0)],
      ...((best.n ?? 1) > 1 ? [["tasks", `${best.n} back to back`] as [string, string]] : []),
      ["duration", dur(best.t1 - best.t0) + (best.running ? " (running)" : "")],
      ["result", best.running ? "running" : best.ok === false ? "failed" : "ok"],
    ]);
  }
}

/** The server runs some tasks itself (an array workload's last combine): its lanes. */
const SERVER_WORKER = 0xffffffff;

function workerName(id: number): string {
  return id === SERVER_WORKER ? "server" : `w${id}`;
}

function tickLabel(u: number, step: number, wall: boolean): string {
  if (!wall) {
    const s = step < 1 ? u.toFixed(step < 0.1 ? 2 : 1) : u.toFixed(0);
    return "t+" + s + "s";
  }
  const d = new Date(u * 1000);
  const hh = String(d.getHours()).padStart(2, "0");
  const mm = String(d.getMinutes()).padStart(2, "0");
  const ss = String(d.getSeconds()).padStart(2, "0");
  if (step >= 60) return `${hh}:${mm}`;
  if (step >= 1) return `${hh}:${mm}:${ss}`;
  const frac = (u - Math.floor(u)).toFixed(step < 0.1 ? 2 : 1).slice(1);
  return `${hh}:${mm}:${ss}${frac}`;
}

function clip(ctx: CanvasRenderingContext2D, s: string, max: number): string {
  if (ctx.measureText(s).width <= max) return s;
  while (s.length > 1 && ctx.measureText(s + "…").width > max) s = s.slice(0, -1);
  return s + "…";
}
