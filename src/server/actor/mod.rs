//! The event loop that drives the scheduler core.
//!
//! Connections, timers and blocking helpers send [`Event`]s; the actor feeds them to the
//! [`Core`] with the current time and carries out the [`Action`]s it returns. It owns
//! the workers, the batch pool and the jobs ([`super::jobs`]): each of the core's
//! actions and each worker message about a job goes to that job. Array workloads run
//! one at a time (further ones queue; each needs the inbound budget and its outputs'
//! writer to itself); task jobs run beside them and beside each other.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::jobs::array::{ArrayJob, Prepared, prepare};
use super::jobs::tasks::TaskJob;
use super::jobs::{Cx, Job, JobEvent, Notify, Peer, Tx, of_job, send};
use crate::batch::{JobId, JobState};
use crate::config::workload::Workload;
use crate::core::{Action, Core, CoreConfig, Failure, GraphId, TaskKey, WorkerId};
use crate::proto::{self, PeerMsg, ServerMsg, Status, WorkerInfo, WorkerStatus};

pub use self::site::SitePool;
pub use super::jobs::Outgoing;

/// Everything the actor reacts to.
pub enum Event {
    WorkerConnected {
        info: WorkerInfo,
        tx: Tx,
        reply: oneshot::Sender<WorkerId>,
    },
    WorkerMsg {
        id: WorkerId,
        msg: PeerMsg,
        payload: Bytes,
    },
    WorkerGone {
        id: WorkerId,
        reason: String,
    },
    /// A worker's results lane (TLS over TCP beside its QUIC connection) is open.
    LaneOpened {
        id: WorkerId,
    },
    /// A message from a client.
    Client {
        msg: PeerMsg,
        client: Tx,
    },
    ClientGone {
        client: Tx,
    },
    Stop,
    Prepared {
        job: u64,
        result: Result<Prepared, (bool, String)>,
    },
    /// Background work of a job finished.
    Job {
        job: u64,
        event: JobEvent,
    },
    /// Publish a snapshot now, then answer.
    Publish(oneshot::Sender<()>),
    PoolSubmitted(Result<Vec<(JobId, Option<Duration>)>, String>),
    PoolStatus(Result<std::collections::BTreeMap<JobId, JobState>, String>),
}

pub struct Actor {
    core: Core,
    events: mpsc::UnboundedSender<Event>,
    notify: Notify,
    epoch: Instant,
    workers: HashMap<WorkerId, Peer>,
    /// Every job submitted, by id (= its graph's id); ended ones stay for `drover jobs`.
    jobs: BTreeMap<u64, Box<dyn Job>>,
    /// Array workloads waiting for the running one.
    queue: VecDeque<(Workload, Tx)>,
    /// The array workload being planned.
    preparing: Option<(u64, Tx)>,
    next_job: u64,
    stopping: Option<Instant>,
    /// Workers that left before their walltime, over the server's life.
    drained_workers: u64,
    /// Smoothed task run time, from workers' reports.
    mean_task: Option<Duration>,
    /// Tasks that ended since they were last folded into `mean_task` and the observer.
    finished: Vec<super::observe::Finished>,
    /// What the dashboard shows.
    observer: super::observe::Observer,
    /// Current prefetch depth per slot.
    prefetch: u32,
    /// Recently lost workers, for `drover status`.
    lost: VecDeque<proto::LostWorker>,
    site: Option<SitePool>,
    /// The budget of received result bytes, sized per job.
    inbound: Option<super::conn::Inbound>,
    /// The longest round trip to a worker (prefetch covers it).
    rtt: super::conn::Rtt,
    /// This host's name: only workers reporting it are offered direct output writes
    /// (the chunk table can be large; they still check the file's identity).
    host: String,
    /// The server's folder.
    dir: PathBuf,
    /// Stuck tasks: the limit, the slowest task finished so far, and what each worker
    /// last said of its oldest running task.
    task_timeout: hung::TaskTimeout,
    slowest_task: Option<Duration>,
    running: HashMap<WorkerId, hung::Running>,
    /// Batch jobs with a worker that stopped answering, and since when.
    unresponsive: HashMap<JobId, Duration>,
}

