//! The event loop that drives the scheduler core.
//!
//! Connections, timers and blocking helpers send [`Event`]s; the actor feeds them to the
//! [`Core`] with the current time and carries out the [`Action`]s it returns. It owns the
//! running job: its plan, the reduction accumulators, the finished consts and the
//! output writer. Only one job runs at a time; further submissions queue.
//!
//! Invariant: a worker result is merged only after the core accepted it
//! ([`Accept::Accepted`]), and before the core's next actions are carried out, so a
//! finalize task always sees every partial of its stage exactly once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ndarray::ArrayD;
use tokio::sync::{mpsc, oneshot};

use super::journal::{Journal, Recovered};
use super::writer::{Writer, output_files, temp_name};
use crate::batch::runner::Runner;
use crate::batch::{JobId, JobState};
use crate::config::workload::Workload;
use crate::core::{Accept, Action, Core, CoreConfig, Failure, GraphId, GraphSpec, TaskId, TaskKey, WorkerId};
use crate::exec::geometry::{block_region, fmt_shape};
use crate::exec::plan::{Plan, StageKind, TaskMap, TaskRef};
use crate::exec::reduce::Accumulator;
use crate::exec::{self, BlockResult};
use crate::pool::{Adapt, Backlog, Pool, PoolAction};
use crate::proto::{self, OutputReport, PeerMsg, ServerMsg, Status, Summary, WorkerInfo, WorkerStatus};

/// A frame to send on a connection.
pub struct Outgoing {
    pub msg: ServerMsg,
    pub payload: Bytes,
}

impl Outgoing {
    pub fn msg(msg: ServerMsg) -> Self {
        Self {
            msg,
            payload: Bytes::new(),
        }
    }
}

type Tx = mpsc::UnboundedSender<Outgoing>;

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
    Submit {
        workload: Workload,
        client: Tx,
    },
    Status {
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
    LocalDone {
        job: u64,
        task: TaskId,
        outcome: LocalOutcome,
    },
    Finished {
        job: u64,
        result: Result<(), String>,
    },
    Scale {
        workers: u32,
        client: Tx,
    },
    Adapt {
        min: u32,
        max: u32,
        client: Tx,
    },
    PoolSubmitted(Result<Vec<(JobId, Option<Duration>)>, String>),
    PoolStatus(Result<std::collections::BTreeMap<JobId, JobState>, String>),
}

/// A server's batch pool: the pure pool and the runner of its commands.
pub struct SitePool {
    pub pool: Pool,
    pub runner: Arc<Runner>,
    polling: bool,
    last_poll: Option<Instant>,
    /// Fail the running job after this many consecutive failed submissions while no
    /// worker is connected (one-shot runs; a long-lived server keeps retrying).
    pub give_up_after: Option<u32>,
}

impl SitePool {
    pub fn new(runner: Runner) -> Self {
        let pool = Pool::new(runner.site().workers_per_job());
        Self {
            pool,
            runner: Arc::new(runner),
            polling: false,
            last_poll: None,
            give_up_after: None,
        }
    }
}

/// The floating-point events of the stages output `o` is computed by: the stage that
/// writes it and, through the consts it reads, every reduction before it.
fn output_events(plan: &Plan, per_stage: &[[u64; 3]], o: u32) -> [u64; 3] {
    let mut todo: Vec<usize> = plan
        .stages
        .iter()
        .enumerate()
        .filter(|(_, s)| s.outputs().contains(&o))
        .map(|(i, _)| i)
        .collect();
    let mut seen = vec![false; plan.stages.len()];
    let mut sum = [0u64; 3];
    while let Some(s) = todo.pop() {
        if std::mem::replace(&mut seen[s], true) {
            continue;
        }
        for (a, b) in sum.iter_mut().zip(per_stage.get(s).copied().unwrap_or_default()) {
            *a += b;
        }
        todo.extend(plan.stages[s].consts().into_iter().map(|c| plan.consts[c as usize].stage as usize));
    }
    sum
}

/// How often the batch system is asked for job states.
const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// A planned job, built off the runtime (HDF5 inspection, output file creation).
pub struct Prepared {
    plan: Arc<Plan>,
    graph: crate::core::Graph,
    map: TaskMap,
    writer: Writer,
    recovered: Recovered,
}

/// Plan a workload, open its journal (resuming when it matches), open the writer.
fn prepare(workload: &Workload) -> Result<Prepared, (bool, String)> {
    let plan = Plan::build(workload).map_err(|e| (true, e.to_string()))?;
    let (graph, map) = plan.graph();
    let (mut journal, mut recovered) = Journal::open(&plan, || tracing::info!("the workload or its inputs changed: starting afresh"))
        .map_err(|e| {
            (
                false,
                format!("cannot open the run journal \"{}\": {e}", super::journal::path_for(&plan).display()),
            )
        })?;
    let temps_exist = output_files(&plan).iter().all(|f| temp_name(f).exists());
    if !recovered.blocks.is_empty() && !temps_exist {
        // Blocks were recorded in temporary files that are gone: start over.
        journal.reset().map_err(|e| (false, format!("cannot reset the run journal: {e}")))?;
        recovered = Recovered::default();
    }
    let reopen = temps_exist && !recovered.blocks.is_empty();
    let writer = Writer::start(&plan, reopen, journal).map_err(|e| (false, e))?;
    Ok(Prepared {
        plan: Arc::new(plan),
        graph,
        map,
        writer,
        recovered,
    })
}

