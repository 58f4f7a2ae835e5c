//! What the dashboard shows: a snapshot the actor makes about once a second and
//! publishes through a `watch` channel. Handlers only read published snapshots; no
//! lock is ever held across the scheduler.

use serde::Serialize;

use crate::proto::jobs::JobInfo;
use crate::proto::{JobStatus, LostWorker};

#[derive(Clone, Debug, Default, Serialize)]
pub struct Snapshot {
    /// Seconds since the server started.
    pub now: f64,
    pub server: ServerInfo,
    pub workers: Vec<WorkerView>,
    pub pool: PoolView,
    pub jobs: Vec<JobView>,
    pub throughput: Rates,
    pub totals: Totals,
    pub lost_workers: Vec<LostWorker>,
    pub failures: Vec<FailureView>,
}

/// A snapshot as a page gets it: with the charts' points (all of them, or with
/// `history_delta` only those after the ones it had).
#[derive(Serialize)]
pub struct Page<'a> {
    #[serde(flatten)]
    pub snap: &'a Snapshot,
    pub history: Vec<Point>,
    pub history_delta: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ServerInfo {
    pub host: String,
    pub version: String,
    pub started_unix: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct WorkerView {
    pub id: u32,
    pub host: String,
    pub pid: u32,
    pub threads: u32,
    /// Tasks running there (at most its threads).
    pub busy: u32,
    /// Tasks waiting in its queue.
    pub queued: u32,
    pub batch_job: Option<String>,
    pub node: Option<String>,
    /// How it is connected: "quic", "tcp" or "unix" (on the server's host).
    pub transport: String,
    pub rss_bytes: Option<u64>,
    pub memory_bound_bytes: Option<u64>,
    pub cpu_percent: Option<f64>,
    pub tasks_done: u64,
    pub bytes_read: u64,
    pub walltime_left_s: Option<f64>,
    /// running or draining.
    pub state: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PoolView {
    pub target: Option<u32>,
    pub adapt: Option<(u32, u32)>,
    pub submit_failure: Option<String>,
    pub jobs: Vec<JobStatus>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct StageView {
    pub label: String,
    pub done: u64,
    pub total: u64,
}

/// A job as `drover jobs` shows it, and what the dashboard adds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct JobView {
    #[serde(flatten)]
    pub info: JobInfo,
    pub started: Option<f64>,
    pub ended: Option<f64>,
    pub eta_s: Option<f64>,
    pub retries: u64,
    pub workers_lost: u64,
    pub stages: Vec<StageView>,
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Rates {
    pub tasks_per_s: f64,
    pub bytes_read_per_s: f64,
    pub bytes_written_per_s: f64,
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Totals {
    pub tasks_done: u64,
    pub tasks_retried: u64,
    pub workers_lost: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Point {
    pub t: f64,
    pub tasks_per_s: f64,
    pub bytes_read_per_s: f64,
    pub bytes_written_per_s: f64,
    pub workers: u32,
    pub busy: u32,
    /// Resident memory per worker id (pools of at most 64 workers; larger ones have
    /// only the sum and the largest).
    pub rss_bytes: std::collections::BTreeMap<u32, u64>,
    pub rss_total_bytes: u64,
    pub rss_max_bytes: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct FailureView {
    pub t: f64,
    pub job: u64,
    pub task: String,
    pub message: String,
}
