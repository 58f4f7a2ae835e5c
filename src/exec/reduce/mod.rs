//! Reductions: the tree-reduction primitive (a partial per block, merged as blocks
//! arrive, finalized once) and the registry of reductions built on it.
//!
//! Most reductions are *folds*: a start value, a step that takes one element in, and
//! a merge of two partial results ([`Fold`]). A reduction is one or two folds plus a
//! finish: `mean` is a sum divided by the count, `nanmean` a NaN-skipping sum divided
//! by the count of non-NaN values. `var` and `std` merge (count, mean, M2) with Chan's
//! parallel update. Sums along leading axes run row by row, as numpy's do; along
//! trailing axes in eight interleaved lanes, close to numpy's pairwise sums.

use ndarray::{ArrayD, ArrayRef, Axis, IxDyn, Zip};
use serde::{Deserialize, Serialize};

use super::geometry::kept;
use super::ops::Kind;
use super::plan::ConstSpec;

/// A reduction, by numpy's name ([`REDUCTIONS`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReduceOp {
    Sum,
    Mean,
    Min,
    Max,
    Var,
    Std,
    Prod,
    NanSum,
    NanMean,
    NanMin,
    NanMax,
    NanProd,
    CountNonzero,
    Any,
    All,
    NanVar,
    NanStd,
    ArgMin,
    ArgMax,
    NanArgMin,
    NanArgMax,
    /// Counts in `bins` equal bins over `range` ([`Histogram`]), over all elements.
    Histogram,
}

/// The bins of a histogram: `bins` equal bins from `lo` to `hi`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub bins: usize,
    pub lo: f64,
    pub hi: f64,
}

impl Histogram {
    /// numpy's bin of `v` (edges as `linspace(lo, hi, bins + 1)`, the last bin closed
    /// on the right), or `None` outside the range or NaN.
    #[inline]
    pub fn bin(&self, v: f64) -> Option<usize> {
        if !(v >= self.lo && v <= self.hi) {
            return None;
        }
        let n = self.bins;
        let step = (self.hi - self.lo) / n as f64;
        let edge = |i: usize| if i == n { self.hi } else { i as f64 * step + self.lo };
        let mut i = (((v - self.lo) * (n as f64 / (self.hi - self.lo))) as usize).min(n - 1);
        // The computed index can be one off near an edge; the edges decide, as numpy's.
        if v < edge(i) {
            i -= 1;
        } else if i + 1 < n && v >= edge(i + 1) {
            i += 1;
        }
        Some(i)
    }

    fn counts(&self, values: impl Iterator<Item = f64>) -> ArrayD<f64> {
        let mut c = vec![0.0; self.bins];
        for v in values {
            if let Some(i) = self.bin(v) {
                c[i] += 1.0;
            }
        }
        ArrayD::from_shape_vec(IxDyn(&[self.bins]), c).expect("bins")
    }
}

/// How a reduction is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// One or more folds, then a finish.
    Folds(&'static [Fold]),
    /// Mean and M2 merged with Chan's update; `skip_nan`: counts per element.
    Moments { skip_nan: bool },
    /// The index of the extreme value (first on ties).
    Arg { max: bool, skip_nan: bool },
    /// Counts per bin.
    Histogram,
}

/// The result kind of a reduction from its argument's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceKind {
    /// Sums and products: booleans count as integers.
    Count,
    /// Minimum and maximum keep the kind.
    Same,
    Float,
    Int,
    Bool,
}

/// One reduction of the registry.
pub struct ReduceDef {
    pub name: &'static str,
    pub op: ReduceOp,
    pub kind: ReduceKind,
}

macro_rules! reductions {
    ($($name:literal => $op:ident, $kind:ident;)*) => {
        /// Every reduction, by numpy's name.
        pub static REDUCTIONS: &[ReduceDef] = &[$(ReduceDef { name: $name, op: ReduceOp::$op, kind: ReduceKind::$kind }),*];
    };
}

