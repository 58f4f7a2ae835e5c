//! The array engine: expressions, plans, chunk geometry, kernels and HDF5 I/O.
//! Synchronous code; callers run it on their own threads.
//!
//! - [`buffers`]: reuse of large byte buffers.
//! - [`expr`]: the expression language (parser).
//! - [`plan`]: workload -> stages -> task graph, with all input validation.
//! - [`geometry`]: chunk grids and broadcasting.
//! - [`ops`]: the registry of elementwise operations (and dtype kinds).
//! - [`reduce`]: the registry of reductions and their partials; [`accumulate`]: merging them.
//! - [`kernel`]: blockwise evaluation of a kernel tree.
//! - [`hdf`]: HDF5 inspection, block reads, output writes.

pub mod accumulate;
pub mod along;
pub mod buffers;
pub mod calendar;
mod einsum;
pub mod expr;
pub mod fpe;
pub mod gemm;
pub mod generate;
pub mod geometry;
mod groupby;
pub mod hdf;
pub mod kernel;
mod lex;
mod lower;
pub mod memory;
mod meta;
pub mod ops;
pub mod plan;
mod plan_error;
pub mod reduce;
pub mod reshape;
mod resolve;
pub mod staging;
pub mod view;
mod weighted;
pub mod write;

use std::ops::Range;
use std::sync::Arc;

use ndarray::{ArrayD, IxDyn};

use crate::config::workload::OutDtype;
use geometry::{block_region, operand_region};
use kernel::materialize;
use plan::{Kernel, Plan, StageKind};
use reduce::partial_arity;
use view::View;

/// A task failed while executing.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("reading input \"{input}\" (\"{file}\":{dataset}) at {region}: {reason}")]
    Read {
        input: String,
        file: String,
        dataset: String,
        region: String,
        reason: String,
    },
    #[error("opening input \"{input}\" (\"{file}\":{dataset}): {reason}")]
    Open {
        input: String,
        file: String,
        dataset: String,
        reason: String,
    },
    #[error(
        "input \"{input}\" (\"{file}\") changed during the run: {reason}; a run's input files must not be modified until it finishes (run again to start over)"
    )]
    Changed { input: String, file: String, reason: String },
    #[error("input \"{input}\" (\"{file}\") could not be read: {reason}; check its file system, then run again")]
    Unreadable { input: String, file: String, reason: String },
    #[error(
        "outputs[{index}] (\"{file}\":{dataset}): the value {value} cannot be stored as {dtype} (NaN, infinite or out of range); mask it first, e.g. where(isnan(x), 0, x), or write a float dtype"
    )]
    Cast {
        index: usize,
        file: String,
        dataset: String,
        dtype: &'static str,
        value: f64,
    },
    #[error("const {0} is not available")]
    MissingConst(u32),
}

/// The result of one block, ready to send: raw little-endian bytes.
#[derive(Debug)]
pub struct BlockResult {
    pub bytes_read: u64,
    pub payload: Vec<u8>,
    /// Floating-point events of its elementwise operations ([`fpe`]).
    pub fp: fpe::Events,
}

/// An opened input: an HDF5 dataset (with the CF decoding its values get), a staging
/// copy opened at its first read, or a generated array.
pub enum Source {
    Hdf(Box<hdf::Reader>, Option<hdf::cf::Cf>),
    Staged(Box<Staged>),
    Generated(crate::config::workload::Generate),
}

/// A staging copy ([`staging`]): written while the job runs, so it is opened only
/// when a task first reads it, which is after the barrier that closed it.
pub struct Staged {
    file: std::path::PathBuf,
    dataset: String,
    reader: std::sync::OnceLock<Result<hdf::Reader, String>>,
}

impl Staged {
    fn reader(&self) -> hdf5::Result<&hdf::Reader> {
        self.reader
            .get_or_init(|| hdf::Reader::open(&self.file, &self.dataset).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| hdf5::Error::from(format!("cannot open the staging copy: {e}")))
    }
}

impl Source {
    /// The HDF5 reader, for the paths that compute on stored values directly: none
    /// when the values are CF-decoded (masked and scaled) first.
    pub fn hdf(&self) -> Option<&hdf::Reader> {
        match self {
            Source::Hdf(r, None) => Some(r.as_ref()),
            Source::Staged(s) => s.reader().ok(),
            Source::Hdf(_, Some(_)) | Source::Generated(_) => None,
        }
    }

    /// The HDF5 reader and the CF decoding its stored values get, for the folds over
    /// stored values (which decode each value as they fold it).
    pub fn typed(&self) -> Option<(&hdf::Reader, Option<&hdf::cf::Cf>)> {
        match self {
            Source::Hdf(r, cf) => Some((r.as_ref(), cf.as_ref())),
            Source::Staged(s) => s.reader().ok().map(|r| (r, None)),
            Source::Generated(_) => None,
        }
    }

