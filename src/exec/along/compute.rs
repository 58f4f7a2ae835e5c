//! Evaluation of [`Along`] operations over a region, as numpy computes them.

use std::cmp::Ordering;
use std::ops::Range;

use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn, Slice, Zip};

use super::{Along, AlongOp, Roll, Scan};

impl Along {
    /// `region` of the result, from `a`, the operand evaluated over
    /// `self.source_region(region)`; `carry`: the whole carry const of a scan.
    pub fn compute(&self, a: ArrayD<f64>, region: &[Range<usize>], carry: Option<&ArrayD<f64>>) -> ArrayD<f64> {
        let shape: Vec<usize> = region.iter().map(|r| r.len()).collect();
        match &self.op {
            AlongOp::Quantile {
                q, integral, nan, median, ..
            } => {
                let lead = self.lead();
                let qs: Vec<f64> = if lead == 1 { q[region[0].clone()].to_vec() } else { q.clone() };
                // The operated axes last, then one row per kept cell.
                let kept: Vec<usize> = (0..a.ndim()).filter(|d| !self.axes.contains(d)).collect();
                let perm: Vec<usize> = kept.iter().chain(&self.axes).copied().collect();
                let cells: usize = kept.iter().map(|&d| a.shape()[d]).product();
                let lane = self.lane_len();
                let rows = a.permuted_axes(IxDyn(&perm)).as_standard_layout().into_owned();
                let rows = rows.as_slice().expect("standard layout");
                let mut out = vec![0.0; qs.len() * cells];
                let mut col = Vec::with_capacity(lane);
                for (r, row) in rows.chunks_exact(lane.max(1)).enumerate().take(cells) {
                    col.clear();
                    col.extend(row.iter().copied().filter(|v| !(*nan && v.is_nan())));
                    let has_nan = !*nan && col.iter().any(|v| v.is_nan());
                    for (k, &qv) in qs.iter().enumerate() {
                        out[k * cells + r] = if col.is_empty() || has_nan {
                            f64::NAN
                        } else if *median {
                            median_of(&mut col)
                        } else {
                            quantile_of(&mut col, qv, *integral)
                        };
                    }
                }
                ArrayD::from_shape_vec(IxDyn(&shape), out).expect("result shape")
            }
            AlongOp::Sort => {
                let ax = Axis(self.axis());
                let mut sorted = a;
                for mut lane in sorted.lanes_mut(ax) {
                    let mut v = lane.to_vec();
                    v.sort_unstable_by(nan_last);
                    lane.iter_mut().zip(v).for_each(|(d, s)| *d = s);
                }
                let r = region[self.axis()].clone();
                sorted.slice_axis(ax, Slice::from(r)).to_owned()
            }
            AlongOp::Scan { op, seg } => {
                let ax = self.axis();
                let start = region[ax].start;
                let src_start = if *seg == 0 { 0 } else { start / seg * seg };
                // Sums add, products multiply; the nan forms take NaN as the identity.
                let adds = matches!(op, Scan::Sum | Scan::NanSum);
                let ident = if adds { 0.0 } else { 1.0 };
                let combine = |acc: f64, x: f64| if adds { acc + x } else { acc * x };
                let skips = matches!(op, Scan::NanSum | Scan::NanProd);
                let step = |acc: f64, x: f64| combine(acc, if skips && x.is_nan() { ident } else { x });
                let lane_shape: Vec<usize> = shape.iter().enumerate().filter(|&(d, _)| d != ax).map(|(_, &n)| n).collect();
                // Each lane starts from the totals of the segments before its source.
                let mut init = ArrayD::from_elem(IxDyn(&lane_shape), ident);
                if let (Some(c), true) = (carry, *seg > 0) {
                    let mut part: ArrayViewD<f64> = c.view();
                    for (d, r) in region.iter().enumerate() {
                        let r = if d == ax { 0..src_start / seg } else { r.clone() };
                        part.slice_axis_inplace(Axis(d), Slice::from(r));
                    }
                    Zip::from(&mut init).and(part.lanes(Axis(ax))).for_each(|i, totals| {
                        *i = totals.iter().fold(ident, |acc, &t| combine(acc, t));
                    });
                }
                let skip = start - src_start;
                let mut out = ArrayD::zeros(IxDyn(&shape));
                Zip::from(out.lanes_mut(Axis(ax)))
                    .and(a.lanes(Axis(ax)))
                    .and(&init)
                    .for_each(|mut o, x, &i| {
                        let mut acc = i;
                        for (k, &v) in x.iter().enumerate() {
                            acc = step(acc, v);
                            if k >= skip {
                                o[k - skip] = acc;
                            }
                        }
                    });
                out
            }
            AlongOp::Rolling { op, window, ddof } => {
                let ax = Axis(self.axis());
                let w = *window;
                let mut out = ArrayD::zeros(IxDyn(&shape));
                Zip::from(out.lanes_mut(ax)).and(a.lanes(ax)).for_each(|mut o, x| {
                    let x = x.to_vec();
                    for (k, o) in o.iter_mut().enumerate() {
                        *o = rolled(*op, &x[k..k + w], *ddof);
                    }
                });
                out
            }
            AlongOp::Diff { n, logical } => {
                let ax = Axis(self.axis());
                let mut out = ArrayD::zeros(IxDyn(&shape));
                Zip::from(out.lanes_mut(ax)).and(a.lanes(ax)).for_each(|mut o, x| {
                    let mut v = x.to_vec();
                    for _ in 0..*n {
                        for k in 0..v.len() - 1 {
                            v[k] = if *logical {
                                f64::from(u8::from((v[k + 1] != 0.0) != (v[k] != 0.0)))
                            } else {
                                v[k + 1] - v[k]
                            };
                        }
                        v.pop();
                    }
                    o.iter_mut().zip(v).for_each(|(d, s)| *d = s);
                });
                out
            }
        }
    }
}

