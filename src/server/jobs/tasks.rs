//! A task job: one command run per `--array` index or `--each-line` line, on the
//! same workers and slots as array workloads. Its tasks are a graph of independent
//! tasks in the core (`OnError::FailTask`: a failing task runs again up to
//! `--max-retries` times, then fails alone); the job keeps the [`TaskTable`] users see.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::task_graph::{Group, Laid, lay_out};
use super::task_journal::{Ended, Loaded, TaskJournal};
use super::task_table::{End, TaskState, TaskTable};
use super::{Cx, Job, Tx, Watchers, send};
use crate::core::{Accept, Core, Failure, Graph, GraphId, GraphSpec, TaskId, TaskKey, WorkerId};
use crate::proto::jobs::{CommandRef, Counts, JobInfo, TaskJobRequest, TaskView};
use crate::proto::{PeerMsg, ServerMsg};

/// What the pool offers, to check `--cores` against.
pub struct Capacity {
    /// The most slots of any connected worker.
    pub largest: Option<u32>,
    /// The pool may still grow (adaptive, or workers still to come from the batch
    /// system).
    pub may_grow: bool,
}

pub struct TaskJob {
    id: u64,
    name: String,
    priority: i32,
    /// One per command, in dependency order; their tasks are numbered contiguously.
    groups: Vec<Group>,
    table: TaskTable,
    started: Instant,
    /// (worker, group) pairs sent the group's spec.
    sent: HashSet<(WorkerId, u32)>,
    watchers: Watchers,
    /// How a task that reported a failure ended, while the core decides whether it
    /// runs again.
    pending: HashMap<TaskId, End>,
    cancelled: bool,
    ended: Option<&'static str>,
    /// Smoothed run time of its tasks, in seconds.
    mean_secs: Option<f64>,
    /// Whether its tasks may wait in workers' queues (see [`PREFETCH_BELOW`]).
    prefetch: bool,
    journal: TaskJournal,
    /// Jobs that must succeed before this one starts (`--after`).
    after: Vec<u64>,
    /// The graph, held until those have, with its tasks already ended.
    held: Option<(Graph, GraphSpec, Vec<TaskId>)>,
}

/// Tasks shorter than this on average may wait in workers' queues behind running
/// ones, so that a worker never waits a round trip between them; longer ones go only
/// to free slots, so that none waits at a busy worker while another is idle. A job
/// starts without (its tasks' length is unknown).
const PREFETCH_BELOW: f64 = 0.05;

fn group_index(groups: &[Group], t: u32) -> usize {
    groups.partition_point(|g| g.first + g.len <= t)
}

impl TaskJob {
    /// Check a request and start the job; `Err` says whether it is the user's
    /// mistake, in one line. The `Ok` note says why its tasks may wait.
    pub fn create(cx: &mut Cx, id: u64, req: TaskJobRequest, cap: &Capacity) -> Result<(Self, Option<String>), (bool, String)> {
        let laid = lay_out(cx.dir, id, &req).map_err(|m| (true, m))?;
        let cores = req.groups.iter().map(|g| g.cores).max().unwrap_or(1);
        let note = match cap.largest {
            Some(l) if cores > l && !cap.may_grow => {
                return Err((
                    true,
                    format!(
                        "--cores {cores}: larger than any worker of this server (the largest has {l} slots); ask for at most {l}, or start workers with more --threads"
                    ),
                ));
            }
            Some(l) if cores > l => Some(format!(
                "no worker has {cores} slots yet (the largest has {l}): the tasks wait for one"
            )),
            None => Some("no worker is connected yet: the tasks wait for one".into()),
            Some(_) => None,
        };
        if let Some(g) = req.groups.iter().find(|g| !g.cwd.is_dir()) {
            return Err((
                true,
                format!(
                    "--cwd \"{}\": not a folder on the server's host; give an existing folder",
                    g.cwd.display()
                ),
            ));
        }
        let journal = TaskJournal::create(cx.dir, id, &req).map_err(|e| (false, format!("cannot write the job's journal: {e}")))?;
        let job = Self::launch(cx, id, &req, laid, journal, &[], false).map_err(|m| (false, m))?;
        Ok((job, note))
    }

    /// A job read back from its journal: finished, or resumed with only its tasks
    /// that had not ended.
    pub fn resume(cx: &mut Cx, loaded: Loaded, journal: TaskJournal) -> Result<Self, String> {
        let laid = lay_out(cx.dir, loaded.id, &loaded.request)?;
        Self::launch(cx, loaded.id, &loaded.request, laid, journal, &loaded.ended, loaded.cancelled)
    }