    /// Read a region as f64 into `out` (row-major, the region's shape), decoded.
    pub fn read_into(&self, region: &[Range<usize>], out: &mut [f64]) -> hdf5::Result<()> {
        match self {
            Source::Hdf(r, cf) => {
                r.read_into(region, out)?;
                if let Some(cf) = cf {
                    cf.apply(out);
                }
                Ok(())
            }
            Source::Staged(s) => s.reader()?.read_into(region, out),
            Source::Generated(g) => {
                generate::fill(g, region, out);
                Ok(())
            }
        }
    }

    /// Whether the input is as it was when opened (generated inputs always are; a
    /// staging copy not yet opened is not checked).
    pub fn unchanged(&self) -> Result<(), hdf::reader::InputFault> {
        match self {
            Source::Hdf(r, _) => r.unchanged(),
            Source::Staged(s) => match s.reader.get() {
                Some(Ok(r)) => r.unchanged(),
                _ => Ok(()),
            },
            Source::Generated(_) => Ok(()),
        }
    }
}

/// Open every input of a plan (once per job and process); staging copies open later.
pub fn open_inputs(plan: &Plan) -> Result<Vec<Source>, ExecError> {
    plan.inputs
        .iter()
        .map(|inp| {
            if let Some(g) = &inp.generate {
                return Ok(Source::Generated(g.clone()));
            }
            if inp.staged.is_some() {
                return Ok(Source::Staged(Box::new(Staged {
                    file: inp.file.clone(),
                    dataset: inp.dataset.clone(),
                    reader: std::sync::OnceLock::new(),
                })));
            }
            let err = |e: hdf5::Error| ExecError::Open {
                input: inp.name.clone(),
                file: inp.file.display().to_string(),
                dataset: inp.dataset.clone(),
                reason: e.to_string(),
            };
            let r = hdf::Reader::open(&inp.file, &inp.dataset).map_err(err)?;
            tracing::debug!(input = %inp.name, direct = r.is_direct(), decode = r.decoder(), cf = inp.cf.is_some(), "opened input");
            Ok(Source::Hdf(Box::new(r), inp.cf.clone()))
        })
        .collect()
}

fn fmt_region(r: &[Range<usize>]) -> String {
    format!(
        "[{}]",
        r.iter().map(|r| format!("{}:{}", r.start, r.end)).collect::<Vec<_>>().join(", ")
    )
}

fn read_error(plan: &Plan, input: u32, region: &[Range<usize>], e: hdf5::Error) -> ExecError {
    let inp = &plan.inputs[input as usize];
    ExecError::Read {
        input: inp.name.clone(),
        file: inp.file.display().to_string(),
        dataset: inp.dataset.clone(),
        region: fmt_region(region),
        reason: e.to_string(),
    }
}