reductions! {
    "sum" => Sum, Count;
    "mean" => Mean, Float;
    "min" => Min, Same;
    "max" => Max, Same;
    "var" => Var, Float;
    "std" => Std, Float;
    "prod" => Prod, Count;
    "nansum" => NanSum, Count;
    "nanmean" => NanMean, Float;
    "nanmin" => NanMin, Same;
    "nanmax" => NanMax, Same;
    "nanprod" => NanProd, Count;
    "count_nonzero" => CountNonzero, Int;
    "any" => Any, Bool;
    "all" => All, Bool;
    "nanvar" => NanVar, Float;
    "nanstd" => NanStd, Float;
    "argmin" => ArgMin, Int;
    "argmax" => ArgMax, Int;
    "nanargmin" => NanArgMin, Int;
    "nanargmax" => NanArgMax, Int;
    "histogram" => Histogram, Int;
}

impl ReduceDef {
    pub fn named(name: &str) -> Option<&'static ReduceDef> {
        REDUCTIONS.iter().find(|r| r.name == name)
    }

    pub fn result_kind(&self, arg: Kind) -> Kind {
        match self.kind {
            ReduceKind::Count => arg.max(Kind::Index),
            ReduceKind::Same => arg,
            ReduceKind::Float => Kind::Float,
            ReduceKind::Int => Kind::Index,
            ReduceKind::Bool => Kind::Bool,
        }
    }
}

/// A fold: start value, step over elements, merge of partial results.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fold {
    Sum,
    Prod,
    /// NaN-propagating, as numpy's min/max.
    Min,
    Max,
    /// NaN-skipping; NaN when every element is NaN.
    NanMin,
    NanMax,
    NanSum,
    NanProd,
    /// Count of nonzero elements (NaN is nonzero).
    Nonzero,
    /// Count of non-NaN elements.
    Valid,
    Any,
    All,
}

pub(super) fn nan_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() { f64::NAN } else { a.min(b) }
}

pub(super) fn nan_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() { f64::NAN } else { a.max(b) }
}

/// Run `$body` with `$init`, `$step` and `$merge` bound to a fold's start value and
/// (inlined, monomorphized) closures.
macro_rules! with_fold {
    ($fold:expr, |$init:ident, $step:ident, $merge:ident| $body:expr) => {{
        macro_rules! arm {
            ($i:expr, $s:expr, $m:expr) => {{
                let $init: f64 = $i;
                let $step = $s;
                let $merge = $m;
                let _ = (&$step, &$merge);
                $body
            }};
        }
        let add = |a: f64, b: f64| a + b;
        let mul = |a: f64, b: f64| a * b;
        match $fold {
            $crate::exec::reduce::Fold::Sum => arm!(0.0, add, add),
            $crate::exec::reduce::Fold::Prod => arm!(1.0, mul, mul),
            $crate::exec::reduce::Fold::Min => arm!(f64::INFINITY, $crate::exec::reduce::nan_min, $crate::exec::reduce::nan_min),
            $crate::exec::reduce::Fold::Max => arm!(f64::NEG_INFINITY, $crate::exec::reduce::nan_max, $crate::exec::reduce::nan_max),
            $crate::exec::reduce::Fold::NanMin => arm!(f64::NAN, f64::min, f64::min),
            $crate::exec::reduce::Fold::NanMax => arm!(f64::NAN, f64::max, f64::max),
            $crate::exec::reduce::Fold::NanSum => arm!(0.0, |a: f64, x: f64| if x.is_nan() { a } else { a + x }, add),
            $crate::exec::reduce::Fold::NanProd => arm!(1.0, |a: f64, x: f64| if x.is_nan() { a } else { a * x }, mul),
            $crate::exec::reduce::Fold::Nonzero => arm!(0.0, |a: f64, x: f64| a + f64::from(u8::from(x != 0.0)), add),
            $crate::exec::reduce::Fold::Valid => arm!(0.0, |a: f64, x: f64| a + f64::from(u8::from(!x.is_nan())), add),
            $crate::exec::reduce::Fold::Any => arm!(0.0, |a: f64, x: f64| a.max(f64::from(u8::from(x != 0.0))), f64::max),
            $crate::exec::reduce::Fold::All => arm!(1.0, |a: f64, x: f64| a.min(f64::from(u8::from(x != 0.0))), f64::min),
        }
    }};
}
pub(super) use with_fold;

