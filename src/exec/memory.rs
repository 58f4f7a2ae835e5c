//! What a plan's tasks hold in memory, against a bound per worker (issue 12 item 1),
//! and what each stage reads and writes (`drover run --explain`).
//!
//! A worker holds a base (its runtime, QUIC buffers, the HDF5 library), per input the
//! mapped windows and the decoded-chunk cache of its reader, every const its stages
//! read (whole), and per task thread the running task (every array its kernels make
//! for a piece of the block, an operation's operand, the result payload) plus one
//! result waiting to be sent. Every array a kernel makes is counted as live at once,
//! so the estimate is an upper bound of what the task holds.

use std::ops::Range;

use super::geometry::{self, block_count, operand_region};

use super::plan::{Kernel, Plan, StageKind};
use crate::config::workload::MemoryBound;

/// A worker's own memory before any task: runtime, QUIC, the HDF5 library.
pub const BASE: u64 = 64 << 20;

/// Elements of a piece of a block (as `execute_block` walks it).
const PIECE_ELEMS: usize = 512 << 10;

/// One stage: its tasks and what each holds, reads and sends.
#[derive(Clone, Debug)]
pub struct StageMemory {
    pub stage: usize,
    pub tasks: u64,
    /// Bytes a running task holds at its peak (its result included).
    pub task: u64,
    /// Bytes of a task's result (a block of the output, or partial reductions).
    pub result: u64,
    /// Bytes of input all tasks read together (as stored).
    pub read: u64,
    /// Bytes all tasks send (output blocks, partial reductions).
    pub written: u64,
}

/// A plan's memory on one worker with `threads` task threads.
#[derive(Clone, Debug)]
pub struct Footprint {
    pub base: u64,
    /// Readers' mapped windows and chunk caches.
    pub inputs: u64,
    /// Consts held whole.
    pub consts: u64,
    pub threads: u32,
    pub stages: Vec<StageMemory>,
}

impl Footprint {
    /// The most one task thread holds: a running task and one result waiting.
    pub fn per_thread(&self) -> u64 {
        self.stages.iter().map(|s| s.task + s.result).max().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.base + self.inputs + self.consts + u64::from(self.threads) * self.per_thread()
    }

    /// The stage whose tasks hold the most.
    pub fn worst(&self) -> Option<&StageMemory> {
        self.stages.iter().max_by_key(|s| s.task + s.result)
    }

    /// Why a plan does not fit `bound`, with the numbers and what to change.
    pub fn refusal(&self, plan: &Plan, bound: &MemoryBound) -> String {
        let what = self
            .worst()
            .map(|s| format!("tasks of {} hold {} each", describe_stage(plan, s.stage), mib(s.task + s.result)))
            .unwrap_or_else(|| "no task".into());
        // Output chunks set in the workload bound how small its blocks can be.
        let chunked = self.worst().and_then(|s| match plan.stages[s.stage].kind {
            StageKind::Write { output } if plan.outputs[output as usize].chunk.is_some() => Some(output),
            _ => None,
        });
        let chunks = match chunked {
            Some(o) => format!("smaller chunks= on the inputs or on outputs[{o}]"),
            None => "smaller chunks= on the inputs".into(),
        };
        format!(
            "the plan needs {} per worker, more than the bound of {} ({}): {what} x {} thread{}, consts held whole {}, input buffers {}, \
             base {}; give a larger --memory-per-worker, fewer --threads, {chunks}, or reduce to a smaller result",
            mib(self.total()),
            mib(bound.bytes),
            bound.source,
            self.threads,
            if self.threads == 1 { "" } else { "s" },
            mib(self.consts),
            mib(self.inputs),
            mib(self.base),
        )
    }
}

/// Bytes as MiB, one decimal.
pub fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / f64::from(1 << 20))
}

/// What a stage computes, for messages: `output 2 ("median(t, axis=0)")` or
/// `the reduction of stage 3`.
pub fn describe_stage(plan: &Plan, stage: usize) -> String {
    let st = &plan.stages[stage];
    match &st.kind {
        StageKind::Write { output } => {
            let o = &plan.outputs[*output as usize];
            match o.staging {
                Some(i) => format!("a staging copy of input \"{}\" (uncompressed)", plan.inputs[i as usize].name),
                None => format!("outputs[{output}] (\"{}\")", o.expr),
            }
        }
        StageKind::Reduce { consts } => {
            let ops: Vec<String> = consts
                .iter()
                .map(|&c| format!("{:?}", plan.consts[c as usize].op).to_lowercase())
                .collect();
            format!("the reduction ({}) of stage {stage}", ops.join(", "))
        }
    }
}