/// Append an f64 array's values in logical (row-major) order as little-endian bytes.
pub fn push_f64(buf: &mut Vec<u8>, a: &ArrayD<f64>) {
    buf.reserve(a.len() * 8);
    match a.as_slice() {
        Some(s) => {
            for v in s {
                buf.extend_from_slice(&v.to_le_bytes());
            }
        }
        None => {
            for v in a.iter() {
                buf.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
}

/// Read `shape`'s worth of f64 values from `bytes` at `*off`.
pub fn take_f64(bytes: &[u8], off: &mut usize, shape: &[usize]) -> Option<ArrayD<f64>> {
    let n: usize = shape.iter().product();
    let end = off.checked_add(n * 8)?;
    let slice = bytes.get(*off..end)?;
    *off = end;
    let v: Vec<f64> = slice
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    ArrayD::from_shape_vec(IxDyn(shape), v).ok()
}

/// Execute one block of a stage.
///
/// `datasets` are the plan's inputs opened with [`open_inputs`] (may be empty for local
/// stages); `consts` gives the whole array of a finished reduction.
///
/// A block is processed in cache-sized pieces aligned to the HDF5 chunks
/// ([`piece_shape`]): each piece is read, evaluated and reduced (or copied into the
/// block's output) while it is hot in cache, instead of materializing the whole block
/// and walking it again, which made reductions several times slower.
pub fn execute_block(
    plan: &Plan,
    datasets: &[Source],
    consts: &dyn Fn(u32) -> Option<Arc<ArrayD<f64>>>,
    stage: u32,
    block: u64,
) -> Result<BlockResult, ExecError> {
    // An input changed under the run (truncated, rewritten) gives wrong values, short
    // reads or zero pages after a read fault: checked before and after the block, so
    // such a block fails saying what changed, whatever the read itself reported.
    inputs_unchanged(plan, datasets)?;
    fpe::take();
    let mut result = block_result(plan, datasets, consts, stage, block);
    let events = fpe::take();
    inputs_unchanged(plan, datasets)?;
    if let Ok(r) = &mut result {
        r.fp = events;
    }
    result
}

fn inputs_unchanged(plan: &Plan, datasets: &[Source]) -> Result<(), ExecError> {
    for (inp, r) in plan.inputs.iter().zip(datasets) {
        r.unchanged().map_err(|fault| {
            let (input, file) = (inp.name.clone(), inp.file.display().to_string());
            match fault {
                hdf::reader::InputFault::Changed(reason) => ExecError::Changed { input, file, reason },
                hdf::reader::InputFault::Io(reason) => ExecError::Unreadable { input, file, reason },
            }
        })?;
    }
    Ok(())
}

fn block_result(
    plan: &Plan,
    datasets: &[Source],
    consts: &dyn Fn(u32) -> Option<Arc<ArrayD<f64>>>,
    stage: u32,
    block: u64,
) -> Result<BlockResult, ExecError> {
    let st = &plan.stages[stage as usize];
    let region = block_region(&st.shape, &st.block, block);
    let shape: Vec<usize> = region.iter().map(|r| r.len()).collect();
    let piece = piece_shape(plan, st, &shape);
    let mut bytes_read = 0u64;
    let payload = match &st.kind {
        StageKind::Reduce { consts: ids } => {
            // Block-local accumulators merge the pieces' partials.
            let mut accs: Vec<reduce::Accumulator> = ids
                .iter()
                .map(|&c| {
                    let spec = &plan.consts[c as usize];
                    let reduced = reduce::partial_shape(spec, &shape);
                    let local = plan::ConstSpec {
                        op: spec.op,
                        axes: spec.axes.clone(),
                        shape: reduced,
                        stage: spec.stage,
                        ddof: spec.ddof,
                        hist: spec.hist,
                        groups: spec.groups.as_ref().map(|g| g.slice(region[spec.axes[0]].clone())),
                    };
                    reduce::Accumulator::new(&local, &shape)
                })
                .collect();
            let grouped = accs.iter().any(reduce::Accumulator::is_grouped);
            // A contraction: each tile of its two factors multiplied as matrices.
            if let [c] = ids[..]
                && !grouped
            {
                let spec = &plan.consts[c as usize];
                if let Some(con) = gemm::contraction(&st.kernel, &st.shape, spec.op, &spec.axes, &|k| leaf_shape(plan, k)) {
                    let (partial, n) = contract_region(plan, datasets, consts, &con, &region)?;
                    let whole: Vec<Range<usize>> = shape.iter().map(|&n| 0..n).collect();
                    accs[0].merge(&whole, vec![partial]);
                    return Ok(BlockResult {
                        fp: [0; 3],
                        bytes_read: n,
                        payload: accs_payload(accs),
                    });
                }
            }
            // A plain input reduced as stored, in large chunks: each chunk is reduced
            // in its stored type straight from the mapped file or its decoded bytes,
            // with no f64 copy (the widening happens in the fold).
            // A CF-decoded input too: each value is decoded as it is folded.
            if let Kernel::Input(i) = st.kernel
                && !grouped
                && plan.inputs[i as usize].shape == st.shape
                && let Some((r, cf)) = datasets[i as usize].typed()
                && cf.is_none_or(|c| c.decoder().is_some())
                && r.typed_cell_elems().is_some_and(|n| n >= PIECE_ELEMS / 16)
            {
                let dec = cf.and_then(hdf::cf::Cf::decoder);
                r.for_each_typed_cell(&region, |sub, values| {
                    let rel: Vec<Range<usize>> = sub.iter().zip(&region).map(|(s, b)| s.start - b.start..s.end - b.start).collect();
                    bytes_read += (sub.iter().map(|r| r.len()).product::<usize>() * plan.inputs[i as usize].dtype.size()) as u64;
                    for (acc, &c) in accs.iter_mut().zip(ids) {
                        let spec = &plan.consts[c as usize];
                        let folded =
                            crate::with_typed!(&values, v => acc.fold_in_by(&rel, v, dec.map(|d| move |x| d(reduce::Elem::f64(x)))));
                        if folded {
                            continue;
                        }
                        let partial = match dec {
                            None => crate::with_typed!(&values, v => reduce::partial_typed_for(spec, v)),
                            Some(d) => reduce::partial_for(spec, &crate::with_typed!(&values, v => v.mapv(|x| d(reduce::Elem::f64(x))))),
                        };
                        acc.merge(&rel, partial);
                    }
                    Ok(())
                })
                .map_err(|e| read_error(plan, i, &region, e))?;
                return Ok(BlockResult {
                    fp: [0; 3],
                    bytes_read,
                    payload: accs_payload(accs),
                });
            }
            for_each_piece(&region, &piece, |abs, rel| {
                // A plain input reduced as stored: reduce the mapped file in place.
                if let Kernel::Input(i) = st.kernel
                    && !grouped
                    && plan.inputs[i as usize].shape == st.shape
                    && let Some(r) = datasets[i as usize].hdf()
                    && let Some(view) = r.view(abs).map_err(|e| read_error(plan, i, abs, e))?
                {
                    bytes_read += (view.len() * 8) as u64;
                    for (acc, &c) in accs.iter_mut().zip(ids) {
                        let spec = &plan.consts[c as usize];
                        acc.merge(rel, reduce::partial_for(spec, &view));
                    }
                    return Ok(());
                }
                let (arr, n) = eval_region(plan, datasets, consts, &st.kernel, abs)?;
                bytes_read += n;
                for (acc, &c) in accs.iter_mut().zip(ids) {
                    if acc.is_grouped() {
                        acc.merge_values(rel, &arr);
                    } else {
                        acc.merge(rel, reduce::partial_for(&plan.consts[c as usize], &arr));
                    }
                }
                recycle(arr);
                Ok(())
            })?;
            accs_payload(accs)
        }
        StageKind::Write { .. } => {
            let (payload, n) = write::block(plan, datasets, consts, st, &region, &piece)?;
            bytes_read += n;
            payload
        }
    };
    Ok(BlockResult {
        bytes_read,
        payload,
        fp: [0; 3],
    })
}

/// The partials of a block's accumulators, as sent.
fn accs_payload(accs: Vec<reduce::Accumulator>) -> Vec<u8> {
    let mut buf = Vec::new();
    for acc in accs {
        for p in &acc.into_partial() {
            push_f64(&mut buf, p);
        }
    }
    buf
}

/// Elements of a piece: 2 MiB of f64, sized for the cache.
const PIECE_ELEMS: usize = 256 << 10;

/// How a block is walked: pieces of `piece` elements per dimension, aligned to the
/// HDF5 chunk grid `align` (0: no chunk grid along that dimension).
struct Pieces {
    piece: Vec<usize>,
    align: Vec<usize>,
}

/// Pieces of about [`PIECE_ELEMS`] aligned to the HDF5 chunks of the inputs spanning
/// each dimension: a chunk larger than that is cut into pieces that stay inside it;
/// chunks smaller than that are grouped whole (tiny chunks cost one piece per many
/// chunks, not one each).
fn piece_shape(plan: &Plan, st: &plan::Stage, shape: &[usize]) -> Pieces {
    let r = shape.len();
    // A reshape reads the operand box of the region it is given: cut into pieces, a
    // block would read boxes that overlap. Its blocks are sized for it: one piece.
    let mut reshaped = false;
    for k in st.kernels() {
        k.visit(&mut |k| reshaped |= matches!(k, Kernel::Reshape(..) | Kernel::Along(..)));
    }
    if reshaped {
        return Pieces {
            piece: shape.iter().map(|&n| n.max(1)).collect(),
            align: vec![0; r],
        };
    }
    let ins: Vec<u32> = st.kernels().flat_map(Kernel::inputs).collect();
    let align: Vec<usize> = (0..r)
        .map(|j| {
            for &i in &ins {
                let inp = &plan.inputs[i as usize];
                let ri = inp.shape.len();
                if j + ri >= r
                    && inp.shape[j + ri - r] == st.shape[j]
                    && st.shape[j] > 1
                    && let Some(c) = &inp.hdf5_chunk
                {
                    return c[j + ri - r].max(1);
                }
            }
            0
        })
        .collect();
    let mut piece: Vec<usize> = (0..r)
        .map(|j| if align[j] > 0 { align[j] } else { shape[j] }.clamp(1, shape[j].max(1)))
        .collect();
    while piece.iter().product::<usize>() > PIECE_ELEMS {
        let (d, _) = piece.iter().enumerate().max_by_key(|(_, c)| **c).expect("rank > 0");
        if piece[d] == 1 {
            break;
        }
        piece[d] = piece[d].div_ceil(2);
    }
    // Small chunks: whole multiples of them, last dimension first, while the piece
    // stays row-major contiguous in the block.
    for d in (0..r).rev() {
        let elems: usize = piece.iter().product::<usize>().max(1);
        if piece[d] < align[d] || elems * 2 > PIECE_ELEMS {
            break;
        }
        let room = (PIECE_ELEMS / elems).max(1);
        let most = shape[d].div_ceil(piece[d]).max(1);
        piece[d] *= room.min(most);
        if piece[d] < shape[d] {
            break;
        }
    }
    Pieces { piece, align }
}

/// Call `f(absolute, relative)` for each piece of `region`. Pieces never straddle a
/// chunk of the alignment grid, and all pieces of one chunk come one after the other
/// (chunks in row-major order, pieces within each in row-major order), so that a
/// chunk read in parts is decoded once and read while it is hot.
fn for_each_piece(
    region: &[Range<usize>],
    pieces: &Pieces,
    mut f: impl FnMut(&[Range<usize>], &[Range<usize>]) -> Result<(), ExecError>,
) -> Result<(), ExecError> {
    if region.iter().any(|r| r.is_empty()) {
        return Ok(());
    }
    // Per dimension, the outer segments: cut at the alignment grid (absolute
    // coordinates), or every piece from the region's start where there is none.
    let outer: Vec<Vec<Range<usize>>> = region
        .iter()
        .zip(&pieces.piece)
        .zip(&pieces.align)
        .map(|((r, &p), &a)| {
            let p = p.max(1);
            let unit = if a > 0 { p.max(a) } else { p };
            let mut segs = Vec::new();
            let mut s = r.start;
            while s < r.end {
                let e = if a > 0 {
                    ((s / unit + 1) * unit).min(r.end)
                } else {
                    (s + unit).min(r.end)
                };
                segs.push(s..e);
                s = e;
            }
            segs
        })
        .collect();
    let outer_grid: Vec<Range<usize>> = outer.iter().map(|v| 0..v.len()).collect();
    let mut o = vec![0usize; region.len()];
    let mut abs = region.to_vec();
    let mut rel = region.to_vec();
    loop {
        let seg: Vec<&Range<usize>> = o.iter().zip(&outer).map(|(&i, v)| &v[i]).collect();
        let inner_grid: Vec<Range<usize>> = seg.iter().zip(&pieces.piece).map(|(s, &p)| 0..s.len().div_ceil(p.max(1))).collect();
        let mut k = vec![0usize; region.len()];
        loop {
            for d in 0..region.len() {
                let p = pieces.piece[d].max(1);
                let start = seg[d].start + k[d] * p;
                abs[d] = start..(start + p).min(seg[d].end);
                rel[d] = abs[d].start - region[d].start..abs[d].end - region[d].start;
            }
            f(&abs, &rel)?;
            if !geometry::next_index(&mut k, &inner_grid) {
                break;
            }
        }
        if !geometry::next_index(&mut o, &outer_grid) {
            return Ok(());
        }
    }
}

/// The shape of a kernel leaf (an input, a const or a view of one); none for an
/// elementwise node.
fn leaf_shape(plan: &Plan, k: &Kernel) -> Vec<usize> {
    match k {
        Kernel::Map(..) => vec![],
        _ => plan.kernel_shape(k),
    }
}

/// The block `region` (right-aligned) of `take(src, table, axis)`: the const (or a view
/// of it) is whole in memory; its rows are picked by the table.
fn take_region(
    plan: &Plan,
    consts: &dyn Fn(u32) -> Option<Arc<ArrayD<f64>>>,
    k: &Kernel,
    region: &[Range<usize>],
) -> Result<ArrayD<f64>, ExecError> {
    let Kernel::Take(src, table, axis) = k else {
        unreachable!("a take")
    };
    let whole = match &**src {
        Kernel::Const(c) => (*consts(*c).ok_or(ExecError::MissingConst(*c))?).clone(),
        Kernel::View(leaf, v) => match **leaf {
            Kernel::Const(c) => v.apply(consts(c).ok_or(ExecError::MissingConst(c))?.view()),
            _ => unreachable!("take picks rows of consts"),
        },
        _ => unreachable!("take picks rows of consts"),
    };
    let r = operand_region(region, &leaf_shape(plan, k));
    let mut part = whole.view();
    for (d, range) in r.iter().enumerate() {
        if d != *axis {
            part.slice_axis_inplace(ndarray::Axis(d), ndarray::Slice::from(range.clone()));
        }
    }
    let rows: Vec<usize> = table[r[*axis].clone()].iter().map(|&g| g as usize).collect();
    Ok(part.select(ndarray::Axis(*axis), &rows))
}

/// A contraction over `region` of its whole space, as matrix products of its factors'
/// tiles: the sums over the region's extent of the summed axes (the kept axes, in
/// order), and the input bytes read.
fn contract_region(
    plan: &Plan,
    datasets: &[Source],
    consts: &dyn Fn(u32) -> Option<Arc<ArrayD<f64>>>,
    con: &gemm::Contraction,
    region: &[Range<usize>],
) -> Result<(ArrayD<f64>, u64), ExecError> {
    let (rx, ry) = con.factor_regions(region);
    let (x, vx, nx) = eval_factor(plan, datasets, consts, con.x, &rx)?;
    let (y, vy, ny) = eval_factor(plan, datasets, consts, con.y, &ry)?;
    let product = con.multiply(region, seen(&x, vx), seen(&y, vy));
    recycle(x);
    recycle(y);
    Ok((product, nx + ny))
}

/// An array through its view, if any (no copy).
fn seen<'a>(a: &'a ArrayD<f64>, v: Option<&View>) -> ndarray::ArrayViewD<'a, f64> {
    match v {
        Some(v) => v.apply_view(a.view()),
        None => a.view(),
    }
}

/// A factor of a contraction over `region`: a view of an input or const of the
/// stage's rank is read as stored and returned with its view, to be seen through
/// strides (a transposed operand is never copied); any other kernel is evaluated.
fn eval_factor<'k>(
    plan: &Plan,
    datasets: &[Source],
    consts: &dyn Fn(u32) -> Option<Arc<ArrayD<f64>>>,
    kernel: &'k Kernel,
    region: &[Range<usize>],
) -> Result<(ArrayD<f64>, Option<&'k View>, u64), ExecError> {
    if let Kernel::View(leaf, v) = kernel
        && v.dims.len() == region.len()
    {
        let src = v.source_region(&operand_region(region, &v.shape()));
        match **leaf {
            Kernel::Input(i) => {
                let a = read_pooled(&datasets[i as usize], &src).map_err(|e| read_error(plan, i, &src, e))?;
                let inp = &plan.inputs[i as usize];
                let n = if inp.generate.is_none() {
                    (a.len() * inp.dtype.size()) as u64
                } else {
                    0
                };
                return Ok((a, Some(v), n));
            }
            Kernel::Const(c) => {
                let whole = consts(c).ok_or(ExecError::MissingConst(c))?;
                let mut part = whole.view();
                for (d, r) in src.iter().enumerate() {
                    part.slice_axis_inplace(ndarray::Axis(d), ndarray::Slice::from(r.clone()));
                }
                return Ok((part.to_owned(), Some(v), 0));
            }
            _ => {}
        }
    }
    let (a, n) = eval_region(plan, datasets, consts, kernel, region)?;
    Ok((a, None, n))
}

