//! The accumulator of the tree reduction: merges the partials of one reduction as
//! blocks arrive (in any order), then finalizes them ([`super::reduce`]).

use std::ops::Range;

use ndarray::{ArrayD, Axis, Dimension, IxDyn, Zip};

use super::geometry::kept;
use super::plan::ConstSpec;
use super::reduce::{Elem, Form, ReduceOp, arg_better, fold_rows, with_fold};

/// Merges partials of one const as they arrive, then finalizes it.
pub struct Accumulator {
    op: ReduceOp,
    axes: Vec<usize>,
    /// The shape reduced (of the stage, or of a block for block-local accumulators).
    stage: Vec<usize>,
    /// Total count per result element (product of reduced extents of the whole stage).
    total: f64,
    ddof: f64,
    /// One array per fold; var/std: mean, M2 and the count so far; arg: the best value
    /// and its index (+inf: none yet).
    parts: Vec<ArrayD<f64>>,
}

impl Accumulator {
    pub fn new(spec: &ConstSpec, stage_shape: &[usize]) -> Self {
        let shape = IxDyn(&spec.shape);
        let total: usize = spec.axes.iter().map(|&a| stage_shape[a]).product();
        let parts = match spec.op.form() {
            Form::Moments { .. } => vec![ArrayD::zeros(shape.clone()); 3],
            Form::Arg { .. } => vec![ArrayD::from_elem(shape.clone(), f64::NAN), ArrayD::from_elem(shape, f64::INFINITY)],
            Form::Histogram => vec![ArrayD::zeros(shape)],
            Form::Folds(folds) => folds
                .iter()
                .map(|&f| with_fold!(f, |init, _s, _m| ArrayD::from_elem(shape.clone(), init)))
                .collect(),
        };
        Self {
            op: spec.op,
            axes: spec.axes.clone(),
            stage: stage_shape.to_vec(),
            total: total as f64,
            ddof: spec.ddof,
            parts,
        }
    }