pub enum LocalOutcome {
    Block(Result<BlockResult, String>),
    Finalized(Result<Vec<(u32, ArrayD<f64>)>, String>),
}

struct WorkerEntry {
    info: WorkerInfo,
    tx: Tx,
    job_sent: Option<u64>,
    consts_sent: HashSet<u32>,
    /// The worker said it is draining and was told `Drained`.
    drain_acked: bool,
}

struct Job {
    id: u64,
    client: Tx,
    plan: Arc<Plan>,
    map: TaskMap,
    writer: Option<Writer>,
    acc: HashMap<u32, Accumulator>,
    consts: Vec<Option<Arc<ArrayD<f64>>>>,
    const_bytes: Vec<Option<Bytes>>,
    /// Consts each stage's kernel reads.
    stage_consts: Vec<Vec<u32>>,
    started: Instant,
    bytes_read: u64,
    tasks_total: u32,
    last_progress: Instant,
    workers_drained: u64,
    /// Peak resident memory reported by each worker that ran tasks.
    worker_peaks: HashMap<WorkerId, u64>,
    /// Tasks recovered from the journal of an interrupted run.
    tasks_resumed: u64,
    /// Floating-point events per stage (`exec::fpe`).
    fp: Vec<[u64; 3]>,
}

enum Slot {
    Idle,
    Preparing { id: u64, client: Tx },
    Running(Box<Job>),
    Finishing { id: u64, client: Tx, summary: Summary },
}

pub struct Actor {
    core: Core,
    events: mpsc::UnboundedSender<Event>,
    epoch: Instant,
    workers: HashMap<WorkerId, WorkerEntry>,
    slot: Slot,
    queue: VecDeque<(Workload, Tx)>,
    next_job: u64,
    stopping: Option<Instant>,
    /// Workers that left before their walltime, over the server's life.
    drained_workers: u64,
    /// Smoothed task run time, from workers' reports.
    mean_task: Option<Duration>,
    /// Current prefetch depth per slot.
    prefetch: u32,
    /// Recently lost workers, for `drover status`.
    lost: VecDeque<proto::LostWorker>,
    site: Option<SitePool>,
    /// The budget of received result bytes, sized per job.
    inbound: Option<super::conn::Inbound>,
    /// This host's name: only workers reporting it are offered direct output writes
    /// (the chunk table can be large; they still check the file's identity).
    host: String,
}

/// The inbound budget before any job sets one.
pub(super) const DEFAULT_INBOUND: u64 = 128 << 20;

fn send(tx: &Tx, msg: ServerMsg) {
    let _ = tx.send(Outgoing::msg(msg));
}

impl Actor {
    /// With a site: hold `workers` workers, or size adaptively when `workers` is 0 and
    /// the site has `adapt` bounds.
    pub fn new(cfg: CoreConfig, events: mpsc::UnboundedSender<Event>, site: Option<SitePool>, workers: u32) -> Self {
        let mut a = Self::bare(cfg, events, site);
        let now = a.now();
        if let Some(s) = &mut a.site {
            let threads = s.runner.site().threads_per_worker();
            match s.runner.site().adapt {
                Some(ad) if workers == 0 => s.pool.set_adapt(now, ad, threads),
                _ => s.pool.set_target(now, workers),
            }
        }
        a
    }

