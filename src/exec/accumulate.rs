//! The accumulator of the tree reduction: merges the partials of one reduction as
//! blocks arrive (in any order), then finalizes them ([`super::reduce`]).

use std::ops::Range;

use ndarray::{ArrayD, Axis, Dimension, IxDyn, Zip};

use super::geometry::kept;
use super::plan::ConstSpec;
use super::reduce::{Elem, Fold, Form, ReduceOp, arg_better, fold_rows, fold_rows_by, nan_sum_count_rows, with_fold};

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
    /// A grouped reduction (`by=`): one accumulator per group instead of `parts`.
    grouped: Option<Box<Grouped>>,
}

/// The accumulators of a grouped reduction, one per group present, each over the
/// steps of its group (in order: a step's position in its group is its rank).
struct Grouped {
    axis: usize,
    /// Each step's group (over this accumulator's extent of the axis).
    of_step: Vec<u32>,
    /// Each step's position among the steps of its group.
    ranks: Vec<usize>,
    /// The reduction of one group (ungrouped, over `axis`).
    sub: ConstSpec,
    /// By group id; `None` for groups with no step here.
    subs: Vec<Option<Accumulator>>,
}

impl Grouped {
    /// The groups present in `steps`, ascending, with the rank of their first step
    /// there and their step count.
    fn present(&self, steps: &Range<usize>) -> Vec<(u32, usize, usize)> {
        let mut seen: Vec<(u32, usize, usize)> = Vec::new();
        for t in steps.clone() {
            let g = self.of_step[t];
            match seen.iter_mut().find(|s| s.0 == g) {
                Some(s) => s.2 += 1,
                None => seen.push((g, self.ranks[t], 1)),
            }
        }
        seen.sort_unstable_by_key(|s| s.0);
        seen
    }
}

