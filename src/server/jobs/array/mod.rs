//! An array workload as a job of the server: its plan, the reduction accumulators,
//! the finished consts and the output writer.
//!
//! Invariant: a worker result is merged only after the core accepted it
//! ([`Accept::Accepted`]), and before the core's next actions are carried out, so a
//! finalize task always sees every partial of its stage exactly once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ndarray::ArrayD;

use super::{Cx, Job, JobEvent, Tx, Watchers, send};
use crate::core::{Accept, Core, Failure, GraphId, GraphSpec, TaskId, TaskKey, WorkerId};
use crate::exec::geometry::block_region;
use crate::exec::plan::{Plan, StageKind, TaskMap, TaskRef};
use crate::exec::reduce::Accumulator;
use crate::exec::{self, BlockResult};
use crate::proto::jobs::{Counts, JobInfo};
use crate::proto::{self, PeerMsg, ServerMsg, Summary};
use crate::server::observe::Finished;
use crate::server::writer::{Busy, Writer};

pub use self::prepare::{Prepared, prepare};

mod describe;
mod prepare;
mod results;

pub enum LocalOutcome {
    Block(Result<BlockResult, String>),
    Finalized(Result<Vec<(u32, ArrayD<f64>)>, String>),
}

enum Phase {
    Running,
    /// Every task done; the writer is closing the files.
    Finishing(Box<Summary>),
    Ended(&'static str),
}

pub struct ArrayJob {
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
    /// Workers sent the plan, with the consts each was sent.
    sent: HashMap<WorkerId, HashSet<u32>>,
    started: Instant,
    bytes_read: u64,
    tasks_total: u32,
    last_progress: Instant,
    workers_drained: u64,
    /// Peak resident memory reported by each worker that ran tasks.
    worker_peaks: HashMap<WorkerId, u64>,
    /// Tasks recovered from the journal of an interrupted run.
    tasks_resumed: u64,
    /// The parallel file system the outputs are on, if the server recognises one.
    outputs_fs: Option<&'static str>,
    /// Output blocks written by workers into the file, and sent to the writer.
    blocks_direct: u64,
    blocks_sent: u64,
    writer_busy: Busy,
    /// Floating-point events per stage (`exec::fpe`).
    fp: Vec<[u64; 3]>,
    phase: Phase,
    watchers: Watchers,
    /// Tasks of each stage, and those done.
    stage_total: Vec<u64>,
    stage_done: Vec<u64>,
    /// When each local task running now started.
    local_started: HashMap<TaskId, Duration>,
}

impl ArrayJob {
    /// Start a prepared workload: replay what an interrupted run recorded, submit the
    /// rest to the core.
    pub fn start(cx: &mut Cx, id: u64, client: Tx, p: Prepared) -> Self {
        let tasks_total = p.graph.len();
        let outputs_fs = crate::server::writer::output_files(&p.plan)
            .first()
            .and_then(|f| f.parent().filter(|d| !d.as_os_str().is_empty()).or(Some(std::path::Path::new("."))))
            .and_then(exec::hdf::shared_fs::parallel_fs);
        let n_consts = p.plan.consts.len();
        let mut acc: HashMap<u32, Accumulator> = p
            .plan
            .consts
            .iter()
            .enumerate()
            .map(|(i, c)| (i as u32, Accumulator::new(c, &p.plan.stages[c.stage as usize].shape)))
            .collect();
        let stage_consts = p.plan.stages.iter().map(|s| s.consts()).collect();
        let n_stages = p.plan.stages.len();
        // Results of an interrupted run: replay its partials, skip its blocks.
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
        let mut stage_total = vec![0u64; n_stages];
        for t in 0..tasks_total {
            match p.map.locate(t) {
                TaskRef::Block { stage, .. } | TaskRef::Finalize { stage } => stage_total[stage as usize] += 1,
            }
        }
        let mut stage_done = vec![0u64; n_stages];
        for &t in &done {
            match p.map.locate(t) {
                TaskRef::Block { stage, .. } | TaskRef::Finalize { stage } => stage_done[stage as usize] += 1,
            }
        }
        send(
            &client,
            ServerMsg::Accepted {
                job: id,
                tasks: tasks_total,
            },
        );
        tracing::info!(job = id, tasks = tasks_total, stages = p.plan.stages.len(), "job started");
        let mut job = ArrayJob {
            id,
            client,
            plan: p.plan,
            map: p.map,
            writer_busy: p.writer.busy(),
            writer: Some(p.writer),
            acc,
            consts: vec![None; n_consts],
            const_bytes: vec![None; n_consts],
            stage_consts,
            sent: HashMap::new(),
            started: Instant::now(),
            bytes_read: 0,
            tasks_total,
            last_progress: Instant::now(),
            workers_drained: 0,
            worker_peaks: HashMap::new(),
            tasks_resumed: done.len() as u64,
            outputs_fs,
            blocks_direct: 0,
            blocks_sent: 0,
            fp: vec![[0; 3]; n_stages],
            phase: Phase::Running,
            watchers: Watchers::default(),
            stage_total,
            stage_done,
            local_started: HashMap::new(),
        };
        if let Err(e) = cx.core.submit_resumed(GraphId(id), p.graph, GraphSpec::default(), &done) {
            job.fail(cx, format!("internal: {e}"));
        }
        job
    }

