// Report-only panels, computed from the whole run's bars: stage timings, per-worker
// utilization, and the workload and summary the server embeds.

import { barColor } from "./colors";
import { el, fitCanvas, Tooltip } from "./dom";
import { dur, num, pct } from "./format";
import type { Bar, Report } from "./types";

interface StageRow {
  job: number;
  label: string;
  tasks: number;
  failed: number;
  first: number;
  last: number;
  busy: number;
  durations: number[];
}

interface WorkerUse {
  worker: number;
  lanes: number;
  busy: number;
  first: number;
  last: number;
  util: number;
  tasks: number;
}

function quantile(sorted: number[], q: number): number {
  if (!sorted.length) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.round(q * (sorted.length - 1))));
  return sorted[i];
}

export function stageTimings(bars: Bar[]): StageRow[] {
  const m = new Map<string, StageRow>();
  for (const b of bars) {
    if (b.t1 == null) continue;
    const k = b.job + "\u0000" + b.label;
    let r = m.get(k);
    if (!r) m.set(k, (r = { job: b.job, label: b.label, tasks: 0, failed: 0, first: Infinity, last: -Infinity, busy: 0, durations: [] }));
    const d = b.t1 - b.t0;
    r.tasks++;
    if (b.ok === false) r.failed++;
    r.first = Math.min(r.first, b.t0);
    r.last = Math.max(r.last, b.t1);
    r.busy += d;
    r.durations.push(d);
  }
  const rows = [...m.values()];
  for (const r of rows) r.durations.sort((a, b) => a - b);
  rows.sort((a, b) => a.first - b.first);
  return rows;
}

export function workerUse(bars: Bar[], threads: Map<number, number>): WorkerUse[] {
  const m = new Map<number, WorkerUse & { laneSet: Set<number> }>();
  for (const b of bars) {
    if (b.t1 == null) continue;
    let u = m.get(b.worker);
    if (!u) m.set(b.worker, (u = { worker: b.worker, lanes: 0, busy: 0, first: Infinity, last: -Infinity, util: 0, tasks: 0, laneSet: new Set() }));
    u.busy += b.t1 - b.t0;
    u.first = Math.min(u.first, b.t0);
    u.last = Math.max(u.last, b.t1);
    u.laneSet.add(b.lane);
    u.tasks++;
  }
  const out: WorkerUse[] = [];
  for (const u of m.values()) {
    u.lanes = Math.max(u.laneSet.size, threads.get(u.worker) ?? 0);
    const span = u.last - u.first;
    u.util = span > 0 && u.lanes > 0 ? Math.min(1, u.busy / (span * u.lanes)) : 0;
    out.push({ worker: u.worker, lanes: u.lanes, busy: u.busy, first: u.first, last: u.last, util: u.util, tasks: u.tasks });
  }
  out.sort((a, b) => b.util - a.util || a.worker - b.worker);
  return out;
}