    fn bare(cfg: CoreConfig, events: mpsc::UnboundedSender<Event>, site: Option<SitePool>) -> Self {
        Self {
            core: Core::new(cfg),
            events,
            epoch: Instant::now(),
            workers: HashMap::new(),
            slot: Slot::Idle,
            queue: VecDeque::new(),
            next_job: 1,
            stopping: None,
            drained_workers: 0,
            mean_task: None,
            prefetch: 2,
            lost: VecDeque::new(),
            site,
            inbound: None,
            host: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    }

    /// Size the connections' inbound budget per job.
    pub(super) fn with_inbound(mut self, inbound: super::conn::Inbound) -> Self {
        self.inbound = Some(inbound);
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
                    self.check_writer();
                    self.pool_tick(now);
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
                send(&tx, ServerMsg::Welcome { id: id.0 });
                tracing::info!(worker = %id, host = %info.host, pid = info.pid, threads = info.threads, batch_job = ?info.batch_job, "worker joined");
                if let (Some(s), Some(job)) = (&mut self.site, &info.batch_job) {
                    s.pool.worker_seen(now, &JobId(job.clone()));
                }
                self.workers.insert(
                    id,
                    WorkerEntry {
                        info,
                        tx,
                        job_sent: None,
                        consts_sent: HashSet::new(),
                        drain_acked: false,
                    },
                );
                let _ = reply.send(id);
            }
            Event::WorkerGone { id, reason } => {
                if let Some(w) = self.workers.remove(&id) {
                    tracing::info!(worker = %id, %reason, "worker left");
                    self.note_lost(id, &w.info, reason);
                }
                self.core.worker_left(now, id);
            }
            Event::WorkerMsg { id, msg, payload } => self.worker_msg(now, id, msg, payload),
            Event::Submit { workload, client } => {
                if self.stopping.is_some() {
                    send(
                        &client,
                        ServerMsg::Failed {
                            input_error: false,
                            message: "the server is stopping".into(),
                        },
                    );
                    return;
                }
                self.queue.push_back((workload, client));
                self.start_next();
            }
            Event::Status { client } => send(&client, ServerMsg::Status { status: self.status() }),
            Event::ClientGone { client } => {
                self.queue.retain(|(_, c)| !c.same_channel(&client));
                let owns = match &self.slot {
                    Slot::Preparing { client: c, .. } | Slot::Finishing { client: c, .. } => c.same_channel(&client),
                    Slot::Running(job) => job.client.same_channel(&client),
                    Slot::Idle => false,
                };
                if owns && let Slot::Running(_) = self.slot {
                    tracing::warn!("client disconnected; cancelling its job");
                    self.abort_job();
                }
            }
            Event::Stop => {
                if self.stopping.is_none() {
                    tracing::info!("server stopping");
                    self.stopping = Some(Instant::now());
                    if matches!(self.slot, Slot::Running(_) | Slot::Preparing { .. }) {
                        // Keep what was done: running the workload again resumes.
                        if let Slot::Running(job) = &mut self.slot
                            && let Some(w) = job.writer.take()
                        {
                            w.abandon();
                        }
                        self.fail_job("stopped before the end; what was done is kept: run the same workload again to resume".into());
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
            Event::Scale { workers, client } => self.pool_command(&client, |pool, _, now| {
                tracing::info!(workers, "scaling");
                pool.set_target(now, workers);
                Ok(())
            }),
            Event::Adapt { min, max, client } => self.pool_command(&client, |pool, threads, now| {
                if min > max || max == 0 {
                    return Err(format!("--min {min} --max {max}: the pool needs min <= max and max >= 1"));
                }
                tracing::info!(min, max, "adaptive sizing");
                pool.set_adapt(now, Adapt { min, max }, threads);
                Ok(())
            }),
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
                    self.fail_job(message);
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
            }
            Event::Prepared { job, result } => self.prepared(job, result),
            Event::LocalDone { job, task, outcome } => self.local_done(job, task, outcome),
            Event::Finished { job, result } => {
                let slot = std::mem::replace(&mut self.slot, Slot::Idle);
                match slot {
                    Slot::Finishing { id, client, summary } if id == job => match result {
                        Ok(()) => send(&client, ServerMsg::Finished { summary }),
                        Err(message) => send(
                            &client,
                            ServerMsg::Failed {
                                input_error: false,
                                message,
                            },
                        ),
                    },
                    other => self.slot = other,
                }
                self.start_next();
            }
        }
    }

    fn worker_msg(&mut self, now: Duration, id: WorkerId, msg: PeerMsg, payload: Bytes) {
        self.core.heartbeat(now, id);
        match msg {
            PeerMsg::Heartbeat => {}
            PeerMsg::Results { job, results, peak_rss } => {
                if let Slot::Running(j) = &mut self.slot
                    && j.id == job
                {
                    let e = j.worker_peaks.entry(id).or_insert(0);
                    *e = (*e).max(peak_rss);
                }
                let mut off = 0usize;
                for r in results {
                    let len = r.len as usize;
                    let Some(seg) = payload.get(off..off + len).map(|_| payload.slice(off..off + len)) else {
                        tracing::warn!(worker = %id, "results payload shorter than announced");
                        return;
                    };
                    off += len;
                    if !self.is_current(job) {
                        continue;
                    }
                    let took = Duration::from_micros(r.micros);
                    self.mean_task = Some(match self.mean_task {
                        Some(m) => (m * 7 + took) / 8,
                        None => took,
                    });
                    if self.core.task_done(now, id, TaskKey::new(GraphId(job), r.task)) == Accept::Accepted {
                        self.absorb(r.task, r.bytes_read, seg, r.written, r.fp);
                    } else {
                        tracing::debug!(worker = %id, task = r.task, "stale result discarded");
                    }
                }
                self.tune_prefetch();
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
                    if let Slot::Running(job) = &mut self.slot {
                        job.workers_drained += 1;
                    }
                }
            }
            PeerMsg::TaskError { job, task, message } => {
                if self.is_current(job) {
                    self.core.task_error(now, id, TaskKey::new(GraphId(job), task), message);
                }
            }
            other => tracing::debug!(worker = %id, ?other, "unexpected message from worker"),
        }
    }