/// The inbound budget before any job sets one.
pub(super) const DEFAULT_INBOUND: u64 = 128 << 20;

/// A worker's link as `drover status` and the dashboard show it once its results
/// lane is open.
const LANE_TRANSPORT: &str = "quic+tcp";

/// The fields of the actor a job handler uses, borrowed apart from `jobs`.
macro_rules! cx {
    ($s:ident, $now:expr) => {
        $crate::server::jobs::Cx {
            core: &mut $s.core,
            peers: &$s.workers,
            notify: &$s.notify,
            now: $now,
            host: &$s.host,
            dir: &$s.dir,
            finished: &mut $s.finished,
        }
    };
}

// After the macro: they use it.
mod clients;
pub mod hung;
mod site;

impl Actor {
    /// With a site: hold `workers` workers, or size adaptively when `workers` is 0 and
    /// the site has `adapt` bounds.
    pub fn new(
        cfg: CoreConfig,
        events: mpsc::UnboundedSender<Event>,
        site: Option<SitePool>,
        workers: u32,
        dir: PathBuf,
        observer: super::observe::Observer,
    ) -> Self {
        let mut a = Self::bare(cfg, events, site, dir, observer);
        let now = a.now();
        if let Some(s) = &mut a.site {
            let threads = s.runner.site().threads_per_worker();
            match s.runner.site().adapt {
                Some(ad) if workers == 0 => s.pool.set_adapt(now, ad, threads),
                _ => s.pool.set_target(now, workers),
            }
        }
        a.resume_task_jobs();
        a
    }

    /// Read back the task jobs of an earlier server on this folder: finished ones are
    /// listed, unfinished ones resume. New jobs are numbered after every one found.
    fn resume_task_jobs(&mut self) {
        let Ok(entries) = std::fs::read_dir(self.dir.join("jobs")) else {
            return;
        };
        let mut ids: Vec<u64> = entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
        ids.sort_unstable();
        let now = self.now();
        for id in ids {
            self.next_job = self.next_job.max(id + 1);
            let path = super::jobs::task_journal::path_for(&self.dir, id);
            if !path.exists() {
                continue;
            }
            let resumed = super::jobs::task_journal::TaskJournal::load(&path)
                .map_err(|e| e.to_string())
                .and_then(|(loaded, journal)| TaskJob::resume(&mut cx!(self, now), loaded, journal));
            match resumed {
                Ok(job) => {
                    self.jobs.insert(id, Box::new(job));
                }
                Err(e) => tracing::warn!(job = id, error = %e, "cannot resume a task job; it is left out"),
            }
        }
        self.drive_quietly();
    }

    /// Carry out what resuming jobs asked of the core before anything is connected.
    fn drive_quietly(&mut self) {
        while let Some(action) = self.core.poll_action() {
            if let Action::GraphDone(g) = action {
                self.with_job(g.0, |j, cx| j.done(cx));
            }
        }
    }

    fn bare(
        cfg: CoreConfig,
        events: mpsc::UnboundedSender<Event>,
        site: Option<SitePool>,
        dir: PathBuf,
        observer: super::observe::Observer,
    ) -> Self {
        let tx = events.clone();
        let notify: Notify = Arc::new(move |job, event| {
            let _ = tx.send(Event::Job { job, event });
        });
        Self {
            core: Core::new(cfg),
            events,
            notify,
            epoch: Instant::now(),
            workers: HashMap::new(),
            jobs: BTreeMap::new(),
            queue: VecDeque::new(),
            preparing: None,
            next_job: 1,
            stopping: None,
            drained_workers: 0,
            mean_task: None,
            finished: Vec::new(),
            observer,
            prefetch: 2,
            lost: VecDeque::new(),
            site,
            inbound: None,
            rtt: super::conn::Rtt::default(),
            host: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            dir,
            task_timeout: hung::TaskTimeout::default(),
            slowest_task: None,
            running: HashMap::new(),
            unresponsive: HashMap::new(),
        }
    }