/** The report's extra panels, appended to the overview. */
export function reportPanels(r: Report, hosts: Map<number, string>, jobNames: Map<number, string>): HTMLElement {
  const root = el("div", { id: "report-panels" });
  const bars = r.stream?.bars ?? [];

  // Stage timings.
  const stages = stageTimings(bars);
  const head = el(
    "tr",
    null,
    ...["Job", "Stage / label", "Tasks", "Failed", "Started", "Ended", "Span", "Median", "p95", "Max", "Task time"].map((c, i) =>
      el("th", { class: i >= 2 ? "num" : null, text: c }),
    ),
  );
  const body = el("tbody");
  for (const s of stages) {
    const name = jobNames.get(s.job);
    body.appendChild(
      el(
        "tr",
        null,
        el("td", null, el("span", { class: "swatch", style: `background:${barColor(s.job, s.label)}` }), ` ${s.job}` + (name ? ` ${name}` : "")),
        el("td", { text: s.label || "–" }),
        el("td", { class: "num", text: num(s.tasks) }),
        el("td", { class: "num" + (s.failed ? " bad" : ""), text: num(s.failed) }),
        el("td", { class: "num", text: dur(s.first) }),
        el("td", { class: "num", text: dur(s.last) }),
        el("td", { class: "num", text: dur(s.last - s.first) }),
        el("td", { class: "num", text: dur(quantile(s.durations, 0.5)) }),
        el("td", { class: "num", text: dur(quantile(s.durations, 0.95)) }),
        el("td", { class: "num", text: dur(s.durations[s.durations.length - 1]) }),
        el("td", { class: "num", text: dur(s.busy) }),
      ),
    );
  }
  if (!stages.length) body.appendChild(el("tr", { class: "empty-row" }, el("td", { colspan: 11, class: "muted", text: "No task ran." })));
  root.appendChild(
    el(
      "div",
      { class: "panel" },
      el("h3", null, "Stage timings ", el("span", { class: "muted", text: "· from the task stream; times since the server started" })),
      el("div", { class: "table-wrap" }, el("table", { id: "stages-table", class: "grid" }, el("thead", null, head), body)),
    ),
  );

  // Per-worker utilization.
  const threads = new Map<number, number>();
  for (const w of r.snapshot.workers ?? []) threads.set(w.id, w.threads);
  const use = workerUse(bars, threads);
  const canvas = el("canvas", { id: "util-canvas" });
  const mean = use.length ? use.reduce((a, u) => a + u.util, 0) / use.length : NaN;
  const summary = use.length
    ? `· ${use.length} workers · mean ${pct(mean)} · lowest ${pct(use[use.length - 1].util)} (worker ${use[use.length - 1].worker}) · busy time over each worker's own span × its lanes`
    : "· no task ran";
  const wrap = el("div", { class: "mem-wrap" }, canvas);
  root.appendChild(el("div", { class: "panel" }, el("h3", null, "Utilization of each worker ", el("span", { class: "muted", text: summary })), wrap));
  const tip = new Tooltip();
  const draw = () => {
    const W = Math.max(200, wrap.clientWidth);
    const H = 120;
    const ctx = fitCanvas(canvas, W, H);
    const padL = 44;
    const pw = W - padL - 6;
    const ph = H - 14;
    ctx.clearRect(0, 0, W, H);
    ctx.font = "11px system-ui, sans-serif";
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (const f of [0, 0.5, 1]) {
      const y = Math.round(8 + ph - f * ph) + 0.5;
      ctx.strokeStyle = "#eceef1";
      ctx.beginPath();
      ctx.moveTo(padL, y);
      ctx.lineTo(W - 6, y);
      ctx.stroke();
      ctx.fillStyle = "#666";
      ctx.fillText(pct(f), padL - 5, y);
    }
    const n = use.length;
    const colW = n ? pw / n : 0;
    ctx.fillStyle = "#4f83c4";
    for (let i = 0; i < n; i++) {
      const h = use[i].util * ph;
      ctx.fillRect(padL + i * colW, 8 + ph - h, Math.max(colW - (colW >= 4 ? 1 : 0), 0.6), h);
    }
  };
  canvas.addEventListener("mousemove", (e) => {
    const rect = canvas.getBoundingClientRect();
    const x = e.clientX - rect.left - 44;
    const pw = rect.width - 50;
    if (x < 0 || x > pw || !use.length) return tip.hide();
    const u = use[Math.min(use.length - 1, Math.floor((x / pw) * use.length))];
    const host = hosts.get(u.worker);
    tip.show(e.clientX, e.clientY, [
      ["worker", `${u.worker}` + (host ? ` on ${host}` : "")],
      ["utilization", pct(u.util, 1)],
      ["tasks", num(u.tasks)],
      ["busy", dur(u.busy) + ` on ${u.lanes} lanes`],
      ["present", `${dur(u.first)} – ${dur(u.last)}`],
    ]);
  });
  canvas.addEventListener("mouseleave", () => tip.hide());
  new ResizeObserver(draw).observe(wrap);

  // Workload and summary.
  if (r.workload)
    root.appendChild(el("div", { class: "panel" }, el("h3", { text: "Workload" }), el("pre", { id: "report-workload", class: "code", text: r.workload })));
  if (r.summary != null)
    root.appendChild(
      el("div", { class: "panel" }, el("h3", { text: "Summary" }), el("pre", { id: "report-summary", class: "code", text: JSON.stringify(r.summary, null, 2) })),
    );
  return root;
}