/// Evaluate a kernel of a stage over `region` (in the stage's shape): the array of the
/// region's shape and the input bytes read.
fn eval_region(
    plan: &Plan,
    datasets: &[Source],
    consts: &dyn Fn(u32) -> Option<Arc<ArrayD<f64>>>,
    kernel: &Kernel,
    region: &[Range<usize>],
) -> Result<(ArrayD<f64>, u64), ExecError> {
    let (mut values, n) = eval_regions(plan, datasets, consts, &[kernel], region)?;
    Ok((values.pop().expect("one kernel"), n))
}

/// Evaluate kernels over one `region`: each input read once, and each sub-expression
/// found more than once (within a kernel or across them) computed once.
fn eval_regions(
    plan: &Plan,
    datasets: &[Source],
    consts: &dyn Fn(u32) -> Option<Arc<ArrayD<f64>>>,
    kernels: &[&Kernel],
    region: &[Range<usize>],
) -> Result<(Vec<ArrayD<f64>>, u64), ExecError> {
    let shape: Vec<usize> = region.iter().map(|r| r.len()).collect();
    let mut bytes_read = 0u64;
    let mut cache: Vec<(u32, ArrayD<f64>)> = Vec::new();
    let mut inputs: Vec<u32> = Vec::new();
    for k in kernels {
        for i in k.inputs() {
            if !inputs.contains(&i) {
                inputs.push(i);
            }
        }
    }
    let reused = |i: u32| inputs.len() > 1 || kernels.iter().map(|k| count_leaf(k, i)).sum::<usize>() > 1;
    let shared = kernel::repeated(kernels);
    let values = kernel::eval_shared(kernels, &shared, &mut |leaf| match leaf {
        Kernel::Input(i) => {
            if let Some((_, a)) = cache.iter().find(|(j, _)| j == i) {
                return Ok(a.clone());
            }
            let inp = &plan.inputs[*i as usize];
            let r = operand_region(region, &inp.shape);
            let a = read_pooled(&datasets[*i as usize], &r).map_err(|e| read_error(plan, *i, &r, e))?;
            if inp.generate.is_none() {
                bytes_read += (a.len() * inp.dtype.size()) as u64;
            }
            if reused(*i) {
                cache.push((*i, a.clone()));
            }
            Ok(a)
        }
        Kernel::Const(c) => {
            let whole = consts(*c).ok_or(ExecError::MissingConst(*c))?;
            Ok(kernel::const_slice(&whole, region))
        }
        Kernel::Take(..) => take_region(plan, consts, leaf, region),
        Kernel::Reshape(..) | Kernel::Along(..) => {
            let (a, n) = derived_region(plan, datasets, consts, leaf, &operand_region(region, &leaf_shape(plan, leaf)))?;
            bytes_read += n;
            Ok(a)
        }
        Kernel::View(leaf, v) => {
            // The source region this block of the view touches, read (or sliced) as
            // is, then strided, permuted and reshaped by the view.
            let src = v.source_region(&operand_region(region, &v.shape()));
            match **leaf {
                Kernel::Take(..) => Ok(v.apply(take_region(plan, consts, leaf, &src)?.view())),
                Kernel::Reshape(..) | Kernel::Along(..) => {
                    let (a, n) = derived_region(plan, datasets, consts, leaf, &src)?;
                    bytes_read += n;
                    Ok(v.apply(a.view()))
                }
                Kernel::Input(i) => {
                    let a = read_pooled(&datasets[i as usize], &src).map_err(|e| read_error(plan, i, &src, e))?;
                    if plan.inputs[i as usize].generate.is_none() {
                        bytes_read += (a.len() * plan.inputs[i as usize].dtype.size()) as u64;
                    }
                    Ok(v.apply(a.view()))
                }
                Kernel::Const(c) => {
                    let whole = consts(c).ok_or(ExecError::MissingConst(c))?;
                    let mut part = whole.view();
                    for (d, r) in src.iter().enumerate() {
                        part.slice_axis_inplace(ndarray::Axis(d), ndarray::Slice::from(r.clone()));
                    }
                    Ok(v.apply(part))
                }
                _ => unreachable!("views wrap leaves"),
            }
        }
        _ => unreachable!("eval only asks for leaves"),
    })?;
    Ok((values.into_iter().map(|v| materialize(v, &shape)).collect(), bytes_read))
}