    /// Tasks done and total of the running job.
    fn running_progress(&self) -> Option<(u32, u32)> {
        match &self.slot {
            Slot::Running(j) => self.core.progress(GraphId(j.id)),
            _ => None,
        }
    }

    fn is_current(&self, job: u64) -> bool {
        matches!(&self.slot, Slot::Running(j) if j.id == job)
    }

    fn start_next(&mut self) {
        if !matches!(self.slot, Slot::Idle) {
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
        self.slot = Slot::Preparing { id, client };
        let events = self.events.clone();
        tokio::task::spawn_blocking(move || {
            let result = prepare(&workload);
            let _ = events.send(Event::Prepared { job: id, result });
        });
    }

    fn prepared(&mut self, job: u64, result: Result<Prepared, (bool, String)>) {
        let Slot::Preparing { id, .. } = &self.slot else { return };
        if *id != job {
            return;
        }
        let Slot::Preparing { id, client } = std::mem::replace(&mut self.slot, Slot::Idle) else {
            unreachable!()
        };
        match result {
            Err((input_error, message)) => {
                send(&client, ServerMsg::Failed { input_error, message });
                self.start_next();
            }
            Ok(p) => {
                let tasks_total = p.graph.len();
                let n_consts = p.plan.consts.len();
                let acc = p
                    .plan
                    .consts
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (i as u32, Accumulator::new(c, &p.plan.stages[c.stage as usize].shape)))
                    .collect();
                let stage_consts = p.plan.stages.iter().map(|s| s.consts()).collect();
                let n_stages = p.plan.stages.len();
                // Results of an interrupted run: replay its partials, skip its blocks.
                let mut acc: HashMap<u32, Accumulator> = acc;
                let mut done: Vec<TaskId> = Vec::new();
                for (task, bytes) in &p.recovered.partials {
                    if let TaskRef::Block { stage, block } = p.map.locate(*task)
                        && let Some(parts) = exec::decode_partials(&p.plan, stage, block, bytes)
                    {
                        let st = &p.plan.stages[stage as usize];
                        let region = block_region(&st.shape, &st.block, block);
                        for (c, arrays) in parts {
                            if let Some(a) = acc.get_mut(&c) {
                                a.merge(&region, arrays);
                            }
                        }
                        done.push(*task);
                    }
                }
                done.extend(p.recovered.blocks.iter().copied());
                done.sort_unstable();
                done.dedup();
                if !done.is_empty() {
                    tracing::info!(job = id, resumed = done.len(), "resuming an interrupted run");
                }
                send(
                    &client,
                    ServerMsg::Accepted {
                        job: id,
                        tasks: tasks_total,
                    },
                );
                tracing::info!(job = id, tasks = tasks_total, stages = p.plan.stages.len(), "job started");
                if let Some(inbound) = &self.inbound {
                    // Twice the largest result, so one is written (or merged) while the
                    // next arrives; at least 16 MiB.
                    inbound.set_limit((2 * p.plan.largest_result_bytes()).max(16 << 20));
                }
                self.slot = Slot::Running(Box::new(Job {
                    id,
                    client,
                    plan: p.plan,
                    map: p.map,
                    writer: Some(p.writer),
                    acc,
                    consts: vec![None; n_consts],
                    const_bytes: vec![None; n_consts],
                    stage_consts,
                    started: Instant::now(),
                    bytes_read: 0,
                    tasks_total,
                    last_progress: Instant::now(),
                    workers_drained: 0,
                    worker_peaks: HashMap::new(),
                    tasks_resumed: done.len() as u64,
                    fp: vec![[0; 3]; n_stages],
                }));
                if let Err(e) = self.core.submit_resumed(GraphId(id), p.graph, GraphSpec::default(), &done) {
                    self.fail_job(format!("internal: {e}"));
                }
            }
        }
    }