/// The footprint of `plan` on a worker with `threads` task threads.
pub fn footprint(plan: &Plan, threads: u32) -> Footprint {
    let mut stages = Vec::new();
    let mut read_inputs: Vec<u32> = Vec::new();
    let mut held: Vec<u32> = Vec::new();
    for (s, st) in plan.stages.iter().enumerate() {
        if st.local {
            continue; // computed by the driver
        }
        for k in st.kernels() {
            for i in k.inputs() {
                if !read_inputs.contains(&i) {
                    read_inputs.push(i);
                }
            }
            for c in k.consts() {
                if !held.contains(&c) {
                    held.push(c);
                }
            }
        }
        stages.push(stage_memory(plan, s));
    }
    let inputs = read_inputs
        .iter()
        .map(|&i| {
            let inp = &plan.inputs[i as usize];
            match (&inp.generate, &inp.hdf5_chunk) {
                (Some(_), _) => 0,
                // The mapped windows ([16, 64] MiB) and the cache of decoded chunks.
                (None, Some(c)) => {
                    let chunk = (c.iter().product::<usize>() * 8) as u64;
                    (2 * chunk).clamp(16 << 20, 64 << 20) + (u64::from(threads) + 2).saturating_mul(chunk).max(16 << 20)
                }
                (None, None) => 64 << 20,
            }
        })
        .sum();
    let consts = held.iter().map(|&c| elems(&plan.consts[c as usize].shape) * 8).sum();
    Footprint {
        base: BASE,
        inputs,
        consts,
        threads,
        stages,
    }
}

fn elems(shape: &[usize]) -> u64 {
    shape.iter().map(|&n| n as u64).product()
}

fn region_elems(r: &[Range<usize>]) -> u64 {
    r.iter().map(|r| r.len() as u64).product()
}

/// The memory, reads and writes of one stage's tasks.
fn stage_memory(plan: &Plan, s: usize) -> StageMemory {
    let st = &plan.stages[s];
    let block: Vec<usize> = st.block.iter().zip(&st.shape).map(|(&b, &n)| b.min(n).max(1)).collect();
    let tasks = block_count(&st.shape, &st.block);
    let region: Vec<Range<usize>> = block.iter().map(|&b| 0..b).collect();
    let mut one_piece = false;
    for k in st.kernels() {
        k.visit(&mut |k| one_piece |= matches!(k, Kernel::Reshape(..) | Kernel::Along(..)));
    }
    // The piece a task evaluates at once: the whole block, or cache-sized parts.
    let piece = if one_piece || st.contract.is_some() {
        region.clone()
    } else {
        let mut p = block.clone();
        while p.iter().product::<usize>() > PIECE_ELEMS {
            let (d, _) = p.iter().enumerate().max_by_key(|(_, n)| **n).expect("rank > 0");
            p[d] = p[d].div_ceil(2);
        }
        p.iter().map(|&n| 0..n).collect()
    };
    let leaves_only = st.contract.is_some();
    let mut eval = 0u64;
    for k in st.kernels() {
        eval += eval_bytes(plan, k, &space(st, &piece), leaves_only);
    }
    // Reads: block by block (the last blocks are cut short by the array's end); past
    // a few thousand blocks, the first block's times their number.
    let (read, cells) = if tasks <= 4096 {
        (0..tasks)
            .map(|b| {
                let r = geometry::block_region(&st.shape, &st.block, b);
                let s = space(st, &r);
                (st.kernels().map(|k| read_bytes(plan, k, &s)).sum::<u64>(), region_elems(&r))
            })
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    } else {
        (
            st.kernels()
                .map(|k| read_bytes(plan, k, &space(st, &region)))
                .sum::<u64>()
                .saturating_mul(tasks),
            elems(&st.shape),
        )
    };
    let block_elems = elems(&block);
    let result = match &st.kind {
        StageKind::Write { .. } => st
            .outputs()
            .iter()
            .map(|&o| {
                let out = &plan.outputs[o as usize];
                let raw = block_elems * out.dtype.size() as u64;
                if out.compression.is_some() { 2 * raw } else { raw }
            })
            .sum(),
        StageKind::Reduce { consts } => consts
            .iter()
            .map(|&c| {
                let spec = &plan.consts[c as usize];
                let kept = elems(&geometry::kept(&block, &spec.axes));
                let groups = spec.groups.as_ref().map_or(1, |g| g.len() as u64);
                let hist = spec.hist.map_or(1, |h| h.bins as u64);
                kept * groups * hist * super::reduce::partial_arity(spec.op) as u64 * 8
            })
            .sum(),
    };
    // Decoded chunks of the inputs read (a buffer and the stored bytes per thread).
    let decode: u64 = st
        .kernels()
        .flat_map(Kernel::inputs)
        .filter_map(|i| plan.inputs[i as usize].hdf5_chunk.as_ref())
        .map(|c| 2 * elems(c) * 8)
        .max()
        .unwrap_or(0);
    StageMemory {
        stage: s,
        tasks,
        task: eval + decode + result,
        result,
        read,
        // Output blocks: the output's bytes (more when compression cannot help);
        // partial reductions: every block's.
        written: match st.kind {
            StageKind::Write { .. } => result.saturating_mul(cells) / elems(&block).max(1),
            StageKind::Reduce { .. } => result.saturating_mul(tasks),
        },
    }
}

