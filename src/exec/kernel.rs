//! Blockwise evaluation of kernels, partial reductions, and their merging.
//!
//! All arithmetic is in f64 with numpy broadcasting. Partials are combined so that the
//! results match numpy's float64 results closely: sums per block, means from sums and
//! exact counts, variances with Chan's parallel update of (count, mean, M2).

use std::ops::Range;

use ndarray::{ArrayD, ArrayRef, ArrayViewD, Axis, IxDyn, Zip};

use super::expr::BinOp;
use super::geometry::{kept, operand_region};
use super::plan::{ConstSpec, Func, Kernel, ReduceOp};

/// A value during evaluation: numbers stay scalars until they meet an array.
pub enum Value {
    Scalar(f64),
    Array(ArrayD<f64>),
}

fn apply_bin(op: BinOp, a: f64, b: f64) -> f64 {
    match op {
        BinOp::Add => a + b,
        BinOp::Sub => a - b,
        BinOp::Mul => a * b,
        BinOp::Div => a / b,
        BinOp::Pow => pow(a, b),
    }
}

#[inline]
fn pow(a: f64, b: f64) -> f64 {
    if b == 2.0 { a * a } else { a.powf(b) }
}

fn apply_func(f: Func, v: f64) -> f64 {
    match f {
        Func::Abs => v.abs(),
        Func::Sqrt => v.sqrt(),
        Func::Exp => v.exp(),
        Func::Log => v.ln(),
        Func::Sin => v.sin(),
        Func::Cos => v.cos(),
    }
}

fn broadcast_shape(a: &[usize], b: &[usize]) -> Vec<usize> {
    super::geometry::broadcast(a, b).expect("shapes checked at plan time")
}

fn bin(op: BinOp, a: Value, b: Value) -> Value {
    match (a, b) {
        (Value::Scalar(x), Value::Scalar(y)) => Value::Scalar(apply_bin(op, x, y)),
        (Value::Array(mut x), Value::Scalar(y)) => {
            x.mapv_inplace(|v| apply_bin(op, v, y));
            Value::Array(x)
        }
        (Value::Scalar(x), Value::Array(mut y)) => {
            y.mapv_inplace(|v| apply_bin(op, x, v));
            Value::Array(y)
        }
        (Value::Array(mut x), Value::Array(mut y)) => {
            let shape = broadcast_shape(x.shape(), y.shape());
            if x.shape() == shape.as_slice() {
                let yb = y.broadcast(IxDyn(&shape)).expect("broadcastable");
                Zip::from(&mut x).and(&yb).for_each(|a, &b| *a = apply_bin(op, *a, b));
                Value::Array(x)
            } else if y.shape() == shape.as_slice() {
                let xb = x.broadcast(IxDyn(&shape)).expect("broadcastable");
                Zip::from(&mut y).and(&xb).for_each(|b, &a| *b = apply_bin(op, a, *b));
                Value::Array(y)
            } else {
                let xb = x.broadcast(IxDyn(&shape)).expect("broadcastable");
                let yb = y.broadcast(IxDyn(&shape)).expect("broadcastable");
                Value::Array(Zip::from(&xb).and(&yb).map_collect(|&a, &b| apply_bin(op, a, b)))
            }
        }
    }
}

/// Evaluate a kernel; `leaf` produces the block of an input or const leaf.
pub fn eval<E>(k: &Kernel, leaf: &mut impl FnMut(&Kernel) -> Result<ArrayD<f64>, E>) -> Result<Value, E> {
    Ok(match k {
        Kernel::Num(v) => Value::Scalar(*v),
        Kernel::Input(_) | Kernel::Const(_) => Value::Array(leaf(k)?),
        Kernel::Neg(a) => match eval(a, leaf)? {
            Value::Scalar(v) => Value::Scalar(-v),
            Value::Array(mut x) => {
                x.mapv_inplace(|v| -v);
                Value::Array(x)
            }
        },
        Kernel::Func(f, a) => match eval(a, leaf)? {
            Value::Scalar(v) => Value::Scalar(apply_func(*f, v)),
            Value::Array(mut x) => {
                x.mapv_inplace(|v| apply_func(*f, v));
                Value::Array(x)
            }
        },
        Kernel::Bin(op, a, b) => {
            let va = eval(a, leaf)?;
            let vb = eval(b, leaf)?;
            bin(*op, va, vb)
        }
    })
}

