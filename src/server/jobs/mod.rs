//! Jobs of the server: array workloads ([`array`]) and task jobs ([`tasks`]) behind one
//! interface, [`Job`]. The actor owns the connections, the workers, the pool and the
//! scheduler core; it routes each of the core's actions and each worker message to the
//! job whose graph it concerns (a job's id is its `GraphId`), and a job acts on the
//! rest of the server only through [`Cx`]. Jobs never see the actor's types.

pub mod array;
pub mod task_graph;
pub mod task_journal;
pub mod task_table;
pub mod tasks;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::core::{Core, Failure, TaskId, TaskKey, WorkerId};
use crate::proto::jobs::{JobInfo, TaskView};
use crate::proto::{PeerMsg, ServerMsg, WorkerInfo};

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

/// The sending side of a connection.
pub type Tx = mpsc::UnboundedSender<Outgoing>;

pub fn send(tx: &Tx, msg: ServerMsg) {
    let _ = tx.send(Outgoing::msg(msg));
}

/// A connected worker.
pub struct Peer {
    pub info: WorkerInfo,
    pub tx: Tx,
    /// The worker said it is draining and was told `Drained`.
    pub drain_acked: bool,
}

/// Events a job's background work (planning, finalizing, the writer) sends back to the
/// job through the actor.
pub enum JobEvent {
    Local { task: TaskId, outcome: array::LocalOutcome },
    Finished(Result<(), String>),
}

/// Delivers a [`JobEvent`] to job `id` on the actor's loop.
pub type Notify = Arc<dyn Fn(u64, JobEvent) + Send + Sync>;

/// What a job may use of the server while it handles something.
pub struct Cx<'a> {
    pub core: &'a mut Core,
    pub peers: &'a HashMap<WorkerId, Peer>,
    pub notify: &'a Notify,
    pub now: Duration,
    /// This host's name (workers on it may write outputs directly).
    pub host: &'a str,
    /// The server's folder (task logs default to `jobs/` in it).
    pub dir: &'a Path,
    /// Tasks that ended (run times for the prefetch depth and the adaptive pool;
    /// the dashboard's task stream and counters).
    pub finished: &'a mut Vec<crate::server::observe::Finished>,
}

impl Cx<'_> {
    /// Send to a worker, if it is still connected.
    pub fn to_worker(&self, w: WorkerId, msg: ServerMsg) {
        if let Some(p) = self.peers.get(&w) {
            send(&p.tx, msg);
        }
    }

    /// Send to every connected worker.
    pub fn to_all(&self, msg: &ServerMsg) {
        for p in self.peers.values() {
            send(&p.tx, msg.clone());
        }
    }

    pub fn host_of(&self, w: u32) -> Option<String> {
        self.peers.get(&WorkerId(w)).map(|p| p.info.host.clone())
    }
}

/// Clients waiting for a job (`drover wait`, `submit --wait`).
#[derive(Default)]
pub struct Watchers(Vec<(Tx, bool)>);

impl Watchers {
    pub fn add(&mut self, client: Tx, as_completed: bool) {
        self.0.push((client, as_completed));
    }

    pub fn remove(&mut self, client: &Tx) {
        self.0.retain(|(c, _)| !c.same_channel(client));
    }

    pub fn task_ended(&self, job: u64, view: impl FnOnce() -> TaskView) {
        if self.0.iter().any(|(_, all)| *all) {
            let task = view();
            for (c, all) in &self.0 {
                if *all {
                    send(c, ServerMsg::TaskEnded { job, task: task.clone() });
                }
            }
        }
    }

    pub fn job_ended(&mut self, info: &JobInfo) {
        for (c, _) in self.0.drain(..) {
            send(&c, ServerMsg::JobEnded { job: info.clone() });
        }
    }
}

