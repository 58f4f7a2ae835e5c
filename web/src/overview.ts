// Overview: cards, throughput/I-O/slots/memory charts over the history, and the memory
// of every worker against its bound as a sorted strip (readable with 1,000 workers).

import uPlot from "uplot";
import { memColor } from "./colors";
import { el, fitCanvas, setText, Tooltip } from "./dom";
import { bytes, num, pct, rate, si } from "./format";
import type { Page } from "./main";
import { reportPanels } from "./report";
import type { HistoryPoint, Snapshot, Worker } from "./types";

interface Card {
  value: HTMLElement;
  sub: HTMLElement;
}

interface ChartSpec {
  title: string;
  series: { label: string; color: string; get: (p: HistoryPoint, mem: MemAgg) => number | null; fill?: boolean }[];
  fmt: (v: number) => string;
  binary?: boolean; // ticks at powers of two (bytes)
  integer?: boolean; // counts: whole-number ticks
}

interface MemAgg {
  mean: number | null;
  max: number | null;
}

// Per-point aggregates of the per-worker RSS map, computed once per point.
const aggCache = new Map<number, MemAgg>();

function memAgg(p: HistoryPoint): MemAgg {
  const ext = p as HistoryPoint & { rss_total_bytes?: number; rss_max_bytes?: number };
  if (ext.rss_total_bytes != null)
    return { mean: p.workers > 0 ? ext.rss_total_bytes / p.workers : null, max: ext.rss_max_bytes ?? null };
  const hit = aggCache.get(p.t);
  if (hit) return hit;
  const m = p.rss_bytes;
  let total = 0;
  let max = 0;
  let n = 0;
  if (m)
    for (const k in m) {
      const v = m[k];
      total += v;
      if (v > max) max = v;
      n++;
    }
  const a = n ? { mean: total / n, max } : { mean: null, max: null };
  aggCache.set(p.t, a);
  return a;
}

function pruneAggCache(t0: number): void {
  for (const t of aggCache.keys()) if (t < t0) aggCache.delete(t);
}

// 1, 2, 4, … 512 of B, KiB, MiB, GiB, TiB, PiB.
const BINARY_INCRS: number[] = [];
for (let k = 0; k < 6; k++) for (let m = 1; m < 1024; m *= 2) BINARY_INCRS.push(m * 1024 ** k);

const INTEGER_INCRS: number[] = [];
for (let k = 1; k < 1e9; k *= 10) INTEGER_INCRS.push(k, 2 * k, 5 * k);

const CHARTS: ChartSpec[] = [
  {
    title: "Tasks per second",
    series: [{ label: "tasks/s", color: "#3b7dd8", get: (p) => p.tasks_per_s, fill: true }],
    fmt: si,
  },
  {
    title: "I/O",
    series: [
      { label: "read/s", color: "#2f8f6f", get: (p) => p.bytes_read_per_s, fill: true },
      { label: "written/s", color: "#c8632a", get: (p) => p.bytes_written_per_s },
    ],
    fmt: rate,
    binary: true,
  },
  {
    title: "Workers and busy slots",
    integer: true,
    series: [
      { label: "workers", color: "#6b5bb0", get: (p) => p.workers },
      { label: "busy slots", color: "#3b7dd8", get: (p) => p.busy, fill: true },
    ],
    fmt: si,
  },
  {
    title: "Memory (RSS)",
    series: [
      { label: "mean per worker", color: "#4f83c4", get: (_p, m) => m.mean, fill: true },
      { label: "largest worker", color: "#d13a2f", get: (_p, m) => m.max },
    ],
    fmt: bytes,
    binary: true,
  },
];

export class OverviewPage implements Page {
  private cards: Record<string, Card> = {};
  private failure: HTMLElement;
  private charts: { spec: ChartSpec; host: HTMLElement; plot: uPlot | null }[] = [];
  private memCanvas: HTMLCanvasElement;
  private memSummary: HTMLElement;
  private memSorted: { w: Worker; frac: number; bounded: boolean }[] = [];
  private tooltip = new Tooltip();
  private last: Snapshot | null = null;
  private visible = false;
  private ro: ResizeObserver;
  private root: HTMLElement;
  private reportShown = false;