/// Materialize a value over a block shape (broadcasting scalars and smaller arrays).
pub fn materialize(v: Value, shape: &[usize]) -> ArrayD<f64> {
    match v {
        Value::Scalar(s) => ArrayD::from_elem(IxDyn(shape), s),
        Value::Array(a) if a.shape() == shape => a,
        Value::Array(a) => a.broadcast(IxDyn(shape)).expect("broadcastable").to_owned(),
    }
}

/// The slice of a whole const array that a block needs.
pub fn const_slice(c: &ArrayD<f64>, region: &[Range<usize>]) -> ArrayD<f64> {
    let r = operand_region(region, c.shape());
    let mut v: ArrayViewD<f64> = c.view();
    for (d, range) in r.iter().enumerate() {
        v.slice_axis_inplace(Axis(d), ndarray::Slice::from(range.clone()));
    }
    v.to_owned()
}

fn nan_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() { f64::NAN } else { a.min(b) }
}

fn nan_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() { f64::NAN } else { a.max(b) }
}

/// Reduce `a` over `axes` keeping them as length-1 dimensions.
fn fold_keep(a: &ArrayRef<f64, IxDyn>, axes: &[usize], init: f64, f: fn(f64, f64) -> f64) -> ArrayD<f64> {
    let mut out = a.to_owned();
    for &ax in axes {
        let folded = out.fold_axis(Axis(ax), init, |&acc, &v| f(acc, v));
        out = folded.insert_axis(Axis(ax));
    }
    out
}

fn sum_keep(a: &ArrayRef<f64, IxDyn>, axes: &[usize]) -> ArrayD<f64> {
    let mut out: Option<ArrayD<f64>> = None;
    for &ax in axes {
        let src: &ArrayRef<f64, IxDyn> = out.as_deref().unwrap_or(a);
        out = Some(src.sum_axis(Axis(ax)).insert_axis(Axis(ax)));
    }
    out.unwrap_or_else(|| a.to_owned())
}

fn drop_axes(a: ArrayD<f64>, axes: &[usize]) -> ArrayD<f64> {
    let mut a = a;
    for &ax in axes.iter().rev() {
        a = a.index_axis_move(Axis(ax), 0);
    }
    a
}

/// Partial result of one reduction over one block: one or two arrays of the block's
/// reduced shape (`Var`/`Std`: mean and M2; the count follows from the geometry).
pub fn partial(op: ReduceOp, block: &ArrayRef<f64, IxDyn>, axes: &[usize]) -> Vec<ArrayD<f64>> {
    if let Some(p) = partial_contiguous(op, block, axes) {
        return p;
    }
    match op {
        ReduceOp::Sum | ReduceOp::Mean => vec![drop_axes(sum_keep(block, axes), axes)],
        ReduceOp::Min => vec![drop_axes(fold_keep(block, axes, f64::INFINITY, nan_min), axes)],
        ReduceOp::Max => vec![drop_axes(fold_keep(block, axes, f64::NEG_INFINITY, nan_max), axes)],
        ReduceOp::Var | ReduceOp::Std => {
            let n: usize = axes.iter().map(|&a| block.shape()[a]).product();
            let mut mean = sum_keep(block, axes);
            mean.mapv_inplace(|s| s / n as f64);
            let meanb = mean.broadcast(block.raw_dim()).expect("keepdims broadcast");
            let mut dev = block.to_owned();
            Zip::from(&mut dev).and(&meanb).for_each(|d, &m| {
                let x = *d - m;
                *d = x * x;
            });
            let m2 = sum_keep(&dev, axes);
            vec![drop_axes(mean, axes), drop_axes(m2, axes)]
        }
    }
}

/// [`partial`] over a block in standard (row-major, contiguous) layout whose reduced
/// axes are leading or trailing: plain loops over slices that the compiler vectorizes
/// (ndarray's generic axis folds over dynamic-rank arrays ran at a quarter of memory
/// speed). `None` for any other layout.
fn partial_contiguous(op: ReduceOp, block: &ArrayRef<f64, IxDyn>, axes: &[usize]) -> Option<Vec<ArrayD<f64>>> {
    partial_slice(op, block.as_slice()?, block.shape(), axes)
}