/// `region` of a leaf computed from another region of its operand: a reshape (the
/// box of its operand the region needs, picked) or an operation along axes (whole
/// lanes, a halo, the start of a scan's segment; computed with its carry).
fn derived_region(
    plan: &Plan,
    datasets: &[Source],
    consts: &dyn Fn(u32) -> Option<Arc<ArrayD<f64>>>,
    k: &Kernel,
    region: &[Range<usize>],
) -> Result<(ArrayD<f64>, u64), ExecError> {
    match k {
        Kernel::Reshape(arg, r) => {
            let (a, n) = eval_region(plan, datasets, consts, arg, &r.source_region(region))?;
            Ok((r.pick(a, region), n))
        }
        Kernel::Along(arg, along) => {
            let (a, n) = eval_region(plan, datasets, consts, arg, &along.source_region(region))?;
            let carry = along.carry.map(|c| consts(c).ok_or(ExecError::MissingConst(c))).transpose()?;
            Ok((along.compute(a, region, carry.as_deref()), n))
        }
        _ => unreachable!("a reshape or an operation along axes"),
    }
}

fn count_leaf(k: &Kernel, input: u32) -> usize {
    match k {
        Kernel::Input(i) => usize::from(*i == input),
        Kernel::Map(_, args) => args.iter().map(|a| count_leaf(a, input)).sum(),
        _ => 0,
    }
}