  constructor(root: HTMLElement) {
    this.root = root;
    const cardsRow = el("div", { class: "cards" });
    const defs: [string, string][] = [
      ["workers", "Workers"],
      ["cores", "Cores"],
      ["busy", "Busy slots"],
      ["batch", "Batch jobs"],
      ["tasks", "Tasks/s"],
      ["read", "Read/s"],
      ["written", "Written/s"],
      ["totals", "Tasks done"],
    ];
    for (const [k, title] of defs) {
      const value = el("div", { class: "card-value", text: "–" });
      const sub = el("div", { class: "card-sub muted" });
      cardsRow.appendChild(el("div", { class: "card", id: "card-" + k }, el("div", { class: "card-title", text: title }), value, sub));
      this.cards[k] = { value, sub };
    }
    this.failure = el("div", { class: "banner banner-error submit-failure", id: "submit-failure" });
    this.failure.hidden = true;

    const grid = el("div", { class: "chart-grid" });
    for (const spec of CHARTS) {
      const host = el("div", { class: "chart-host" });
      grid.appendChild(el("div", { class: "panel chart" }, el("h3", { text: spec.title }), host));
      this.charts.push({ spec, host, plot: null });
    }

    this.memCanvas = el("canvas", { id: "memory-canvas" });
    this.memSummary = el("span", { class: "muted" });
    const memPanel = el(
      "div",
      { class: "panel" },
      el("h3", null, "Memory of each worker against its bound ", this.memSummary),
      el("div", { class: "mem-wrap" }, this.memCanvas),
      el(
        "div",
        { class: "legend muted" },
        el("span", { class: "swatch", style: `background:${memColor(0)}` }),
        " < 75% ",
        el("span", { class: "swatch", style: `background:${memColor(0.8)}` }),
        " 75–90% ",
        el("span", { class: "swatch", style: `background:${memColor(0.95)}` }),
        " ≥ 90% of bound · ",
        el("span", { class: "swatch", style: "background:#9aa0a8" }),
        " no bound (scaled to the largest) · sorted, one column per worker",
      ),
    );
    root.append(cardsRow, this.failure, grid, memPanel);

    this.memCanvas.addEventListener("mousemove", (e) => this.memHover(e));
    this.memCanvas.addEventListener("mouseleave", () => this.tooltip.hide());
    this.ro = new ResizeObserver(() => {
      if (this.visible && this.last) this.render(this.last, true);
    });
    this.ro.observe(root);
  }

  show(): void {
    this.visible = true;
  }
  hide(): void {
    this.visible = false;
    this.tooltip.hide();
  }

  update(s: Snapshot, visible: boolean): void {
    this.last = s;
    if (visible) this.render(s, false);
    const r = window.DROVER_REPORT;
    if (r && !this.reportShown) {
      this.reportShown = true;
      const hosts = new Map(s.workers.map((w) => [w.id, w.node ?? w.host]));
      for (const l of s.lost_workers ?? []) if (!hosts.has(l.id)) hosts.set(l.id, l.host);
      this.root.appendChild(reportPanels(r, hosts, new Map(s.jobs.map((j) => [j.id, j.name]))));
    }
  }

  private render(s: Snapshot, resized: boolean): void {
    this.renderCards(s);
    this.renderCharts(s, resized);
    this.renderMemory(s);
  }

  private renderCards(s: Snapshot): void {
    const c = this.cards;
    const ws = s.workers;
    let cores = 0;
    let busy = 0;
    let queued = 0;
    let draining = 0;
    const hosts = new Set<string>();
    for (const w of ws) {
      cores += w.threads;
      busy += w.busy;
      queued += w.queued;
      if (w.state === "draining") draining++;
      hosts.add(w.node ?? w.host);
    }
    setText(c.workers.value, num(ws.length));
    setText(c.workers.sub, `${num(hosts.size)} hosts` + (draining ? ` · ${draining} draining` : ""));
    setText(c.cores.value, num(cores));
    setText(c.cores.sub, ws.length ? `${(cores / ws.length).toFixed(1)} per worker` : "");
    setText(c.busy.value, num(busy));
    setText(c.busy.sub, (cores ? pct(busy / cores) + " of cores" : "") + ` · ${num(queued)} queued`);

    const pool = s.pool;
    const by: Record<string, number> = {};
    for (const j of pool?.jobs ?? []) by[j.state] = (by[j.state] ?? 0) + 1;
    const parts = ["pending", "running", "expiring"].map((k) => `${by[k] ?? 0} ${k}`);
    setText(c.batch.value, `${by.running ?? 0} running`);
    let sub = `${by.pending ?? 0} pending · ${by.expiring ?? 0} expiring`;
    if (pool?.target != null) sub += ` · target ${pool.target}`;
    if (pool?.adapt) sub += ` · adapt ${pool.adapt[0]}–${pool.adapt[1]}`;
    if (pool?.submit_failure) sub += " · submission failed";
    setText(c.batch.sub, sub);
    c.batch.value.title = parts.join(", ");
    this.failure.hidden = !pool?.submit_failure;
    if (pool?.submit_failure) setText(this.failure, "Batch submission failed: " + pool.submit_failure);

    const t = s.throughput;
    setText(c.tasks.value, si(t?.tasks_per_s));
    let peak = 0;
    for (const p of s.history ?? []) if (p.tasks_per_s > peak) peak = p.tasks_per_s;
    const h = s.history ?? [];
    const span = h.length > 1 ? h[h.length - 1].t - h[0].t : 0;
    setText(c.tasks.sub, h.length ? `peak ${si(peak)} in ${Math.max(1, Math.round(span / 60))} min` : "");
    setText(c.read.value, rate(t?.bytes_read_per_s));
    setText(c.read.sub, `${bytes(s.totals?.bytes_read)} in all`);
    setText(c.written.value, rate(t?.bytes_written_per_s));
    setText(c.written.sub, `${bytes(s.totals?.bytes_written)} in all`);
    setText(c.totals.value, num(s.totals?.tasks_done));
    setText(c.totals.sub, `${num(s.totals?.tasks_retried)} retried · ${num(s.totals?.workers_lost)} workers lost`);
  }