/// A stored element type, widened to f64 as it is read.
pub trait Elem: Copy {
    fn f64(self) -> f64;
}

macro_rules! elem {
    ($($t:ty),*) => {$(
        impl Elem for $t {
            #[inline(always)]
            fn f64(self) -> f64 {
                self as f64
            }
        }
    )*};
}
elem!(i8, i16, i32, i64, u8, u16, u32, u64, f32, f64);

/// [`partial`] of stored values of any numeric type, widened to f64 as they are
/// folded: no f64 copy of the values is made when the layout allows the contiguous
/// loops; otherwise the values are widened first.
pub fn partial_typed<T: Elem>(op: ReduceOp, block: &ndarray::ArrayViewD<'_, T>, axes: &[usize]) -> Vec<ArrayD<f64>> {
    if let Some(p) = block.as_slice().and_then(|d| partial_slice(op, d, block.shape(), axes)) {
        return p;
    }
    partial(op, &block.mapv(Elem::f64), axes)
}

/// [`partial_contiguous`] over row-major values of `shape`.
fn partial_slice<T: Elem>(op: ReduceOp, data: &[T], shape: &[usize], axes: &[usize]) -> Option<Vec<ArrayD<f64>>> {
    let rank = shape.len();
    let (&first, &last) = (axes.first()?, axes.last()?);
    if axes.windows(2).any(|w| w[1] != w[0] + 1) || data.is_empty() {
        return None;
    }
    let kept = kept(shape, axes);
    let out = |v: Vec<f64>| ArrayD::from_shape_vec(IxDyn(&kept), v).expect("reduced shape");
    if first == 0 {
        // Leading axes: fold whole rows of the kept trailing dimensions into one row.
        let inner: usize = shape[last + 1..].iter().product();
        let rows = data.chunks_exact(inner);
        let n = (data.len() / inner) as f64;
        // Rows are folded in order, as numpy does along a leading axis ([`fold_rows`]).
        let fold = |init: f64, f: fn(f64, f64) -> f64| {
            let mut acc = vec![init; inner];
            fold_rows(&mut acc, data, f);
            acc
        };
        return Some(match op {
            ReduceOp::Sum | ReduceOp::Mean => vec![out(fold(0.0, |a, x| a + x))],
            ReduceOp::Min => vec![out(fold(f64::INFINITY, nan_min))],
            ReduceOp::Max => vec![out(fold(f64::NEG_INFINITY, nan_max))],
            ReduceOp::Var | ReduceOp::Std => {
                let mut mean = fold(0.0, |a, x| a + x);
                mean.iter_mut().for_each(|m| *m /= n);
                let mut m2 = vec![0.0; inner];
                for row in rows {
                    m2.iter_mut()
                        .zip(row)
                        .zip(&mean)
                        .for_each(|((s, &x), &m)| *s += (x.f64() - m) * (x.f64() - m));
                }
                vec![out(mean), out(m2)]
            }
        });
    }
    if last + 1 == rank {
        // Trailing axes: each kept element folds one contiguous run.
        let run: usize = shape[first..].iter().product();
        let runs = data.chunks_exact(run);
        return Some(match op {
            ReduceOp::Sum | ReduceOp::Mean => vec![out(runs.map(sum_run).collect())],
            ReduceOp::Min => vec![out(runs
                .map(|r| r.iter().fold(f64::INFINITY, |a, &x| nan_min(a, x.f64())))
                .collect())],
            ReduceOp::Max => vec![out(runs
                .map(|r| r.iter().fold(f64::NEG_INFINITY, |a, &x| nan_max(a, x.f64())))
                .collect())],
            ReduceOp::Var | ReduceOp::Std => {
                let (means, m2s): (Vec<f64>, Vec<f64>) = runs
                    .map(|r| {
                        let m = sum_run(r) / run as f64;
                        (m, r.iter().map(|&x| (x.f64() - m) * (x.f64() - m)).sum::<f64>())
                    })
                    .unzip();
                vec![out(means), out(m2s)]
            }
        });
    }
    None
}

/// The sum of a run, in eight interleaved lanes (vectorizable, and closer to numpy's
/// pairwise sum than one running total).
fn sum_run<T: Elem>(r: &[T]) -> f64 {
    let mut lanes = [0.0f64; 8];
    let chunks = r.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|&x| x.f64()).sum();
    for c in chunks {
        lanes.iter_mut().zip(c).for_each(|(l, &x)| *l += x.f64());
    }
    lanes.iter().sum::<f64>() + tail
}

