//! The scheduler core: a sans-IO state machine.
//!
//! It knows tasks (with dependencies), workers (with slots) and time, and nothing else:
//! no sockets, no threads, no clock, no HDF5. Callers feed it events with the current
//! time (a [`Duration`] since an arbitrary epoch) and drain [`Action`]s with
//! [`Core::poll_action`]. That makes it deterministic, so it is tested at scale with
//! plain unit tests and seeded simulations.
//!
//! Architecture invariants:
//! - A task is assigned to at most one live worker at a time.
//! - A result is accepted only from the worker the task is currently assigned to
//!   ([`Core::task_done`] answers [`Accept::Stale`] otherwise), so every task result is
//!   counted exactly once even when a lost worker's late results arrive.
//! - Nothing is ever assigned to a worker that left or was declared lost.
//!
//! Several graphs run at once (array workloads, task jobs), each with its own
//! [`GraphSpec`]: they share the workers' slots by priority without starving one
//! another, a task takes its graph's `cores` slots, an array workload fails on its
//! first task error while a task job fails only that task (after its retries) and
//! cancels what depends on it.
//!
//! Memory: per task a few bytes of state plus its dependency edges (CSR), so a graph of
//! a million tasks costs tens of MiB at most.

mod graph;
mod workers;

pub use graph::{Graph, GraphBuilder, TaskKind};
use workers::{Open, Workers};

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;

/// Index of a task inside its graph.
pub type TaskId = u32;

/// Identity of a graph (a job) in the core, chosen by the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GraphId(pub u64);

impl std::fmt::Display for GraphId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "g{}", self.0)
    }
}

/// A task of a graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskKey {
    pub graph: GraphId,
    pub task: TaskId,
}

impl TaskKey {
    pub fn new(graph: GraphId, task: TaskId) -> Self {
        Self { graph, task }
    }
}

/// Identity of a worker, never reused during the life of a [`Core`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct WorkerId(pub u32);

impl std::fmt::Display for WorkerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "w{}", self.0)
    }
}

/// Tunables of the scheduler.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// A worker not heard from for this long is declared lost.
    pub heartbeat_timeout: Duration,
    /// How many times a task may be handed out again after the workers running it died.
    pub max_retries: u8,
    /// How many tasks to keep queued at a worker per slot (prefetch), at least 1.
    pub queue_per_slot: u32,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            heartbeat_timeout: Duration::from_secs(30),
            max_retries: 3,
            queue_per_slot: 2,
        }
    }
}

/// What a graph does when one of its tasks reports an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    /// The graph fails at once (array workloads: errors there are deterministic, bad
    /// data or an unreadable file, and another try would fail the same way).
    FailGraph,
    /// The task runs again up to `retries` more times, then fails for good; the tasks
    /// depending on it are cancelled and the rest of the graph goes on (task jobs).
    FailTask { retries: u8 },
}

/// How a graph is scheduled.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphSpec {
    /// Graphs share the workers in proportion to 2^priority (clamped to ±10); equal
    /// shares go first to the graph submitted first. No graph with ready tasks is
    /// starved.
    pub priority: i32,
    pub on_error: OnError,
    /// Slots of a worker each remote task occupies.
    pub cores: u32,
    /// The longest a task may run: a worker whose walltime ends sooner gets none.
    pub time_limit: Option<Duration>,
    /// Whether its tasks may wait in workers' queues behind running ones (short
    /// tasks); without, a task goes only to a free slot, so a long task never waits
    /// at a busy worker while another is idle.
    pub prefetch: bool,
    /// Tasks whose cores and time limit differ from `cores` and `time_limit` (the
    /// entries of a task graph file).
    pub classes: Option<TaskClasses>,
}

/// Per task, its class; per class, its cores and time limit.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskClasses {
    pub of_task: Vec<u16>,
    pub res: Vec<(u32, Option<Duration>)>,
}

