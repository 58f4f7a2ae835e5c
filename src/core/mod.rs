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
//! Memory: per task a few bytes of state plus its dependency edges (CSR), so a graph of
//! a million tasks costs tens of MiB at most.

mod graph;

pub use graph::{Graph, GraphBuilder, TaskKind};

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::time::Duration;

/// Index of a task inside the current graph.
pub type TaskId = u32;

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

/// What the core asks its driver to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send these tasks to this worker (appended to its queue).
    Assign { worker: WorkerId, tasks: Vec<TaskId> },
    /// Run this task in the driver itself (a [`TaskKind::Local`] task).
    RunLocal(TaskId),
    /// A worker was declared lost (heartbeat timeout); its tasks went back to the queue.
    WorkerLost { worker: WorkerId },
    /// Every task of the graph is done.
    GraphDone,
    /// The graph cannot finish.
    GraphFailed(Failure),
}

/// Why a graph failed.
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
    /// Not assigned to this worker (late result of a lost worker, duplicate): discard it.
    Stale,
}

/// Errors from misuse of the core API by its driver.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CoreError {
    #[error("a graph is already running")]
    Busy,
    #[error("unknown worker {0}")]
    UnknownWorker(WorkerId),
}

#[derive(Debug)]
struct WorkerState {
    slots: u32,
    last_seen: Duration,
    assigned: HashSet<TaskId>,
    draining: bool,
}

/// Counters that survive across graphs, for reports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub tasks_done: u64,
    pub tasks_retried: u64,
    pub workers_lost: u64,
}

/// The scheduler state machine. See the module docs.
#[derive(Debug)]
pub struct Core {
    cfg: CoreConfig,
    workers: HashMap<WorkerId, WorkerState>,
    next_worker: u32,
    graph: Option<Graph>,
    ready: VecDeque<TaskId>,
    /// Workers each task was lost on, kept only for tasks that were retried.
    lost_on: HashMap<TaskId, Vec<WorkerId>>,
    actions: VecDeque<Action>,
    counters: Counters,
    graph_counters: Counters,
}

impl Core {
    pub fn new(cfg: CoreConfig) -> Self {
        Self {
            cfg,
            workers: HashMap::new(),
            next_worker: 0,
            graph: None,
            ready: VecDeque::new(),
            lost_on: HashMap::new(),
            actions: VecDeque::new(),
            counters: Counters::default(),
            graph_counters: Counters::default(),
        }
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// How many tasks to keep queued per slot (prefetch depth); the driver raises it
    /// for short tasks so that workers never wait for a round trip.
    pub fn set_queue_per_slot(&mut self, n: u32) {
        self.cfg.queue_per_slot = n.max(1);
        self.schedule();
    }

    /// Counters over the core's whole life.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Counters of the current (or last) graph.
    pub fn graph_counters(&self) -> Counters {
        self.graph_counters
    }

    pub fn has_graph(&self) -> bool {
        self.graph.is_some()
    }

    /// Tasks done and total of the current graph.
    pub fn progress(&self) -> Option<(u32, u32)> {
        self.graph.as_ref().map(|g| (g.done_count(), g.len()))
    }

    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// Live workers with their slots and the number of tasks assigned to them.
    pub fn workers(&self) -> impl Iterator<Item = (WorkerId, u32, usize)> + '_ {
        self.workers.iter().map(|(id, w)| (*id, w.slots, w.assigned.len()))
    }

    /// A worker registered with `slots` task slots.
    pub fn worker_joined(&mut self, now: Duration, slots: u32) -> WorkerId {
        let id = WorkerId(self.next_worker);
        self.next_worker += 1;
        self.workers.insert(
            id,
            WorkerState {
                slots: slots.max(1),
                last_seen: now,
                assigned: HashSet::new(),
                draining: false,
            },
        );
        self.schedule();
        id
    }

    /// The worker is alive (any message from it counts).
    pub fn heartbeat(&mut self, now: Duration, worker: WorkerId) {
        if let Some(w) = self.workers.get_mut(&worker) {
            w.last_seen = now;
        }
    }