/// Fold rows of `data` (each as long as `acc`) into `acc` in order, four rows per
/// pass (the accumulator row is loaded and stored a quarter as often).
fn fold_rows<T: Elem>(acc: &mut [f64], data: &[T], f: impl Fn(f64, f64) -> f64) {
    let inner = acc.len();
    let quads = data.chunks_exact(4 * inner);
    let rest = quads.remainder();
    for q in quads {
        let (r0, q) = q.split_at(inner);
        let (r1, q) = q.split_at(inner);
        let (r2, r3) = q.split_at(inner);
        for i in 0..inner {
            acc[i] = f(f(f(f(acc[i], r0[i].f64()), r1[i].f64()), r2[i].f64()), r3[i].f64());
        }
    }
    for row in rest.chunks_exact(inner) {
        acc.iter_mut().zip(row).for_each(|(a, &x)| *a = f(*a, x.f64()));
    }
}

/// Number of arrays in a partial of `op`.
pub fn partial_arity(op: ReduceOp) -> usize {
    match op {
        ReduceOp::Var | ReduceOp::Std => 2,
        _ => 1,
    }
}

/// Merges partials of one const as they arrive, then finalizes it.
pub struct Accumulator {
    op: ReduceOp,
    axes: Vec<usize>,
    /// Total count per result element (product of reduced extents of the whole stage).
    total: f64,
    a: ArrayD<f64>,
    /// Var/Std: M2 and the per-element count so far.
    m2: Option<(ArrayD<f64>, ArrayD<f64>)>,
}

impl Accumulator {
    pub fn new(spec: &ConstSpec, stage_shape: &[usize]) -> Self {
        let shape = IxDyn(&spec.shape);
        let total: usize = spec.axes.iter().map(|&a| stage_shape[a]).product();
        let (a, m2) = match spec.op {
            ReduceOp::Sum | ReduceOp::Mean => (ArrayD::zeros(shape), None),
            ReduceOp::Min => (ArrayD::from_elem(shape, f64::INFINITY), None),
            ReduceOp::Max => (ArrayD::from_elem(shape, f64::NEG_INFINITY), None),
            ReduceOp::Var | ReduceOp::Std => (
                ArrayD::zeros(shape.clone()),
                Some((ArrayD::zeros(shape.clone()), ArrayD::zeros(shape))),
            ),
        };
        Self {
            op: spec.op,
            axes: spec.axes.clone(),
            total: total as f64,
            a,
            m2,
        }
    }

    /// Merge the partial of the block covering `region` (in the stage's shape).
    pub fn merge(&mut self, region: &[Range<usize>], parts: Vec<ArrayD<f64>>) {
        let out_region = kept(region, &self.axes);
        let n_b: f64 = self.axes.iter().map(|&a| region[a].len()).product::<usize>() as f64;
        let mut view = self.a.view_mut();
        for (d, r) in out_region.iter().enumerate() {
            view.slice_axis_inplace(Axis(d), ndarray::Slice::from(r.clone()));
        }
        let mut parts = parts.into_iter();
        let p0 = parts.next().expect("at least one partial array");
        match self.op {
            ReduceOp::Sum | ReduceOp::Mean => Zip::from(&mut view).and(&p0).for_each(|a, &b| *a += b),
            ReduceOp::Min => Zip::from(&mut view).and(&p0).for_each(|a, &b| *a = nan_min(*a, b)),
            ReduceOp::Max => Zip::from(&mut view).and(&p0).for_each(|a, &b| *a = nan_max(*a, b)),
            ReduceOp::Var | ReduceOp::Std => {
                let pm2 = parts.next().expect("M2 partial");
                let (m2, cnt) = self.m2.as_mut().expect("var accumulator");
                let mut m2v = m2.view_mut();
                let mut cv = cnt.view_mut();
                for (d, r) in out_region.iter().enumerate() {
                    m2v.slice_axis_inplace(Axis(d), ndarray::Slice::from(r.clone()));
                    cv.slice_axis_inplace(Axis(d), ndarray::Slice::from(r.clone()));
                }
                Zip::from(&mut view)
                    .and(&mut m2v)
                    .and(&mut cv)
                    .and(&p0)
                    .and(&pm2)
                    .for_each(|mean, m2, n_a, &mean_b, &m2_b| {
                        let n = *n_a + n_b;
                        let delta = mean_b - *mean;
                        *mean += delta * n_b / n;
                        *m2 += m2_b + delta * delta * *n_a * n_b / n;
                        *n_a = n;
                    });
            }
        }
    }