impl Accumulator {
    pub fn new(spec: &ConstSpec, stage_shape: &[usize]) -> Self {
        if let Some(groups) = &spec.groups {
            let axis = spec.axes[0];
            assert_eq!(groups.of_step.len(), stage_shape[axis], "groups cover the reduced axis");
            let sub = ConstSpec {
                shape: kept(stage_shape, &spec.axes),
                groups: None,
                ..spec.clone()
            };
            let sizes = groups.sizes();
            let subs = sizes
                .iter()
                .map(|&n| {
                    (n > 0).then(|| {
                        let mut s = stage_shape.to_vec();
                        s[axis] = n;
                        Accumulator::new(&sub, &s)
                    })
                })
                .collect();
            return Self {
                op: spec.op,
                axes: spec.axes.clone(),
                stage: stage_shape.to_vec(),
                total: 0.0,
                ddof: spec.ddof,
                parts: vec![],
                grouped: Some(Box::new(Grouped {
                    axis,
                    of_step: groups.of_step.clone(),
                    ranks: groups.ranks(),
                    sub,
                    subs,
                })),
            };
        }
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
            grouped: None,
        }
    }

    /// Whether this is a grouped reduction: merge values with [`Self::merge_values`].
    pub fn is_grouped(&self) -> bool {
        self.grouped.is_some()
    }

    /// A grouped reduction: fold the values of `region` (relative to this accumulator's
    /// stage) into the groups of its steps.
    pub fn merge_values(&mut self, region: &[Range<usize>], values: &ArrayD<f64>) {
        let g = self.grouped.as_mut().expect("a grouped reduction");
        let axis = g.axis;
        for (group, r0, count) in g.present(&region[axis]) {
            let idx: Vec<usize> = region[axis]
                .clone()
                .filter(|&t| g.of_step[t] == group)
                .map(|t| t - region[axis].start)
                .collect();
            let contiguous = idx.last().is_some_and(|&l| l + 1 - idx[0] == idx.len());
            let part = if contiguous {
                super::reduce::partial_for(
                    &g.sub,
                    &values.slice_axis(Axis(axis), ndarray::Slice::from(idx[0]..idx[0] + idx.len())),
                )
            } else {
                super::reduce::partial_for(&g.sub, &values.select(Axis(axis), &idx))
            };
            let mut sub_region = region.to_vec();
            sub_region[axis] = r0..r0 + count;
            g.subs[group as usize]
                .as_mut()
                .expect("a group present here")
                .merge(&sub_region, part);
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
        if let Some(g) = self.grouped.as_mut() {
            // One partial per group present in the block, ascending.
            let present = g.present(&region[g.axis]);
            let arity = parts.len() / present.len().max(1);
            let mut parts = parts.into_iter();
            for (group, r0, count) in present {
                let mut sub_region = region.to_vec();
                sub_region[g.axis] = r0..r0 + count;
                let mine: Vec<ArrayD<f64>> = parts.by_ref().take(arity).collect();
                g.subs[group as usize]
                    .as_mut()
                    .expect("a group present here")
                    .merge(&sub_region, mine);
            }
            return;
        }
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
    /// contiguous, and the reduction is made of folds: no partial array is made and
    /// nothing is merged. `false`: nothing done; use [`partial`] and
    /// [`Accumulator::merge`].
    pub fn fold_in<T: Elem>(&mut self, region: &[Range<usize>], values: &ndarray::ArrayViewD<'_, T>) -> bool {
        self.fold_in_by(region, values, None::<fn(T) -> f64>)
    }

    /// [`Accumulator::fold_in`] of values seen through `conv` (CF decoding) when given.
    pub fn fold_in_by<T: Elem>(
        &mut self,
        region: &[Range<usize>],
        values: &ndarray::ArrayViewD<'_, T>,
        conv: Option<impl Fn(T) -> f64 + Copy>,
    ) -> bool {
        if self.grouped.is_some() {
            return false;
        }
        let Form::Folds(folds) = self.op.form() else { return false };
        if folds.is_empty() || self.axes.first() != Some(&0) || self.axes.windows(2).any(|w| w[1] != w[0] + 1) {
            return false;
        }
        let Some(data) = values.as_slice() else { return false };
        let mut views = Self::views(&mut self.parts, &kept(region, &self.axes));
        if views.len() < folds.len() {
            return false;
        }
        let mut accs = Vec::with_capacity(folds.len());
        for v in views.iter_mut().take(folds.len()) {
            match v.as_slice_mut() {
                Some(a) if !a.is_empty() && data.len() % a.len() == 0 => accs.push(a),
                _ => return false,
            }
        }
        if let ([Fold::NanSum, Fold::Valid], [sum, count]) = (folds, &mut accs[..]) {
            match conv {
                None => nan_sum_count_rows(sum, count, data, T::f64),
                Some(conv) => nan_sum_count_rows(sum, count, data, conv),
            }
            return true;
        }
        for (acc, &fold) in accs.into_iter().zip(folds) {
            match conv {
                None => with_fold!(fold, |_i, step, _m| fold_rows(acc, data, step)),
                Some(conv) => with_fold!(fold, |_i, step, _m| fold_rows_by(acc, data, conv, step)),
            }
        }
        true
    }

    /// The merged state in the form of a [`partial`], for a block reduced in pieces.
    pub fn into_partial(self) -> Vec<ArrayD<f64>> {
        if let Some(g) = self.grouped {
            return g.subs.into_iter().flatten().flat_map(Accumulator::into_partial).collect();
        }
        let mut parts = self.parts;
        if self.op.form() == (Form::Moments { skip_nan: false }) {
            parts.truncate(2);
        }
        parts
    }

    /// The final array, or why numpy would have raised (an all-NaN slice of a
    /// nanarg reduction).
    pub fn finish(self) -> Result<ArrayD<f64>, String> {
        if let Some(g) = self.grouped {
            let done = g
                .subs
                .into_iter()
                .flatten()
                .map(Accumulator::finish)
                .collect::<Result<Vec<_>, _>>()?;
            let views: Vec<_> = done.iter().map(|a| a.view()).collect();
            return ndarray::stack(Axis(g.axis), &views).map_err(|e| format!("stacking the groups: {e}"));
        }
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
