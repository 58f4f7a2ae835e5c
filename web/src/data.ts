// Where the data comes from: the live server (snapshot + server-sent events, falling
// back to polling) or an offline report embedded in the page (no requests at all).

import type { HistoryPoint, Snapshot, StreamData } from "./types";

/** Points the live charts keep (one a second: ten minutes). */
const KEEP_POINTS = 600;

export class AuthError extends Error {
  constructor() {
    super("401 Unauthorized");
  }
}

export async function getJSON<T>(url: string): Promise<T> {
  const r = await fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } });
  if (r.status === 401) throw new AuthError();
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return (await r.json()) as T;
}

export type Status = "connecting" | "live" | "polling" | "offline" | "report" | "unauthorized";

export interface Source {
  readonly report: boolean;
  start(onSnapshot: (s: Snapshot) => void, onStatus: (s: Status, detail?: string) => void): void;
  /** Bars overlapping [since, until]; tasks within `pixel` seconds of one another on a
   * lane may come as one bar. */
  stream(since: number, until: number, pixel: number): Promise<StreamData>;
  /** The tasks that ended after the answer whose `next` was `from`. */
  streamFrom(from: number, pixel: number): Promise<StreamData>;
}

/** The offline report: everything is in window.DROVER_REPORT. */
export class ReportSource implements Source {
  readonly report = true;
  constructor(private snap: Snapshot, private data: StreamData) {}
  start(onSnapshot: (s: Snapshot) => void, onStatus: (s: Status) => void): void {
    onStatus("report");
    onSnapshot(this.snap);
  }
  async stream(since: number, until: number, _pixel: number): Promise<StreamData> {
    return { now: this.data.now, bars: this.data.bars.filter((b) => b.t1 >= since && b.t0 <= until) };
  }
  async streamFrom(_from: number, _pixel: number): Promise<StreamData> {
    return { now: this.data.now, bars: [] };
  }
  /** The whole run's bars, for the report's default view. */
  all(): StreamData {
    return this.data;
  }
}

/** The live server. */
export class LiveSource implements Source {
  readonly report = false;
  private es: EventSource | null = null;
  private pollTimer = 0;
  private pollsSinceEs = 0;
  private stopped = false;
  private onSnapshot: (s: Snapshot) => void = () => {};
  private onStatus: (s: Status, detail?: string) => void = () => {};
  /** The charts' points: server-sent events carry only those the page has not seen. */
  private hist: HistoryPoint[] = [];

  start(onSnapshot: (s: Snapshot) => void, onStatus: (s: Status, detail?: string) => void): void {
    this.onSnapshot = (s: Snapshot) => onSnapshot(this.withHistory(s));
    this.onStatus = onStatus;
    onStatus("connecting");
    getJSON<Snapshot>("api/snapshot").then(
      (s) => {
        this.onSnapshot(s);
        this.openEvents();
      },
      (e) => this.failed(e),
    );
  }

  private withHistory(s: Snapshot): Snapshot {
    const points = s.history ?? [];
    if (s.history_delta) {
      const last = this.hist.length ? this.hist[this.hist.length - 1].t : -Infinity;
      for (const p of points) if (p.t > last) this.hist.push(p);
      if (this.hist.length > KEEP_POINTS) this.hist.splice(0, this.hist.length - KEEP_POINTS);
    } else {
      this.hist = points.slice(-KEEP_POINTS);
    }
    s.history = this.hist;
    return s;
  }

  async stream(since: number, until: number, pixel: number): Promise<StreamData> {
    try {
      return await getJSON<StreamData>(
        `api/stream?since=${since.toFixed(3)}&until=${until.toFixed(3)}&pixel=${Math.max(0, pixel).toPrecision(3)}`,
      );
    } catch (e) {
      if (e instanceof AuthError) this.failed(e);
      throw e;
    }
  }

  async streamFrom(from: number, pixel: number): Promise<StreamData> {
    try {
      return await getJSON<StreamData>(`api/stream?from=${from}&pixel=${Math.max(0, pixel).toPrecision(3)}`);
    } catch (e) {
      if (e instanceof AuthError) this.failed(e);
      throw e;
    }
  }

  private failed(e: unknown): void {
    if (e instanceof AuthError) {
      this.stopped = true;
      this.es?.close();
      this.es = null;
      window.clearTimeout(this.pollTimer);
      this.onStatus("unauthorized");
      return;
    }
    this.onStatus("offline", String(e instanceof Error ? e.message : e));
    this.schedulePoll(2000);
  }

  private openEvents(): void {
    if (this.stopped || typeof EventSource === "undefined") {
      this.schedulePoll(1000);
      return;
    }
    const es = new EventSource("api/events", { withCredentials: true });
    this.es = es;
    es.onopen = () => this.onStatus("live");
    es.onmessage = (ev: MessageEvent<string>) => {
      let s: Snapshot;
      try {
        s = JSON.parse(ev.data) as Snapshot;
      } catch {
        return;
      }
      this.onStatus("live");
      this.onSnapshot(s);
    };
    es.onerror = () => {
      // EventSource hides the status code: poll instead, which tells 401 from a dead server.
      es.close();
      if (this.es === es) this.es = null;
      this.pollsSinceEs = 0;
      this.schedulePoll(0);
    };
  }

  private schedulePoll(ms: number): void {
    if (this.stopped) return;
    window.clearTimeout(this.pollTimer);
    this.pollTimer = window.setTimeout(() => this.poll(), ms);
  }

  private poll(): void {
    if (this.stopped) return;
    getJSON<Snapshot>("api/snapshot").then(
      (s) => {
        this.onStatus("polling");
        this.onSnapshot(s);
        // Try the event stream again now and then.
        if (++this.pollsSinceEs >= 15) this.openEvents();
        else this.schedulePoll(1000);
      },
      (e) => this.failed(e),
    );
  }
}

export function makeSource(): Source {
  const r = window.DROVER_REPORT;
  if (r && r.snapshot) return new ReportSource(r.snapshot, r.stream ?? { now: r.snapshot.now, bars: [] });
  return new LiveSource();
}
