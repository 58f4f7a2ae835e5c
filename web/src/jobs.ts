// Jobs: a row per job with a progress bar stacked by task state, per-stage progress,
// ETA, retries and lost workers.

import { STATE_COLORS } from "./colors";
import { el, replaceChildren, setText } from "./dom";
import { dur, num, pct } from "./format";
import type { Page } from "./main";
import type { Counts, Job, Snapshot } from "./types";

const STACK: (keyof Counts)[] = ["succeeded", "failed", "timeout", "cancelled", "running"];

interface Row {
  tr: HTMLTableRowElement;
  cells: HTMLTableCellElement[];
  progress: HTMLDivElement;
  segs: HTMLDivElement[];
  progText: HTMLSpanElement;
  stagesKey: string;
}

const COLS = ["ID", "Name", "Kind", "State", "Progress", "Stages", "Running", "Failed", "ETA", "Elapsed", "Retries", "Lost workers", "Prio"];

function ended(c: Counts): number {
  return c.succeeded + c.failed + c.timeout + c.cancelled;
}

function order(j: Job): number {
  return j.state === "running" ? 0 : j.state === "waiting" ? 1 : 2;
}

export class JobsPage implements Page {
  private tbody: HTMLTableSectionElement;
  private rows = new Map<number, Row>();
  private empty: HTMLElement;
  private summary: HTMLElement;

  constructor(root: HTMLElement) {
    const thead = el("thead", null, el("tr", null, ...COLS.map((c) => el("th", { text: c }))));
    this.tbody = el("tbody");
    this.empty = el("p", { class: "muted empty", text: "No jobs yet." });
    this.summary = el("span", { class: "muted" });
    const legend = el("div", { class: "legend muted" });
    for (const k of STACK) legend.append(el("span", { class: "swatch", style: `background:${STATE_COLORS[k]}` }), ` ${k} `);
    legend.append(el("span", { class: "swatch swatch-empty" }), " waiting");
    root.append(
      el("div", { class: "panel" }, el("h3", null, "Jobs ", this.summary), legend, el("div", { class: "table-wrap" }, el("table", { id: "jobs-table", class: "grid" }, thead, this.tbody)), this.empty),
    );
  }

  show(): void {}
  hide(): void {}

  update(s: Snapshot, visible: boolean): void {
    if (!visible) return;
    const jobs = [...(s.jobs ?? [])].sort((a, b) => order(a) - order(b) || (order(a) < 2 ? a.id - b.id : b.id - a.id));
    this.empty.hidden = jobs.length > 0;
    const running = jobs.filter((j) => j.state === "running").length;
    setText(this.summary, `· ${jobs.length} jobs, ${running} running`);
    const seen = new Set<number>();
    let changedOrder = false;
    let i = 0;
    const children = this.tbody.children;
    for (const j of jobs) {
      seen.add(j.id);
      let r = this.rows.get(j.id);
      if (!r) {
        r = this.makeRow(j);
        this.rows.set(j.id, r);
      }
      this.fill(r, j, s.now);
      if (children[i] !== r.tr) changedOrder = true;
      i++;
    }
    for (const [id, r] of this.rows) {
      if (!seen.has(id)) {
        r.tr.remove();
        this.rows.delete(id);
        changedOrder = true;
      }
    }
    if (changedOrder || children.length !== jobs.length) {
      const frag = document.createDocumentFragment();
      for (const j of jobs) frag.appendChild(this.rows.get(j.id)!.tr);
      this.tbody.appendChild(frag);
    }
  }

  private makeRow(j: Job): Row {
    const cells = COLS.map(() => el("td"));
    const tr = el("tr", { "data-job-id": j.id });
    tr.append(...cells);
    const segs = STACK.map((k) => el("div", { class: "seg seg-" + k, style: `background:${STATE_COLORS[k]}` }));
    const progress = el("div", { class: "progress" }, ...segs);
    const progText = el("span", { class: "progress-text" });
    cells[4].append(progress, progText);
    cells[4].className = "cell-progress";
    for (const k of [0, 6, 7, 8, 9, 10, 11, 12]) cells[k].className = "num";
    return { tr, cells, progress, segs, progText, stagesKey: "" };
  }

  private fill(r: Row, j: Job, now: number): void {
    const c = r.cells;
    const cnt = j.counts;
    const total = j.tasks || 0;
    setText(c[0], String(j.id));
    setText(c[1], j.name);
    setText(c[2], j.kind);
    c[3].className = "state state-" + j.state;
    setText(c[3], j.state);
    const done = ended(cnt);
    r.progress.dataset.done = String(done);
    r.progress.dataset.total = String(total);
    r.progress.dataset.succeeded = String(cnt.succeeded);
    r.progress.dataset.failed = String(cnt.failed + cnt.timeout);
    r.progress.title = STACK.map((k) => `${k} ${cnt[k]}`).join(", ") + `, waiting ${cnt.waiting}`;
    STACK.forEach((k, i) => {
      const w = total > 0 ? (100 * cnt[k]) / total : 0;
      const s = w.toFixed(3) + "%";
      const seg = r.segs[i];
      if (seg.style.width !== s) seg.style.width = s;
      // A few failures among many tasks stay visible.
      const min = cnt[k] > 0 && k !== "succeeded" && k !== "running" ? "2px" : "0px";
      if (seg.style.minWidth !== min) seg.style.minWidth = min;
    });
    setText(r.progText, `${num(done)} / ${num(total)}` + (total ? ` (${pct(done / total)})` : ""));
    // Stages: rebuild only when they change.
    const key = j.stages.map((s) => `${s.label}\u0000${s.done}\u0000${s.total}`).join("\u0001");
    if (key !== r.stagesKey) {
      r.stagesKey = key;
      if (!j.stages.length) replaceChildren(c[5], el("span", { class: "muted", text: "–" }));
      else
        replaceChildren(
          c[5],
          el(
            "div",
            { class: "stages" },
            ...j.stages.map((s) =>
              el(
                "div",
                { class: "stage" + (s.total > 0 && s.done >= s.total ? " stage-done" : "") },
                el("span", { class: "stage-label", text: s.label, title: s.label }),
                el(
                  "div",
                  { class: "mini", "data-done": s.done, "data-total": s.total },
                  el("div", { class: "mini-fill", style: `width:${s.total > 0 ? ((100 * s.done) / s.total).toFixed(2) : 0}%` }),
                ),
                el("span", { class: "stage-count", text: `${num(s.done)}/${num(s.total)}` }),
              ),
            ),
          ),
        );
    }
    setText(c[6], num(cnt.running));
    setText(c[7], num(cnt.failed + cnt.timeout));
    c[7].classList.toggle("bad", cnt.failed + cnt.timeout > 0);
    setText(c[8], j.state === "running" || j.state === "waiting" ? dur(j.eta_s) : "–");
    setText(c[9], j.started != null ? dur((j.ended ?? now) - j.started) : "–");
    setText(c[10], num(j.retries));
    setText(c[11], num(j.workers_lost));
    c[11].classList.toggle("warn", j.workers_lost > 0);
    setText(c[12], String(j.priority));
  }
}
