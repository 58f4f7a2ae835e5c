//! What the server shows of itself while it runs (the dashboard, issue 14): the task
//! stream's bars, per-worker load, recent failures, throughput history, and the
//! snapshot published about once a second through a `watch` channel. The actor feeds
//! it; nothing here touches the scheduler.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::dashboard::Observed;
use crate::dashboard::history::History;
use crate::dashboard::snapshot::{FailureView, JobView, Point, PoolView, Rates, ServerInfo, Snapshot, Totals, WorkerView};
use crate::dashboard::stream::Stream;
use crate::proto::Status;

/// A task a job saw end, for the stream and the counters.
pub struct Finished {
    pub worker: u32,
    pub job: u64,
    pub label: String,
    pub took: Duration,
    pub ok: bool,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

#[derive(Default)]
struct WorkerStats {
    tasks_done: u64,
    bytes_read: u64,
    rss: Option<u64>,
    cpu: Option<(Duration, u64)>,
    cpu_percent: Option<f64>,
    walltime_end: Option<Duration>,
    memory_bound: Option<u64>,
}

const FAILURES: usize = 200;

pub struct Observer {
    tx: watch::Sender<Arc<Snapshot>>,
    pub stream: Arc<Stream>,
    pub history: Arc<History>,
    server: ServerInfo,
    workers: HashMap<u32, WorkerStats>,
    totals: Totals,
    last: (Duration, Totals),
    rates: Rates,
    failures: VecDeque<FailureView>,
    /// When each job started and ended (seconds since the start).
    times: HashMap<u64, (f64, Option<f64>)>,
    /// When the last task of each job ended.
    last_end: HashMap<u64, f64>,
}

impl Observer {
    pub fn new(host: String) -> Self {
        let (tx, _) = watch::channel(Arc::new(Snapshot::default()));
        let started_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self {
            tx,
            stream: Arc::new(Stream::default()),
            history: Arc::new(History::default()),
            server: ServerInfo {
                host,
                version: env!("CARGO_PKG_VERSION").into(),
                started_unix,
            },
            workers: HashMap::new(),
            totals: Totals::default(),
            last: (Duration::ZERO, Totals::default()),
            rates: Rates::default(),
            failures: VecDeque::new(),
            times: HashMap::new(),
            last_end: HashMap::new(),
        }
    }

    /// What the dashboard and the reports read.
    pub fn observed(&self) -> Observed {
        Observed {
            snapshots: self.tx.subscribe(),
            stream: self.stream.clone(),
            history: self.history.clone(),
        }
    }

    pub fn worker_joined(&mut self, worker: u32, threads: u32, walltime_end: Option<Duration>, memory_bound: Option<u64>) {
        self.stream.worker_joined(worker, threads);
        self.workers.insert(
            worker,
            WorkerStats {
                walltime_end,
                memory_bound,
                ..Default::default()
            },
        );
    }

    pub fn worker_left(&mut self, worker: u32) {
        self.workers.remove(&worker);
        self.stream.worker_left(worker);
    }

    /// A worker's resident memory and CPU time so far.
    pub fn load(&mut self, now: Duration, worker: u32, rss: u64, cpu_ms: u64) {
        let Some(w) = self.workers.get_mut(&worker) else { return };
        w.rss = Some(rss);
        if let Some((t, c)) = w.cpu
            && now > t
        {
            w.cpu_percent = Some(cpu_ms.saturating_sub(c) as f64 / (now - t).as_secs_f64() / 10.0);
        }
        w.cpu = Some((now, cpu_ms));
    }

    pub fn finished(&mut self, now: Duration, f: &Finished) {
        let t1 = now.as_secs_f64();
        let t0 = (t1 - f.took.as_secs_f64()).max(0.0);
        self.stream.push(f.worker, f.job, &f.label, t0, t1, f.ok);
        self.last_end.insert(f.job, t1);
        self.totals.tasks_done += 1;
        self.totals.bytes_read += f.bytes_read;
        self.totals.bytes_written += f.bytes_written;
        if let Some(w) = self.workers.get_mut(&f.worker) {
            w.tasks_done += 1;
            w.bytes_read += f.bytes_read;
        }
    }