    /// Carry out the core's actions.
    fn drive(&mut self) {
        while let Some(action) = self.core.poll_action() {
            match action {
                Action::Assign { worker, tasks } => {
                    // One array workload runs at a time: its graph is the only one.
                    let tasks: Vec<TaskId> = tasks.into_iter().filter(|k| self.is_current(k.graph.0)).map(|k| k.task).collect();
                    self.assign(worker, tasks)
                }
                Action::RunLocal(task) if self.is_current(task.graph.0) => self.run_local(task.task),
                Action::RunLocal(_) | Action::TaskFailed { .. } => {}
                Action::WorkerLost { worker } => {
                    tracing::warn!(%worker, "worker lost (no heartbeat)");
                    if let Some(w) = self.workers.remove(&worker) {
                        send(
                            &w.tx,
                            ServerMsg::Shutdown {
                                reason: "declared lost after missing heartbeats".into(),
                            },
                        );
                        // Its tasks were requeued by the core already; record it as lost.
                        self.lost.push_back(proto::LostWorker {
                            id: worker.0,
                            host: w.info.host.clone(),
                            pid: w.info.pid,
                            batch_job: w.info.batch_job.clone(),
                            reason: "no heartbeat within the timeout".into(),
                            tasks_requeued: 0,
                        });
                        if self.lost.len() > 50 {
                            self.lost.pop_front();
                        }
                    }
                }
                Action::GraphDone(g) if self.is_current(g.0) => self.finish_job(),
                Action::GraphDone(_) => {}
                Action::GraphFailed(g, f) if self.is_current(g.0) => {
                    let msg = self.describe_failure(&f);
                    self.fail_job(msg);
                }
                Action::GraphFailed(..) => {}
            }
        }
        self.progress(false);
    }

    fn describe_task(&self, task: TaskId) -> String {
        let Slot::Running(job) = &self.slot else {
            return format!("task {task}");
        };
        match job.map.locate(task) {
            TaskRef::Block { stage, block } => {
                let st = &job.plan.stages[stage as usize];
                let region = block_region(&st.shape, &st.block, block);
                let r: Vec<String> = region.iter().map(|r| format!("{}:{}", r.start, r.end)).collect();
                format!(
                    "task {task} (stage {stage}, block {block} = [{}] of shape {})",
                    r.join(", "),
                    fmt_shape(&st.shape)
                )
            }
            TaskRef::Finalize { stage } => format!("task {task} (finalizing stage {stage})"),
        }
    }

    fn worker_name(&self, w: WorkerId) -> String {
        match self.workers.get(&w) {
            Some(e) => format!("{w} ({}:{})", e.info.host, e.info.pid),
            None if w.0 == u32::MAX => "the server".into(),
            None => w.to_string(),
        }
    }

    fn describe_failure(&self, f: &Failure) -> String {
        match f {
            Failure::TaskError { task, worker, message } => {
                format!("{} failed on {}: {message}", self.describe_task(*task), self.worker_name(*worker))
            }
            Failure::RetriesExhausted { task, workers } => {
                let names: Vec<String> = workers.iter().map(|w| w.to_string()).collect();
                format!(
                    "{} was running on {} workers that all died ({}); this chunk may crash workers (memory, bad data)",
                    self.describe_task(*task),
                    workers.len(),
                    names.join(", ")
                )
            }
        }
    }

    fn assign(&mut self, worker: WorkerId, tasks: Vec<TaskId>) {
        let Slot::Running(job) = &mut self.slot else { return };
        let Some(w) = self.workers.get_mut(&worker) else { return };
        if w.job_sent != Some(job.id) {
            w.job_sent = Some(job.id);
            w.consts_sent.clear();
            send(
                &w.tx,
                ServerMsg::Job {
                    job: job.id,
                    plan: (*job.plan).clone(),
                    direct: match &job.writer {
                        Some(wr) if w.info.host == self.host => wr.direct.clone(),
                        _ => Vec::new(),
                    },
                },
            );
        }
        let mut refs = Vec::with_capacity(tasks.len());
        for t in tasks {
            let TaskRef::Block { stage, block } = job.map.locate(t) else {
                continue;
            };
            for &c in &job.stage_consts[stage as usize] {
                if w.consts_sent.insert(c) {
                    let bytes = job.const_bytes[c as usize].clone().expect("const finalized before its users run");
                    let shape = job.plan.consts[c as usize].shape.clone();
                    let _ = w.tx.send(Outgoing {
                        msg: ServerMsg::Const { job: job.id, id: c, shape },
                        payload: bytes,
                    });
                }
            }
            refs.push(proto::TaskRef { task: t, stage, block });
        }
        send(&w.tx, ServerMsg::Assign { job: job.id, tasks: refs });
    }