/// The region of the stage's kernel space a block `r` of the stage covers: itself, or
/// for a contraction written whole, the block with the summed axes whole.
pub fn space(st: &super::plan::Stage, r: &[Range<usize>]) -> Vec<Range<usize>> {
    st.contract.as_ref().map_or_else(|| r.to_vec(), |c| c.full_region(r))
}

/// `region` as seen by an operand of `shape` (right-aligned, broadcast); the whole
/// operand when it has more dimensions than the region.
fn seen(region: &[Range<usize>], shape: &[usize]) -> Vec<Range<usize>> {
    if shape.len() > region.len() {
        return shape.iter().map(|&n| 0..n).collect();
    }
    operand_region(region, shape)
}

/// Bytes the arrays of kernel `k` over `region` (of the stage) take, all counted live.
/// `leaves_only`: only its leaves (a contraction multiplies tiles without making the
/// elementwise product).
fn eval_bytes(plan: &Plan, k: &Kernel, region: &[Range<usize>], leaves_only: bool) -> u64 {
    let own = seen(region, &plan.kernel_shape(k));
    let here = region_elems(&own) * 8;
    match k {
        Kernel::Num(_) => 0,
        Kernel::Input(_) | Kernel::Const(_) | Kernel::Take(..) => here,
        Kernel::Map(_, args) => {
            let below: u64 = args.iter().map(|a| eval_bytes(plan, a, &own, leaves_only)).sum();
            if leaves_only { below } else { below + here }
        }
        Kernel::View(leaf, v) => {
            let src = v.source_region(&own);
            here + region_elems(&src) * 8
                + match &**leaf {
                    Kernel::Along(..) | Kernel::Reshape(..) => eval_bytes(plan, leaf, &src, leaves_only),
                    _ => 0,
                }
        }
        Kernel::Reshape(arg, r) => {
            let src = r.source_region(&own);
            here + eval_bytes(plan, arg, &src, false)
        }
        Kernel::Along(arg, a) => {
            let src = a.source_region(&own);
            // The operand, a copy of its lanes, the result.
            here + region_elems(&src) * 8 + eval_bytes(plan, arg, &src, false)
        }
    }
}

/// Bytes of input (as stored) kernel `k` reads for `region` of the stage.
fn read_bytes(plan: &Plan, k: &Kernel, region: &[Range<usize>]) -> u64 {
    let mut n = 0;
    input_regions(plan, k, region, &mut |i, r| {
        let inp = &plan.inputs[i as usize];
        if inp.generate.is_none() {
            n += region_elems(r) * inp.dtype.size() as u64;
        }
    });
    n
}

/// Call `f` with each input leaf of kernel `k` and the region of it that `region` of
/// the stage reads.
pub fn input_regions(plan: &Plan, k: &Kernel, region: &[Range<usize>], f: &mut dyn FnMut(u32, &[Range<usize>])) {
    let own = seen(region, &plan.kernel_shape(k));
    match k {
        Kernel::Input(i) => f(*i, &own),
        Kernel::Map(_, args) => args.iter().for_each(|a| input_regions(plan, a, &own, f)),
        Kernel::View(leaf, v) => {
            let src = v.source_region(&own);
            match &**leaf {
                Kernel::Input(i) => f(*i, &src),
                other => input_regions(plan, other, &src, f),
            }
        }
        Kernel::Reshape(arg, r) => input_regions(plan, arg, &r.source_region(&own), f),
        Kernel::Along(arg, a) => input_regions(plan, arg, &a.source_region(&own), f),
        Kernel::Num(_) | Kernel::Const(_) | Kernel::Take(..) => {}
    }
}