    /// The accumulator's arrays restricted to the result region of a block.
    fn views<'a>(parts: &'a mut [ArrayD<f64>], out_region: &[Range<usize>]) -> Vec<ndarray::ArrayViewMutD<'a, f64>> {
        parts
            .iter_mut()
            .map(|p| {
                let mut v = p.view_mut();
                for (d, r) in out_region.iter().enumerate() {
                    v.slice_axis_inplace(Axis(d), ndarray::Slice::from(r.clone()));
                }
                v
            })
            .collect()
    }

    /// Merge the partial of the block covering `region` (in the stage's shape).
    pub fn merge(&mut self, region: &[Range<usize>], parts: Vec<ArrayD<f64>>) {
        if self.op.form() == Form::Histogram {
            self.parts[0] += &parts[0];
            return;
        }
        let out_region = kept(region, &self.axes);
        let n_b: f64 = self.axes.iter().map(|&a| region[a].len()).product::<usize>() as f64;
        let mut views = Self::views(&mut self.parts, &out_region);
        match self.op.form() {
            Form::Folds(folds) => {
                for ((view, p), &f) in views.iter_mut().zip(&parts).zip(folds) {
                    with_fold!(f, |_i, _s, merge| Zip::from(view).and(p).for_each(|a, &b| *a = merge(*a, b)));
                }
            }
            Form::Arg { max, skip_nan } => {
                // Block-local indices to the reduced shape's: along the one axis, or
                // flat over all axes (row-major).
                let to_global = |i: f64| -> f64 {
                    if i == f64::INFINITY {
                        return i;
                    }
                    if let [ax] = self.axes[..] {
                        return i + region[ax].start as f64;
                    }
                    let mut rest = i as usize;
                    let mut flat = 0usize;
                    let lens: Vec<usize> = region.iter().map(|r| r.len()).collect();
                    let mut local = vec![0usize; lens.len()];
                    for d in (0..lens.len()).rev() {
                        local[d] = rest % lens[d];
                        rest /= lens[d];
                    }
                    for d in 0..lens.len() {
                        flat = flat * self.stage[d] + region[d].start + local[d];
                    }
                    flat as f64
                };
                let [bv, bi] = &mut views[..] else {
                    unreachable!("value and index")
                };
                Zip::from(bv).and(bi).and(&parts[0]).and(&parts[1]).for_each(|bv, bi, &v, &i| {
                    let i = to_global(i);
                    if i != f64::INFINITY && arg_better(max, skip_nan, v, i, *bv, *bi) {
                        (*bv, *bi) = (v, i);
                    }
                });
            }
            Form::Histogram => unreachable!("merged above"),
            Form::Moments { skip_nan } => {
                let [mean, m2, cnt] = &mut views[..] else {
                    unreachable!("three moment arrays")
                };
                let counts = if skip_nan { Some(&parts[2]) } else { None };
                let uniform = ArrayD::from_elem(parts[0].raw_dim(), n_b);
                Zip::from(mean)
                    .and(m2)
                    .and(cnt)
                    .and(&parts[0])
                    .and(&parts[1])
                    .and(counts.unwrap_or(&uniform))
                    .for_each(|mean, m2, n_a, &mean_b, &m2_b, &n_b| {
                        if n_b == 0.0 {
                            return;
                        }
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
    /// contiguous, and the reduction is one fold: no partial array is made and
    /// nothing is merged. `false`: nothing done; use [`partial`] and
    /// [`Accumulator::merge`].
    pub fn fold_in<T: Elem>(&mut self, region: &[Range<usize>], values: &ndarray::ArrayViewD<'_, T>) -> bool {
        let [fold] = self.op.folds() else { return false };
        if self.axes.first() != Some(&0) || self.axes.windows(2).any(|w| w[1] != w[0] + 1) {
            return false;
        }
        let Some(data) = values.as_slice() else { return false };
        let mut views = Self::views(&mut self.parts, &kept(region, &self.axes));
        let Some(acc) = views[0].as_slice_mut() else { return false };
        if acc.is_empty() || data.len() % acc.len() != 0 {
            return false;
        }
        with_fold!(*fold, |_i, step, _m| fold_rows(acc, data, step));
        true
    }

    /// The merged state in the form of a [`partial`], for a block reduced in pieces.
    pub fn into_partial(self) -> Vec<ArrayD<f64>> {
        let mut parts = self.parts;
        if self.op.form() == (Form::Moments { skip_nan: false }) {
            parts.truncate(2);
        }
        parts
    }

    /// The final array, or why numpy would have raised (an all-NaN slice of a
    /// nanarg reduction).
    pub fn finish(self) -> Result<ArrayD<f64>, String> {
        let (total, ddof) = (self.total, self.ddof);
        let mut parts = self.parts.into_iter();
        let first = parts.next().expect("at least one array");
        Ok(match self.op {
            ReduceOp::Mean => first.mapv_into(|s| s / total),
            ReduceOp::NanMean => {
                let count = parts.next().expect("nanmean count");
                let mut sum = first;
                Zip::from(&mut sum).and(&count).for_each(|s, &n| *s /= n);
                sum
            }
            ReduceOp::Var | ReduceOp::Std | ReduceOp::NanVar | ReduceOp::NanStd => {
                let mut m2 = parts.next().expect("M2");
                let count = parts.next().expect("count");
                let sqrt = matches!(self.op, ReduceOp::Std | ReduceOp::NanStd);
                Zip::from(&mut m2).and(&count).for_each(|m, &n| {
                    // Plain var/std: every element counts `total`; nan*: its own count
                    // (0 for an all-NaN slice, giving NaN as numpy does).
                    let n = if matches!(self.op, ReduceOp::Var | ReduceOp::Std) {
                        total
                    } else {
                        n
                    };
                    let v = if n == 0.0 { f64::NAN } else { *m / (n - ddof) };
                    *m = if sqrt { v.sqrt() } else { v };
                });
                m2
            }
            ReduceOp::ArgMin | ReduceOp::ArgMax | ReduceOp::NanArgMin | ReduceOp::NanArgMax => {
                let index = parts.next().expect("index");
                if let Some((pos, _)) = first.indexed_iter().find(|(_, v)| v.is_nan())
                    && matches!(self.op, ReduceOp::NanArgMin | ReduceOp::NanArgMax)
                {
                    return Err(format!(
                        "an all-NaN slice at result position {:?}: numpy's {} raises ValueError there; mask or fill the NaN first (e.g. where(isnan(x), -inf, x))",
                        pos.slice().to_vec(),
                        if self.op == ReduceOp::NanArgMin { "nanargmin" } else { "nanargmax" }
                    ));
                }
                index
            }
            _ => first,
        })
    }
}
