//! From a workload to an execution plan and a task graph.
//!
//! Every reduction in an expression becomes a *reduce stage*: its argument is computed
//! block by block over a chunk grid and reduced to a partial per block; the driver
//! merges partials as they arrive and finalizes them into a *const* (a materialized
//! array). What remains of an output expression after its reductions are replaced by
//! consts is a *write stage*, computed block by block and written. Stages whose kernel
//! reads no input (a reduction of a reduction, an output that is just a mean) run in the
//! driver on whole arrays. Identical reduction arguments share one stage, so
//! `mean(x, axis=0)` and `std(x, axis=0)` read `x` once.
//!
//! Task graph per stage: one task per block; a reduce stage adds one local *finalize*
//! task depending on all its blocks; blocks of later stages depend on the finalize tasks
//! of the consts they use (so edges stay linear in the number of blocks).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::expr;
use super::geometry::{block_count, default_block};
use super::hdf::{self, Dtype};
use super::ops::Op;
use super::resolve::resolve;
use super::view::View;
use crate::config::workload::{OutDtype, Workload};
use crate::core::{Graph, GraphBuilder, TaskId, TaskKind};

/// Default block size target: 64 MiB of f64 values.
pub const DEFAULT_BLOCK_ELEMS: usize = 8 << 20;
/// The smallest block target a memory bound may shrink blocks to (64 Ki elements).
pub const MIN_BLOCK_ELEMS: usize = 64 << 10;

pub use super::reduce::ReduceOp;

/// A blockwise expression: leaves are inputs, consts and numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Kernel {
    Input(u32),
    Const(u32),
    Num(f64),
    /// An elementwise operation of the registry over its arguments.
    Map(Op, Vec<Kernel>),
    /// A view of an input or const leaf (only ever around `Input`, `Const` or `Take`).
    View(Box<Kernel>, View),
    /// Rows of a const picked along `axis` by a table of indices (numpy's `take`;
    /// `clim[groups(t2m, "month")]`): the const's axis becomes the table's length.
    Take(Box<Kernel>, Vec<u32>, usize),
    /// numpy's reshape of any kernel: a leaf to the kernels around it, evaluated over
    /// the box of its operand that a region needs ([`super::reshape`]).
    Reshape(Box<Kernel>, super::reshape::Reshape),
    /// An operation along axes of any kernel ([`super::along`]): a leaf to the kernels
    /// around it, evaluated over the region of its operand that a region needs.
    Along(Box<Kernel>, Box<super::along::Along>),
}

impl Kernel {
    pub fn visit<'a>(&'a self, f: &mut impl FnMut(&'a Kernel)) {
        f(self);
        match self {
            Kernel::Map(_, args) => args.iter().for_each(|a| a.visit(f)),
            Kernel::View(leaf, _) | Kernel::Take(leaf, ..) | Kernel::Reshape(leaf, _) | Kernel::Along(leaf, _) => leaf.visit(f),
            _ => {}
        }
    }

    /// Input indices in order of first appearance.
    pub fn inputs(&self) -> Vec<u32> {
        let mut v = Vec::new();
        self.visit(&mut |k| {
            if let Kernel::Input(i) = k
                && !v.contains(i)
            {
                v.push(*i);
            }
        });
        v
    }

    /// Const indices in order of first appearance (a scan's carry included).
    pub fn consts(&self) -> Vec<u32> {
        let mut v = Vec::new();
        self.visit(&mut |k| {
            let c = match k {
                Kernel::Const(i) => Some(*i),
                Kernel::Along(_, a) => a.carry,
                _ => None,
            };
            if let Some(i) = c
                && !v.contains(&i)
            {
                v.push(i);
            }
        });
        v
    }
}

pub use super::plan_error::PlanError;

/// An input as the workers see it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InputSpec {
    pub name: String,
    pub file: PathBuf,
    pub dataset: String,
    pub shape: Vec<usize>,
    pub dtype: Dtype,
    pub block: Vec<usize>,
    pub hdf5_chunk: Option<Vec<usize>>,
    /// A generated input (no file).
    #[serde(default)]
    pub generate: Option<crate::config::workload::Generate>,
    /// CF decoding applied to every value read (`hdf::cf`).
    #[serde(default)]
    pub cf: Option<hdf::cf::Cf>,
    /// The time axis (planning only: grouped reductions carry their groups).
    #[serde(skip)]
    pub time: hdf::coords::TimeInfo,
    /// Each axis's dimension (planning only: outputs' coordinates).
    #[serde(skip)]
    pub dims: Vec<hdf::dims::InputDim>,
    /// Attributes outputs derived from this input carry (planning only).
    #[serde(skip)]
    pub attrs: hdf::dims::VarAttrs,
    /// Its chunks are filtered (planning only: [`super::staging`] decides on it).
    #[serde(skip)]
    pub filtered: bool,
    /// An uncompressed staging copy of another input, written by this stage
    /// ([`super::staging`]): opened only once that stage is done, and not part of the
    /// run's fingerprint.
    #[serde(default)]
    pub staged: Option<u32>,
}