    /// Fold the values of `region` (block-relative) straight into the accumulator,
    /// when they are row-major, the reduced axes lead, the accumulated part is
    /// contiguous, and the op is a plain fold (sum, mean, min, max): no partial array
    /// is made and nothing is merged. `false`: nothing done; use [`partial`] and
    /// [`Accumulator::merge`].
    pub fn fold_in<T: Elem>(&mut self, region: &[Range<usize>], values: &ndarray::ArrayViewD<'_, T>) -> bool {
        if !matches!(self.op, ReduceOp::Sum | ReduceOp::Mean | ReduceOp::Min | ReduceOp::Max)
            || self.axes.first() != Some(&0)
            || self.axes.windows(2).any(|w| w[1] != w[0] + 1)
        {
            return false;
        }
        let Some(data) = values.as_slice() else { return false };
        let mut view = self.a.view_mut();
        for (d, r) in kept(region, &self.axes).iter().enumerate() {
            view.slice_axis_inplace(Axis(d), ndarray::Slice::from(r.clone()));
        }
        let Some(acc) = view.as_slice_mut() else { return false };
        if acc.is_empty() || data.len() % acc.len() != 0 {
            return false;
        }
        match self.op {
            ReduceOp::Sum | ReduceOp::Mean => fold_rows(acc, data, |a, x| a + x),
            ReduceOp::Min => fold_rows(acc, data, nan_min),
            ReduceOp::Max => fold_rows(acc, data, nan_max),
            ReduceOp::Var | ReduceOp::Std => unreachable!("checked above"),
        }
        true
    }

    /// The merged state in the form of a [`partial`] (sum; min/max; mean and M2), for
    /// a block reduced in pieces.
    pub fn into_partial(self) -> Vec<ArrayD<f64>> {
        match self.op {
            ReduceOp::Sum | ReduceOp::Mean | ReduceOp::Min | ReduceOp::Max => vec![self.a],
            ReduceOp::Var | ReduceOp::Std => {
                let (m2, _) = self.m2.expect("var accumulator");
                vec![self.a, m2]
            }
        }
    }

    /// The final array.
    pub fn finish(self) -> ArrayD<f64> {
        let total = self.total;
        match self.op {
            ReduceOp::Sum | ReduceOp::Min | ReduceOp::Max => self.a,
            ReduceOp::Mean => self.a.mapv_into(|s| s / total),
            ReduceOp::Var => self.m2.expect("var").0.mapv_into(|m2| m2 / total),
            ReduceOp::Std => self.m2.expect("std").0.mapv_into(|m2| (m2 / total).sqrt()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::geometry::{block_count, block_region};
    use ndarray::{ArrayD, ShapeBuilder};

    fn data(shape: &[usize]) -> ArrayD<f64> {
        let n: usize = shape.iter().product();
        ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(|i| ((i * 7919) % 101) as f64 * 0.37 + 250.0).collect()).unwrap()
    }

    fn reduce_blockwise(op: ReduceOp, a: &ArrayD<f64>, axes: &[usize], block: &[usize]) -> ArrayD<f64> {
        let shape = kept(a.shape(), axes);
        let spec = ConstSpec {
            op,
            axes: axes.to_vec(),
            shape,
            stage: 0,
        };
        let mut acc = Accumulator::new(&spec, a.shape());
        for i in 0..block_count(a.shape(), block) {
            let region = block_region(a.shape(), block, i);
            let blk = const_slice(a, &region);
            acc.merge(&region, partial(op, &blk, axes));
        }
        acc.finish()
    }

    fn close(a: &ArrayD<f64>, b: &ArrayD<f64>) {
        assert_eq!(a.shape(), b.shape());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-11 * y.abs().max(1e-300), "{x} vs {y}");
        }
    }