    pub fn failure(&mut self, now: Duration, job: u64, task: String, message: String) {
        self.failures.push_back(FailureView {
            t: now.as_secs_f64(),
            job,
            task,
            message,
        });
        if self.failures.len() > FAILURES {
            self.failures.pop_front();
        }
    }

    pub fn job_started(&mut self, now: Duration, job: u64) {
        self.times.entry(job).or_insert((now.as_secs_f64(), None));
    }

    /// Publish a snapshot: `status` as `drover status` has it, the jobs' views.
    pub fn publish(&mut self, now: Duration, status: Status, mut jobs: Vec<JobView>) {
        let secs = now.as_secs_f64();
        self.totals.tasks_retried = status.tasks_retried;
        self.totals.workers_lost = status.workers_lost;
        let (t, before) = self.last;
        if now > t + Duration::from_millis(500) {
            let dt = (now - t).as_secs_f64();
            self.rates = Rates {
                tasks_per_s: (self.totals.tasks_done - before.tasks_done) as f64 / dt,
                bytes_read_per_s: (self.totals.bytes_read - before.bytes_read) as f64 / dt,
                bytes_written_per_s: (self.totals.bytes_written - before.bytes_written) as f64 / dt,
            };
            self.last = (now, self.totals);
        }
        let workers: Vec<WorkerView> = status
            .workers
            .iter()
            .map(|w| {
                let s = self.workers.get(&w.id);
                let busy = (w.assigned as u32).min(w.threads);
                WorkerView {
                    id: w.id,
                    host: w.host.clone(),
                    pid: w.pid,
                    threads: w.threads,
                    busy,
                    queued: w.assigned as u32 - busy,
                    batch_job: w.batch_job.clone(),
                    node: w.node.clone(),
                    transport: w.transport.clone(),
                    rss_bytes: s.and_then(|s| s.rss),
                    memory_bound_bytes: s.and_then(|s| s.memory_bound),
                    cpu_percent: s.and_then(|s| s.cpu_percent),
                    tasks_done: s.map_or(0, |s| s.tasks_done),
                    bytes_read: s.map_or(0, |s| s.bytes_read),
                    walltime_left_s: s.and_then(|s| s.walltime_end).map(|e| e.saturating_sub(now).as_secs_f64()),
                    state: if w.draining { "draining" } else { "running" }.into(),
                }
            })
            .collect();
        for j in &mut jobs {
            let times = self.times.entry(j.info.id).or_insert((secs, None));
            if j.info.ended() && times.1.is_none() {
                // Its last task's end (a short job starts and ends between snapshots).
                times.1 = Some(self.last_end.get(&j.info.id).map_or(secs, |&t| t.max(times.0)));
            }
            j.started = Some(times.0);
            j.ended = times.1;
            let ended = j.info.counts.ended();
            let ran = secs - times.0;
            if times.1.is_none() && ended > 0 && ran > 0.0 {
                j.eta_s = Some((j.info.tasks - ended) as f64 * ran / ended as f64);
            }
        }
        let point = Point {
            t: secs,
            tasks_per_s: self.rates.tasks_per_s,
            bytes_read_per_s: self.rates.bytes_read_per_s,
            bytes_written_per_s: self.rates.bytes_written_per_s,
            workers: workers.len() as u32,
            busy: workers.iter().map(|w| w.busy).sum(),
            rss_bytes: if workers.len() <= 64 {
                workers
                    .iter()
                    .filter_map(|w| Some((w.id, w.rss_bytes?)))
                    .collect::<BTreeMap<_, _>>()
            } else {
                BTreeMap::new()
            },
            rss_total_bytes: workers.iter().filter_map(|w| w.rss_bytes).sum(),
            rss_max_bytes: workers.iter().filter_map(|w| w.rss_bytes).max().unwrap_or(0),
        };
        self.history.push(point);
        let snap = Snapshot {
            now: secs,
            server: self.server.clone(),
            workers,
            pool: PoolView {
                target: status.target,
                adapt: status.adapt,
                submit_failure: status.submit_failure,
                jobs: status.jobs,
            },
            jobs,
            throughput: self.rates,
            totals: self.totals,
            lost_workers: status.lost_workers,
            failures: self.failures.iter().rev().cloned().collect(),
        };
        self.tx.send_replace(Arc::new(snap));
    }
}