/// Write `values` into `dst` as little-endian `dtype`: numpy's `astype` (floats
/// rounded to f32, truncation toward zero to integers, nonzero to true), except that a
/// value an integer dtype cannot hold (NaN, infinite, out of range) is returned as an
/// error instead of written as garbage.
fn put(dtype: OutDtype, dst: &mut [u8], values: &mut dyn Iterator<Item = f64>) -> Result<(), f64> {
    macro_rules! int {
        ($t:ty) => {{
            for (d, v) in dst.chunks_exact_mut(std::mem::size_of::<$t>()).zip(values) {
                let t = v.trunc();
                if !(t >= <$t>::MIN as f64 && t <= <$t>::MAX as f64) {
                    return Err(v);
                }
                d.copy_from_slice(&(t as $t).to_le_bytes());
            }
            Ok(())
        }};
    }
    match dtype {
        OutDtype::F64 => {
            dst.chunks_exact_mut(8)
                .zip(values)
                .for_each(|(d, v)| d.copy_from_slice(&v.to_le_bytes()));
            Ok(())
        }
        OutDtype::F32 => {
            dst.chunks_exact_mut(4)
                .zip(values)
                .for_each(|(d, v)| d.copy_from_slice(&(v as f32).to_le_bytes()));
            Ok(())
        }
        OutDtype::Bool => {
            dst.iter_mut().zip(values).for_each(|(d, v)| *d = u8::from(v != 0.0));
            Ok(())
        }
        OutDtype::I8 => int!(i8),
        OutDtype::I16 => int!(i16),
        OutDtype::I32 => int!(i32),
        OutDtype::I64 => int!(i64),
        OutDtype::U8 => int!(u8),
        OutDtype::U16 => int!(u16),
        OutDtype::U32 => int!(u32),
        OutDtype::U64 => int!(u64),
    }
}