    /// Stop giving the worker new tasks; it keeps what it holds.
    pub fn drain(&mut self, worker: WorkerId) -> Result<(), CoreError> {
        let w = self.workers.get_mut(&worker).ok_or(CoreError::UnknownWorker(worker))?;
        w.draining = true;
        Ok(())
    }

    /// A draining worker hands back tasks it has not started: they go back to the
    /// front of the queue without counting as retries. Tasks it does not hold are
    /// ignored (already requeued, or finished).
    pub fn release(&mut self, now: Duration, worker: WorkerId, tasks: &[TaskId]) {
        self.heartbeat(now, worker);
        let Some(w) = self.workers.get_mut(&worker) else { return };
        let mut back: Vec<TaskId> = tasks.iter().copied().filter(|t| w.assigned.remove(t)).collect();
        back.sort_unstable();
        for t in back.into_iter().rev() {
            self.ready.push_front(t);
        }
        self.schedule();
    }

    /// The worker is gone (disconnected, killed, or left). Its tasks go back to the queue.
    pub fn worker_left(&mut self, _now: Duration, worker: WorkerId) {
        let Some(w) = self.workers.remove(&worker) else { return };
        let lost = u64::from(!w.assigned.is_empty());
        self.counters.workers_lost += lost;
        self.graph_counters.workers_lost += lost;
        let mut tasks: Vec<TaskId> = w.assigned.into_iter().collect();
        tasks.sort_unstable();
        for task in tasks.into_iter().rev() {
            self.requeue(task, worker);
            if self.graph.is_none() {
                return;
            }
        }
        self.schedule();
    }

