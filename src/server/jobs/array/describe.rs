//! How an array job names its tasks and failures, and its summary.

use super::ArrayJob;
use crate::core::{Core, Failure, GraphId, TaskId, WorkerId};
use crate::exec::geometry::{block_region, fmt_shape};
use crate::exec::plan::{Plan, TaskRef};
use crate::proto::{OutputReport, Summary};
use crate::server::jobs::Cx;

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

impl ArrayJob {
    pub(super) fn describe_task(&self, task: TaskId) -> String {
        match self.map.locate(task) {
            TaskRef::Block { stage, block } => {
                let st = &self.plan.stages[stage as usize];
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

    pub(super) fn describe_failure(&self, cx: &Cx, f: &Failure) -> String {
        let name = |w: WorkerId| match cx.peers.get(&w) {
            Some(e) => format!("{w} ({}:{})", e.info.host, e.info.pid),
            None if w.0 == u32::MAX => "the server".into(),
            None => w.to_string(),
        };
        match f {
            Failure::TaskError { task, worker, message } => {
                format!("{} failed on {}: {message}", self.describe_task(*task), name(*worker))
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

    pub(super) fn summary(&self, core: &Core, workers: usize) -> Summary {
        let counters = core.graph_counters(GraphId(self.id));
        let mut peaks: Vec<(WorkerId, u64)> = self.worker_peaks.iter().map(|(w, p)| (*w, *p)).collect();
        peaks.sort_unstable();
        Summary {
            tasks_total: u64::from(self.tasks_total),
            tasks_retried: counters.tasks_retried,
            workers_lost: counters.workers_lost,
            bytes_read: self.bytes_read,
            seconds: self.started.elapsed().as_secs_f64(),
            workers,
            outputs: self
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
            worker_peak_rss_bytes: self.worker_peaks.values().copied().max(),
            workers_peak_rss_bytes: peaks.into_iter().map(|(_, p)| p).collect(),
            workers_drained: self.workers_drained,
            blocks_written_by_workers: self.blocks_direct,
            blocks_sent_to_writer: self.blocks_sent,
            writer_busy_seconds: self.writer_busy.seconds(),
            tasks_resumed: self.tasks_resumed,
            fp_events: (0..self.plan.user_outputs().len() as u32)
                .map(|o| output_events(&self.plan, &self.fp, o))
                .collect(),
        }
    }
}