    fn running(&self) -> bool {
        matches!(self.phase, Phase::Running)
    }

    fn end(&mut self, core: &Core, state: &'static str) {
        self.phase = Phase::Ended(state);
        let info = self.info(core);
        self.watchers.job_ended(&info);
    }

    /// Fail the job, telling its client.
    fn fail(&mut self, cx: &mut Cx, message: String) {
        if !self.running() {
            return;
        }
        tracing::warn!(job = self.id, %message, "job failed");
        cx.core.cancel_graph(GraphId(self.id));
        cx.to_all(&ServerMsg::Cancel { job: self.id });
        send(
            &self.client,
            ServerMsg::Failed {
                input_error: false,
                message,
            },
        );
        self.writer = None;
        self.end(cx.core, "failed");
    }

    fn local_done(&mut self, cx: &mut Cx, task: TaskId, outcome: LocalOutcome) {
        if !self.running() {
            return;
        }
        let key = TaskKey::new(GraphId(self.id), task);
        // The server's own tasks are in the task stream too, on a lane of their own.
        let took = self
            .local_started
            .remove(&task)
            .map_or(Duration::ZERO, |t| cx.now.saturating_sub(t));
        let ok = matches!(outcome, LocalOutcome::Finalized(Ok(_)) | LocalOutcome::Block(Ok(_)));
        cx.finished.push(Finished {
            worker: u32::MAX,
            job: self.id,
            label: format!("stage {} (server)", self.stage_of(task)),
            took,
            ok,
            bytes_read: 0,
            bytes_written: 0,
        });
        match outcome {
            LocalOutcome::Finalized(Err(message)) | LocalOutcome::Block(Err(message)) => cx.core.local_failed(key, message),
            LocalOutcome::Finalized(Ok(done)) => {
                let stage = self.stage_of(task) as usize;
                self.stage_done[stage] += 1;
                for (c, arr) in done {
                    let mut buf = Vec::new();
                    exec::push_f64(&mut buf, &arr);
                    self.const_bytes[c as usize] = Some(Bytes::from(buf));
                    self.consts[c as usize] = Some(Arc::new(arr));
                }
                cx.core.local_done(key);
            }
            LocalOutcome::Block(Ok(r)) => {
                self.absorb(cx, task, r.bytes_read, Bytes::from(r.payload), false, r.fp);
                cx.core.local_done(key);
            }
        }
    }

    fn progress(&mut self, core: &Core, force: bool) {
        if !self.running() || (!force && self.last_progress.elapsed() < Duration::from_millis(100)) {
            return;
        }
        self.last_progress = Instant::now();
        if let Some((done, total)) = core.progress(GraphId(self.id)) {
            send(&self.client, ServerMsg::Progress { done, total });
        }
    }