/// Write `arr`, the values of the piece `rel` of a block of shape `shape`, at its place
/// in the block's little-endian payload; `Err(value)`: a value the dtype cannot hold.
fn encode_piece(arr: &ArrayD<f64>, rel: &[Range<usize>], shape: &[usize], dtype: OutDtype, payload: &mut [u8]) -> Result<(), f64> {
    let width = dtype.size();
    let rank = shape.len();
    if rank == 0 {
        return put(dtype, payload, &mut arr.iter().copied());
    }
    if rel.iter().any(|r| r.is_empty()) {
        return Ok(());
    }
    // The piece's values in row-major order: rows follow one another.
    let values = arr.as_slice();
    let mut all = arr.iter().copied();
    let piece: Vec<usize> = rel.iter().map(|r| r.len()).collect();
    let start: Vec<usize> = rel.iter().map(|r| r.start).collect();
    let block_origin = vec![0; rank];
    let mut bad = None;
    geometry::for_each_row(rel, (&start, &piece), (&block_origin, shape), |src, dst, run| {
        if bad.is_some() {
            return;
        }
        let out = &mut payload[dst * width..(dst + run) * width];
        let r = match values {
            Some(v) => put(dtype, out, &mut v[src..src + run].iter().copied()),
            None => put(dtype, out, &mut all.by_ref().take(run)),
        };
        bad = r.err();
    });
    bad.map_or(Ok(()), Err)
}