/// A job of the server.
pub trait Job: Send {
    fn id(&self) -> u64;
    /// As `drover jobs` shows it.
    fn info(&self, core: &Core) -> JobInfo;
    /// Every task ended and every client was answered: nothing more happens.
    fn ended(&self) -> bool;
    /// The core assigned these tasks of the job to `worker`.
    fn assign(&mut self, cx: &mut Cx, worker: WorkerId, tasks: Vec<TaskId>);
    /// The core asks the server itself to run this task.
    fn run_local(&mut self, _cx: &mut Cx, _task: TaskId) {}
    /// Background work of the job finished.
    fn event(&mut self, _cx: &mut Cx, _ev: JobEvent) {}
    /// A message from a worker about this job.
    fn worker_msg(&mut self, cx: &mut Cx, worker: WorkerId, msg: PeerMsg, payload: Bytes);
    /// A task failed for good; `cancelled` depended on it.
    fn task_failed(&mut self, _cx: &mut Cx, _task: TaskId, _failure: Failure, _cancelled: Vec<TaskId>) {}
    /// These tasks went back to the queue: their worker was lost (or left).
    fn requeued(&mut self, _cx: &mut Cx, _tasks: &[TaskId]) {}
    /// A worker holding tasks of this job drains before its walltime.
    fn worker_drained(&mut self) {}
    /// Every task ended.
    fn done(&mut self, cx: &mut Cx);
    /// The graph cannot finish.
    fn failed(&mut self, cx: &mut Cx, failure: Failure);
    /// Once a second.
    fn tick(&mut self, _cx: &mut Cx) {}
    /// A client connection closed.
    fn client_gone(&mut self, _cx: &mut Cx, _client: &Tx) {}
    /// The server stops.
    fn stop(&mut self, cx: &mut Cx);
    /// The server cannot carry on with the job (no workers to be had).
    fn give_up(&mut self, cx: &mut Cx, _message: String) {
        self.stop(cx);
    }
    /// `drover cancel`: the job, or only these tasks (user ids).
    fn cancel(&mut self, cx: &mut Cx, tasks: Option<&[u64]>) -> Result<(), String>;
    /// `drover tasks`.
    fn tasks(&self, _cx: &Cx, _state: Option<crate::proto::jobs::TaskState>) -> Result<Vec<TaskView>, String> {
        Err(format!(
            "job {} is an array workload: it has no task list; `drover status` shows its progress",
            self.id()
        ))
    }
    /// `drover wait`: answer `client` when the job ended (at once if it has).
    fn watch(&mut self, core: &Core, client: Tx, as_completed: bool);
    /// After the core's actions were carried out: tell clients of progress.
    fn report(&mut self, _core: &Core) {}
    /// Tasks left (for the adaptive pool's backlog).
    fn tasks_left(&self, core: &Core) -> u64 {
        core.progress(crate::core::GraphId(self.id())).map_or(0, |(d, t)| u64::from(t - d))
    }
    /// Jobs that must succeed before this one starts (`--after`), while it waits.
    fn waiting_for(&self) -> &[u64] {
        &[]
    }
    /// Those jobs ended: start (`ok`: all succeeded), or cancel every task.
    fn release(&mut self, _cx: &mut Cx, _ok: bool) {}
    /// An array workload's progress, for `drover status`.
    fn array_progress(&self, _core: &Core) -> Option<(u32, u32)> {
        None
    }
    /// As the dashboard shows it (times, ETA and counts of lost workers are the
    /// observer's).
    fn view(&self, core: &Core) -> crate::dashboard::snapshot::JobView {
        let c = core.graph_counters(crate::core::GraphId(self.id()));
        crate::dashboard::snapshot::JobView {
            info: self.info(core),
            retries: c.tasks_retried,
            workers_lost: c.workers_lost,
            stages: self.stages(),
            ..Default::default()
        }
    }
    /// What the job computes or runs, for its report (`drover report JOB`).
    fn describe(&self) -> String;
    /// Its summary as JSON, for its report.
    fn summary_json(&self, core: &Core) -> serde_json::Value {
        serde_json::to_value(self.info(core)).unwrap_or_default()
    }
    /// Progress per stage (array workloads) or per entry (task graphs).
    fn stages(&self) -> Vec<crate::dashboard::snapshot::StageView> {
        Vec::new()
    }
}

/// The tasks of `keys` that belong to graph `job`.
pub fn of_job(keys: &[TaskKey], job: u64) -> Vec<TaskId> {
    keys.iter().filter(|k| k.graph.0 == job).map(|k| k.task).collect()
}