    fn run_local(&mut self, task: TaskId) {
        let Slot::Running(job) = &mut self.slot else { return };
        let events = self.events.clone();
        let job_id = job.id;
        match job.map.locate(task) {
            TaskRef::Finalize { stage } => {
                let consts = match &job.plan.stages[stage as usize].kind {
                    StageKind::Reduce { consts } => consts,
                    // The barrier after a staging copy: its file durable and closed.
                    StageKind::Write { output } => {
                        let Some(settled) = job.writer.as_ref().map(|w| w.settle(*output)) else {
                            return;
                        };
                        tokio::spawn(async move {
                            let done = match settled.await {
                                Ok(r) => r.map(|()| vec![]),
                                Err(_) => Err("the output writer stopped".into()),
                            };
                            let _ = events.send(Event::LocalDone {
                                job: job_id,
                                task,
                                outcome: LocalOutcome::Finalized(done),
                            });
                        });
                        return;
                    }
                };
                let accs: Vec<(u32, Accumulator)> = consts.iter().filter_map(|c| job.acc.remove(c).map(|a| (*c, a))).collect();
                tokio::task::spawn_blocking(move || {
                    let done = accs
                        .into_iter()
                        .map(|(c, a)| a.finish().map(|arr| (c, arr)))
                        .collect::<Result<Vec<_>, String>>();
                    let _ = events.send(Event::LocalDone {
                        job: job_id,
                        task,
                        outcome: LocalOutcome::Finalized(done),
                    });
                });
            }
            TaskRef::Block { stage, block } => {
                let plan = job.plan.clone();
                let consts = job.consts.clone();
                tokio::task::spawn_blocking(move || {
                    let get = |c: u32| consts.get(c as usize).cloned().flatten();
                    let r = exec::execute_block(&plan, &[], &get, stage, block).map_err(|e| e.to_string());
                    let _ = events.send(Event::LocalDone {
                        job: job_id,
                        task,
                        outcome: LocalOutcome::Block(r),
                    });
                });
            }
        }
    }

    fn local_done(&mut self, job_id: u64, task: TaskId, outcome: LocalOutcome) {
        if !self.is_current(job_id) {
            return;
        }
        let key = TaskKey::new(GraphId(job_id), task);
        match outcome {
            LocalOutcome::Finalized(Err(message)) => self.core.local_failed(key, message),
            LocalOutcome::Finalized(Ok(done)) => {
                let Slot::Running(job) = &mut self.slot else { return };
                for (c, arr) in done {
                    let mut buf = Vec::new();
                    exec::push_f64(&mut buf, &arr);
                    job.const_bytes[c as usize] = Some(Bytes::from(buf));
                    job.consts[c as usize] = Some(Arc::new(arr));
                }
                self.core.local_done(key);
            }
            LocalOutcome::Block(Ok(r)) => {
                self.absorb(task, r.bytes_read, Bytes::from(r.payload), false, r.fp);
                self.core.local_done(key);
            }
            LocalOutcome::Block(Err(message)) => self.core.local_failed(key, message),
        }
    }

    /// Merge an accepted block result into the job.
    fn absorb(&mut self, task: TaskId, bytes_read: u64, payload: Bytes, written: bool, fp: [u64; 3]) {
        let Slot::Running(job) = &mut self.slot else { return };
        job.bytes_read += bytes_read;
        let TaskRef::Block { stage, block } = job.map.locate(task) else {
            return;
        };
        if let Some(s) = job.fp.get_mut(stage as usize) {
            s.iter_mut().zip(fp).for_each(|(a, b)| *a += b);
        }
        let st = &job.plan.stages[stage as usize];
        match &st.kind {
            StageKind::Reduce { .. } => match exec::decode_partials(&job.plan, stage, block, &payload) {
                Some(parts) => {
                    let region = block_region(&st.shape, &st.block, block);
                    for (c, arrays) in parts {
                        if let Some(acc) = job.acc.get_mut(&c) {
                            acc.merge(&region, arrays);
                        }
                    }
                    if let Some(w) = &job.writer
                        && !st.local
                    {
                        w.partial(task, payload);
                    }
                }
                None => {
                    let msg = format!("protocol error: malformed partial result for {}", self.describe_task(task));
                    self.fail_job(msg);
                }
            },
            StageKind::Write { .. } if written => {
                let offered = job
                    .writer
                    .as_ref()
                    .is_some_and(|w| st.outputs().iter().all(|&o| w.direct.get(o as usize).is_some_and(Option::is_some)));
                if !offered {
                    let msg = format!(
                        "protocol error: {} reported written by the worker, which it may not",
                        self.describe_task(task)
                    );
                    self.fail_job(msg);
                    return;
                }
                if let Some(w) = &job.writer {
                    w.written(task);
                }
            }
            StageKind::Write { .. } => {
                let region = block_region(&st.shape, &st.block, block);
                let Some(ranges) = exec::write::split(st, &payload) else {
                    let msg = format!(
                        "protocol error: malformed block of several outputs for {}",
                        self.describe_task(task)
                    );
                    self.fail_job(msg);
                    return;
                };
                let mut parts = Vec::with_capacity(ranges.len());
                for (output, range) in ranges {
                    let out = &job.plan.outputs[output as usize];
                    let expect = region.iter().map(|r| r.len()).product::<usize>() * out.dtype.size();
                    // A compressed block is checked chunk by chunk by the writer.
                    if out.compression.is_none() && range.len() != expect {
                        let msg = format!("protocol error: block of {} bytes where {expect} were expected", range.len());
                        self.fail_job(msg);
                        return;
                    }
                    parts.push((output, payload.slice(range)));
                }
                if let Some(w) = &job.writer {
                    w.write(parts, region, task);
                }
            }
        }
    }