/// A reduction result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConstSpec {
    pub op: ReduceOp,
    /// Reduced axes of the stage shape, ascending.
    pub axes: Vec<usize>,
    /// Shape of the result (stage shape without `axes`).
    pub shape: Vec<usize>,
    pub stage: u32,
    /// Delta degrees of freedom of var/std (numpy's `ddof=`).
    #[serde(default)]
    pub ddof: f64,
    /// The bins of a histogram.
    #[serde(default)]
    pub hist: Option<super::reduce::Histogram>,
    /// Grouped along the one reduced axis (`by="month"`, ...): the result has the
    /// groups in place of that axis.
    #[serde(default)]
    pub groups: Option<super::calendar::Groups>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum StageKind {
    /// Reduce each block into partials of these consts.
    Reduce { consts: Vec<u32> },
    /// Write each block to this output.
    Write { output: u32 },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stage {
    pub kernel: Kernel,
    pub shape: Vec<usize>,
    pub block: Vec<usize>,
    pub kind: StageKind,
    /// Runs in the driver on whole arrays (the kernel reads no input).
    pub local: bool,
    /// A write stage computing a contraction whole in each block (no partial sums).
    #[serde(default)]
    pub contract: Option<Contract>,
    /// Further outputs a write stage writes, with their kernels (same shape and
    /// block): evaluated together, so the sub-expressions they share are computed
    /// once per block and the inputs read once (`lower::merge_shared_writes`).
    #[serde(default)]
    pub also: Vec<(u32, Kernel)>,
}

impl Stage {
    /// Every kernel the stage evaluates: its own, then those of `also`.
    pub fn kernels(&self) -> impl Iterator<Item = &Kernel> {
        std::iter::once(&self.kernel).chain(self.also.iter().map(|(_, k)| k))
    }

    /// The outputs a write stage writes, in the order of [`Stage::kernels`].
    pub fn outputs(&self) -> Vec<u32> {
        match self.kind {
            StageKind::Write { output } => std::iter::once(output).chain(self.also.iter().map(|(o, _)| *o)).collect(),
            StageKind::Reduce { .. } => vec![],
        }
    }

    /// Consts read by any of the stage's kernels.
    pub fn consts(&self) -> Vec<u32> {
        let mut v: Vec<u32> = Vec::new();
        for k in self.kernels() {
            for c in k.consts() {
                if !v.contains(&c) {
                    v.push(c);
                }
            }
        }
        v
    }
}

/// A contraction written straight from its blocks: the stage's `kernel` is the product
/// of the two factors over `shape` (the contraction's whole space), summed along
/// `axes`, which are whole in every block; the stage's own shape and block are those
/// of the result (the other axes, in order).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Contract {
    pub shape: Vec<usize>,
    pub axes: Vec<usize>,
}

impl Contract {
    /// A block of the result as a region of the whole space: the summed axes whole.
    pub fn full_region(&self, region: &[std::ops::Range<usize>]) -> Vec<std::ops::Range<usize>> {
        let mut kept = region.iter();
        (0..self.shape.len())
            .map(|d| {
                if self.axes.contains(&d) {
                    0..self.shape[d]
                } else {
                    kept.next().expect("a kept axis per region axis").clone()
                }
            })
            .collect()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OutputSpec {
    pub file: PathBuf,
    pub dataset: String,
    pub shape: Vec<usize>,
    pub dtype: OutDtype,
    pub chunk: Option<Vec<usize>>,
    pub expr: String,
    /// gzip: chunks compressed by the workers (the chunk shape tiles the blocks).
    #[serde(default)]
    pub compression: Option<crate::config::workload::Compression>,
    /// Named dimensions, coordinates and attributes (the writer's; not sent).
    #[serde(skip)]
    pub labels: hdf::dims::Labels,
    /// Not the user's: the staging copy of this input ([`super::staging`]), removed
    /// at the end instead of renamed, and not reported.
    #[serde(default)]
    pub staging: Option<u32>,
}

/// Outputs that are exactly a sum reduction used nowhere else (not by another output,
/// not inside another reduction, not sharing its stage with another reduction): those
/// that may be computed block by block as they are written
/// ([`Lowering::fused_contraction`] decides whether they are contractions that can).
fn sole_sums(inputs: &[InputSpec], resolved: &[(super::resolve::Node, Vec<usize>, OutDtype)]) -> Vec<usize> {
    let mut low = Lowering {
        inputs,
        consts: vec![],
        stages: vec![],
        const_shapes: vec![],
        target: DEFAULT_BLOCK_ELEMS,
    };
    let kernels: Vec<Kernel> = resolved.iter().map(|(node, ..)| low.lower(node)).collect();
    let uses = |c: u32| {
        let mut n = 0;
        for k in kernels.iter().chain(low.stages.iter().map(|s| &s.kernel)) {
            k.visit(&mut |k| n += usize::from(*k == Kernel::Const(c)));
        }
        n
    };
    kernels
        .iter()
        .enumerate()
        .filter_map(|(i, k)| match k {
            Kernel::Const(c) => {
                let spec = &low.consts[*c as usize];
                let alone = matches!(&low.stages[spec.stage as usize].kind, StageKind::Reduce { consts } if consts.len() == 1);
                (spec.op == ReduceOp::Sum && alone && uses(*c) == 1).then_some(i)
            }
            _ => None,
        })
        .collect()
}

/// Everything needed to execute a workload.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub inputs: Vec<InputSpec>,
    pub consts: Vec<ConstSpec>,
    pub stages: Vec<Stage>,
    pub outputs: Vec<OutputSpec>,
}

/// What a task of the graph stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskRef {
    Block { stage: u32, block: u64 },
    Finalize { stage: u32 },
}