    /// Check heartbeats: workers silent for longer than the timeout are declared lost.
    pub fn tick(&mut self, now: Duration) {
        let timeout = self.cfg.heartbeat_timeout;
        let mut lost: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| now.saturating_sub(w.last_seen) > timeout)
            .map(|(id, _)| *id)
            .collect();
        lost.sort_unstable();
        for worker in lost {
            self.actions.push_back(Action::WorkerLost { worker });
            self.worker_left(now, worker);
        }
    }

    /// Start a graph whose `done` tasks were completed by an earlier, interrupted run.
    pub fn submit_resumed(&mut self, mut graph: Graph, done: &[TaskId]) -> Result<(), CoreError> {
        graph.mark_done_before_start(done);
        self.submit(graph)
    }

    /// Start a graph. Only one runs at a time.
    pub fn submit(&mut self, graph: Graph) -> Result<(), CoreError> {
        if self.graph.is_some() {
            return Err(CoreError::Busy);
        }
        self.graph_counters = Counters::default();
        self.ready.clear();
        self.lost_on.clear();
        if graph.is_empty() || graph.all_done() {
            self.actions.push_back(Action::GraphDone);
            return Ok(());
        }
        self.graph = Some(graph);
        self.release_initial();
        self.schedule();
        Ok(())
    }

    /// Drop the current graph (cancelled by the driver). Workers' queues are forgotten;
    /// the driver tells the workers.
    pub fn cancel_graph(&mut self) {
        self.graph = None;
        self.ready.clear();
        self.lost_on.clear();
        for w in self.workers.values_mut() {
            w.assigned.clear();
        }
    }

    /// A worker finished a task.
    pub fn task_done(&mut self, now: Duration, worker: WorkerId, task: TaskId) -> Accept {
        self.heartbeat(now, worker);
        let Some(w) = self.workers.get_mut(&worker) else {
            return Accept::Stale;
        };
        if !w.assigned.remove(&task) {
            return Accept::Stale;
        }
        self.complete(task);
        self.schedule();
        Accept::Accepted
    }

    /// A worker could not execute a task: the graph fails (errors in tasks are
    /// deterministic: bad data, unreadable file; retrying elsewhere would not help).
    pub fn task_error(&mut self, now: Duration, worker: WorkerId, task: TaskId, message: String) -> Accept {
        self.heartbeat(now, worker);
        let Some(w) = self.workers.get_mut(&worker) else {
            return Accept::Stale;
        };
        if !w.assigned.remove(&task) {
            return Accept::Stale;
        }
        self.fail(Failure::TaskError { task, worker, message });
        Accept::Accepted
    }

    /// The driver finished a local task.
    pub fn local_done(&mut self, task: TaskId) -> Accept {
        let Some(g) = self.graph.as_mut() else { return Accept::Stale };
        if !g.is_running_local(task) {
            return Accept::Stale;
        }
        self.complete(task);
        self.schedule();
        Accept::Accepted
    }

    /// The driver could not finish a local task.
    pub fn local_failed(&mut self, task: TaskId, message: String) {
        if self.graph.as_ref().is_some_and(|g| g.is_running_local(task)) {
            self.fail(Failure::TaskError {
                task,
                worker: WorkerId(u32::MAX),
                message,
            });
        }
    }

    fn fail(&mut self, failure: Failure) {
        self.cancel_graph();
        self.actions.push_back(Action::GraphFailed(failure));
    }

    fn complete(&mut self, task: TaskId) {
        let g = self.graph.as_mut().expect("complete() with a graph");
        let mut released = Vec::new();
        g.mark_done(task, &mut released);
        self.counters.tasks_done += 1;
        self.graph_counters.tasks_done += 1;
        for t in released {
            self.make_ready(t);
        }
        if self.graph.as_ref().is_some_and(Graph::all_done) {
            self.graph = None;
            self.actions.push_back(Action::GraphDone);
        }
    }

    fn release_initial(&mut self) {
        let g = self.graph.as_ref().expect("graph");
        let roots: Vec<TaskId> = (0..g.len()).filter(|&t| g.is_ready(t)).collect();
        // (is_ready is false for tasks already done.)
        for t in roots {
            self.make_ready(t);
        }
    }

    /// A task's dependencies are all done.
    fn make_ready(&mut self, task: TaskId) {
        let g = self.graph.as_mut().expect("graph");
        match g.kind(task) {
            TaskKind::Remote => self.ready.push_back(task),
            TaskKind::Local => {
                g.mark_running_local(task);
                self.actions.push_back(Action::RunLocal(task));
            }
        }
    }

    fn requeue(&mut self, task: TaskId, worker: WorkerId) {
        let Some(g) = self.graph.as_mut() else { return };
        let attempts = g.bump_attempts(task);
        self.counters.tasks_retried += 1;
        self.graph_counters.tasks_retried += 1;
        let on = self.lost_on.entry(task).or_default();
        on.push(worker);
        if attempts > self.cfg.max_retries {
            let workers = on.clone();
            self.fail(Failure::RetriesExhausted { task, workers });
            return;
        }
        self.ready.push_front(task);
    }

    /// Hand ready tasks to workers: first fill every worker's slots, least loaded first,
    /// then their prefetch queues, so that a few tasks spread over many workers.
    fn schedule(&mut self) {
        if self.ready.is_empty() || self.graph.is_none() {
            return;
        }
        let mut batches: HashMap<WorkerId, Vec<TaskId>> = HashMap::new();
        for depth in [1, self.cfg.queue_per_slot.max(1)] {
            let mut heap: BinaryHeap<Reverse<(usize, WorkerId)>> = self
                .workers
                .iter()
                .filter(|(_, w)| !w.draining && w.assigned.len() < (w.slots * depth) as usize)
                .map(|(id, w)| Reverse((w.assigned.len(), *id)))
                .collect();
            while let Some(Reverse((load, id))) = heap.pop() {
                let Some(task) = self.ready.pop_front() else { break };
                let w = self.workers.get_mut(&id).expect("worker in heap");
                w.assigned.insert(task);
                batches.entry(id).or_default().push(task);
                if load + 1 < (w.slots * depth) as usize {
                    heap.push(Reverse((load + 1, id)));
                }
            }
        }
        let mut batches: Vec<_> = batches.into_iter().collect();
        batches.sort_unstable_by_key(|(id, _)| *id);
        for (worker, tasks) in batches {
            self.actions.push_back(Action::Assign { worker, tasks });
        }
    }
}

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