impl ReduceOp {
    /// The folds of a fold-based reduction (empty for var and std).
    pub fn folds(self) -> &'static [Fold] {
        match self {
            ReduceOp::Sum | ReduceOp::Mean => &[Fold::Sum],
            ReduceOp::Min => &[Fold::Min],
            ReduceOp::Max => &[Fold::Max],
            ReduceOp::Prod => &[Fold::Prod],
            ReduceOp::NanSum => &[Fold::NanSum],
            ReduceOp::NanMean => &[Fold::NanSum, Fold::Valid],
            ReduceOp::NanMin => &[Fold::NanMin],
            ReduceOp::NanMax => &[Fold::NanMax],
            ReduceOp::NanProd => &[Fold::NanProd],
            ReduceOp::CountNonzero => &[Fold::Nonzero],
            ReduceOp::Any => &[Fold::Any],
            ReduceOp::All => &[Fold::All],
            _ => &[],
        }
    }

    pub fn form(self) -> Form {
        match self {
            ReduceOp::Var | ReduceOp::Std => Form::Moments { skip_nan: false },
            ReduceOp::NanVar | ReduceOp::NanStd => Form::Moments { skip_nan: true },
            ReduceOp::ArgMin => Form::Arg {
                max: false,
                skip_nan: false,
            },
            ReduceOp::ArgMax => Form::Arg {
                max: true,
                skip_nan: false,
            },
            ReduceOp::NanArgMin => Form::Arg {
                max: false,
                skip_nan: true,
            },
            ReduceOp::NanArgMax => Form::Arg { max: true, skip_nan: true },
            ReduceOp::Histogram => Form::Histogram,
            _ => Form::Folds(self.folds()),
        }
    }

    pub(super) fn is_moments(self) -> bool {
        matches!(self.form(), Form::Moments { .. })
    }

    /// Reductions numpy allows over one axis or all, not several (the arg ones).
    pub fn single_axis(self) -> bool {
        matches!(self.form(), Form::Arg { .. })
    }

    /// Reductions taking `ddof=`.
    pub fn takes_ddof(self) -> bool {
        self.is_moments()
    }
}

/// Number of arrays in a partial of `op`.
pub fn partial_arity(op: ReduceOp) -> usize {
    match op.form() {
        Form::Folds(f) => f.len(),
        Form::Moments { skip_nan } => 2 + usize::from(skip_nan),
        Form::Arg { .. } => 2,
        Form::Histogram => 1,
    }
}

/// The shape of a const's partial over a block of `block` shape.
pub fn partial_shape(spec: &ConstSpec, block: &[usize]) -> Vec<usize> {
    match spec.hist {
        Some(h) => vec![h.bins],
        None => kept(block, &spec.axes),
    }
}

/// [`partial`] of the reduction `spec` (histograms need their bins).
pub fn partial_for(spec: &ConstSpec, block: &ArrayRef<f64, IxDyn>) -> Vec<ArrayD<f64>> {
    match spec.hist {
        Some(h) => vec![h.counts(block.iter().copied())],
        None => partial(spec.op, block, &spec.axes),
    }
}

/// [`partial_typed`] of the reduction `spec`.
pub fn partial_typed_for<T: Elem>(spec: &ConstSpec, block: &ndarray::ArrayViewD<'_, T>) -> Vec<ArrayD<f64>> {
    match spec.hist {
        Some(h) => vec![h.counts(block.iter().map(|&x| x.f64()))],
        None => partial_typed(spec.op, block, &spec.axes),
    }
}

/// Whether `(v, i)` beats the best so far `(bv, bi)` of an arg reduction; an index
/// of +inf marks "nothing yet". numpy: NaN wins unless skipped, ties go to the first.
#[inline]
pub(super) fn arg_better(max: bool, skip_nan: bool, v: f64, i: f64, bv: f64, bi: f64) -> bool {
    if bi == f64::INFINITY {
        return true;
    }
    match (v.is_nan(), bv.is_nan()) {
        (true, true) => !skip_nan && i < bi,
        (true, false) => !skip_nan,
        (false, true) => skip_nan,
        (false, false) => {
            if v == bv {
                i < bi
            } else {
                (v > bv) == max
            }
        }
    }
}