    fn progress(&mut self, force: bool) {
        let Slot::Running(job) = &mut self.slot else { return };
        if !force && job.last_progress.elapsed() < Duration::from_millis(100) {
            return;
        }
        job.last_progress = Instant::now();
        if let Some((done, total)) = self.core.progress(GraphId(job.id)) {
            send(&job.client, ServerMsg::Progress { done, total });
        }
    }

    fn check_writer(&mut self) {
        let err = match &mut self.slot {
            Slot::Running(job) => job.writer.as_mut().and_then(|w| w.errors.try_recv().ok()),
            _ => None,
        };
        if let Some(e) = err {
            self.fail_job(format!("output writer failed: {e}"));
        }
    }

    fn finish_job(&mut self) {
        self.check_writer();
        let Slot::Running(job) = std::mem::replace(&mut self.slot, Slot::Idle) else {
            return;
        };
        let mut job = *job;
        let counters = self.core.graph_counters(GraphId(job.id));
        let summary = Summary {
            tasks_total: u64::from(job.tasks_total),
            tasks_retried: counters.tasks_retried,
            workers_lost: counters.workers_lost,
            bytes_read: job.bytes_read,
            seconds: job.started.elapsed().as_secs_f64(),
            workers: self.workers.len(),
            outputs: job
                .plan
                .user_outputs()
                .iter()
                .map(|o| OutputReport {
                    file: o.file.display().to_string(),
                    dataset: o.dataset.clone(),
                    shape: o.shape.clone(),
                    dtype: o.dtype.name().into(),
                    expr: o.expr.clone(),
                })
                .collect(),
            driver_peak_rss_bytes: None,
            worker_peak_rss_bytes: job.worker_peaks.values().copied().max(),
            workers_peak_rss_bytes: {
                let mut v: Vec<(WorkerId, u64)> = job.worker_peaks.iter().map(|(w, p)| (*w, *p)).collect();
                v.sort_unstable();
                v.into_iter().map(|(_, p)| p).collect()
            },
            workers_drained: job.workers_drained,
            tasks_resumed: job.tasks_resumed,
            fp_events: (0..job.plan.user_outputs().len() as u32)
                .map(|o| output_events(&job.plan, &job.fp, o))
                .collect(),
        };
        send(
            &job.client,
            ServerMsg::Progress {
                done: job.tasks_total,
                total: job.tasks_total,
            },
        );
        let writer = job.writer.take().expect("writer until finished");
        let done = writer.finish();
        let events = self.events.clone();
        let id = job.id;
        tokio::spawn(async move {
            let result = done.await.unwrap_or_else(|_| Err("the writer thread died".into()));
            let _ = events.send(Event::Finished { job: id, result });
        });
        tracing::info!(job = id, seconds = summary.seconds, "job done");
        self.slot = Slot::Finishing {
            id,
            client: job.client,
            summary,
        };
    }

    /// Cancel the running job without telling its client (it is gone). Its temporary
    /// files and journal stay, so running the same workload again resumes.
    fn abort_job(&mut self) {
        if let Slot::Running(mut job) = std::mem::replace(&mut self.slot, Slot::Idle) {
            self.core.cancel_graph(GraphId(job.id));
            for w in self.workers.values() {
                send(&w.tx, ServerMsg::Cancel { job: job.id });
            }
            if let Some(w) = job.writer.take() {
                w.abandon();
            }
        }
        self.start_next();
    }

    fn fail_job(&mut self, message: String) {
        tracing::warn!(%message, "job failed");
        match std::mem::replace(&mut self.slot, Slot::Idle) {
            Slot::Running(job) => {
                self.core.cancel_graph(GraphId(job.id));
                for w in self.workers.values() {
                    send(&w.tx, ServerMsg::Cancel { job: job.id });
                }
                send(
                    &job.client,
                    ServerMsg::Failed {
                        input_error: false,
                        message,
                    },
                );
                drop(job);
            }
            Slot::Preparing { client, .. } => send(
                &client,
                ServerMsg::Failed {
                    input_error: false,
                    message,
                },
            ),
            other => self.slot = other,
        }
        if self.stopping.is_none() {
            self.start_next();
        }
    }