    fn launch(
        cx: &mut Cx,
        id: u64,
        req: &TaskJobRequest,
        laid: Laid,
        journal: TaskJournal,
        ended: &[Ended],
        cancelled: bool,
    ) -> Result<Self, String> {
        let Laid {
            groups,
            mut table,
            graph,
            spec,
        } = laid;
        let n = table.len();
        let mut done = Vec::with_capacity(ended.len());
        for e in ended.iter().filter(|e| (e.task as usize) < n) {
            table.restore(e.task as usize, e.end, e.millis, e.requeues);
            done.push(e.task);
        }
        let name = req.name.clone().unwrap_or_else(|| {
            let prog = &groups[0].spec.argv[0];
            Path::new(prog)
                .file_name()
                .map_or(prog.clone(), |f| f.to_string_lossy().into_owned())
        });
        if done.is_empty() {
            tracing::info!(job = id, tasks = n, name = %name, "task job submitted");
        } else if done.len() < n {
            tracing::info!(job = id, tasks = n, ended = done.len(), name = %name, "task job resumed");
        }
        let mut job = TaskJob {
            id,
            name,
            priority: req.priority,
            groups,
            table,
            started: Instant::now(),
            sent: HashSet::new(),
            watchers: Watchers::default(),
            pending: HashMap::new(),
            cancelled,
            ended: None,
            mean_secs: None,
            prefetch: false,
            journal,
            after: req.after.clone(),
            held: None,
        };
        if job.after.is_empty() || done.len() == n {
            cx.core
                .submit_resumed(GraphId(id), graph, spec, &done)
                .map_err(|e| format!("internal: {e}"))?;
        } else {
            job.held = Some((graph, spec, done));
        }
        Ok(job)
    }

    /// The group task `t` belongs to.
    fn group_of(&self, t: u32) -> (u32, &Group) {
        let g = group_index(&self.groups, t);
        (g as u32, &self.groups[g])
    }

    fn ms(&self) -> u32 {
        self.started.elapsed().as_millis().min(u128::from(u32::MAX - 1)) as u32
    }

    fn view(&self, cx: &Cx, i: usize) -> TaskView {
        let mut v = self.table.view(i, |w| cx.host_of(w));
        let (_, g) = self.group_of(i as u32);
        if !g.name.is_empty() {
            v.name = Some(g.name.clone());
        }
        v
    }

    /// Task `i` ended; record it, tell the watchers.
    fn end_task(&mut self, cx: &Cx, i: usize, end: End) {
        let at = self.ms();
        self.table.ended(i, end, at);
        self.record(i, Some(end));
        self.watchers.task_ended(self.id, || self.view(cx, i));
    }

    /// Task `i` will not run: cancelled, or a task it depends on failed.
    fn drop_task(&mut self, cx: &Cx, i: usize) {
        self.table.cancelled(i);
        self.record(i, None);
        self.watchers.task_ended(self.id, || self.view(cx, i));
    }

    fn record(&mut self, i: usize, end: Option<End>) {
        let (millis, requeues) = self.table.timing(i);
        self.journal.record(&Ended {
            task: i as u32,
            end,
            millis,
            requeues,
        });
    }

    fn cancel_indices(&mut self, cx: &mut Cx, tasks: &[TaskId]) {
        let (cancelled, running) = cx.core.cancel_tasks(GraphId(self.id), tasks);
        for t in cancelled {
            let i = t as usize;
            if self.table.state(i) == TaskState::Running {
                self.end_task(cx, i, End::Cancelled);
            } else {
                self.drop_task(cx, i);
            }
        }
        let mut by_worker: HashMap<WorkerId, Vec<u32>> = HashMap::new();
        for (k, w) in running {
            by_worker.entry(w).or_default().push(k.task);
        }
        for (w, tasks) in by_worker {
            cx.to_worker(w, ServerMsg::CancelTasks { job: self.id, tasks });
        }
    }
}

impl Job for TaskJob {
    fn id(&self) -> u64 {
        self.id
    }

    fn info(&self, _core: &Core) -> JobInfo {
        let counts = self.table.counts();
        let state = match self.ended {
            Some(s) => s,
            None if counts[0] == self.table.len() as u64 => "waiting",
            None => "running",
        };
        JobInfo {
            id: self.id,
            name: self.name.clone(),
            kind: "tasks".into(),
            state: state.into(),
            tasks: self.table.len() as u64,
            counts: Counts::from(counts),
            priority: self.priority,
        }
    }