/// The arg partial of a block over `axes` (one axis, or all): best value and its
/// index along the axis (all axes: the flat index in the block, row-major).
fn arg_partial(max: bool, skip_nan: bool, block: &ArrayRef<f64, IxDyn>, axes: &[usize]) -> Vec<ArrayD<f64>> {
    let scan = |lane: &mut dyn Iterator<Item = f64>| {
        let (mut bv, mut bi) = (f64::NAN, f64::INFINITY);
        for (k, v) in lane.enumerate() {
            if arg_better(max, skip_nan, v, k as f64, bv, bi) {
                (bv, bi) = (v, k as f64);
            }
        }
        (bv, bi)
    };
    if axes.len() == 1 {
        let ax = Axis(axes[0]);
        let out = kept(block.shape(), axes);
        let (mut vals, mut idx) = (ArrayD::zeros(IxDyn(&out)), ArrayD::zeros(IxDyn(&out)));
        Zip::from(&mut vals)
            .and(&mut idx)
            .and(block.lanes(ax))
            .for_each(|v, i, lane| (*v, *i) = scan(&mut lane.iter().copied()));
        return vec![vals, idx];
    }
    let (v, i) = scan(&mut block.iter().copied());
    vec![ArrayD::from_elem(IxDyn(&[]), v), ArrayD::from_elem(IxDyn(&[]), i)]
}