impl GraphSpec {
    /// The cores and time limit of task `t`.
    pub fn res(&self, t: TaskId) -> (u32, Option<Duration>) {
        match &self.classes {
            Some(c) => c.res[c.of_task[t as usize] as usize],
            None => (self.cores, self.time_limit),
        }
    }
}

impl Default for GraphSpec {
    fn default() -> Self {
        Self {
            priority: 0,
            on_error: OnError::FailGraph,
            cores: 1,
            time_limit: None,
            prefetch: true,
            classes: None,
        }
    }
}

/// What the core asks its driver to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send these tasks to this worker (appended to its queue).
    Assign { worker: WorkerId, tasks: Vec<TaskKey> },
    /// Run this task in the driver itself (a [`TaskKind::Local`] task).
    RunLocal(TaskKey),
    /// A worker was declared lost (heartbeat timeout); the tasks it held (`tasks`)
    /// went back to the queue.
    WorkerLost { worker: WorkerId, tasks: Vec<TaskKey> },
    /// A task of an [`OnError::FailTask`] graph failed for good; `cancelled` are the
    /// tasks that depended on it (they will not run).
    TaskFailed {
        task: TaskKey,
        failure: Failure,
        cancelled: Vec<TaskId>,
    },
    /// Every task of the graph ended (for an [`OnError::FailTask`] graph, some may have
    /// failed or been cancelled).
    GraphDone(GraphId),
    /// The graph cannot finish.
    GraphFailed(GraphId, Failure),
}

/// Why a task, or a graph, failed.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// A task reported an error while executing.
    TaskError { task: TaskId, worker: WorkerId, message: String },
    /// A task was running on workers that all died (the poison-chunk case).
    RetriesExhausted { task: TaskId, workers: Vec<WorkerId> },
}

/// Whether a reported result was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// The result counts; the driver must merge it.
    Accepted,
    /// Not assigned to this worker (late result of a lost worker, duplicate, a task
    /// cancelled meanwhile): discard it.
    Stale,
}

/// Errors from misuse of the core API by its driver.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CoreError {
    #[error("graph {0} is already running")]
    Busy(GraphId),
    #[error("unknown worker {0}")]
    UnknownWorker(WorkerId),
}

/// Counters that survive across graphs, for reports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub tasks_done: u64,
    pub tasks_retried: u64,
    pub workers_lost: u64,
}

#[derive(Debug)]
struct GraphState {
    graph: Graph,
    spec: GraphSpec,
    /// Submission order.
    order: u64,
    ready: VecDeque<TaskId>,
    /// Workers each task was lost on, kept only for tasks that were retried.
    lost_on: HashMap<TaskId, Vec<WorkerId>>,
    /// Errors reported per task, kept only for tasks that reported one.
    errors: HashMap<TaskId, u8>,
    /// Slots its tasks hold at workers now.
    in_flight: u64,
    counters: Counters,
}

impl GraphState {
    /// Whether this graph's next task should go before `other`'s: the smaller share of
    /// in-flight slots per weight, then the earlier submission.
    fn before(&self, other: &GraphState) -> bool {
        let weight = |g: &GraphState| 2f64.powi(g.spec.priority.clamp(-10, 10));
        let (a, b) = (self.in_flight as f64 / weight(self), other.in_flight as f64 / weight(other));
        a < b || (a == b && self.order < other.order)
    }
}

/// The scheduler state machine. See the module docs.
#[derive(Debug)]
pub struct Core {
    cfg: CoreConfig,
    workers: Workers,
    next_worker: u32,
    graphs: BTreeMap<GraphId, GraphState>,
    next_order: u64,
    /// The latest time the driver told.
    now: Duration,
    actions: VecDeque<Action>,
    counters: Counters,
    /// Counters of graphs that ended.
    ended: HashMap<GraphId, Counters>,
}

