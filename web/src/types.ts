// The JSON the drover server sends. Times are seconds since the server started
// unless a name says otherwise.

export interface ServerInfo {
  host: string;
  version: string;
  started_unix: number;
}

export type WorkerState = "running" | "draining" | string;

export interface Worker {
  id: number;
  host: string;
  pid: number;
  threads: number;
  busy: number;
  queued: number;
  batch_job: string | null;
  node: string | null;
  /** "quic"; "tcp" when QUIC did not get through; "unix" on the server's host. */
  transport: string;
  rss_bytes: number | null;
  memory_bound_bytes: number | null;
  cpu_percent: number | null;
  tasks_done: number;
  bytes_read: number;
  walltime_left_s: number | null;
  state: WorkerState;
}

export interface PoolJob {
  id: string;
  state: "pending" | "running" | "expiring" | "gone" | string;
  workers: number;
  retiring: boolean;
}

export interface Pool {
  target: number | null;
  adapt: [number, number] | null;
  submit_failure: string | null;
  jobs: PoolJob[];
}

export interface Counts {
  waiting: number;
  running: number;
  succeeded: number;
  failed: number;
  timeout: number;
  cancelled: number;
}

export interface Stage {
  label: string;
  done: number;
  total: number;
}

export interface Job {
  id: number;
  name: string;
  kind: "array" | "tasks" | string;
  state: "waiting" | "running" | "succeeded" | "failed" | "cancelled" | string;
  tasks: number;
  counts: Counts;
  priority: number;
  started: number | null;
  ended: number | null;
  eta_s: number | null;
  retries: number;
  workers_lost: number;
  stages: Stage[];
}

export interface Throughput {
  tasks_per_s: number;
  bytes_read_per_s: number;
  bytes_written_per_s: number;
}

export interface Totals {
  tasks_done: number;
  tasks_retried: number;
  workers_lost: number;
  bytes_read: number;
  bytes_written: number;
}

export interface HistoryPoint {
  t: number;
  tasks_per_s: number;
  bytes_read_per_s: number;
  bytes_written_per_s: number;
  workers: number;
  busy: number;
  rss_bytes: Record<string, number>;
}

export interface LostWorker {
  id: number;
  host: string;
  pid: number;
  batch_job: string | null;
  reason: string;
  tasks_requeued: number;
  t?: number | null;
}

export interface Failure {
  t: number;
  job: number;
  task: string;
  message: string;
}

export interface Snapshot {
  now: number;
  server: ServerInfo;
  workers: Worker[];
  pool: Pool;
  jobs: Job[];
  throughput: Throughput;
  totals: Totals;
  history: HistoryPoint[];
  /** Only the points after those sent before (server-sent events). */
  history_delta?: boolean;
  lost_workers: LostWorker[];
  failures: Failure[];
}

export interface Bar {
  worker: number;
  lane: number;
  job: number;
  label: string;
  t0: number;
  t1: number;
  ok: boolean;
  /** Tasks the bar stands for (back-to-back tasks within a pixel come as one). */
  n?: number;
}

export interface StreamData {
  now: number;
  bars: Bar[];
  /** Optional: how many tasks overlap the window. */
  total?: number;
  /** Optional: the server left bars out (evenly) to keep the answer small. */
  thinned?: boolean;
  /** Optional: tasks the server has pushed so far (ask `from` it for the newer ones). */
  next?: number;
}

export interface Report {
  snapshot: Snapshot;
  stream: StreamData;
  /** The workload file as submitted (text), if any. */
  workload?: string | null;
  /** The run's summary JSON, if any. */
  summary?: unknown;
}

declare global {
  interface Window {
    DROVER_REPORT?: Report;
  }
}