    fn ended(&self) -> bool {
        self.ended.is_some()
    }

    fn describe(&self) -> String {
        let mut text = format!("# task job {} \"{}\", {} tasks\n", self.id, self.name, self.table.len());
        for g in &self.groups {
            let name = if g.name.is_empty() {
                String::new()
            } else {
                format!("[{}] ", g.name)
            };
            text.push_str(&format!("{name}{} tasks: {}\n", g.len, shell_words(&g.spec.argv)));
        }
        text
    }

    fn assign(&mut self, cx: &mut Cx, worker: WorkerId, tasks: Vec<TaskId>) {
        let mut refs = Vec::with_capacity(tasks.len());
        for t in tasks {
            let gi = group_index(&self.groups, t);
            let g = &self.groups[gi];
            let gi = gi as u32;
            if self.sent.insert((worker, gi)) {
                cx.to_worker(
                    worker,
                    ServerMsg::TaskJob {
                        job: self.id,
                        group: gi,
                        spec: g.spec.clone(),
                    },
                );
            }
            refs.push(CommandRef {
                task: t,
                group: gi,
                id: g.index(t, &self.table),
                entry: self.table.entry(t as usize).filter(|e| !e.is_empty()).map(str::to_string),
            });
        }
        cx.to_worker(worker, ServerMsg::RunCommands { job: self.id, tasks: refs });
    }

    fn worker_msg(&mut self, cx: &mut Cx, worker: WorkerId, msg: PeerMsg, _payload: Bytes) {
        match msg {
            PeerMsg::TaskStarted { task, .. } => {
                let i = task as usize;
                if i < self.table.len() && !self.table.state(i).ended() {
                    let at = self.ms();
                    self.table.started(i, worker.0, at);
                }
            }
            PeerMsg::TaskEnded { task, end, millis, .. } => {
                let i = task as usize;
                if i >= self.table.len() {
                    return;
                }
                let label = match &self.group_of(task).1.name {
                    n if n.is_empty() => "tasks".to_string(),
                    n => n.clone(),
                };
                cx.finished.push(crate::server::observe::Finished {
                    worker: worker.0,
                    job: self.id,
                    label,
                    took: Duration::from_millis(millis),
                    ok: end == End::Exited(0),
                    bytes_read: 0,
                    bytes_written: 0,
                });
                let secs = millis as f64 / 1e3;
                let mean = self.mean_secs.map_or(secs, |m| 0.9 * m + 0.1 * secs);
                self.mean_secs = Some(mean);
                if (mean < PREFETCH_BELOW) != self.prefetch {
                    self.prefetch = mean < PREFETCH_BELOW;
                    cx.core.set_prefetch(GraphId(self.id), self.prefetch);
                }
                let key = TaskKey::new(GraphId(self.id), task);
                match end {
                    End::Exited(0) => {
                        if cx.core.task_done(cx.now, worker, key) == Accept::Accepted {
                            self.end_task(cx, i, end);
                        }
                    }
                    // Cancelled tasks were recorded when cancelled.
                    End::Cancelled => {}
                    _ => {
                        let what = match end {
                            End::Exited(c) => format!("exit code {c}"),
                            End::Signalled(s) => format!("killed by signal {s}"),
                            _ => "time limit reached".into(),
                        };
                        self.pending.insert(task, end);
                        if cx.core.task_error(cx.now, worker, key, what) == Accept::Accepted {
                            // Runs again unless the core fails it for good (task_failed).
                            self.table.requeued(i, false);
                        } else {
                            self.pending.remove(&task);
                        }
                    }
                }
            }
            other => tracing::debug!(%worker, ?other, "unexpected message for a task job"),
        }
    }

    fn task_failed(&mut self, cx: &mut Cx, task: TaskId, failure: Failure, cancelled: Vec<TaskId>) {
        let end = self.pending.remove(&task).unwrap_or(match failure {
            // Every worker it ran on died under it.
            Failure::RetriesExhausted { .. } => End::Signalled(9),
            Failure::TaskError { .. } => End::Exited(-1),
        });
        self.end_task(cx, task as usize, end);
        for t in cancelled {
            self.drop_task(cx, t as usize);
        }
    }

    fn requeued(&mut self, _cx: &mut Cx, tasks: &[TaskId]) {
        for &t in tasks {
            let i = t as usize;
            // Only a task that had started is re-run; queued ones just move.
            if i < self.table.len() && self.table.state(i) == TaskState::Running {
                self.table.requeued(i, true);
            }
        }
    }

