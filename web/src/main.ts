// drover dashboard: one page, five tabs, fed by a live server or an embedded report.

import "uplot/dist/uPlot.min.css";
import "./style.css";

import { makeSource, type Status } from "./data";
import { byId, setText } from "./dom";
import { dur } from "./format";
import { JobsPage } from "./jobs";
import { LogsPage } from "./logs";
import { OverviewPage } from "./overview";
import { StreamPage } from "./stream";
import type { Snapshot } from "./types";
import { WorkersPage } from "./workers";

export interface Page {
  /** Called with every snapshot; `visible` says whether the tab is shown. */
  update(s: Snapshot, visible: boolean): void;
  show(): void;
  hide(): void;
}

const TABS = ["overview", "jobs", "stream", "workers", "logs"] as const;
type Tab = (typeof TABS)[number];

function start(): void {
  const source = makeSource();
  if (source.report) document.body.classList.add("report");

  const pages: Record<Tab, Page> = {
    overview: new OverviewPage(byId("page-overview")),
    jobs: new JobsPage(byId("page-jobs")),
    stream: new StreamPage(byId("page-stream"), source),
    workers: new WorkersPage(byId("page-workers")),
    logs: new LogsPage(byId("page-logs")),
  };

  let current: Tab = "overview";
  let last: Snapshot | null = null;

  const fromHash = (): Tab => {
    const h = location.hash.replace(/^#/, "");
    return (TABS as readonly string[]).includes(h) ? (h as Tab) : "overview";
  };

  const select = (tab: Tab, push: boolean): void => {
    current = tab;
    for (const t of TABS) {
      const on = t === tab;
      const b = byId(`tab-${t}`);
      b.classList.toggle("active", on);
      b.setAttribute("aria-selected", String(on));
      byId(`page-${t}`).hidden = !on;
      if (!on) pages[t].hide();
    }
    pages[tab].show();
    if (last) pages[tab].update(last, true);
    if (push && location.hash !== "#" + tab) history.replaceState(null, "", "#" + tab);
  };

  for (const t of TABS) byId(`tab-${t}`).addEventListener("click", () => select(t, true));
  window.addEventListener("hashchange", () => select(fromHash(), false));

  const conn = byId("conn");
  const offline = byId("offline-error");
  const onStatus = (st: Status, detail?: string): void => {
    conn.className = "conn conn-" + st;
    const text: Record<Status, string> = {
      connecting: "connecting",
      live: "live",
      polling: "live (polling)",
      offline: "disconnected",
      report: "report",
      unauthorized: "unauthorized",
    };
    setText(conn, text[st]);
    byId("auth-error").hidden = st !== "unauthorized";
    offline.hidden = st !== "offline";
    if (st === "offline") setText(offline, "Lost the connection to the drover server, retrying… " + (detail ?? ""));
  };

  const serverInfo = byId("server-info");
  const updatedAt = byId("updated-at");
  const onSnapshot = (s: Snapshot): void => {
    last = s;
    const srv = s.server;
    if (srv) {
      const started = srv.started_unix ? new Date(srv.started_unix * 1000) : null;
      setText(
        serverInfo,
        `${srv.host} · v${srv.version}` + (started ? ` · started ${isoMinute(started)}` : ""),
      );
    }
    setText(updatedAt, s.now.toFixed(1));
    updatedAt.dataset.now = String(s.now);
    updatedAt.title = "seconds since the server started (up " + dur(s.now) + ")";
    for (const t of TABS) pages[t].update(s, t === current);
  };

  select(fromHash(), false);
  source.start(onSnapshot, onStatus);
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();

function isoMinute(d: Date): string {
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`;
}
