//! A task job: one command run per `--array` index or `--each-line` line, on the
//! same workers and slots as array workloads. Its tasks are a graph of independent
//! tasks in the core (`OnError::FailTask`: a failing task runs again up to
//! `--max-retries` times, then fails alone); the job keeps the [`TaskTable`] users see.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::task_journal::{Ended, Loaded, TaskJournal};
use super::task_table::{End, TaskState, TaskTable};
use super::{Cx, Job, Tx, Watchers, send};
use crate::config::taskjob::{self, Vars};
use crate::core::{Accept, Core, Failure, GraphBuilder, GraphId, GraphSpec, OnError, TaskId, TaskKey, TaskKind, WorkerId};
use crate::proto::jobs::{CommandRef, CommandSpec, Counts, JobInfo, Log, TaskJobRequest, TaskView};
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
    spec: CommandSpec,
    table: TaskTable,
    started: Instant,
    /// Workers sent the spec.
    sent: HashSet<WorkerId>,
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
}

/// Tasks shorter than this on average may wait in workers' queues behind running
/// ones, so that a worker never waits a round trip between them; longer ones go only
/// to free slots, so that none waits at a busy worker while another is idle. A job
/// starts without (its tasks' length is unknown).
const PREFETCH_BELOW: f64 = 0.05;

/// A path template for the default log of each task: `DIR/jobs/JOB/{task}.EXT`.
fn default_log(dir: &Path, job: u64, ext: &str) -> String {
    let base = dir.join("jobs").join(job.to_string());
    let escaped = base.display().to_string().replace('{', "{{").replace('}', "}}");
    format!("{escaped}/{{task}}.{ext}")
}

/// What a checked request becomes.
struct Checked {
    ids: Vec<u64>,
    entries: Option<Vec<String>>,
    spec: CommandSpec,
}

/// Check a request for job `id` of the server in `dir` (placeholders, index sets).
fn check(dir: &Path, id: u64, req: &TaskJobRequest) -> Result<Checked, String> {
    if req.argv.is_empty() {
        return Err("no command given: put it after --, as in `drover submit --array 1-10 -- ./run.sh {task}`".into());
    }
    let (mut ids, entries) = match (&req.array, &req.entries) {
        (Some(_), Some(_)) => return Err("--array and --each-line both given: use one of them".into()),
        (Some(spec), None) => (taskjob::parse_array(spec).map_err(|e| e.to_string())?, None),
        (None, Some(lines)) if lines.is_empty() => return Err("--each-line: the file has no lines; one task runs per line".into()),
        (None, Some(lines)) => ((0..lines.len() as u64).collect(), Some(lines.clone())),
        (None, None) => (vec![0], None),
    };
    ids.sort_unstable();
    if req.cores == 0 {
        return Err("--cores 0: a task needs at least one core".into());
    }
    if ids.len() > u32::MAX as usize {
        return Err(format!("{} tasks: at most {} in one job", ids.len(), u32::MAX));
    }
    let log = |l: &Log, ext: &str| match l {
        Log::Default => Some(default_log(dir, id, ext)),
        Log::Discard => None,
        Log::Path(p) => Some(p.clone()),
    };
    let spec = CommandSpec {
        argv: req.argv.clone(),
        env: req.env.clone(),
        cwd: req.cwd.clone(),
        stdout: log(&req.stdout, "out"),
        stderr: log(&req.stderr, "err"),
        time_limit: req.time_limit,
        cores: req.cores,
    };
    // Placeholders are checked once here, so that no task fails on them.
    let vars = Vars {
        task: 0,
        job: id,
        entry: "",
    };
    for t in spec.argv.iter().chain(&spec.stdout).chain(&spec.stderr) {
        taskjob::substitute(t, &vars).map_err(|e| e.to_string())?;
    }
    Ok(Checked { ids, entries, spec })
}

