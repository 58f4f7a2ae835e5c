//! What a finished task's result does to its job: partial reductions merged into the
//! accumulators (and journaled), output blocks handed to the writer or recorded as
//! written by the worker.

use bytes::Bytes;

use super::ArrayJob;
use crate::core::TaskId;
use crate::exec;
use crate::exec::geometry::block_region;
use crate::exec::plan::{StageKind, TaskRef};
use crate::proto;
use crate::server::jobs::Cx;

impl ArrayJob {
    pub(super) fn stage_of(&self, task: TaskId) -> u32 {
        match self.map.locate(task) {
            TaskRef::Block { stage, .. } | TaskRef::Finalize { stage } => stage,
        }
    }

    /// Bytes of output a write task's block holds (as computed, before compression).
    pub(super) fn written_bytes(&self, task: TaskId) -> u64 {
        let TaskRef::Block { stage, block } = self.map.locate(task) else {
            return 0;
        };
        let st = &self.plan.stages[stage as usize];
        if !matches!(st.kind, StageKind::Write { .. }) {
            return 0;
        }
        let elems: usize = block_region(&st.shape, &st.block, block).iter().map(|r| r.len()).product();
        st.outputs()
            .iter()
            .map(|&o| (elems * self.plan.outputs[o as usize].dtype.size()) as u64)
            .sum()
    }

    /// Merge an accepted block result into the job.
    pub(super) fn absorb(&mut self, cx: &mut Cx, task: TaskId, bytes_read: u64, payload: Bytes, written: bool, fp: [u64; 3]) {
        self.bytes_read += bytes_read;
        let stage = self.stage_of(task) as usize;
        self.stage_done[stage] += 1;
        let TaskRef::Block { stage, block } = self.map.locate(task) else {
            return;
        };
        if let Some(s) = self.fp.get_mut(stage as usize) {
            s.iter_mut().zip(fp).for_each(|(a, b)| *a += b);
        }
        let st = &self.plan.stages[stage as usize];
        let problem = match &st.kind {
            StageKind::Reduce { .. } => match exec::decode_partials(&self.plan, stage, block, &payload) {
                Some(parts) => {
                    let region = block_region(&st.shape, &st.block, block);
                    for (c, arrays) in parts {
                        if let Some(acc) = self.acc.get_mut(&c) {
                            acc.merge(&region, arrays);
                        }
                    }
                    if let Some(w) = &self.writer
                        && !st.local
                    {
                        w.partial(task, payload);
                    }
                    None
                }
                None => Some(format!("protocol error: malformed partial result for {}", self.describe_task(task))),
            },
            StageKind::Write { .. } if written => {
                let offered = self
                    .writer
                    .as_ref()
                    .is_some_and(|w| st.outputs().iter().all(|&o| w.direct.get(o as usize).is_some_and(Option::is_some)));
                if offered {
                    if let Some(w) = &self.writer {
                        w.written(task);
                    }
                    self.blocks_direct += 1;
                    None
                } else {
                    Some(format!(
                        "protocol error: {} reported written by the worker, which it may not",
                        self.describe_task(task)
                    ))
                }
            }
            StageKind::Write { .. } => {
                self.blocks_sent += 1;
                self.write_block(st, block, task, &payload)
            }
        };
        if let Some(message) = problem {
            self.fail(cx, message);
        }
    }

    /// Whether to offer a worker the outputs' chunk tables (which it uses only if it
    /// sees the same file, [`exec::hdf::shared_fs`]): workers on this host, workers
    /// that vouch for their shared file system, and any worker when the outputs are
    /// on a parallel file system. Not to others: a table can be megabytes, sent to
    /// each worker.
    pub(super) fn may_write_directly(&self, w: &proto::WorkerInfo, host: &str) -> bool {
        use exec::hdf::shared_fs::SharedFs;
        match w.shared_fs {
            SharedFs::Off => false,
            SharedFs::On => true,
            SharedFs::Auto => w.host == host || self.outputs_fs.is_some(),
        }
    }

    /// Hand a computed output block to the writer; a malformed one is a problem.
    pub(super) fn write_block(&self, st: &exec::plan::Stage, block: u64, task: TaskId, payload: &Bytes) -> Option<String> {
        let region = block_region(&st.shape, &st.block, block);
        let Some(ranges) = exec::write::split(st, payload) else {
            return Some(format!(
                "protocol error: malformed block of several outputs for {}",
                self.describe_task(task)
            ));
        };
        let mut parts = Vec::with_capacity(ranges.len());
        for (output, range) in ranges {
            let out = &self.plan.outputs[output as usize];
            let expect = region.iter().map(|r| r.len()).product::<usize>() * out.dtype.size();
            // A compressed block is checked chunk by chunk by the writer.
            if out.compression.is_none() && range.len() != expect {
                return Some(format!(
                    "protocol error: block of {} bytes where {expect} were expected",
                    range.len()
                ));
            }
            parts.push((output, payload.slice(range)));
        }
        if let Some(w) = &self.writer {
            w.write(parts, region, task);
        }
        None
    }
}