    /// Remember a worker that left holding tasks (a loss, not a clean exit).
    fn note_lost(&mut self, id: WorkerId, info: &WorkerInfo, reason: String) {
        let held = self.core.workers().find(|(w, _, _)| *w == id).map_or(0, |(_, _, n)| n);
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
        });
        if self.lost.len() > 50 {
            self.lost.pop_front();
        }
    }

    /// Apply a client's pool command (scale, adapt) and answer it; `Err` is bad input.
    fn pool_command(&mut self, client: &Tx, f: impl FnOnce(&mut Pool, u32, Duration) -> Result<(), String>) {
        let now = self.now();
        let reply = match &mut self.site {
            None => ServerMsg::Failed {
                input_error: true,
                message: "this server has no batch site; start it with `drover server start --site NAME|FILE`".into(),
            },
            Some(_) if self.stopping.is_some() => ServerMsg::Failed {
                input_error: false,
                message: "the server is stopping".into(),
            },
            Some(s) => {
                let threads = s.runner.site().threads_per_worker();
                match f(&mut s.pool, threads, now) {
                    Ok(()) => ServerMsg::Ok,
                    Err(message) => ServerMsg::Failed {
                        input_error: true,
                        message,
                    },
                }
            }
        };
        send(client, reply);
    }

    /// Keep about 25 ms of work queued at each slot (at least 2 tasks, at most 256), so
    /// that short tasks never wait for a round trip and long ones stay balanced.
    fn tune_prefetch(&mut self) {
        let Some(mean) = self.mean_task else { return };
        let depth = (Duration::from_millis(25).as_secs_f64() / mean.as_secs_f64().max(1e-6))
            .ceil()
            .clamp(2.0, 256.0) as u32;
        if depth != self.prefetch {
            self.prefetch = depth;
            self.core.set_queue_per_slot(depth);
        }
    }

    /// Poll job states, retire drained jobs, let backoffs expire.
    fn pool_tick(&mut self, now: Duration) {
        let progress = self.running_progress();
        let Some(s) = &mut self.site else { return };
        if s.pool.adapt().is_some() {
            let tasks_left = progress.map_or(0, |(d, t)| u64::from(t - d));
            s.pool.observe(
                now,
                Backlog {
                    tasks_left,
                    mean_task: self.mean_task,
                },
            );
        }
        s.pool.step(now);
        let live = s.pool.live_jobs();
        if !s.polling && !live.is_empty() && s.last_poll.is_none_or(|t| t.elapsed() >= POLL_INTERVAL) {
            s.polling = true;
            s.last_poll = Some(Instant::now());
            let runner = s.runner.clone();
            let events = self.events.clone();
            tokio::spawn(async move {
                let r = runner.status(&live).await;
                let _ = events.send(Event::PoolStatus(r));
            });
        }
        // Retiring jobs whose workers hold nothing: stop the workers, cancel the job.
        let assigned: HashMap<WorkerId, usize> = self.core.workers().map(|(id, _, n)| (id, n)).collect();
        let retiring: Vec<JobId> = s
            .pool
            .jobs(now)
            .into_iter()
            .filter(|j| j.retiring && j.state != JobState::Gone)
            .map(|j| j.id)
            .collect();
        for job in retiring {
            let mine: Vec<WorkerId> = self
                .workers
                .iter()
                .filter(|(_, w)| w.info.batch_job.as_deref() == Some(job.0.as_str()))
                .map(|(id, _)| *id)
                .collect();
            if mine.iter().all(|w| assigned.get(w).copied().unwrap_or(0) == 0) {
                for w in &mine {
                    if let Some(e) = self.workers.get(w) {
                        send(
                            &e.tx,
                            ServerMsg::Shutdown {
                                reason: "scaled down".into(),
                            },
                        );
                    }
                }
                tracing::info!(job = %job, workers = mine.len(), "retiring idle job");
                s.pool.retired(now, &job);
            }
        }
    }

    /// Carry out the pool's actions.
    fn drive_pool(&mut self) {
        let Some(s) = &mut self.site else { return };
        for action in s.pool.take_actions() {
            match action {
                PoolAction::Submit { jobs } => {
                    let runner = s.runner.clone();
                    let events = self.events.clone();
                    tracing::info!(jobs, "submitting");
                    tokio::spawn(async move {
                        let r = runner.submit(jobs).await;
                        let _ = events.send(Event::PoolSubmitted(r));
                    });
                }
                PoolAction::Cancel(ids) => {
                    tracing::info!(jobs = ?ids, "cancelling");
                    let runner = s.runner.clone();
                    tokio::spawn(async move {
                        if let Err(e) = runner.cancel(&ids).await {
                            tracing::warn!(error = %e, "cancel failed");
                        }
                    });
                }
                PoolAction::Retire(ids) => {
                    for (id, w) in &self.workers {
                        if w.info.batch_job.as_ref().is_some_and(|j| ids.iter().any(|r| &r.0 == j)) {
                            let _ = self.core.drain(*id);
                        }
                    }
                }
            }
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
        Status {
            workers,
            jobs,
            target,
            adapt,
            submit_failure,
            lost_workers: self.lost.iter().cloned().collect(),
            running_job: match &self.slot {
                Slot::Running(j) => Some(j.id),
                _ => None,
            },
            progress: self.running_progress(),
            tasks_done: c.tasks_done,
            tasks_retried: c.tasks_retried,
            workers_lost: c.workers_lost,
            workers_drained: self.drained_workers,
        }
    }
}