impl TaskJob {
    /// Check a request and start the job; `Err` says whether it is the user's
    /// mistake, in one line. The `Ok` note says why its tasks may wait.
    pub fn create(cx: &mut Cx, id: u64, req: TaskJobRequest, cap: &Capacity) -> Result<(Self, Option<String>), (bool, String)> {
        let checked = check(cx.dir, id, &req).map_err(|m| (true, m))?;
        let note = match cap.largest {
            Some(l) if req.cores > l && !cap.may_grow => {
                return Err((
                    true,
                    format!(
                        "--cores {}: larger than any worker of this server (the largest has {l} slots); ask for at most {l}, or start workers with more --threads",
                        req.cores
                    ),
                ));
            }
            Some(l) if req.cores > l => Some(format!(
                "no worker has {} slots yet (the largest has {l}): the tasks wait for one",
                req.cores
            )),
            None => Some("no worker is connected yet: the tasks wait for one".into()),
            Some(_) => None,
        };
        if !req.cwd.is_dir() {
            return Err((
                true,
                format!(
                    "--cwd \"{}\": not a folder on the server's host; give an existing folder",
                    req.cwd.display()
                ),
            ));
        }
        let journal = TaskJournal::create(cx.dir, id, &req).map_err(|e| (false, format!("cannot write the job's journal: {e}")))?;
        let job = Self::launch(cx, id, &req, checked, journal, &[], false).map_err(|m| (false, m))?;
        Ok((job, note))
    }

    /// A job read back from its journal: finished, or resumed with only its tasks
    /// that had not ended.
    pub fn resume(cx: &mut Cx, loaded: Loaded, journal: TaskJournal) -> Result<Self, String> {
        let checked = check(cx.dir, loaded.id, &loaded.request)?;
        Self::launch(cx, loaded.id, &loaded.request, checked, journal, &loaded.ended, loaded.cancelled)
    }

    fn launch(
        cx: &mut Cx,
        id: u64,
        req: &TaskJobRequest,
        c: Checked,
        journal: TaskJournal,
        ended: &[Ended],
        cancelled: bool,
    ) -> Result<Self, String> {
        let n = c.ids.len();
        let mut g = GraphBuilder::with_capacity(n, 0);
        for _ in 0..n {
            g.add(TaskKind::Remote, &[]);
        }
        let gspec = GraphSpec {
            priority: req.priority,
            on_error: OnError::FailTask { retries: req.max_retries },
            cores: c.spec.cores,
            time_limit: c.spec.time_limit,
            prefetch: false,
        };
        let mut table = TaskTable::new(c.ids, c.entries);
        let mut done = Vec::with_capacity(ended.len());
        for e in ended.iter().filter(|e| (e.task as usize) < n) {
            table.restore(e.task as usize, e.end, e.millis, e.requeues);
            done.push(e.task);
        }
        let name = req.name.clone().unwrap_or_else(|| {
            let prog = &c.spec.argv[0];
            Path::new(prog)
                .file_name()
                .map_or(prog.clone(), |f| f.to_string_lossy().into_owned())
        });
        if done.is_empty() {
            tracing::info!(job = id, tasks = n, name = %name, "task job submitted");
        } else if done.len() < n {
            tracing::info!(job = id, tasks = n, ended = done.len(), name = %name, "task job resumed");
        }
        let job = TaskJob {
            id,
            name,
            priority: req.priority,
            spec: c.spec,
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
        };
        cx.core
            .submit_resumed(GraphId(id), g.build(), gspec, &done)
            .map_err(|e| format!("internal: {e}"))?;
        Ok(job)
    }

    fn ms(&self) -> u32 {
        self.started.elapsed().as_millis().min(u128::from(u32::MAX - 1)) as u32
    }

    fn view(&self, cx: &Cx, i: usize) -> TaskView {
        self.table.view(i, |w| cx.host_of(w))
    }

    /// Task `i` ended; record it, tell the watchers.
    fn end_task(&mut self, cx: &Cx, i: usize, end: End) {
        let at = self.ms();
        self.table.ended(i, end, at);
        self.record(i, Some(end));
        self.watchers.task_ended(self.id, || self.table.view(i, |w| cx.host_of(w)));
    }

    /// Task `i` will not run: cancelled, or a task it depends on failed.
    fn drop_task(&mut self, cx: &Cx, i: usize) {
        self.table.cancelled(i);
        self.record(i, None);
        self.watchers.task_ended(self.id, || self.table.view(i, |w| cx.host_of(w)));
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

    fn assign(&mut self, cx: &mut Cx, worker: WorkerId, tasks: Vec<TaskId>) {
        if self.sent.insert(worker) {
            cx.to_worker(
                worker,
                ServerMsg::TaskJob {
                    job: self.id,
                    spec: self.spec.clone(),
                },
            );
        }
        let refs = tasks
            .into_iter()
            .map(|t| CommandRef {
                task: t,
                id: self.table.id(t as usize),
                entry: self.table.entry(t as usize).map(str::to_string),
            })
            .collect();
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
                cx.durations.push(Duration::from_millis(millis));
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
        if self.ended.is_none() {
            self.cancel_indices(cx, &idx);
        }
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
}