    fn done(&mut self, cx: &mut Cx) {
        let state = if self.table.all_succeeded() {
            "succeeded"
        } else if self.cancelled {
            "cancelled"
        } else {
            "failed"
        };
        self.ended = Some(state);
        let c = self.table.counts();
        tracing::info!(
            job = self.id,
            state,
            succeeded = c[2],
            failed = c[3],
            timeout = c[4],
            cancelled = c[5],
            "task job ended"
        );
        let info = self.info(cx.core);
        self.watchers.job_ended(&info);
    }

    fn failed(&mut self, cx: &mut Cx, failure: Failure) {
        tracing::warn!(job = self.id, ?failure, "task job failed");
        for i in self.table.select(Some(TaskState::Waiting)).collect::<Vec<_>>() {
            self.drop_task(cx, i);
        }
        for i in self.table.select(Some(TaskState::Running)).collect::<Vec<_>>() {
            self.end_task(cx, i, End::Cancelled);
        }
        self.done(cx);
    }

    fn stop(&mut self, _cx: &mut Cx) {}

    fn cancel(&mut self, cx: &mut Cx, tasks: Option<&[u64]>) -> Result<(), String> {
        let idx: Vec<TaskId> = match tasks {
            None => {
                if !self.cancelled && self.ended.is_none() {
                    self.cancelled = true;
                    self.journal.job_cancelled();
                }
                (0..self.table.len() as u32).collect()
            }
            Some(ids) => ids
                .iter()
                .map(|&id| {
                    self.table
                        .index_of(id)
                        .map(|i| i as u32)
                        .ok_or_else(|| format!("--tasks: job {} has no task {id}", self.id))
                })
                .collect::<Result<_, _>>()?,
        };
        if self.ended.is_some() {
            return Ok(());
        }
        if self.held.is_some() {
            // Waiting for --after jobs: nothing runs yet.
            if tasks.is_none() {
                self.cancelled = false;
                self.release(cx, false);
            } else {
                for t in idx {
                    if self.table.state(t as usize) == TaskState::Waiting {
                        self.drop_task(cx, t as usize);
                        if let Some((_, _, done)) = &mut self.held {
                            done.push(t);
                        }
                    }
                }
            }
            return Ok(());
        }
        self.cancel_indices(cx, &idx);
        Ok(())
    }

    fn tasks(&self, cx: &Cx, state: Option<TaskState>) -> Result<Vec<TaskView>, String> {
        Ok(self.table.select(state).map(|i| self.view(cx, i)).collect())
    }

    fn watch(&mut self, core: &Core, client: Tx, as_completed: bool) {
        if self.ended() {
            send(&client, ServerMsg::JobEnded { job: self.info(core) });
        } else {
            self.watchers.add(client, as_completed);
        }
    }

    fn client_gone(&mut self, _cx: &mut Cx, client: &Tx) {
        self.watchers.remove(client);
    }

    fn report(&mut self, _core: &Core) {
        self.journal.flush();
    }

    fn stages(&self) -> Vec<crate::dashboard::snapshot::StageView> {
        if self.groups.len() < 2 {
            return Vec::new();
        }
        self.groups
            .iter()
            .map(|g| crate::dashboard::snapshot::StageView {
                label: g.name.clone(),
                done: (g.first..g.first + g.len).filter(|&t| self.table.state(t as usize).ended()).count() as u64,
                total: u64::from(g.len),
            })
            .collect()
    }

    fn waiting_for(&self) -> &[u64] {
        if self.held.is_some() { &self.after } else { &[] }
    }

    fn release(&mut self, cx: &mut Cx, ok: bool) {
        let Some((graph, spec, done)) = self.held.take() else { return };
        if ok {
            tracing::info!(job = self.id, after = ?self.after, "the jobs it waited for succeeded: starting");
            if let Err(e) = cx.core.submit_resumed(GraphId(self.id), graph, spec, &done) {
                tracing::error!(job = self.id, error = %e, "cannot start the job");
            }
            return;
        }
        tracing::info!(job = self.id, after = ?self.after, "a job it waited for did not succeed: cancelled");
        self.cancelled = true;
        self.journal.job_cancelled();
        for i in self.table.select(Some(TaskState::Waiting)).collect::<Vec<_>>() {
            self.drop_task(cx, i);
        }
        self.done(cx);
    }
}

/// A command line as a shell would read it back (arguments with spaces or quotes in
/// single quotes).
fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%{}".contains(c)) {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