/// numpy's sort order for floats: NaN after everything.
fn nan_last(a: &f64, b: &f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => a.partial_cmp(b).expect("no NaN"),
    }
}

/// The `k`-th smallest of `v` (no NaN), moving elements.
fn kth(v: &mut [f64], k: usize) -> f64 {
    *v.select_nth_unstable_by(k, nan_last).1
}

/// numpy's median of values with no NaN: the middle one, or the mean of the two.
fn median_of(v: &mut [f64]) -> f64 {
    let n = v.len();
    if n % 2 == 1 {
        kth(v, n / 2)
    } else {
        let hi = kth(v, n / 2);
        // After the selection every element before n/2 is at most `hi`.
        let lo = v[..n / 2].iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lo + hi) / 2.0
    }
}

/// numpy's quantile `q` (linear method) of values with no NaN, bit for bit:
/// virtual index `(n - 1) * q`, neighbours clipped to the last element (whose
/// index then counts as -1 in gamma, as numpy's does), and numpy's `_lerp`.
fn quantile_of(v: &mut [f64], q: f64, integral: bool) -> f64 {
    let n = v.len();
    let virt = (n - 1) as f64 * q;
    if integral {
        return kth(v, virt as usize);
    }
    let (prev, next): (i64, i64) = if virt >= (n - 1) as f64 {
        (-1, -1)
    } else if virt < 0.0 {
        (0, 0)
    } else {
        let p = virt.floor() as i64;
        (p, p + 1)
    };
    let gamma = virt - prev as f64;
    let at = |i: i64| if i < 0 { n - 1 } else { i as usize };
    let a = kth(v, at(prev));
    let b = if next == prev {
        a
    } else {
        // After selecting `prev`, the next order statistic is the least after it.
        v[at(prev) + 1..].iter().copied().fold(f64::INFINITY, f64::min)
    };
    let diff = b - a;
    if gamma >= 0.5 { b - diff * (1.0 - gamma) } else { a + diff * gamma }
}