    #[test]
    fn blockwise_reductions_equal_whole_array_ones() {
        let a = data(&[13, 7, 5]);
        let whole_mean = a.mean_axis(Axis(0)).unwrap();
        close(&reduce_blockwise(ReduceOp::Mean, &a, &[0], &[4, 3, 5]), &whole_mean);
        let whole_sum = a.sum_axis(Axis(2)).sum_axis(Axis(0));
        close(&reduce_blockwise(ReduceOp::Sum, &a, &[0, 2], &[5, 2, 2]), &whole_sum);
        let var1 = a.var_axis(Axis(1), 0.0);
        close(&reduce_blockwise(ReduceOp::Var, &a, &[1], &[3, 2, 4]), &var1);
        let std1 = a.std_axis(Axis(1), 0.0);
        close(&reduce_blockwise(ReduceOp::Std, &a, &[1], &[3, 2, 4]), &std1);
        let mx = reduce_blockwise(ReduceOp::Max, &a, &[0, 1, 2], &[4, 4, 4]);
        assert_eq!(mx.shape(), &[] as &[usize]);
        assert_eq!(mx[[]], a.iter().cloned().fold(f64::MIN, f64::max));
    }

    #[test]
    fn contiguous_fast_paths_equal_the_generic_folds() {
        // A Fortran-ordered copy has the same values but no row-major slice, so
        // `partial` takes ndarray's generic path for it.
        let generic = |a: &ArrayD<f64>| {
            let mut f = ArrayD::zeros(IxDyn(a.shape()).f());
            f.assign(a);
            f
        };
        let mut a = data(&[9, 5, 6]);
        a[[3, 2, 1]] = f64::NAN;
        assert!(generic(&a).as_slice().is_none());
        let ops = [
            ReduceOp::Sum,
            ReduceOp::Mean,
            ReduceOp::Min,
            ReduceOp::Max,
            ReduceOp::Var,
            ReduceOp::Std,
        ];
        let axes: [&[usize]; 6] = [&[0], &[0, 1], &[2], &[1, 2], &[0, 1, 2], &[1]];
        for op in ops {
            for ax in axes {
                let fast = partial(op, &a, ax);
                let slow = partial(op, &generic(&a), ax);
                assert_eq!(fast.len(), slow.len());
                for (f, s) in fast.iter().zip(&slow) {
                    assert_eq!(f.shape(), s.shape(), "{op:?} over {ax:?}");
                    for (x, y) in f.iter().zip(s) {
                        let same = (x.is_nan() && y.is_nan()) || (x - y).abs() <= 1e-12 * y.abs().max(1.0);
                        assert!(same, "{op:?} over {ax:?}: {x} vs {y}");
                    }
                }
            }
        }
        // Fewer rows than one four-row pass, and a remainder after whole passes.
        for rows in [2, 3, 4, 7] {
            let b = data(&[rows, 11]);
            let fast = partial(ReduceOp::Sum, &b, &[0]);
            let slow = partial(ReduceOp::Sum, &generic(&b), &[0]);
            assert_eq!(fast, slow, "{rows} rows");
        }
    }

    #[test]
    fn min_max_propagate_nan_like_numpy() {
        let mut a = data(&[4, 4]);
        a[[2, 1]] = f64::NAN;
        let mn = reduce_blockwise(ReduceOp::Min, &a, &[0], &[2, 2]);
        assert!(mn[[1]].is_nan());
        assert!(!mn[[0]].is_nan());
    }

    #[test]
    fn evaluation_broadcasts() {
        let x = data(&[3, 4]);
        let y = ArrayD::from_shape_vec(IxDyn(&[4]), vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let k = Kernel::Bin(BinOp::Sub, Box::new(Kernel::Input(0)), Box::new(Kernel::Const(0)));
        let v = eval::<()>(&k, &mut |leaf| {
            Ok(if matches!(leaf, Kernel::Input(_)) { x.clone() } else { y.clone() })
        })
        .unwrap();
        let out = materialize(v, &[3, 4]);
        assert_eq!(out[[2, 3]], x[[2, 3]] - 4.0);
        let k = Kernel::Bin(BinOp::Sub, Box::new(Kernel::Num(1.0)), Box::new(Kernel::Const(0)));
        let v = eval::<()>(&k, &mut |_| Ok(y.clone())).unwrap();
        assert_eq!(materialize(v, &[2, 4])[[1, 1]], -1.0);
    }
}