/// Maps task ids to stages and blocks without storing anything per task.
#[derive(Clone, Debug)]
pub struct TaskMap {
    /// First task id of each stage's blocks.
    base: Vec<u32>,
    blocks: Vec<u32>,
    finalize: Vec<Option<u32>>,
}

impl TaskMap {
    pub fn locate(&self, task: TaskId) -> TaskRef {
        let s = self.base.partition_point(|&b| b <= task) - 1;
        let off = task - self.base[s];
        if off < self.blocks[s] {
            TaskRef::Block {
                stage: s as u32,
                block: u64::from(off),
            }
        } else {
            TaskRef::Finalize { stage: s as u32 }
        }
    }

    pub fn finalize_task(&self, stage: u32) -> Option<TaskId> {
        self.finalize[stage as usize]
    }
}

use super::lower::Lowering;

fn check_writable(index: usize, file: &Path) -> Result<(), PlanError> {
    let unwritable = |reason: String| PlanError::Unwritable {
        index,
        file: file.to_path_buf(),
        reason,
    };
    let parent = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    match std::fs::metadata(parent) {
        Err(_) => {
            return Err(unwritable(format!(
                "folder \"{}\" does not exist; create it first",
                parent.display()
            )));
        }
        Ok(m) if !m.is_dir() => return Err(unwritable(format!("\"{}\" is not a folder", parent.display()))),
        Ok(_) => {}
    }
    if file.is_dir() {
        return Err(unwritable("it is a folder; name a file".into()));
    }
    if nix::unistd::access(parent, nix::unistd::AccessFlags::W_OK).is_err() {
        return Err(unwritable(format!("folder \"{}\" is not writable", parent.display())));
    }
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Each input inspected (shape, type, chunks, CF decoding, time, dimensions) with its
/// blocks: `chunks=` as given, else whole HDF5 chunks near `target` elements.
fn inspect_inputs(w: &Workload, target: usize) -> Result<Vec<InputSpec>, PlanError> {
    let mut inputs = Vec::new();
    for inp in &w.inputs {
        let info = match &inp.generate {
            Some(g) => hdf::DatasetInfo {
                shape: g.shape.clone(),
                dtype: Dtype::F64,
                chunk: None,
                cf: None,
                time: Default::default(),
                dims: Default::default(),
                attrs: Default::default(),
                filtered: false,
            },
            None => hdf::inspect(&inp.file, &inp.dataset, inp.decode, inp.time.as_deref()).map_err(|reason| PlanError::Input {
                name: inp.name.clone(),
                reason,
            })?,
        };
        let block = match &inp.chunks {
            Some(c) if c.len() != info.shape.len() => {
                return Err(PlanError::ChunkRank {
                    name: inp.name.clone(),
                    chunks: c.clone(),
                    dataset: inp.dataset.clone(),
                    shape: info.shape,
                });
            }
            Some(c) => c.iter().zip(&info.shape).map(|(&b, &s)| b.min(s.max(1))).collect(),
            None => auto_block(&info.shape, info.chunk.as_deref(), target),
        };
        inputs.push(InputSpec {
            name: inp.name.clone(),
            file: inp.file.clone(),
            dataset: inp.dataset.clone(),
            shape: info.shape,
            dtype: info.dtype,
            block,
            hdf5_chunk: info.chunk,
            generate: inp.generate.clone(),
            cf: info.cf,
            time: info.time,
            dims: info.dims,
            attrs: info.attrs,
            filtered: info.filtered,
            staged: None,
        });
    }
    Ok(inputs)
}

/// A block of whole HDF5 chunks (rows of the leading dimension when contiguous) of
/// about `target` elements.
fn auto_block(shape: &[usize], chunk: Option<&[usize]>, target: usize) -> Vec<usize> {
    let chunk = chunk.map_or_else(
        || shape.iter().enumerate().map(|(i, &s)| if i == 0 { 1 } else { s.max(1) }).collect(),
        <[usize]>::to_vec,
    );
    default_block(shape, &chunk, target)
}

/// Output targets checked before any computation: distinct, not an input, writable.
fn check_outputs(w: &Workload) -> Result<(), PlanError> {
    for (i, out) in w.outputs.iter().enumerate() {
        for (j, prev) in w.outputs[..i].iter().enumerate() {
            if prev.dataset == out.dataset && same_file(&prev.file, &out.file) {
                return Err(PlanError::DuplicateOutput {
                    a: j,
                    b: i,
                    file: out.file.clone(),
                    dataset: out.dataset.clone(),
                });
            }
        }
        if let Some(inp) = w.inputs.iter().find(|inp| same_file(&inp.file, &out.file)) {
            return Err(PlanError::OverwritesInput {
                index: i,
                file: out.file.clone(),
                input: inp.name.clone(),
            });
        }
        check_writable(i, &out.file)?;
    }

    Ok(())
}

impl Plan {
    /// Inspect the inputs, resolve and lower the outputs: the plan of a workload. Under
    /// a memory bound ([`Workload::memory`]) blocks are made smaller until the plan's
    /// tasks fit it ([`super::memory`]), and a plan that cannot fit is refused. Inputs
    /// are inspected and outputs checked once, whatever the number of tries.
    pub fn build(w: &Workload) -> Result<Plan, PlanError> {
        let mut inputs = inspect_inputs(w, DEFAULT_BLOCK_ELEMS)?;
        check_outputs(w)?;
        let Some(bound) = &w.memory else {
            return Plan::lower_all(w, inputs, DEFAULT_BLOCK_ELEMS);
        };
        let mut target = DEFAULT_BLOCK_ELEMS;
        let mut last: Option<u64> = None;
        loop {
            let plan = Plan::lower_all(w, inputs.clone(), target)?;
            let fp = super::memory::footprint(&plan, bound.threads);
            if fp.total() <= bound.bytes {
                return Ok(plan);
            }
            // Smaller blocks until they stop helping (blocks the workload fixed with
            // chunks=, lanes an operation needs whole) or get tiny.
            if target <= MIN_BLOCK_ELEMS || last.is_some_and(|l| fp.total() >= l) {
                return Err(PlanError::Memory {
                    problem: fp.refusal(&plan, bound),
                });
            }
            last = Some(fp.total());
            target /= 2;
            for (inp, spec) in w.inputs.iter().zip(&mut inputs) {
                if inp.chunks.is_none() {
                    spec.block = auto_block(&spec.shape, spec.hdf5_chunk.as_deref(), target);
                }
            }
        }
    }

    /// Resolve and lower the outputs over `inputs`, blocks aiming at `target` elements.
    fn lower_all(w: &Workload, inputs: Vec<InputSpec>, target: usize) -> Result<Plan, PlanError> {
        let names: HashMap<&str, u32> = inputs.iter().enumerate().map(|(i, s)| (s.name.as_str(), i as u32)).collect();

        let lets = super::resolve::Lets::new(&w.lets);
        let mut resolved = Vec::new();
        for (index, out) in w.outputs.iter().enumerate() {
            let ast = expr::parse(&out.expr).map_err(|source| PlanError::Syntax { index, source })?;
            let cx = super::resolve::Ctx {
                index,
                expr: &out.expr,
                names: &names,
                inputs: &inputs,
                lets: &lets,
            };
            let (node, shape, kind) = resolve(&ast, &cx)?;
            resolved.push((node, shape, out.dtype.unwrap_or(kind.default_dtype())));
        }
        lets.check_all(&super::resolve::Ctx {
            index: 0,
            expr: "",
            names: &names,
            inputs: &inputs,
            lets: &lets,
        })?;

        let fusable = sole_sums(&inputs, &resolved);
        let mut low = Lowering {
            inputs: &inputs,
            consts: vec![],
            stages: vec![],
            const_shapes: vec![],
            target,
        };
        let mut outputs = Vec::new();
        for (index, ((node, shape, dtype), out)) in resolved.iter().zip(&w.outputs).enumerate() {
            let fused = if fusable.contains(&index) {
                low.fused_contraction(node)
            } else {
                None
            };
            let stages_before = low.stages.len();
            let (kernel, block, local, chunk, contract) = match fused {
                // Chunks of the result are its blocks: each written whole by its task.
                Some((kernel, contract, block)) => {
                    let chunk = low.output_chunk(&kernel, shape, &block, dtype.size()).map(|_| block.clone());
                    (kernel, block, false, chunk, Some(contract))
                }
                None => {
                    let kernel = low.lower(node);
                    let (block, local) = low.stage_block(&kernel, shape);
                    let chunk = if local {
                        low.output_chunk(&kernel, shape, shape, dtype.size())
                    } else {
                        low.output_chunk(&kernel, shape, &block, dtype.size())
                    };
                    (kernel, block, local, chunk, None)
                }
            };
            for k in std::iter::once(&kernel).chain(low.stages[stages_before..].iter().map(|s| &s.kernel)) {
                if let Some((r, problem)) = low.reshape_problem(k) {
                    return Err(PlanError::Reshape {
                        index,
                        expr: out.expr.clone(),
                        from: r.from,
                        to: r.to,
                        problem,
                    });
                }
            }
            // Chunks the workload asks for: blocks are whole multiples of them, so that
            // each block is written as whole chunks.
            let (block, chunk) = match &out.chunks {
                None => (block, chunk),
                Some(c) if c.len() != shape.len() || shape.is_empty() => {
                    return Err(PlanError::OutputChunks {
                        index,
                        chunks: c.clone(),
                        shape: shape.clone(),
                    });
                }
                Some(c) => {
                    let c: Vec<usize> = c.iter().zip(shape).map(|(&c, &n)| c.min(n.max(1))).collect();
                    let block = if local || contract.is_some() {
                        block
                    } else {
                        super::geometry::chunk_multiple_block(&c, shape, target)
                    };
                    (block, Some(c))
                }
            };
            // A compressed output's chunks tile its blocks: each block is compressed
            // chunk by chunk where it is computed. (A 0-d output has no chunks: stored
            // plain.)
            let compression = out.compression.filter(|_| chunk.is_some());
            let block = match compression {
                Some(_) if out.chunks.is_none() && !local && contract.is_none() => low.compressed_block(&kernel, shape, &block),
                _ => block,
            };
            let chunk = match compression {
                Some(_) if out.chunks.is_none() => Some(super::geometry::tiling_chunk(&block, dtype.size(), 4 << 20)),
                _ => chunk,
            };
            outputs.push(OutputSpec {
                file: out.file.clone(),
                dataset: out.dataset.clone(),
                shape: shape.clone(),
                dtype: *dtype,
                chunk,
                expr: out.expr.clone(),
                compression,
                labels: super::meta::labels(node, shape, &inputs),
                staging: None,
            });
            low.stages.push(Stage {
                kernel,
                shape: shape.clone(),
                block,
                kind: StageKind::Write { output: index as u32 },
                local,
                contract,
                also: vec![],
            });
        }
        let Lowering {
            mut consts, mut stages, ..
        } = low;
        super::lower::merge_shared_writes(&mut stages, &mut consts);
        let mut plan = Plan {
            inputs,
            consts,
            stages,
            outputs,
        };
        let staged = plan.stageable();
        super::staging::stage(&mut plan, &staged, target);
        Ok(plan)
    }

    /// The inputs to stage ([`super::staging`]) for which there is room on disk beside
    /// the first output (with the outputs themselves); the others are read as they are.
    fn stageable(&self) -> Vec<u32> {
        let candidates = super::staging::candidates(self);
        if candidates.is_empty() {
            return vec![];
        }
        let dir = self.outputs[0]
            .file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let free = nix::sys::statvfs::statvfs(dir)
            .map(|s| s.blocks_available() * s.fragment_size())
            .unwrap_or(0);
        let mut need: u64 = self
            .outputs
            .iter()
            .map(|o| o.shape.iter().map(|&n| n as u64).product::<u64>() * o.dtype.size() as u64)
            .sum();
        let mut staged = Vec::new();
        for (i, amplification) in candidates {
            let bytes = super::staging::staged_bytes(self, i);
            if need + bytes > free {
                tracing::warn!(
                    input = %self.inputs[i as usize].name,
                    needs = %super::memory::mib(bytes),
                    free = %super::memory::mib(free.saturating_sub(need)),
                    "no room beside the output for a staging copy of this compressed input: its chunks will be decoded {amplification:.1} times over"
                );
                continue;
            }
            need += bytes;
            staged.push(i);
        }
        staged
    }

    /// The shape of a kernel's value (an elementwise node's: its arguments' broadcast).
    pub fn kernel_shape(&self, k: &Kernel) -> Vec<usize> {
        match k {
            Kernel::Input(i) => self.inputs[*i as usize].shape.clone(),
            Kernel::Const(c) => self.consts[*c as usize].shape.clone(),
            Kernel::Num(_) => vec![],
            Kernel::View(_, v) => v.shape(),
            Kernel::Reshape(_, r) => r.to.clone(),
            Kernel::Along(_, a) => a.to.clone(),
            Kernel::Take(src, table, axis) => {
                let mut s = self.kernel_shape(src);
                s[*axis] = table.len();
                s
            }
            Kernel::Map(_, args) => args
                .iter()
                .map(|a| self.kernel_shape(a))
                .reduce(|a, b| super::geometry::broadcast(&a, &b).unwrap_or(a))
                .unwrap_or_default(),
        }
    }

    /// The largest payload one task can send: a whole output block, or a block's
    /// partial reductions.
    pub fn largest_result_bytes(&self) -> u64 {
        self.stages
            .iter()
            .map(|st| {
                let block: u64 = st.block.iter().map(|&n| n as u64).product();
                match &st.kind {
                    // Each output's block (and its length, for several).
                    StageKind::Write { .. } => st
                        .outputs()
                        .iter()
                        .map(|&o| {
                            let out = &self.outputs[o as usize];
                            let raw = block * out.dtype.size() as u64;
                            8 + match (&out.compression, &out.chunk) {
                                // zlib's worst case on incompressible data, the padding of
                                // edge chunks and a length per chunk
                                (Some(_), Some(c)) => {
                                    let chunk: u64 = c.iter().map(|&n| n as u64).product::<u64>() * out.dtype.size() as u64;
                                    raw + raw / 64 + 2 * chunk + 1024
                                }
                                _ => raw,
                            }
                        })
                        .sum(),
                    StageKind::Reduce { consts } => consts
                        .iter()
                        .map(|&c| {
                            let spec = &self.consts[c as usize];
                            let kept: u64 = super::reduce::partial_shape(spec, &st.block).iter().map(|&n| n as u64).product();
                            kept * 8 * super::reduce::partial_arity(spec.op) as u64
                        })
                        .sum(),
                }
            })
            .max()
            .unwrap_or(0)
    }

    /// The task graph and the map from task ids to stages and blocks.
    pub fn graph(&self) -> (Graph, TaskMap) {
        let total: u64 = self.stages.iter().map(|s| block_count(&s.shape, &s.block) + 1).sum();
        let mut b = GraphBuilder::with_capacity(total as usize, total as usize);
        let mut map = TaskMap {
            base: vec![],
            blocks: vec![],
            finalize: vec![],
        };
        for stage in &self.stages {
            // After the reductions whose consts it reads, and after the staging
            // copies of the inputs it reads are complete.
            let mut deps: Vec<TaskId> = stage
                .consts()
                .iter()
                .map(|&c| map.finalize[self.consts[c as usize].stage as usize].expect("const stages come first"))
                .collect();
            for k in stage.kernels() {
                for i in k.inputs() {
                    if let Some(s) = self.inputs[i as usize].staged {
                        let done = map.finalize[s as usize].expect("staging stages come first");
                        if !deps.contains(&done) {
                            deps.push(done);
                        }
                    }
                }
            }
            let n = block_count(&stage.shape, &stage.block);
            let n32 = u32::try_from(n).expect("fewer than 2^32 blocks per stage");
            map.base.push(b.len());
            map.blocks.push(n32);
            let kind = if stage.local { TaskKind::Local } else { TaskKind::Remote };
            let first = b.len();
            for _ in 0..n32 {
                b.add(kind, &deps);
            }
            map.finalize.push(match stage.kind {
                StageKind::Reduce { .. } => {
                    let blocks: Vec<TaskId> = (first..first + n32).collect();
                    Some(b.add(TaskKind::Local, if blocks.is_empty() { &deps } else { &blocks }))
                }
                // A staging copy ends with a barrier: the writer has everything on
                // disk and has closed the file before any task reads it.
                StageKind::Write { output } if self.outputs.get(output as usize).is_some_and(|o| o.staging.is_some()) => {
                    let blocks: Vec<TaskId> = (first..first + n32).collect();
                    Some(b.add(TaskKind::Local, &blocks))
                }
                StageKind::Write { .. } => None,
            });
        }
        (b.build(), map)
    }

    /// The outputs the workload asked for (staging copies are appended after them).
    pub fn user_outputs(&self) -> &[OutputSpec] {
        let n = self.outputs.iter().take_while(|o| o.staging.is_none()).count();
        &self.outputs[..n]
    }

    /// Number of input bytes read by all blocks.
    pub fn input_bytes(&self) -> u64 {
        self.inputs
            .iter()
            .filter(|i| i.staged.is_none())
            .map(|i| i.shape.iter().product::<usize>() as u64 * i.dtype.size() as u64)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, shape: &[usize], block: &[usize]) -> InputSpec {
        InputSpec {
            name: name.into(),
            file: PathBuf::from(format!("/{name}.h5")),
            dataset: "/d".into(),
            shape: shape.to_vec(),
            dtype: Dtype::F64,
            block: block.to_vec(),
            hdf5_chunk: None,
            generate: None,
            cf: None,
            time: Default::default(),
            dims: Default::default(),
            attrs: Default::default(),
            filtered: false,
            staged: None,
        }
    }

    fn lower(exprs: &[&str], inputs: Vec<InputSpec>) -> Result<Plan, PlanError> {
        let names: HashMap<&str, u32> = inputs.iter().enumerate().map(|(i, s)| (s.name.as_str(), i as u32)).collect();
        let mut low = Lowering {
            inputs: &inputs,
            consts: vec![],
            stages: vec![],
            const_shapes: vec![],
            target: DEFAULT_BLOCK_ELEMS,
        };
        for (index, e) in exprs.iter().enumerate() {
            let ast = expr::parse(e).map_err(|source| PlanError::Syntax { index, source })?;
            let (node, shape, _kind) = resolve(
                &ast,
                &crate::exec::resolve::Ctx {
                    index,
                    expr: e,
                    names: &names,
                    inputs: &inputs,
                    lets: &crate::exec::resolve::Lets::new(&[]),
                },
            )?;
            let kernel = low.lower(&node);
            let (block, local) = low.stage_block(&kernel, &shape);
            low.stages.push(Stage {
                kernel,
                shape,
                block,
                kind: StageKind::Write { output: index as u32 },
                local,
                contract: None,
                also: vec![],
            });
        }
        let stages = low.stages;
        Ok(Plan {
            inputs: inputs.clone(),
            consts: low.consts,
            stages,
            outputs: vec![],
        })
    }

    fn resolved(exprs: &[&str], inputs: &[InputSpec]) -> Vec<(super::super::resolve::Node, Vec<usize>, OutDtype)> {
        let names: HashMap<&str, u32> = inputs.iter().enumerate().map(|(i, s)| (s.name.as_str(), i as u32)).collect();
        let lets = crate::exec::resolve::Lets::new(&[]);
        exprs
            .iter()
            .enumerate()
            .map(|(index, e)| {
                let cx = crate::exec::resolve::Ctx {
                    index,
                    expr: e,
                    names: &names,
                    inputs,
                    lets: &lets,
                };
                let (node, shape, _) = resolve(&expr::parse(e).unwrap(), &cx).unwrap();
                (node, shape, OutDtype::F64)
            })
            .collect()
    }

    #[test]
    fn contractions_used_once_are_written_from_their_blocks() {
        let ins = || vec![spec("a", &[300, 400], &[100, 400]), spec("b", &[400, 200], &[400, 50])];
        // Outputs that are only a sum are candidates (`fused_contraction` then takes the
        // contractions among them): computed whole per block, written.
        assert_eq!(
            sole_sums(&ins(), &resolved(&["a @ b", "sum(a, axis=0)", "a + 1"], &ins())),
            vec![0, 1]
        );
        let inputs = ins();
        let mut low = Lowering {
            inputs: &inputs,
            consts: vec![],
            stages: vec![],
            const_shapes: vec![],
            target: DEFAULT_BLOCK_ELEMS,
        };
        let r = resolved(&["a @ b"], &inputs);
        let (_, contract, block) = low.fused_contraction(&r[0].0).expect("fused");
        assert_eq!((contract.shape, contract.axes), (vec![300, 200, 400], vec![2]));
        assert_eq!(block, vec![100, 50]);
        assert!(low.stages.is_empty() && low.consts.is_empty(), "no reduce stage, no const");
        // Used twice, inside another expression, or sharing its stage: a reduce stage.
        assert!(sole_sums(&inputs, &resolved(&["a @ b", "(a @ b) * 2"], &inputs)).is_empty());
        assert!(
            sole_sums(
                &inputs,
                &resolved(
                    &[
                        "sum(a[:, :, None] * b[None, :, :], axis=1)",
                        "mean(a[:, :, None] * b[None, :, :], axis=1)"
                    ],
                    &inputs
                )
            )
            .is_empty()
        );
        // A summed axis too long to stay whole in a tile: partial sums.
        let long = vec![
            spec("x", &[4, 3_000_000], &[4, 1_000_000]),
            spec("y", &[3_000_000, 4], &[1_000_000, 4]),
        ];
        let r = resolved(&["x @ y"], &long);
        assert_eq!(sole_sums(&long, &r), vec![0]);
        let mut low = Lowering {
            inputs: &long,
            consts: vec![],
            stages: vec![],
            const_shapes: vec![],
            target: DEFAULT_BLOCK_ELEMS,
        };
        assert!(low.fused_contraction(&r[0].0).is_none());
    }

    #[test]
    fn anomaly_is_two_stages_and_shares_reductions() {
        let p = lower(
            &["x - mean(x, axis=0)", "mean(x, axis=0)", "std(x, axis=0)"],
            vec![spec("x", &[10, 6], &[4, 6])],
        )
        .unwrap();
        // one reduce stage holding mean and std, then three write stages
        assert_eq!(p.stages.len(), 4);
        assert!(matches!(&p.stages[0].kind, StageKind::Reduce { consts } if consts.len() == 2));
        assert!(!p.stages[1].local && p.stages[2].local && p.stages[3].local);
        let (g, map) = p.graph();
        // 3 blocks + finalize, then 3 blocks, then 1 local, then 1 local
        assert_eq!(g.len(), 3 + 1 + 3 + 1 + 1);
        assert_eq!(map.locate(3), TaskRef::Finalize { stage: 0 });
        assert_eq!(map.locate(4), TaskRef::Block { stage: 1, block: 0 });
        assert_eq!(map.locate(8), TaskRef::Block { stage: 3, block: 0 });
    }

    #[test]
    fn compressed_outputs_get_half_blocks_of_whole_input_chunks() {
        let chunked = |chunk: &[usize], block: &[usize]| InputSpec {
            hdf5_chunk: Some(chunk.to_vec()),
            ..spec("x", &[2920, 181, 360], block)
        };
        let half = |inputs: Vec<InputSpec>| {
            let low = Lowering {
                inputs: &inputs,
                consts: vec![],
                stages: vec![],
                const_shapes: vec![],
                target: DEFAULT_BLOCK_ELEMS,
            };
            let kernel = Kernel::Input(0);
            let shape = inputs[0].shape.clone();
            let (block, _) = low.stage_block(&kernel, &shape);
            low.compressed_block(&kernel, &shape, &block)
        };
        // 16 chunks of 8 steps: halves of 8 chunks each.
        assert_eq!(half(vec![chunked(&[8, 181, 360], &[128, 181, 360])]), vec![64, 181, 360]);
        // One chunk per block: halving would decode each chunk twice.
        assert_eq!(half(vec![chunked(&[128, 181, 360], &[128, 181, 360])]), vec![128, 181, 360]);
        // Small blocks stay as they are.
        assert_eq!(half(vec![spec("x", &[10, 6], &[4, 6])]), vec![4, 6]);
    }

    #[test]
    fn broadcast_grid_takes_blocks_from_inputs() {
        let p = lower(&["x + y"], vec![spec("x", &[6, 5, 4], &[2, 5, 4]), spec("y", &[5, 4], &[5, 2])]).unwrap();
        assert_eq!(p.stages[0].shape, vec![6, 5, 4]);
        assert_eq!(p.stages[0].block, vec![2, 5, 4]);
    }

    #[test]
    fn errors_name_the_problem() {
        let x = || vec![spec("x", &[3, 4], &[3, 4]), spec("y", &[5], &[5])];
        let e = lower(&["x + y"], x()).unwrap_err().to_string();
        assert!(e.contains("(3, 4)") && e.contains("(5,)"), "{e}");
        let e = lower(&["mean(x, axis=2)"], x()).unwrap_err().to_string();
        assert!(e.contains("axis 2") && e.contains("-2..1"), "{e}");
        let e = lower(&["mean(x, axis=(0, -2))"], x()).unwrap_err().to_string();
        assert!(e.contains("repeated"), "{e}");
        let e = lower(&["foo(x)"], x()).unwrap_err().to_string();
        assert!(e.contains("\"foo\""), "{e}");
        let e = lower(&["maen(x)"], x()).unwrap_err().to_string();
        assert!(e.contains("did you mean \"mean\""), "{e}");
        let e = lower(&["z + 1"], x()).unwrap_err().to_string();
        assert!(e.contains("\"z\"") && e.contains("x, y"), "{e}");
        let e = lower(&["sqrt(x, axis=0)"], x()).unwrap_err().to_string();
        assert!(e.contains("no axis"), "{e}");
    }
}