/// One window's value.
fn rolled(op: Roll, x: &[f64], ddof: f64) -> f64 {
    let w = x.len() as f64;
    match op {
        Roll::Sum => x.iter().sum(),
        Roll::Mean => x.iter().sum::<f64>() / w,
        Roll::Min => x
            .iter()
            .copied()
            .fold(f64::INFINITY, |m, v| if v.is_nan() || m.is_nan() { f64::NAN } else { m.min(v) }),
        Roll::Max => x
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, |m, v| if v.is_nan() || m.is_nan() { f64::NAN } else { m.max(v) }),
        Roll::Std => {
            let mean = x.iter().sum::<f64>() / w;
            let ss: f64 = x.iter().map(|v| (v - mean) * (v - mean)).sum();
            (ss / (w - ddof)).sqrt()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn along(op: AlongOp, axes: Vec<usize>, from: Vec<usize>, to: Vec<usize>) -> Along {
        Along {
            op,
            axes,
            from,
            to,
            carry: None,
        }
    }

    #[test]
    fn quantiles_follow_numpy() {
        // np.quantile([3, 1, 4, 1, 5], [0, 0.3, 0.5, 0.75, 1.0]) = [1, 1.2, 3, 4, 5]
        let mut v = vec![3.0, 1.0, 4.0, 1.0, 5.0];
        let got: Vec<f64> = [0.0, 0.3, 0.5, 0.75, 1.0]
            .iter()
            .map(|&q| quantile_of(&mut v.clone(), q, false))
            .collect();
        assert_eq!(got, vec![1.0, 1.4, 3.0, 4.0, 5.0]);
        assert_eq!(median_of(&mut v), 3.0);
        assert_eq!(median_of(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        // numpy: quantile of a lane whose largest value is infinite at q=1.0 is NaN
        // (its lerp takes inf - inf); at the integer q=1 it is taken: inf.
        assert!(quantile_of(&mut [1.0, f64::INFINITY], 1.0, false).is_nan());
        assert_eq!(quantile_of(&mut [1.0, f64::INFINITY], 1.0, true), f64::INFINITY);
    }

    #[test]
    fn scans_carry_segment_totals() {
        // cumsum along axis 1 of a 2 x 6 array, region columns 3..5, segments of 2:
        // the source starts at column 2 and the carry holds segment 0's totals.
        let x = ArrayD::from_shape_vec(IxDyn(&[2, 6]), (1..=12).map(f64::from).collect()).unwrap();
        let mut a = along(AlongOp::Scan { op: Scan::Sum, seg: 2 }, vec![1], vec![2, 6], vec![2, 6]);
        a.carry = Some(0);
        let region = [0..2, 3..5];
        let src = a.source_region(&region);
        assert_eq!(src, vec![0..2, 2..5]);
        let carry = ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![3.0, 7.0, 11.0, 15.0, 19.0, 23.0]).unwrap();
        let part = x.slice(ndarray::s![.., 2..5]).to_owned().into_dyn();
        let got = a.compute(part, &region, Some(&carry));
        assert_eq!(got.into_raw_vec_and_offset().0, vec![10.0, 15.0, 34.0, 45.0]);
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // one-dimensional regions
    fn windows_and_differences() {
        let x = ArrayD::from_shape_vec(IxDyn(&[6]), vec![1.0, 4.0, 9.0, 16.0, f64::NAN, 36.0]).unwrap();
        let d = along(AlongOp::Diff { n: 2, logical: false }, vec![0], vec![6], vec![4]);
        assert_eq!(d.source_region(&[1..3]), vec![1..5]);
        let got = d.compute(x.slice(ndarray::s![1..5]).to_owned().into_dyn(), &[1..3], None);
        assert_eq!(got.as_slice().unwrap()[0], 2.0);
        assert!(got.as_slice().unwrap()[1].is_nan());
        let r = along(
            AlongOp::Rolling {
                op: Roll::Max,
                window: 3,
                ddof: 0.0,
            },
            vec![0],
            vec![6],
            vec![4],
        );
        let got = r.compute(x.clone(), &[0..4], None);
        let v = got.as_slice().unwrap();
        assert_eq!(&v[..2], &[9.0, 16.0]);
        assert!(v[2].is_nan() && v[3].is_nan());
    }
}