  private renderCharts(s: Snapshot, resized: boolean): void {
    const hist = s.history ?? [];
    const base = s.server?.started_unix ?? 0;
    const xs = hist.map((p) => base + p.t);
    if (hist.length) pruneAggCache(hist[0].t);
    const aggs = hist.map(memAgg);
    for (const ch of this.charts) {
      const data: (number | null)[][] = [xs];
      for (const ser of ch.spec.series) data.push(hist.map((p, i) => ser.get(p, aggs[i])));
      const width = Math.max(200, ch.host.clientWidth);
      if (!ch.plot) {
        ch.plot = new uPlot(this.chartOpts(ch.spec, width, base > 0), data as uPlot.AlignedData, ch.host);
      } else {
        if (resized || Math.abs(ch.plot.width - width) > 1) ch.plot.setSize({ width, height: 170 });
        ch.plot.setData(data as uPlot.AlignedData);
      }
      // The legend shows the latest values unless the cursor is on the chart.
      if (ch.plot.cursor.idx == null) ch.plot.setLegend({ idx: null as unknown as number });
    }
  }

  private chartOpts(spec: ChartSpec, width: number, time: boolean): uPlot.Options {
    const fmt = spec.fmt;
    return {
      width,
      height: 170,
      cursor: { drag: { x: false, y: false }, points: { size: 5 } },
      legend: { show: true, live: true },
      scales: { x: { time }, y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.08 : 1] } },
      axes: [
        {
          stroke: "#555",
          grid: { stroke: "#eceef1", width: 1 },
          ticks: { stroke: "#d0d4da", width: 1 },
          font: "11px system-ui, sans-serif",
          size: 30,
          values: time ? (_u, vals, _ax, _space, incr) => vals.map((v) => (v == null ? "" : hms(v, incr < 60))) : undefined,
        },
        {
          stroke: "#555",
          size: 74,
          incrs: spec.binary ? BINARY_INCRS : spec.integer ? INTEGER_INCRS : undefined,
          grid: { stroke: "#eceef1", width: 1 },
          ticks: { stroke: "#d0d4da", width: 1 },
          font: "11px system-ui, sans-serif",
          values: (_u, vals) => vals.map((v) => (v == null ? "" : fmt(v))),
        },
      ],
      series: [
        {
          label: time ? "time" : "t (s)",
          value: (u: uPlot, v: number | null) => {
            const x = v ?? lastOf(u.data[0]);
            return x == null ? "–" : time ? hms(x, true) : x.toFixed(0);
          },
        },
        ...spec.series.map((ser) => ({
          label: ser.label,
          stroke: ser.color,
          width: 1.5,
          fill: ser.fill ? ser.color + "1a" : undefined,
          points: { show: false },
          value: (u: uPlot, v: number | null, si: number, idx: number | null) => {
            const x = idx == null ? lastOf(u.data[si]) : v;
            return x == null ? "–" : fmt(x);
          },
        })),
      ],
    };
  }

  private renderMemory(s: Snapshot): void {
    const ws = s.workers;
    let maxRss = 0;
    for (const w of ws) if (w.rss_bytes != null && w.rss_bytes > maxRss) maxRss = w.rss_bytes;
    const rows = ws.map((w) => {
      const bounded = w.memory_bound_bytes != null && w.memory_bound_bytes > 0;
      const rss = w.rss_bytes ?? 0;
      const frac = bounded ? rss / w.memory_bound_bytes! : maxRss > 0 ? rss / maxRss : 0;
      return { w, frac, bounded };
    });
    rows.sort((a, b) => Number(b.bounded) - Number(a.bounded) || b.frac - a.frac || a.w.id - b.w.id);
    this.memSorted = rows;

    const bounded = rows.filter((r) => r.bounded);
    if (bounded.length) {
      const fr = bounded.map((r) => r.frac);
      const median = [...fr].sort((a, b) => a - b)[Math.floor(fr.length / 2)];
      const over = fr.filter((f) => f >= 0.9).length;
      const top = bounded[0];
      setText(
        this.memSummary,
        `· highest ${pct(top.frac)} (worker ${top.w.id} on ${top.w.node ?? top.w.host}: ${bytes(top.w.rss_bytes)} of ${bytes(top.w.memory_bound_bytes)}) · median ${pct(median)} · ${over} at ≥ 90%`,
      );
    } else {
      setText(this.memSummary, !ws.length ? "· no workers" : maxRss > 0 ? `· no bounds set · largest ${bytes(maxRss)}` : "· no memory reported");
    }

    const wrap = this.memCanvas.parentElement!;
    const W = Math.max(200, wrap.clientWidth);
    const H = 150;
    const ctx = fitCanvas(this.memCanvas, W, H);
    const padL = 44;
    const padR = 6;
    const padT = 8;
    const padB = 6;
    const pw = W - padL - padR;
    const ph = H - padT - padB;
    const top = Math.max(1.05, ...rows.map((r) => Math.min(r.frac, 1.5)));
    const y = (f: number) => padT + ph - (Math.min(f, top) / top) * ph;
    ctx.clearRect(0, 0, W, H);
    ctx.font = "11px system-ui, sans-serif";
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (const f of [0, 0.25, 0.5, 0.75, 1]) {
      ctx.strokeStyle = f === 1 ? "#d13a2f" : "#eceef1";
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.moveTo(padL, Math.round(y(f)) + 0.5);
      ctx.lineTo(W - padR, Math.round(y(f)) + 0.5);
      ctx.stroke();
      ctx.fillStyle = f === 1 ? "#d13a2f" : "#666";
      ctx.fillText(f === 1 ? "bound" : pct(f), padL - 5, y(f));
    }
    const n = rows.length;
    if (!n) return;
    const colW = pw / n;
    const gap = colW >= 4 ? 1 : 0;
    for (let i = 0; i < n; i++) {
      const r = rows[i];
      const x0 = padL + i * colW;
      const yy = y(r.frac);
      ctx.fillStyle = r.bounded ? memColor(r.frac) : "#9aa0a8";
      ctx.fillRect(x0, yy, Math.max(colW - gap, 0.6), padT + ph - yy);
    }
  }

  private memHover(e: MouseEvent): void {
    const rect = this.memCanvas.getBoundingClientRect();
    const x = e.clientX - rect.left - 44;
    const pw = rect.width - 44 - 6;
    const n = this.memSorted.length;
    if (x < 0 || x > pw || !n) {
      this.tooltip.hide();
      return;
    }
    const r = this.memSorted[Math.min(n - 1, Math.floor((x / pw) * n))];
    const w = r.w;
    this.tooltip.show(e.clientX, e.clientY, [
      ["worker", `${w.id} on ${w.node ?? w.host}`],
      ["RSS", bytes(w.rss_bytes)],
      ["bound", w.memory_bound_bytes != null ? bytes(w.memory_bound_bytes) : "none"],
      ["of bound", r.bounded ? pct(r.frac, 1) : "–"],
      ["batch job", w.batch_job ?? "–"],
    ]);
  }
}

function lastOf(a: ArrayLike<number | null | undefined> | undefined): number | null {
  if (!a) return null;
  for (let i = a.length - 1; i >= 0; i--) if (a[i] != null) return a[i] as number;
  return null;
}

function hms(unix: number, secs: boolean): string {
  const d = new Date(unix * 1000);
  const p = (n: number) => String(n).padStart(2, "0");
  return `${p(d.getHours())}:${p(d.getMinutes())}` + (secs ? `:${p(d.getSeconds())}` : "");
}