    fn check_writer(&mut self, cx: &mut Cx) {
        let err = self.writer.as_mut().and_then(|w| w.errors.try_recv().ok());
        if let Some(e) = err {
            if e.resumable
                && let Some(w) = self.writer.take()
            {
                // What is durable stays with the journal: the same command resumes.
                w.abandon();
            }
            self.fail(cx, e.message);
        }
    }

    /// Cancel without telling the client (it is gone). The temporary files and
    /// journal stay, so running the same workload again resumes.
    fn abort(&mut self, cx: &mut Cx) {
        if !self.running() {
            return;
        }
        cx.core.cancel_graph(GraphId(self.id));
        cx.to_all(&ServerMsg::Cancel { job: self.id });
        if let Some(w) = self.writer.take() {
            w.abandon();
        }
        self.end(cx.core, "cancelled");
    }
}

impl Job for ArrayJob {
    fn id(&self) -> u64 {
        self.id
    }

    fn info(&self, core: &Core) -> JobInfo {
        let total = self.tasks_total;
        let done = core.progress(GraphId(self.id)).map_or_else(
            || (core.graph_counters(GraphId(self.id)).tasks_done + self.tasks_resumed).min(u64::from(total)) as u32,
            |(d, _)| d,
        );
        let state = match &self.phase {
            Phase::Running | Phase::Finishing(_) => "running",
            Phase::Ended(s) => s,
        };
        let mut counts = Counts::default();
        if state == "succeeded" {
            counts.succeeded = u64::from(total);
        } else {
            counts.succeeded = u64::from(done);
            counts.waiting = u64::from(total - done);
        }
        JobInfo {
            id: self.id,
            name: self
                .plan
                .user_outputs()
                .iter()
                .map(|o| o.dataset.clone())
                .collect::<Vec<_>>()
                .join(","),
            kind: "array".into(),
            state: state.into(),
            tasks: u64::from(total),
            counts,
            priority: 0,
        }
    }

    fn ended(&self) -> bool {
        matches!(self.phase, Phase::Ended(_))
    }

    fn describe(&self) -> String {
        self.plan
            .user_outputs()
            .iter()
            .map(|o| format!("{}:{} = {}\n", o.file.display(), o.dataset, o.expr))
            .collect()
    }

    fn summary_json(&self, core: &Core) -> serde_json::Value {
        serde_json::to_value(self.summary(core, self.worker_peaks.len())).unwrap_or_default()
    }