/// The moments partial skipping NaN: count, mean and M2 per result element.
fn nan_moments(block: &ArrayRef<f64, IxDyn>, axes: &[usize]) -> Vec<ArrayD<f64>> {
    let keep = |a: ArrayD<f64>| {
        let mut a = a;
        for &ax in axes {
            a = a.insert_axis(Axis(ax));
        }
        a
    };
    let count = fold_generic(Fold::Valid, block, axes);
    let mut mean = fold_generic(Fold::NanSum, block, axes);
    Zip::from(&mut mean)
        .and(&count)
        .for_each(|m, &n| *m = if n > 0.0 { *m / n } else { 0.0 });
    let mean_k = keep(mean.clone());
    let mb = mean_k.broadcast(block.raw_dim()).expect("keepdims broadcast");
    let mut dev = block.to_owned();
    Zip::from(&mut dev)
        .and(&mb)
        .for_each(|d, &m| *d = if d.is_nan() { 0.0 } else { (*d - m) * (*d - m) });
    let m2 = drop_axes(sum_keep(&dev, axes), axes);
    vec![mean, m2, count]
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

/// Reduce `a` over `axes` keeping them as length-1 dimensions.
fn fold_keep(a: &ArrayRef<f64, IxDyn>, axes: &[usize], init: f64, f: impl Fn(f64, f64) -> f64) -> ArrayD<f64> {
    let mut out = a.to_owned();
    for &ax in axes {
        // Later axes fold partial results, which merge; every step used here merges
        // like it steps except for the counting folds, handled by `fold_generic`.
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

/// One fold over `axes` of any layout: sums through ndarray's pairwise `sum_axis`,
/// other folds step over the first axis and merge across the rest.
fn fold_generic(fold: Fold, block: &ArrayRef<f64, IxDyn>, axes: &[usize]) -> ArrayD<f64> {
    if fold == Fold::Sum {
        return drop_axes(sum_keep(block, axes), axes);
    }
    with_fold!(fold, |init, step, merge| {
        let Some((&first, rest)) = axes.split_first() else {
            return block.mapv(|x| step(init, x));
        };
        let stepped = fold_keep(block, &[first], init, step);
        drop_axes(fold_keep(&stepped, rest, init, merge), axes)
    })
}

/// Partial result of one reduction over one block: [`partial_arity`] arrays of the
/// block's reduced shape (`Var`/`Std`: mean and M2; the count follows from the
/// geometry).
pub fn partial(op: ReduceOp, block: &ArrayRef<f64, IxDyn>, axes: &[usize]) -> Vec<ArrayD<f64>> {
    match op.form() {
        Form::Arg { max, skip_nan } => return arg_partial(max, skip_nan, block, axes),
        Form::Moments { skip_nan: true } => return nan_moments(block, axes),
        _ => {}
    }
    if let Some(data) = block.as_slice()
        && let Some(p) = partial_slice(op, data, block.shape(), axes)
    {
        return p;
    }
    if !op.is_moments() {
        return op.folds().iter().map(|&f| fold_generic(f, block, axes)).collect();
    }
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

/// [`partial`] of stored values of any numeric type, widened to f64 as they are
/// folded: no f64 copy of the values is made when the layout allows the contiguous
/// loops; otherwise the values are widened first.
pub fn partial_typed<T: Elem>(op: ReduceOp, block: &ndarray::ArrayViewD<'_, T>, axes: &[usize]) -> Vec<ArrayD<f64>> {
    if let Some(p) = block.as_slice().and_then(|d| partial_slice(op, d, block.shape(), axes)) {
        return p;
    }
    partial(op, &block.mapv(Elem::f64), axes)
}

/// [`partial`] over row-major values of `shape` whose reduced axes are leading or
/// trailing: plain loops over slices that the compiler vectorizes (ndarray's generic
/// axis folds over dynamic-rank arrays ran at a quarter of memory speed). `None` for
/// any other layout.
fn partial_slice<T: Elem>(op: ReduceOp, data: &[T], shape: &[usize], axes: &[usize]) -> Option<Vec<ArrayD<f64>>> {
    if !matches!(op.form(), Form::Folds(_) | Form::Moments { skip_nan: false }) {
        return None;
    }
    let rank = shape.len();
    let (&first, &last) = (axes.first()?, axes.last()?);
    if axes.windows(2).any(|w| w[1] != w[0] + 1) || data.is_empty() {
        return None;
    }
    let kept = kept(shape, axes);
    let out = |v: Vec<f64>| ArrayD::from_shape_vec(IxDyn(&kept), v).expect("reduced shape");
    if first == 0 {
        // Leading axes: fold whole rows of the kept trailing dimensions into one row,
        // in order, as numpy does along a leading axis ([`fold_rows`]).
        let inner: usize = shape[last + 1..].iter().product();
        if !op.is_moments() {
            return Some(
                op.folds()
                    .iter()
                    .map(|&f| {
                        with_fold!(f, |init, step, _merge| {
                            let mut acc = vec![init; inner];
                            fold_rows(&mut acc, data, step);
                            out(acc)
                        })
                    })
                    .collect(),
            );
        }
        let n = (data.len() / inner) as f64;
        let mut mean = vec![0.0; inner];
        fold_rows(&mut mean, data, |a, x| a + x);
        mean.iter_mut().for_each(|m| *m /= n);
        let mut m2 = vec![0.0; inner];
        for row in data.chunks_exact(inner) {
            m2.iter_mut()
                .zip(row)
                .zip(&mean)
                .for_each(|((s, &x), &m)| *s += (x.f64() - m) * (x.f64() - m));
        }
        return Some(vec![out(mean), out(m2)]);
    }
    if last + 1 == rank {
        // Trailing axes: each kept element folds one contiguous run.
        let run: usize = shape[first..].iter().product();
        let runs = data.chunks_exact(run);
        if !op.is_moments() {
            return Some(
                op.folds()
                    .iter()
                    .map(|&f| match f {
                        Fold::Sum => out(runs.clone().map(|r| sum_run(r, |x| x)).collect()),
                        Fold::NanSum => out(runs.clone().map(|r| sum_run(r, |x| if x.is_nan() { 0.0 } else { x })).collect()),
                        _ => with_fold!(f, |init, step, _merge| out(runs
                            .clone()
                            .map(|r| r.iter().fold(init, |a, &x| step(a, x.f64())))
                            .collect())),
                    })
                    .collect(),
            );
        }
        let (means, m2s): (Vec<f64>, Vec<f64>) = runs
            .map(|r| {
                let m = sum_run(r, |x| x) / run as f64;
                (m, r.iter().map(|&x| (x.f64() - m) * (x.f64() - m)).sum::<f64>())
            })
            .unzip();
        return Some(vec![out(means), out(m2s)]);
    }
    None
}

/// The sum of a run (each value through `pre`), in eight interleaved lanes
/// (vectorizable, and closer to numpy's pairwise sum than one running total).
fn sum_run<T: Elem>(r: &[T], pre: impl Fn(f64) -> f64) -> f64 {
    let mut lanes = [0.0f64; 8];
    let chunks = r.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|&x| pre(x.f64())).sum();
    for c in chunks {
        lanes.iter_mut().zip(c).for_each(|(l, &x)| *l += pre(x.f64()));
    }
    lanes.iter().sum::<f64>() + tail
}

/// Fold rows of `data` (each as long as `acc`) into `acc` in order, four rows per
/// pass (the accumulator row is loaded and stored a quarter as often).
pub fn fold_rows<T: Elem>(acc: &mut [f64], data: &[T], f: impl Fn(f64, f64) -> f64) {
    fold_rows_by(acc, data, T::f64, f)
}

/// Accumulator elements folded over all rows at a time: 8 KiB of f64, which stay in
/// the L1 cache while every row's stretch of them is folded in. A whole accumulator
/// row (a 181 x 360 grid is 509 KiB) would instead be loaded and stored from L2 or
/// beyond once per four rows.
const FOLD_STRIP: usize = 1024;

/// The strips of an accumulator of `inner` elements, in order.
fn strips(inner: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..inner)
        .step_by(FOLD_STRIP)
        .map(move |start| start..(start + FOLD_STRIP).min(inner))
}

/// [`fold_rows`] of values seen through `conv` (CF decoding, say) as they are folded.
/// Each element still sees the rows in order, so the result is the same to the bit.
///
/// Compiled twice: for the baseline x86-64 (SSE2: two values converted to f64 per
/// instruction) and with AVX2 (four), chosen at run time by the CPU. Rust never
/// fuses a multiply and an add by itself, so both give the same bits.
#[inline(always)]
pub fn fold_rows_by<T: Copy>(acc: &mut [f64], data: &[T], conv: impl Fn(T) -> f64, f: impl Fn(f64, f64) -> f64) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { fold_rows_avx2(acc, data, conv, f) };
    }
    fold_rows_strips(acc, data, conv, f)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn fold_rows_avx2<T: Copy>(acc: &mut [f64], data: &[T], conv: impl Fn(T) -> f64, f: impl Fn(f64, f64) -> f64) {
    fold_rows_strips(acc, data, conv, f)
}

#[inline(always)]
fn fold_rows_strips<T: Copy>(acc: &mut [f64], data: &[T], conv: impl Fn(T) -> f64, f: impl Fn(f64, f64) -> f64) {
    let inner = acc.len();
    if inner == 0 {
        return;
    }
    let rows = data.len() / inner;
    for strip in strips(inner) {
        let acc = &mut acc[strip.clone()];
        let row = |r: usize| &data[r * inner + strip.start..r * inner + strip.end];
        let mut r = 0;
        while r + 4 <= rows {
            let (r0, r1, r2, r3) = (row(r), row(r + 1), row(r + 2), row(r + 3));
            for i in 0..acc.len() {
                acc[i] = f(f(f(f(acc[i], conv(r0[i])), conv(r1[i])), conv(r2[i])), conv(r3[i]));
            }
            r += 4;
        }
        for r in r..rows {
            acc.iter_mut().zip(row(r)).for_each(|(a, &x)| *a = f(*a, conv(x)));
        }
    }
}

/// The NaN-skipping sum and the count of non-NaN values of rows, in one pass (a
/// nanmean's two folds, [`fold_rows`] each, without reading and decoding twice).
/// Strips of [`FOLD_STRIP`] elements as there.
pub fn nan_sum_count_rows<T: Copy>(sum: &mut [f64], count: &mut [f64], data: &[T], conv: impl Fn(T) -> f64) {
    let inner = sum.len();
    if inner == 0 {
        return;
    }
    let rows = data.len() / inner;
    for strip in strips(inner) {
        let (sum, count) = (&mut sum[strip.clone()], &mut count[strip.clone()]);
        for r in 0..rows {
            let row = &data[r * inner + strip.start..r * inner + strip.end];
            for ((s, c), &x) in sum.iter_mut().zip(count.iter_mut()).zip(row) {
                let v = conv(x);
                if !v.is_nan() {
                    *s += v;
                    *c += 1.0;
                }
            }
        }
    }
}

pub use super::accumulate::Accumulator;

#[cfg(test)]
mod tests;