    pub(super) fn with_task_timeout(mut self, t: hung::TaskTimeout) -> Self {
        self.task_timeout = t;
        self
    }

    /// Size the connections' inbound budget per job.
    pub(super) fn with_inbound(mut self, inbound: super::conn::Inbound) -> Self {
        self.inbound = Some(inbound);
        self
    }

    pub(super) fn with_rtt(mut self, rtt: super::conn::Rtt) -> Self {
        self.rtt = rtt;
        self
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Event>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ev) => self.handle(ev),
                    None => break,
                },
                _ = tick.tick() => {
                    let now = self.now();
                    self.core.tick(now);
                    self.check_hung(now);
                    for job in self.jobs.values_mut() {
                        job.tick(&mut cx!(self, now));
                    }
                    self.pool_tick(now);
                    self.publish(now);
                }
            }
            self.drive();
            self.drive_pool();
            if let Some(since) = self.stopping {
                let queue_empty = self.site.as_ref().is_none_or(|s| s.pool.drained());
                let limit = if self.site.is_some() {
                    Duration::from_secs(120)
                } else {
                    Duration::from_secs(10)
                };
                if self.workers.is_empty() && queue_empty {
                    break;
                }
                if since.elapsed() > limit {
                    tracing::warn!(workers = self.workers.len(), queue_empty, "stopping without waiting any longer");
                    break;
                }
            }
        }
    }

    /// Run `f` on job `id`, if it exists.
    fn with_job(&mut self, id: u64, f: impl FnOnce(&mut dyn Job, &mut Cx)) {
        let now = self.now();
        if let Some(job) = self.jobs.get_mut(&id) {
            f(job.as_mut(), &mut cx!(self, now));
        }
    }

    fn handle(&mut self, ev: Event) {
        let now = self.now();
        match ev {
            Event::WorkerConnected { info, tx, reply } => {
                if self.stopping.is_some() {
                    send(
                        &tx,
                        ServerMsg::Shutdown {
                            reason: "server stopping".into(),
                        },
                    );
                    return;
                }
                let id = self.core.worker_joined(now, info.threads);
                let walltime_end = info.walltime_left_ms.map(|left| now + Duration::from_millis(left));
                if walltime_end.is_some() {
                    let _ = self.core.set_deadline(id, walltime_end);
                }
                self.observer.worker_joined(id.0, info.threads, walltime_end, info.memory_bound);
                send(&tx, ServerMsg::Welcome { id: id.0 });
                tracing::info!(worker = %id, host = %info.host, pid = info.pid, threads = info.threads, batch_job = ?info.batch_job, "worker joined");
                if let (Some(s), Some(job)) = (&mut self.site, &info.batch_job) {
                    s.pool.worker_seen(now, &JobId(job.clone()));
                }
                self.workers.insert(
                    id,
                    Peer {
                        info,
                        tx,
                        drain_acked: false,
                    },
                );
                let _ = reply.send(id);
            }
            Event::WorkerGone { id, reason } => self.worker_gone(now, id, reason),
            Event::LaneOpened { id } => {
                if let Some(w) = self.workers.get_mut(&id) {
                    tracing::info!(worker = %id, "results lane open: its blocks now travel over TCP beside QUIC");
                    w.info.transport = LANE_TRANSPORT.to_string();
                }
            }
            Event::WorkerMsg { id, msg, payload } => self.worker_msg(now, id, msg, payload),
            Event::Client { msg, client } => self.client_msg(msg, client),
            Event::ClientGone { client } => {
                self.queue.retain(|(_, c)| !c.same_channel(&client));
                for job in self.jobs.values_mut() {
                    job.client_gone(&mut cx!(self, now), &client);
                }
            }
            Event::Stop => {
                if self.stopping.is_none() {
                    tracing::info!("server stopping");
                    self.stopping = Some(Instant::now());
                    if let Some((_, client)) = self.preparing.take() {
                        send(
                            &client,
                            ServerMsg::Failed {
                                input_error: false,
                                message: "the server was stopped".into(),
                            },
                        );
                    }
                    for job in self.jobs.values_mut() {
                        if !job.ended() {
                            job.stop(&mut cx!(self, now));
                        }
                    }
                    for (_, c) in self.queue.drain(..) {
                        send(
                            &c,
                            ServerMsg::Failed {
                                input_error: false,
                                message: "the server was stopped".into(),
                            },
                        );
                    }
                    for w in self.workers.values() {
                        send(
                            &w.tx,
                            ServerMsg::Shutdown {
                                reason: "server stopping".into(),
                            },
                        );
                    }
                    if let Some(s) = &mut self.site {
                        s.pool.stop();
                    }
                }
            }
            Event::PoolSubmitted(result) => {
                if let Err(e) = &result {
                    tracing::warn!(error = %e, "submission failed; backing off");
                }
                let mut give_up = None;
                if let Some(s) = &mut self.site {
                    s.pool.submitted(now, result);
                    if let (Some(limit), Some(f)) = (s.give_up_after, s.pool.failure(now))
                        && f.attempts >= limit
                        && self.workers.is_empty()
                    {
                        give_up = Some(format!(
                            "cannot get workers from the batch system after {} attempts: {}",
                            f.attempts, f.message
                        ));
                    }
                }
                if let Some(message) = give_up {
                    self.give_up(message);
                }
            }
            Event::PoolStatus(result) => {
                if let Some(s) = &mut self.site {
                    s.polling = false;
                    match result {
                        Ok(states) => s.pool.status(now, &states),
                        Err(e) => tracing::warn!(error = %e, "polling the batch system failed"),
                    }
                }
                self.workers_of_ended_jobs(now);
            }
            Event::Prepared { job, result } => self.prepared(job, result),
            Event::Publish(done) => {
                self.publish(now);
                let _ = done.send(());
            }
            Event::Job { job, event } => self.with_job(job, |j, cx| j.event(cx, event)),
        }
        self.start_next();
    }

    /// One-shot runs that cannot get workers: every unfinished array workload fails.
    fn give_up(&mut self, message: String) {
        let now = self.now();
        if let Some((_, client)) = self.preparing.take() {
            send(
                &client,
                ServerMsg::Failed {
                    input_error: false,
                    message: message.clone(),
                },
            );
        }
        for job in self.jobs.values_mut() {
            if !job.ended() && job.array_progress(&self.core).is_some() {
                job.give_up(&mut cx!(self, now), message.clone());
            }
        }
    }

    /// Tasks that went back to the queue (their worker left or was lost).
    fn requeued(&mut self, keys: &[TaskKey]) {
        let mut graphs: Vec<u64> = keys.iter().map(|k| k.graph.0).collect();
        graphs.dedup();
        for g in graphs {
            let tasks = of_job(keys, g);
            self.with_job(g, |j, cx| j.requeued(cx, &tasks));
        }
    }

    fn worker_msg(&mut self, now: Duration, id: WorkerId, msg: PeerMsg, payload: Bytes) {
        self.core.heartbeat(now, id);
        match msg {
            PeerMsg::Heartbeat => {}
            PeerMsg::Load {
                rss_bytes,
                cpu_ms,
                running_ms,
            } => {
                self.observer.load(now, id.0, rss_bytes, cpu_ms);
                let for_ = Duration::from_millis(running_ms);
                self.running.insert(id, hung::Running { for_, at: now });
            }
            PeerMsg::Results { job, .. }
            | PeerMsg::TaskError { job, .. }
            | PeerMsg::TaskStarted { job, .. }
            | PeerMsg::TaskEnded { job, .. } => {
                self.with_job(job, |j, cx| j.worker_msg(cx, id, msg, payload));
                self.tune_prefetch();
            }
            PeerMsg::HandBack { tasks } => {
                let keys: Vec<TaskKey> = tasks.iter().map(|&(j, t)| TaskKey::new(GraphId(j), t)).collect();
                tracing::info!(worker = %id, tasks = keys.len(), "tasks handed back: their time limit outlives the worker's walltime");
                self.core.release(now, id, &keys);
            }
            PeerMsg::Draining { released } => {
                // The first `Draining` starts the drain and is acknowledged; later ones
                // hand back tasks that were on their way before the worker knew.
                let _ = self.core.drain(id);
                let tasks: Vec<TaskKey> = released.iter().map(|&(j, t)| TaskKey::new(GraphId(j), t)).collect();
                self.core.release(now, id, &tasks);
                let first = self.workers.get_mut(&id).is_some_and(|w| {
                    let first = !std::mem::replace(&mut w.drain_acked, true);
                    if first {
                        send(&w.tx, ServerMsg::Drained);
                    }
                    first
                });
                tracing::info!(worker = %id, released = released.len(), first, "worker draining before its walltime");
                if first {
                    self.drained_workers += 1;
                    for job in self.jobs.values_mut() {
                        if !job.ended() {
                            job.worker_drained();
                        }
                    }
                }
            }
            other => tracing::debug!(worker = %id, ?other, "unexpected message from worker"),
        }
    }

    /// The array workload running or being planned, if any.
    fn array_busy(&self) -> bool {
        self.preparing.is_some() || self.jobs.values().any(|j| !j.ended() && j.array_progress(&self.core).is_some())
    }

    /// Start planning the next queued array workload once none runs.
    fn start_next(&mut self) {
        if self.stopping.is_some() || self.array_busy() {
            return;
        }
        let Some((mut workload, client)) = self.queue.pop_front() else {
            return;
        };
        // A client that knew no bound (--connect): this server's site gives its workers'.
        if workload.memory.is_none()
            && let Some(s) = &self.site
            && let Some(bytes) = s.runner.site().memory_per_worker()
        {
            workload.memory = Some(crate::config::workload::MemoryBound {
                bytes,
                threads: s.runner.site().threads_per_worker(),
                source: "the server's site: memory / processes".into(),
            });
        }
        let id = self.next_job;
        self.next_job += 1;
        self.preparing = Some((id, client));
        let events = self.events.clone();
        tokio::task::spawn_blocking(move || {
            let result = prepare(&workload);
            let _ = events.send(Event::Prepared { job: id, result });
        });
    }

    fn prepared(&mut self, job: u64, result: Result<Prepared, (bool, String)>) {
        if self.preparing.as_ref().is_none_or(|(id, _)| *id != job) {
            return;
        }
        let (id, client) = self.preparing.take().expect("checked");
        match result {
            Err((input_error, message)) => send(&client, ServerMsg::Failed { input_error, message }),
            Ok(p) => {
                if let Some(inbound) = &self.inbound {
                    // Twice the largest result, so one is written (or merged) while the
                    // next arrives; at least 16 MiB.
                    inbound.set_limit((2 * p.plan().largest_result_bytes()).max(16 << 20));
                }
                let now = self.now();
                let job = ArrayJob::start(&mut cx!(self, now), id, client, p);
                self.jobs.insert(id, Box::new(job));
                self.observer.job_started(now, id);
            }
        }
    }

    /// Carry out the core's actions.
    fn drive(&mut self) {
        while let Some(action) = self.core.poll_action() {
            match action {
                Action::Assign { worker, tasks } => {
                    let mut graphs: Vec<u64> = tasks.iter().map(|k| k.graph.0).collect();
                    graphs.sort_unstable();
                    graphs.dedup();
                    for g in graphs {
                        let mine = of_job(&tasks, g);
                        self.with_job(g, |j, cx| j.assign(cx, worker, mine));
                    }
                }
                Action::RunLocal(task) => self.with_job(task.graph.0, |j, cx| j.run_local(cx, task.task)),
                Action::TaskFailed { task, failure, cancelled } => {
                    let now = self.now();
                    self.observer
                        .failure(now, task.graph.0, task.task.to_string(), failure_text(&failure));
                    self.with_job(task.graph.0, |j, cx| j.task_failed(cx, task.task, failure, cancelled))
                }
                Action::WorkerLost { worker, tasks } => {
                    tracing::warn!(%worker, "worker lost (no heartbeat)");
                    if let Some(w) = self.workers.remove(&worker) {
                        send(
                            &w.tx,
                            ServerMsg::Shutdown {
                                reason: "declared lost after missing heartbeats".into(),
                            },
                        );
                        self.note_lost(worker, &w.info, "no heartbeat within the timeout".into(), tasks.len());
                        self.unresponsive(self.now(), &w.info);
                    }
                    self.requeued(&tasks);
                }
                Action::GraphDone(g) => self.with_job(g.0, |j, cx| j.done(cx)),
                Action::GraphFailed(g, f) => {
                    let now = self.now();
                    let task = match &f {
                        Failure::TaskError { task, .. } | Failure::RetriesExhausted { task, .. } => task.to_string(),
                    };
                    self.observer.failure(now, g.0, task, failure_text(&f));
                    self.with_job(g.0, |j, cx| j.failed(cx, f))
                }
            }
        }
        for job in self.jobs.values_mut() {
            job.report(&self.core);
        }
        self.release_waiting();
        self.start_next();
    }

    /// Start (or cancel) the jobs whose `--after` jobs have all ended.
    fn release_waiting(&mut self) {
        let waiting: Vec<(u64, Vec<u64>)> = self
            .jobs
            .iter()
            .filter(|(_, j)| !j.waiting_for().is_empty())
            .map(|(id, j)| (*id, j.waiting_for().to_vec()))
            .collect();
        for (id, after) in waiting {
            // A job not found (an array workload of an earlier server) counts as not
            // succeeded.
            let states: Vec<Option<String>> = after
                .iter()
                .map(|a| {
                    self.jobs
                        .get(a)
                        .map(|j| j.info(&self.core))
                        .map_or(Some("gone".into()), |i| i.ended().then_some(i.state))
                })
                .collect();
            if states.iter().all(Option::is_some) {
                let ok = states.iter().all(|s| s.as_deref() == Some("succeeded"));
                self.with_job(id, |j, cx| j.release(cx, ok));
            }
        }
    }

    /// Remember a worker that left holding `held` tasks (a loss, not a clean exit).
    /// A worker left (its connection closed, or its batch job ended): its tasks go
    /// back to the queue. Idempotent.
    fn worker_gone(&mut self, now: Duration, id: WorkerId, reason: String) {
        let held = self.core.held(id);
        let silent = self.core.last_seen(id).is_some_and(|t| now.saturating_sub(t) >= site::SILENT);
        if let Some(w) = self.workers.remove(&id) {
            tracing::info!(worker = %id, %reason, "worker left");
            if silent {
                // Its connection timed out after it had gone quiet: hung, not gone.
                self.unresponsive(now, &w.info);
            }
            self.note_lost(id, &w.info, reason, held.len());
            self.observer.worker_left(id.0);
        }
        self.core.worker_left(now, id);
        self.requeued(&held);
    }

    fn note_lost(&mut self, id: WorkerId, info: &WorkerInfo, reason: String, held: usize) {
        if held == 0 {
            return;
        }
        self.lost.push_back(proto::LostWorker {
            id: id.0,
            host: info.host.clone(),
            pid: info.pid,
            batch_job: info.batch_job.clone(),
            reason,
            tasks_requeued: held,
            t: self.now().as_secs_f64(),
        });
        if self.lost.len() > 50 {
            self.lost.pop_front();
        }
    }

    /// Keep about 25 ms of work queued at each slot, plus the longest round trip to a
    /// worker (at least 2 tasks, at most 256), so that short tasks never wait for a
    /// round trip, far workers included, and long ones stay balanced.
    fn tune_prefetch(&mut self) {
        self.fold_finished();
        let Some(mean) = self.mean_task else { return };
        let ahead = Duration::from_millis(25) + self.rtt.longest();
        let depth = (ahead.as_secs_f64() / mean.as_secs_f64().max(1e-6)).ceil().clamp(2.0, 256.0) as u32;
        if depth != self.prefetch {
            self.prefetch = depth;
            self.core.set_queue_per_slot(depth);
        }
    }

    fn status(&self) -> Status {
        let assigned: HashMap<WorkerId, usize> = self.core.workers().map(|(id, _, n)| (id, n)).collect();
        let mut workers: Vec<WorkerStatus> = self
            .workers
            .iter()
            .map(|(id, w)| WorkerStatus {
                id: id.0,
                host: w.info.host.clone(),
                pid: w.info.pid,
                threads: w.info.threads,
                batch_job: w.info.batch_job.clone(),
                node: w.info.node.clone(),
                assigned: assigned.get(id).copied().unwrap_or(0),
                draining: w.drain_acked,
                transport: w.info.transport.clone(),
            })
            .collect();
        workers.sort_by_key(|w| w.id);
        let c = self.core.counters();
        let now = self.now();
        let (jobs, target, submit_failure) = match &self.site {
            Some(s) => (
                s.pool
                    .jobs(now)
                    .into_iter()
                    .map(|j| proto::JobStatus {
                        workers: self
                            .workers
                            .values()
                            .filter(|w| w.info.batch_job.as_deref() == Some(j.id.0.as_str()))
                            .count(),
                        id: j.id.0,
                        state: format!("{:?}", j.state).to_lowercase(),
                        retiring: j.retiring,
                        abandoned: j.abandoned,
                    })
                    .collect(),
                Some(s.pool.target()),
                s.pool
                    .failure(now)
                    .map(|f| format!("{} (attempt {}, retrying in {:.0} s)", f.message, f.attempts, f.retry_in)),
            ),
            None => (Vec::new(), None, None),
        };
        let adapt = self.site.as_ref().and_then(|s| s.pool.adapt()).map(|a| (a.min, a.max));
        let running = self.jobs.values().find_map(|j| j.array_progress(&self.core).map(|p| (j.id(), p)));
        Status {
            workers,
            jobs,
            target,
            adapt,
            submit_failure,
            lost_workers: self.lost.iter().cloned().collect(),
            running_job: running.map(|(id, _)| id),
            progress: running.map(|(_, p)| p),
            tasks_done: c.tasks_done,
            tasks_retried: c.tasks_retried,
            workers_lost: c.workers_lost,
            workers_drained: self.drained_workers,
        }
    }

    /// Tasks that ended: into the smoothed task time (workers' tasks) and the observer.
    fn fold_finished(&mut self) {
        let now = self.now();
        for f in std::mem::take(&mut self.finished) {
            if f.worker != u32::MAX {
                if f.ok {
                    self.slowest_task = self.slowest_task.max(Some(f.took));
                }
                self.mean_task = Some(match self.mean_task {
                    Some(m) => (m * 7 + f.took) / 8,
                    None => f.took,
                });
            }
            self.observer.finished(now, &f);
        }
    }

    /// Publish what the dashboard shows (the most recent 200 jobs).
    fn publish(&mut self, now: Duration) {
        self.fold_finished();
        let status = self.status();
        let jobs = self.jobs.values().rev().take(200).map(|j| j.view(&self.core)).collect();
        self.observer.publish(now, status, jobs);
    }
}

/// A failure in one line, for the dashboard's log.
fn failure_text(f: &Failure) -> String {
    match f {
        Failure::TaskError { message, worker, .. } => format!("{message} (worker w{})", worker.0),
        Failure::RetriesExhausted { workers, .. } => format!("its workers all died ({} of them)", workers.len()),
    }
}