    fn assign(&mut self, cx: &mut Cx, worker: WorkerId, tasks: Vec<TaskId>) {
        if !self.running() {
            return;
        }
        let Some(w) = cx.peers.get(&worker) else { return };
        let direct = self.may_write_directly(&w.info, cx.host);
        let consts_sent = match self.sent.entry(worker) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                send(
                    &w.tx,
                    ServerMsg::Job {
                        job: self.id,
                        plan: (*self.plan).clone(),
                        direct: match &self.writer {
                            Some(wr) if direct => wr.direct.clone(),
                            _ => Vec::new(),
                        },
                    },
                );
                e.insert(HashSet::new())
            }
        };
        let mut refs = Vec::with_capacity(tasks.len());
        for t in tasks {
            let TaskRef::Block { stage, block } = self.map.locate(t) else {
                continue;
            };
            for &c in &self.stage_consts[stage as usize] {
                if consts_sent.insert(c) {
                    let bytes = self.const_bytes[c as usize].clone().expect("const finalized before its users run");
                    let shape = self.plan.consts[c as usize].shape.clone();
                    let _ = w.tx.send(super::Outgoing {
                        msg: ServerMsg::Const {
                            job: self.id,
                            id: c,
                            shape,
                        },
                        payload: bytes,
                    });
                }
            }
            refs.push(proto::TaskRef { task: t, stage, block });
        }
        send(&w.tx, ServerMsg::Assign { job: self.id, tasks: refs });
    }

    fn run_local(&mut self, cx: &mut Cx, task: TaskId) {
        if !self.running() {
            return;
        }
        let notify = cx.notify.clone();
        let id = self.id;
        self.local_started.insert(task, cx.now);
        match self.map.locate(task) {
            TaskRef::Finalize { stage } => {
                let consts = match &self.plan.stages[stage as usize].kind {
                    StageKind::Reduce { consts } => consts,
                    // The barrier after a staging copy: its file durable and closed.
                    StageKind::Write { output } => {
                        let Some(settled) = self.writer.as_ref().map(|w| w.settle(*output)) else {
                            return;
                        };
                        tokio::spawn(async move {
                            let done = match settled.await {
                                Ok(r) => r.map(|()| vec![]),
                                Err(_) => Err("the output writer stopped".into()),
                            };
                            notify(
                                id,
                                JobEvent::Local {
                                    task,
                                    outcome: LocalOutcome::Finalized(done),
                                },
                            );
                        });
                        return;
                    }
                };
                let accs: Vec<(u32, Accumulator)> = consts.iter().filter_map(|c| self.acc.remove(c).map(|a| (*c, a))).collect();
                tokio::task::spawn_blocking(move || {
                    let done = accs
                        .into_iter()
                        .map(|(c, a)| a.finish().map(|arr| (c, arr)))
                        .collect::<Result<Vec<_>, String>>();
                    notify(
                        id,
                        JobEvent::Local {
                            task,
                            outcome: LocalOutcome::Finalized(done),
                        },
                    );
                });
            }
            TaskRef::Block { stage, block } => {
                let plan = self.plan.clone();
                let consts = self.consts.clone();
                tokio::task::spawn_blocking(move || {
                    let get = |c: u32| consts.get(c as usize).cloned().flatten();
                    let r = exec::execute_block(&plan, &[], &get, stage, block).map_err(|e| e.to_string());
                    notify(
                        id,
                        JobEvent::Local {
                            task,
                            outcome: LocalOutcome::Block(r),
                        },
                    );
                });
            }
        }
    }

    fn event(&mut self, cx: &mut Cx, ev: JobEvent) {
        match ev {
            JobEvent::Local { task, outcome } => self.local_done(cx, task, outcome),
            JobEvent::Finished(result) => {
                let Phase::Finishing(summary) = std::mem::replace(&mut self.phase, Phase::Running) else {
                    return;
                };
                match result {
                    Ok(()) => {
                        // The writer has ended: all of its time counts.
                        let summary = Summary {
                            writer_busy_seconds: self.writer_busy.seconds(),
                            ..*summary
                        };
                        send(&self.client, ServerMsg::Finished { summary });
                        self.end(cx.core, "succeeded");
                    }
                    Err(message) => {
                        send(
                            &self.client,
                            ServerMsg::Failed {
                                input_error: false,
                                message,
                            },
                        );
                        self.end(cx.core, "failed");
                    }
                }
            }
        }
    }

    fn worker_msg(&mut self, cx: &mut Cx, worker: WorkerId, msg: PeerMsg, payload: Bytes) {
        match msg {
            PeerMsg::Results { results, peak_rss, .. } => {
                let e = self.worker_peaks.entry(worker).or_insert(0);
                *e = (*e).max(peak_rss);
                let mut off = 0usize;
                for r in results {
                    let len = r.len as usize;
                    let Some(seg) = payload.get(off..off + len).map(|_| payload.slice(off..off + len)) else {
                        tracing::warn!(%worker, "results payload shorter than announced");
                        return;
                    };
                    off += len;
                    if !self.running() {
                        continue;
                    }
                    if cx.core.task_done(cx.now, worker, TaskKey::new(GraphId(self.id), r.task)) == Accept::Accepted {
                        let stage = self.stage_of(r.task);
                        cx.finished.push(Finished {
                            worker: worker.0,
                            job: self.id,
                            label: format!("stage {stage}"),
                            took: Duration::from_micros(r.micros),
                            ok: true,
                            bytes_read: r.bytes_read,
                            bytes_written: self.written_bytes(r.task),
                        });
                        self.absorb(cx, r.task, r.bytes_read, seg, r.written, r.fp);
                    } else {
                        tracing::debug!(%worker, task = r.task, "stale result discarded");
                    }
                }
            }
            PeerMsg::TaskError { task, message, .. } => {
                if self.running() {
                    cx.core.task_error(cx.now, worker, TaskKey::new(GraphId(self.id), task), message);
                }
            }
            other => tracing::debug!(%worker, ?other, "unexpected message for an array job"),
        }
    }

    fn worker_drained(&mut self) {
        self.workers_drained += 1;
    }

    fn done(&mut self, cx: &mut Cx) {
        self.check_writer(cx);
        if !self.running() {
            return;
        }
        let summary = self.summary(cx.core, cx.peers.len());
        send(
            &self.client,
            ServerMsg::Progress {
                done: self.tasks_total,
                total: self.tasks_total,
            },
        );
        let writer = self.writer.take().expect("writer until finished");
        let done = writer.finish();
        let notify = cx.notify.clone();
        let id = self.id;
        tokio::spawn(async move {
            let result = done
                .await
                .map_err(|_| "the writer thread died".to_string())
                .and_then(|r| r.map_err(|f| f.message));
            notify(id, JobEvent::Finished(result));
        });
        tracing::info!(job = id, seconds = summary.seconds, "job done");
        self.phase = Phase::Finishing(Box::new(summary));
    }

    fn failed(&mut self, cx: &mut Cx, failure: Failure) {
        let msg = self.describe_failure(cx, &failure);
        self.fail(cx, msg);
    }

    fn tick(&mut self, cx: &mut Cx) {
        self.check_writer(cx);
        self.progress(cx.core, false);
    }

    fn report(&mut self, core: &Core) {
        self.progress(core, false);
    }

    fn client_gone(&mut self, cx: &mut Cx, client: &Tx) {
        self.watchers.remove(client);
        if self.client.same_channel(client) && self.running() {
            tracing::warn!(job = self.id, "client disconnected; cancelling its job");
            self.abort(cx);
        }
    }

    fn stop(&mut self, cx: &mut Cx) {
        // Keep what was done: running the workload again resumes.
        if let Some(w) = self.writer.take() {
            w.abandon();
        }
        self.fail(
            cx,
            "stopped before the end; what was done is kept: run the same workload again to resume".into(),
        );
    }

    fn give_up(&mut self, cx: &mut Cx, message: String) {
        self.fail(cx, message);
    }

    fn cancel(&mut self, cx: &mut Cx, tasks: Option<&[u64]>) -> Result<(), String> {
        if tasks.is_some() {
            return Err(format!(
                "job {}: --tasks applies to task jobs; an array workload is cancelled whole",
                self.id
            ));
        }
        if let Some(w) = self.writer.take() {
            w.abandon();
        }
        self.fail(
            cx,
            "cancelled (drover cancel); what was done is kept: run the same workload again to resume".into(),
        );
        Ok(())
    }

    fn watch(&mut self, core: &Core, client: Tx, _as_completed: bool) {
        if self.ended() {
            send(&client, ServerMsg::JobEnded { job: self.info(core) });
        } else {
            self.watchers.add(client, false);
        }
    }

    fn stages(&self) -> Vec<crate::dashboard::snapshot::StageView> {
        self.plan
            .stages
            .iter()
            .enumerate()
            .map(|(i, st)| crate::dashboard::snapshot::StageView {
                label: match &st.kind {
                    StageKind::Reduce { .. } => format!("stage {i} (reduce)"),
                    StageKind::Write { .. } => format!("stage {i} (write)"),
                },
                done: self.stage_done[i],
                total: self.stage_total[i],
            })
            .collect()
    }

    fn array_progress(&self, core: &Core) -> Option<(u32, u32)> {
        if self.running() { core.progress(GraphId(self.id)) } else { None }
    }
}