impl Core {
    pub fn new(cfg: CoreConfig) -> Self {
        Self {
            workers: Workers::new(cfg.queue_per_slot),
            cfg,
            next_worker: 0,
            graphs: BTreeMap::new(),
            next_order: 0,
            now: Duration::ZERO,
            actions: VecDeque::new(),
            counters: Counters::default(),
            ended: HashMap::new(),
        }
    }

    fn at(&mut self, now: Duration) {
        self.now = self.now.max(now);
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// How many tasks to keep queued per slot (prefetch depth); the driver raises it
    /// for short tasks so that workers never wait for a round trip.
    pub fn set_queue_per_slot(&mut self, n: u32) {
        self.cfg.queue_per_slot = n.max(1);
        self.workers.set_depth(self.cfg.queue_per_slot);
        self.schedule();
    }

    /// Counters over the core's whole life.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Counters of a running graph, or of one that ended (a few bytes kept per graph).
    pub fn graph_counters(&self, id: GraphId) -> Counters {
        match self.graphs.get(&id) {
            Some(g) => g.counters,
            None => self.ended.get(&id).copied().unwrap_or_default(),
        }
    }

    pub fn has_graph(&self, id: GraphId) -> bool {
        self.graphs.contains_key(&id)
    }

    /// Graphs running.
    pub fn graph_count(&self) -> usize {
        self.graphs.len()
    }

    /// Tasks done and total of a running graph.
    pub fn progress(&self, id: GraphId) -> Option<(u32, u32)> {
        self.graphs.get(&id).map(|g| (g.graph.done_count(), g.graph.len()))
    }

    /// Tasks of a graph waiting for a worker (ready, not assigned).
    pub fn ready_count(&self, id: GraphId) -> usize {
        self.graphs.get(&id).map_or(0, |g| g.ready.len())
    }

    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// Live workers with their slots and the number of tasks assigned to them.
    pub fn workers(&self) -> impl Iterator<Item = (WorkerId, u32, usize)> + '_ {
        self.workers.iter().map(|(id, w)| (*id, w.slots, w.assigned.len()))
    }

    /// The tasks a worker holds (running or queued there), in order.
    pub fn held(&self, worker: WorkerId) -> Vec<TaskKey> {
        let mut v: Vec<TaskKey> = self
            .workers
            .get(&worker)
            .map(|w| w.assigned.iter().copied().collect())
            .unwrap_or_default();
        v.sort_unstable();
        v
    }

    /// A worker registered with `slots` task slots.
    pub fn worker_joined(&mut self, now: Duration, slots: u32) -> WorkerId {
        self.at(now);
        let id = WorkerId(self.next_worker);
        self.next_worker += 1;
        self.workers.join(id, slots, now);
        self.schedule();
        id
    }

    /// The worker's walltime ends at `deadline`: it gets no task whose graph's time
    /// limit would outlive it.
    pub fn set_deadline(&mut self, worker: WorkerId, deadline: Option<Duration>) -> Result<(), CoreError> {
        if !self.workers.set_deadline(worker, deadline) {
            return Err(CoreError::UnknownWorker(worker));
        }
        self.schedule();
        Ok(())
    }

    /// The worker is alive (any message from it counts).
    pub fn heartbeat(&mut self, now: Duration, worker: WorkerId) {
        self.at(now);
        self.workers.seen(worker, now);
    }

    /// When the worker was last heard from (`None`: not a worker of the core).
    pub fn last_seen(&self, worker: WorkerId) -> Option<Duration> {
        self.workers.get(&worker).map(|w| w.last_seen)
    }

    /// Stop giving the worker new tasks; it keeps what it holds.
    pub fn drain(&mut self, worker: WorkerId) -> Result<(), CoreError> {
        if !self.workers.drain(worker) {
            return Err(CoreError::UnknownWorker(worker));
        }
        Ok(())
    }

