// Logs: lost workers and task failures, newest first.

import { el, replaceChildren, setText } from "./dom";
import { clock, dur } from "./format";
import type { Page } from "./main";
import type { Failure, LostWorker, Snapshot } from "./types";

const MAX_ROWS = 1000;

export class LogsPage implements Page {
  private lostBody: HTMLTableSectionElement;
  private failBody: HTMLTableSectionElement;
  private lostSummary: HTMLElement;
  private failSummary: HTMLElement;
  private lostKey = "";
  private failKey = "";

  constructor(root: HTMLElement) {
    this.lostBody = el("tbody");
    this.failBody = el("tbody");
    this.lostSummary = el("span", { class: "muted" });
    this.failSummary = el("span", { class: "muted" });
    // The last-but-one or last column (reason, message) takes the spare width.
    const head = (grow: string, ...cols: string[]) =>
      el("thead", null, el("tr", null, ...cols.map((c) => el("th", { text: c, class: c === grow ? "grow" : null }))));
    root.append(
      el(
        "div",
        { class: "panel" },
        el("h3", null, "Lost workers ", this.lostSummary),
        el("div", { class: "table-wrap" }, el("table", { id: "lost-table", class: "grid" }, head("Reason", "Time", "Worker", "Host", "PID", "Batch job", "Reason", "Tasks requeued"), this.lostBody)),
      ),
      el(
        "div",
        { class: "panel" },
        el("h3", null, "Task failures ", this.failSummary),
        el("div", { class: "table-wrap" }, el("table", { id: "failures-table", class: "grid" }, head("Message", "Time", "Job", "Task", "Message"), this.failBody)),
      ),
    );
  }

  show(): void {
    this.lostKey = this.failKey = "";
  }
  hide(): void {}

  update(s: Snapshot, visible: boolean): void {
    if (!visible) return;
    const base = s.server?.started_unix;
    const when = (t: number | null | undefined): string =>
      t == null ? "–" : `${clock(t, base)} (${s.now - t < 1 ? "just now" : dur(s.now - t) + " ago"})`;
    const names = new Map((s.jobs ?? []).map((j) => [j.id, j.name]));

    const lost = s.lost_workers ?? [];
    // Newest first: by time when the server gives one, else the reverse of its order.
    const lostKey = `${lost.length}:${lost.length ? lost[lost.length - 1].id : ""}:${Math.floor(s.now / 5)}`;
    if (lostKey !== this.lostKey) {
      this.lostKey = lostKey;
      const rows: LostWorker[] = lost.map((l, i) => ({ ...l, _i: i }) as LostWorker & { _i: number });
      rows.sort((a, b) => (b.t ?? -1) - (a.t ?? -1) || (b as LostWorker & { _i: number })._i - (a as LostWorker & { _i: number })._i);
      replaceChildren(
        this.lostBody,
        ...rows.slice(0, MAX_ROWS).map((l) =>
          el(
            "tr",
            { "data-worker-id": l.id },
            el("td", { class: "nowrap", text: when(l.t) }),
            el("td", { class: "num", text: String(l.id) }),
            el("td", { text: l.host }),
            el("td", { class: "num", text: String(l.pid) }),
            el("td", { text: l.batch_job ?? "–" }),
            el("td", { class: "bad", text: l.reason }),
            el("td", { class: "num", text: String(l.tasks_requeued) }),
          ),
        ),
      );
      if (!rows.length) this.lostBody.appendChild(el("tr", { class: "empty-row" }, el("td", { colspan: 7, class: "muted", text: "No worker lost." })));
      setText(this.lostSummary, `· ${lost.length}`);
    }

    const fails = s.failures ?? [];
    const failKey = `${fails.length}:${fails.length ? fails[fails.length - 1].t : ""}:${Math.floor(s.now / 5)}`;
    if (failKey !== this.failKey) {
      this.failKey = failKey;
      const rows: Failure[] = [...fails].sort((a, b) => b.t - a.t);
      replaceChildren(
        this.failBody,
        ...rows.slice(0, MAX_ROWS).map((f) =>
          el(
            "tr",
            { "data-job-id": f.job },
            el("td", { class: "nowrap", text: when(f.t) }),
            el("td", { class: "nowrap", text: names.has(f.job) ? `${f.job} ${names.get(f.job)}` : String(f.job) }),
            el("td", { class: "mono", text: f.task }),
            el("td", { class: "msg", text: f.message }),
          ),
        ),
      );
      if (!rows.length) this.failBody.appendChild(el("tr", { class: "empty-row" }, el("td", { colspan: 4, class: "muted", text: "No task failed." })));
      setText(this.failSummary, `· ${fails.length}` + (fails.length > MAX_ROWS ? ` (newest ${MAX_ROWS} shown)` : ""));
    }
  }
}