thread_local! {
    /// Piece-sized buffers reused across the pieces of this thread's blocks, so the hot
    /// loop allocates nothing large. (With glibc, a buffer of a few MiB otherwise comes
    /// from a fresh mmap, faulted in and zeroed page by page, whenever malloc's mmap
    /// threshold is pinned, for example by the MALLOC_TRIM_THRESHOLD_ that Python data
    /// stacks export: that made whole runs three times slower.)
    static POOL: std::cell::RefCell<Vec<Vec<f64>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Read a region into a pooled buffer.
fn read_pooled(r: &Source, region: &[Range<usize>]) -> hdf5::Result<ArrayD<f64>> {
    let shape: Vec<usize> = region.iter().map(|r| r.len()).collect();
    let n: usize = shape.iter().product();
    let mut v = POOL.with_borrow_mut(|p| p.pop()).unwrap_or_default();
    // Every element is overwritten by the read: only a longer buffer writes new zeros.
    if v.len() >= n {
        v.truncate(n);
    } else {
        v.resize(n, 0.0);
    }
    r.read_into(region, &mut v)?;
    Ok(ArrayD::from_shape_vec(IxDyn(&shape), v).expect("buffer of the region's size"))
}

/// Return an array's buffer to the pool.
fn recycle(a: ArrayD<f64>) {
    let (v, _) = a.into_raw_vec_and_offset();
    if v.capacity() >= 1 << 14 {
        POOL.with_borrow_mut(|p| {
            if p.len() < 4 {
                p.push(v);
            }
        });
    }
}

/// Decode a reduce-stage payload into per-const partial arrays.
pub fn decode_partials(plan: &Plan, stage: u32, block: u64, payload: &[u8]) -> Option<Vec<(u32, Vec<ArrayD<f64>>)>> {
    let st = &plan.stages[stage as usize];
    let StageKind::Reduce { consts } = &st.kind else { return None };
    let region = block_region(&st.shape, &st.block, block);
    let mut off = 0;
    let mut out = Vec::new();
    for &c in consts {
        let spec = &plan.consts[c as usize];
        let lens: Vec<usize> = region.iter().map(|r| r.len()).collect();
        let shape = reduce::partial_shape(spec, &lens);
        // A grouped reduction sends one partial per group present in the block.
        let groups = spec.groups.as_ref().map_or(1, |g| g.present(region[spec.axes[0]].clone()).len());
        let parts = (0..partial_arity(spec.op) * groups)
            .map(|_| take_f64(payload, &mut off, &shape))
            .collect::<Option<Vec<_>>>()?;
        out.push((c, parts));
    }
    (off == payload.len()).then_some(out)
}