    /// Take `task` off `worker`'s books; whether it held it.
    fn unassign(&mut self, worker: WorkerId, task: TaskKey) -> bool {
        let cores = self.graphs.get(&task.graph).map_or(1, |g| g.spec.res(task.task).0);
        if !self.workers.unassign(worker, task, cores) {
            return false;
        }
        if let Some(g) = self.graphs.get_mut(&task.graph) {
            g.in_flight = g.in_flight.saturating_sub(u64::from(cores));
        }
        true
    }

    /// A worker hands back tasks it has not started (draining, or a time limit its
    /// walltime cannot hold): they go back to the front of their queues without
    /// counting as retries. Tasks it does not hold are ignored (already requeued, or
    /// finished).
    pub fn release(&mut self, now: Duration, worker: WorkerId, tasks: &[TaskKey]) {
        self.heartbeat(now, worker);
        let mut back: Vec<TaskKey> = tasks.iter().copied().filter(|&t| self.unassign(worker, t)).collect();
        back.sort_unstable();
        for t in back.into_iter().rev() {
            if let Some(g) = self.graphs.get_mut(&t.graph) {
                g.ready.push_front(t.task);
            }
        }
        self.schedule();
    }

    /// The worker is gone (disconnected, killed, or left). Its tasks go back to the queue.
    pub fn worker_left(&mut self, now: Duration, worker: WorkerId) {
        self.at(now);
        let Some(w) = self.workers.remove(worker) else { return };
        let lost = u64::from(!w.assigned.is_empty());
        self.counters.workers_lost += lost;
        let mut tasks: Vec<TaskKey> = w.assigned.into_iter().collect();
        tasks.sort_unstable();
        let mut graphs: Vec<GraphId> = tasks.iter().map(|t| t.graph).collect();
        graphs.dedup();
        for id in graphs {
            if let Some(g) = self.graphs.get_mut(&id) {
                g.counters.workers_lost += lost;
            }
        }
        for task in tasks.into_iter().rev() {
            if let Some(g) = self.graphs.get_mut(&task.graph) {
                g.in_flight = g.in_flight.saturating_sub(u64::from(g.spec.res(task.task).0));
            }
            self.requeue(task, worker);
        }
        self.schedule();
    }

    /// Check heartbeats: workers silent for longer than the timeout are declared lost.
    pub fn tick(&mut self, now: Duration) {
        self.at(now);
        let timeout = self.cfg.heartbeat_timeout;
        let mut lost: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| now.saturating_sub(w.last_seen) > timeout)
            .map(|(id, _)| *id)
            .collect();
        lost.sort_unstable();
        for worker in lost {
            let tasks = self.held(worker);
            self.actions.push_back(Action::WorkerLost { worker, tasks });
            self.worker_left(now, worker);
        }
        // A deadline passing may make a task unplaceable, never placeable: nothing to
        // schedule here beyond what worker_left did.
    }

    /// Let a graph's tasks wait in workers' queues, or not ([`GraphSpec::prefetch`]).
    pub fn set_prefetch(&mut self, id: GraphId, prefetch: bool) {
        if let Some(g) = self.graphs.get_mut(&id)
            && g.spec.prefetch != prefetch
        {
            g.spec.prefetch = prefetch;
            self.schedule();
        }
    }

    /// Start a graph whose `done` tasks were completed by an earlier, interrupted run.
    pub fn submit_resumed(&mut self, id: GraphId, mut graph: Graph, spec: GraphSpec, done: &[TaskId]) -> Result<(), CoreError> {
        graph.mark_done_before_start(done);
        self.submit(id, graph, spec)
    }

    /// Start a graph; it runs alongside the others.
    pub fn submit(&mut self, id: GraphId, graph: Graph, spec: GraphSpec) -> Result<(), CoreError> {
        if self.graphs.contains_key(&id) {
            return Err(CoreError::Busy(id));
        }
        self.ended.remove(&id);
        if graph.is_empty() || graph.all_ended() {
            self.ended.insert(id, Counters::default());
            self.actions.push_back(Action::GraphDone(id));
            return Ok(());
        }
        let order = self.next_order;
        self.next_order += 1;
        let roots: Vec<TaskId> = (0..graph.len()).filter(|&t| graph.is_ready(t)).collect();
        self.graphs.insert(
            id,
            GraphState {
                graph,
                spec,
                order,
                ready: VecDeque::new(),
                lost_on: HashMap::new(),
                errors: HashMap::new(),
                in_flight: 0,
                counters: Counters::default(),
            },
        );
        // (is_ready is false for tasks already done.)
        for t in roots {
            self.make_ready(TaskKey::new(id, t));
        }
        self.schedule();
        Ok(())
    }

    /// Drop a graph (cancelled by the driver). Its tasks leave the workers' books; the
    /// driver tells the workers.
    pub fn cancel_graph(&mut self, id: GraphId) {
        let Some(g) = self.graphs.remove(&id) else { return };
        self.ended.insert(id, g.counters);
        self.workers.forget_graph(id, |t| g.spec.res(t).0);
        self.schedule();
    }

    /// Cancel tasks of a running graph, and the tasks that depend on them: those not
    /// started never run; those assigned leave the workers' books (their results will
    /// be stale) and are returned with their workers, for the driver to stop them.
    /// Returns also every task cancelled (those named that had not ended, and their
    /// dependants).
    pub fn cancel_tasks(&mut self, id: GraphId, tasks: &[TaskId]) -> (Vec<TaskId>, Vec<(TaskKey, WorkerId)>) {
        let Some(g) = self.graphs.get_mut(&id) else {
            return (vec![], vec![]);
        };
        let mut cancelled = Vec::new();
        for &t in tasks {
            if t < g.graph.len() && !g.graph.has_ended(t) {
                cancelled.push(t);
                g.graph.drop_task(t, &mut cancelled);
            }
        }
        let gone: HashSet<TaskId> = cancelled.iter().copied().collect();
        g.ready.retain(|t| !gone.contains(t));
        let mut running = Vec::new();
        let mut ws: Vec<WorkerId> = self.workers.ids().collect();
        ws.sort_unstable();
        for w in ws {
            let held: Vec<TaskKey> = self
                .workers
                .get(&w)
                .expect("listed")
                .assigned
                .iter()
                .filter(|k| k.graph == id && gone.contains(&k.task))
                .copied()
                .collect();
            for k in held {
                self.unassign(w, k);
                running.push((k, w));
            }
        }
        running.sort_unstable();
        self.check_ended(id);
        self.schedule();
        (cancelled, running)
    }

    /// A worker finished a task.
    pub fn task_done(&mut self, now: Duration, worker: WorkerId, task: TaskKey) -> Accept {
        self.heartbeat(now, worker);
        if !self.unassign(worker, task) {
            return Accept::Stale;
        }
        self.complete(task);
        self.schedule();
        Accept::Accepted
    }

    /// A worker could not execute a task. An [`OnError::FailGraph`] graph fails; an
    /// [`OnError::FailTask`] one runs it again while it has retries, else the task
    /// fails for good and its dependants are cancelled.
    pub fn task_error(&mut self, now: Duration, worker: WorkerId, task: TaskKey, message: String) -> Accept {
        self.heartbeat(now, worker);
        if !self.unassign(worker, task) {
            return Accept::Stale;
        }
        let failure = Failure::TaskError {
            task: task.task,
            worker,
            message,
        };
        self.task_failed(task, failure, true);
        self.schedule();
        Accept::Accepted
    }

    /// The driver finished a local task.
    pub fn local_done(&mut self, task: TaskKey) -> Accept {
        let Some(g) = self.graphs.get(&task.graph) else {
            return Accept::Stale;
        };
        if !g.graph.is_running_local(task.task) {
            return Accept::Stale;
        }
        self.complete(task);
        self.schedule();
        Accept::Accepted
    }

    /// The driver could not finish a local task.
    pub fn local_failed(&mut self, task: TaskKey, message: String) {
        if self.graphs.get(&task.graph).is_some_and(|g| g.graph.is_running_local(task.task)) {
            let failure = Failure::TaskError {
                task: task.task,
                worker: WorkerId(u32::MAX),
                message,
            };
            self.task_failed(task, failure, false);
            self.schedule();
        }
    }

    /// A task failed: the graph fails, or (task jobs) it runs again or fails for good.
    fn task_failed(&mut self, task: TaskKey, failure: Failure, may_retry: bool) {
        let Some(on_error) = self.graphs.get(&task.graph).map(|g| g.spec.on_error) else {
            return;
        };
        match on_error {
            OnError::FailGraph => self.fail(task.graph, failure),
            OnError::FailTask { retries } => {
                let g = self.graphs.get_mut(&task.graph).expect("checked");
                let n = g.errors.entry(task.task).or_default();
                *n = n.saturating_add(1);
                if may_retry && *n <= retries {
                    g.ready.push_back(task.task);
                    return;
                }
                let mut cancelled = Vec::new();
                g.graph.drop_task(task.task, &mut cancelled);
                let gone: HashSet<TaskId> = cancelled.iter().copied().collect();
                if !gone.is_empty() {
                    g.ready.retain(|t| !gone.contains(t));
                }
                self.actions.push_back(Action::TaskFailed { task, failure, cancelled });
                self.check_ended(task.graph);
            }
        }
    }

    fn fail(&mut self, id: GraphId, failure: Failure) {
        self.cancel_graph(id);
        self.actions.push_back(Action::GraphFailed(id, failure));
    }

    /// End a graph whose tasks all ended.
    fn check_ended(&mut self, id: GraphId) {
        if self.graphs.get(&id).is_some_and(|g| g.graph.all_ended()) {
            let g = self.graphs.remove(&id).expect("checked");
            self.ended.insert(id, g.counters);
            self.actions.push_back(Action::GraphDone(id));
        }
    }

    fn complete(&mut self, task: TaskKey) {
        let g = self.graphs.get_mut(&task.graph).expect("complete() of a running graph");
        let mut released = Vec::new();
        g.graph.mark_done(task.task, &mut released);
        self.counters.tasks_done += 1;
        g.counters.tasks_done += 1;
        for t in released {
            self.make_ready(TaskKey::new(task.graph, t));
        }
        self.check_ended(task.graph);
    }

    /// A task's dependencies are all done.
    fn make_ready(&mut self, task: TaskKey) {
        let g = self.graphs.get_mut(&task.graph).expect("graph");
        match g.graph.kind(task.task) {
            TaskKind::Remote => g.ready.push_back(task.task),
            TaskKind::Local => {
                g.graph.mark_running_local(task.task);
                self.actions.push_back(Action::RunLocal(task));
            }
        }
    }

    /// A task lost with `worker` goes back to the front of its queue, unless it was
    /// lost too often: then its graph fails, or (task jobs) the task fails for good.
    fn requeue(&mut self, task: TaskKey, worker: WorkerId) {
        let Some(g) = self.graphs.get_mut(&task.graph) else { return };
        let attempts = g.graph.bump_attempts(task.task);
        self.counters.tasks_retried += 1;
        g.counters.tasks_retried += 1;
        let on = g.lost_on.entry(task.task).or_default();
        on.push(worker);
        if attempts > self.cfg.max_retries {
            let workers = on.clone();
            let failure = Failure::RetriesExhausted { task: task.task, workers };
            self.task_failed(task, failure, false);
        } else {
            g.ready.push_front(task.task);
        }
    }

    /// The graph whose next ready task goes to a worker with `free` slots and
    /// `deadline`: the one with the smallest share (see [`GraphSpec::priority`]).
    fn pick(&self, free: u32, deadline: Option<Duration>, queued: bool) -> Pick {
        let mut best: Option<(GraphId, &GraphState, usize)> = None;
        let mut any = false;
        for (id, g) in &self.graphs {
            if (queued && !g.spec.prefetch) || g.ready.is_empty() {
                continue;
            }
            any = true;
            let Some(at) = self.fitting(g, free, deadline) else { continue };
            if best.is_none_or(|(_, b, _)| g.before(b)) {
                best = Some((*id, g, at));
            }
        }
        match best {
            Some((id, _, at)) => Pick::Task(id, at),
            None if any => Pick::NoFit,
            None => Pick::Empty,
        }
    }

    /// Where in `g`'s ready queue the first task is that fits `free` slots and a
    /// walltime ending at `deadline`. Tasks of one class all fit or none does; with
    /// classes (a task graph file), the first [`SCAN`] are looked at, so that a task
    /// of many cores at the head does not hold back smaller ones behind it.
    fn fitting(&self, g: &GraphState, free: u32, deadline: Option<Duration>) -> Option<usize> {
        const SCAN: usize = 64;
        let fits = |t: TaskId| {
            let (cores, limit) = g.spec.res(t);
            cores <= free
                && match (deadline, limit) {
                    (Some(d), Some(limit)) => self.now + limit <= d,
                    _ => true,
                }
        };
        let scan = if g.spec.classes.is_some() { SCAN } else { 1 };
        g.ready.iter().take(scan).position(|&t| fits(t))
    }

    /// Hand ready tasks to workers: first fill every worker's slots, least loaded first,
    /// then their prefetch queues, so that a few tasks spread over many workers. Each
    /// task comes from the graph with the smallest share of the slots in use. Workers
    /// are taken from the load index in (load, id) order; one given a task comes back
    /// at its new load, one that fits no ready task is passed over, and the pass ends
    /// as soon as no graph has a ready task for it: a freed slot costs O(log W).
    fn schedule(&mut self) {
        if self.graphs.values().all(|g| g.ready.is_empty()) {
            return;
        }
        let mut batches: HashMap<WorkerId, Vec<TaskKey>> = HashMap::new();
        for (which, depth) in [(Open::Slot, 1), (Open::Queue, self.workers.depth())] {
            let mut after = None;
            while let Some((load, id)) = self.workers.next_open(which, after) {
                after = Some((load, id));
                let w = self.workers.get(&id).expect("indexed");
                let (cap, deadline) = (w.slots * depth, w.deadline);
                // A task of several cores waits for a worker with that many free.
                let free = w.slots.min(cap - load);
                let (gid, at) = match self.pick(free, deadline, which == Open::Queue) {
                    Pick::Task(gid, at) => (gid, at),
                    Pick::NoFit => continue,
                    Pick::Empty => break,
                };
                let g = self.graphs.get_mut(&gid).expect("picked");
                let task = TaskKey::new(gid, g.ready.remove(at).expect("picked a ready task"));
                let cores = g.spec.res(task.task).0;
                g.in_flight += u64::from(cores);
                self.workers.assign(id, task, cores);
                batches.entry(id).or_default().push(task);
            }
        }
        let mut batches: Vec<_> = batches.into_iter().collect();
        batches.sort_unstable_by_key(|(id, _)| *id);
        for (worker, tasks) in batches {
            self.actions.push_back(Action::Assign { worker, tasks });
        }
    }

    /// Check the worker index against the books (tests).
    #[cfg(test)]
    pub(crate) fn check_index(&self) {
        self.workers.check();
    }
}

/// What [`Core::pick`] found for a worker.
enum Pick {
    /// This graph's ready task at this place in its queue.
    Task(GraphId, usize),
    /// Ready tasks exist, none fits this worker.
    NoFit,
    /// No graph has a ready task this pass could place.
    Empty,
}

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
