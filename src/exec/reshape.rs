//! `reshape`: numpy's C-order reshape of any expression, evaluated block by block.
//!
//! The two shapes split into groups: the shortest runs of operand axes and of result
//! axes holding the same number of elements (a split `(12,) -> (3, 4)`, a merge
//! `(3, 4) -> (12,)`, an unchanged axis). Within a group an element keeps its flat
//! (row-major) index, so a block of the result needs, per group, a set of flat indices
//! of the operand: the planner cuts each group of the result so that these form one
//! contiguous run (`block`), which is then one box of the operand, read whole. Any
//! other region (a view of a reshape, the ragged last block) is read through the
//! smallest box of the operand holding its flat indices and picked from it, so every
//! region is right; [`Reshape::read_per_block`] lets the planner refuse layouts that
//! would read far more than they give.

use std::ops::Range;

use ndarray::{ArrayD, Axis, IxDyn, Slice};
use serde::{Deserialize, Serialize};

/// A reshape of an operand of shape `from` into `to` (same number of elements).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reshape {
    pub from: Vec<usize>,
    pub to: Vec<usize>,
}

/// Axes of the operand and of the result holding the same elements.
struct Group {
    src: Range<usize>,
    dst: Range<usize>,
}

/// The flat indices (within a group, relative to its box's first element) a region
/// needs: a contiguous run, or a list.
enum Picks {
    Run(Range<usize>),
    List(Vec<usize>),
}

impl Picks {
    fn len(&self) -> usize {
        match self {
            Picks::Run(r) => r.len(),
            Picks::List(v) => v.len(),
        }
    }
}

/// Row-major strides of `dims`.
fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for k in (0..dims.len().saturating_sub(1)).rev() {
        s[k] = s[k + 1] * dims[k + 1];
    }
    s
}

impl Reshape {
    fn groups(&self) -> Vec<Group> {
        let (from, to) = (&self.from, &self.to);
        if from.contains(&0) || to.contains(&0) {
            return vec![Group {
                src: 0..from.len(),
                dst: 0..to.len(),
            }];
        }
        let (mut i, mut j) = (0, 0);
        let mut out = Vec::new();
        while i < from.len() || j < to.len() {
            let (i0, j0) = (i, j);
            let (mut pa, mut pb) = (1usize, 1usize);
            if i < from.len() {
                pa *= from[i];
                i += 1;
            }
            if j < to.len() {
                pb *= to[j];
                j += 1;
            }
            while pa != pb {
                if pa < pb {
                    pa *= from[i];
                    i += 1;
                } else {
                    pb *= to[j];
                    j += 1;
                }
            }
            // Length-1 axes that follow join this group.
            while i < from.len() && from[i] == 1 && (j == to.len() || to[j] != 1) {
                i += 1;
            }
            while j < to.len() && to[j] == 1 && (i == from.len() || from[i] != 1) {
                j += 1;
            }
            out.push(Group { src: i0..i, dst: j0..j });
        }
        out
    }

    /// For each axis of the result, the operand axis it is (same length, alone in its
    /// group), if any: those keep their coordinates.
    pub fn same_axes(&self) -> Vec<Option<usize>> {
        let mut out = vec![None; self.to.len()];
        for g in self.groups() {
            let src: Vec<usize> = g.src.clone().filter(|&a| self.from[a] != 1).collect();
            let dst: Vec<usize> = g.dst.clone().filter(|&a| self.to[a] != 1).collect();
            if let ([s], [d]) = (&src[..], &dst[..]) {
                out[*d] = Some(*s);
            }
        }
        out
    }

    /// For a region of the result: the box of the operand to read and, per group,
    /// the flat indices to pick from it.
    fn locate(&self, region: &[Range<usize>]) -> (Vec<Range<usize>>, Vec<Picks>) {
        let mut src_box = Vec::with_capacity(self.from.len());
        let mut picks = Vec::new();
        for g in self.groups() {
            let dims = &self.to[g.dst.clone()];
            let r = &region[g.dst.clone()];
            let t = strides(dims);
            let count: usize = r.iter().map(|r| r.len()).product();
            let lo: usize = r.iter().zip(&t).map(|(r, s)| r.start * s).sum();
            let hi: usize = r.iter().zip(&t).map(|(r, s)| (r.end.max(1) - 1) * s).sum::<usize>() + 1;
            // The smallest box of the operand's group axes holding flats lo..hi.
            let sdims = &self.from[g.src.clone()];
            let s = strides(sdims);
            let first: Vec<usize> = s.iter().zip(sdims).map(|(st, &n)| (lo / st) % n.max(1)).collect();
            let last: Vec<usize> = s.iter().zip(sdims).map(|(st, &n)| ((hi - 1) / st) % n.max(1)).collect();
            let split = (0..sdims.len()).find(|&k| first[k] != last[k]).unwrap_or(sdims.len());
            let mut f0 = 0;
            for k in 0..sdims.len() {
                let range = if k < split {
                    first[k]..first[k] + 1
                } else if k == split {
                    first[k]..last[k] + 1
                } else {
                    0..sdims[k]
                };
                f0 += range.start * s[k];
                src_box.push(range);
            }
            if count == 0 {
                picks.push(Picks::Run(0..0));
            } else if hi - lo == count {
                picks.push(Picks::Run(lo - f0..hi - f0));
            } else {
                let mut flats = vec![0usize];
                for (range, st) in r.iter().zip(&t) {
                    flats = flats.iter().flat_map(|f| range.clone().map(move |i| f + i * st)).collect();
                }
                picks.push(Picks::List(flats.into_iter().map(|f| f - f0).collect()));
            }
        }
        (src_box, picks)
    }

    /// The region of the operand to evaluate for `region` of the result.
    pub fn source_region(&self, region: &[Range<usize>]) -> Vec<Range<usize>> {
        self.locate(region).0
    }

    /// `region` of the result, from the operand's values over [`Self::source_region`].
    pub fn pick(&self, src: ArrayD<f64>, region: &[Range<usize>]) -> ArrayD<f64> {
        let shape: Vec<usize> = region.iter().map(|r| r.len()).collect();
        if shape.contains(&0) {
            return ArrayD::zeros(IxDyn(&shape));
        }
        let (_, picks) = self.locate(region);
        let groups = self.groups();
        let flat: Vec<usize> = groups.iter().map(|g| src.shape()[g.src.clone()].iter().product()).collect();
        let mut a = src
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order(IxDyn(&flat))
            .expect("a box holds its groups' elements");
        for (d, p) in picks.iter().enumerate() {
            a = match p {
                Picks::Run(r) if r.len() == a.len_of(Axis(d)) => a,
                Picks::Run(r) => a.slice_axis(Axis(d), Slice::from(r.clone())).to_owned(),
                Picks::List(v) => a.select(Axis(d), v),
            };
        }
        a.as_standard_layout()
            .into_owned()
            .into_shape_with_order(IxDyn(&shape))
            .expect("picked the region's elements")
    }

    /// The result's block for an operand evaluated in blocks of `src_block`: per group,
    /// about as many elements as the operand's block holds there, cut so that each
    /// block is one contiguous run of flat indices (whole trailing axes of the group,
    /// one of its axes cut, 1 before), a multiple of the operand's rows where it can.
    pub fn block(&self, src_block: &[usize]) -> Vec<usize> {
        let mut out = vec![1; self.to.len()];
        for g in self.groups() {
            let want: usize = src_block[g.src.clone()].iter().product::<usize>().max(1);
            let sdims = &self.from[g.src.clone()];
            let mut t = 1usize;
            for k in g.dst.clone().rev() {
                let n = self.to[k].max(1);
                if t * n <= want {
                    out[k] = n;
                    t *= n;
                    continue;
                }
                let mut b = (want / t).clamp(1, n);
                // Whole rows of the operand (its largest stride not above the block).
                if let Some(&row) = strides(sdims).iter().find(|&&s| s <= b * t) {
                    let step = row / gcd(row, t);
                    if step <= n {
                        b = (b / step * step).max(step);
                    }
                }
                out[k] = b;
                break;
            }
        }
        out
    }

    /// The most operand elements one block of the result reads, over a sample of the
    /// blocks of a grid `block` (the first, the last and some between).
    pub fn read_per_block(&self, block: &[usize]) -> usize {
        let n = super::geometry::block_count(&self.to, block);
        let samples: Vec<u64> = if n <= 64 {
            (0..n).collect()
        } else {
            (0..64).map(|k| k * (n - 1) / 63).collect()
        };
        samples
            .into_iter()
            .map(|b| {
                let r = super::geometry::block_region(&self.to, block, b);
                let (src, picks) = self.locate(&r);
                let read: usize = src.iter().map(|r| r.len()).product();
                debug_assert!(picks.iter().map(Picks::len).product::<usize>() <= read.max(1));
                read
            })
            .max()
            .unwrap_or(0)
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arange(shape: &[usize]) -> ArrayD<f64> {
        let n: usize = shape.iter().product();
        ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(|i| i as f64).collect()).unwrap()
    }

    /// Every region of a grid and some odd regions give numpy's values.
    fn check(from: &[usize], to: &[usize], block: &[usize]) {
        let r = Reshape {
            from: from.to_vec(),
            to: to.to_vec(),
        };
        let a = arange(from);
        let want = a.clone().into_shape_with_order(IxDyn(to)).unwrap();
        let read = |region: &[Range<usize>]| {
            let src = r.source_region(region);
            let mut v = a.view();
            for (d, s) in src.iter().enumerate() {
                v.slice_axis_inplace(Axis(d), Slice::from(s.clone()));
            }
            r.pick(v.to_owned(), region)
        };
        for b in 0..super::super::geometry::block_count(to, block) {
            let region = super::super::geometry::block_region(to, block, b);
            let mut w = want.view();
            for (d, s) in region.iter().enumerate() {
                w.slice_axis_inplace(Axis(d), Slice::from(s.clone()));
            }
            assert_eq!(read(&region), w, "{from:?} -> {to:?}, block {b} {region:?}");
        }
        // A region cutting every axis in its middle.
        let region: Vec<Range<usize>> = to.iter().map(|&n| n / 3..n - n / 4).collect();
        let mut w = want.view();
        for (d, s) in region.iter().enumerate() {
            w.slice_axis_inplace(Axis(d), Slice::from(s.clone()));
        }
        assert_eq!(read(&region), w, "{from:?} -> {to:?}, {region:?}");
    }

    #[test]
    fn regions_equal_numpy_reshape() {
        check(&[12], &[3, 4], &[2, 4]);
        check(&[12], &[3, 4], &[1, 3]);
        check(&[3, 4], &[12], &[5]);
        check(&[6, 10, 7], &[3, 2, 5, 2, 7], &[1, 2, 3, 2, 7]);
        check(&[6, 10, 7], &[60, 7], &[25, 3]);
        check(&[6, 1, 10], &[60, 1], &[7, 1]);
        check(&[1, 24], &[2, 3, 4], &[1, 2, 4]);
        check(&[2, 3, 4], &[4, 3, 2], &[3, 2, 2]);
        check(&[5, 8], &[5, 8], &[2, 3]);
    }

    #[test]
    fn blocks_follow_the_operand_and_read_little() {
        // (2920, 181, 360) -> (8, 365, 181, 360), operand blocks of 73 steps.
        let r = Reshape {
            from: vec![2920, 181, 360],
            to: vec![8, 365, 181, 360],
        };
        let b = r.block(&[73, 181, 360]);
        assert_eq!(b, vec![1, 73, 181, 360]);
        assert_eq!(r.read_per_block(&b), 73 * 181 * 360, "each block reads exactly its elements");
        // A merge of whole rows: (100, 12) -> (1200,) with blocks of 10 rows.
        let m = Reshape {
            from: vec![100, 12],
            to: vec![1200],
        };
        assert_eq!(m.block(&[10, 12]), vec![120]);
        assert_eq!(m.read_per_block(&[120]), 120);
        // Groups: a split, an unchanged axis and a merge.
        let g = Reshape {
            from: vec![6, 5, 2, 3],
            to: vec![2, 3, 5, 6],
        };
        let dims: Vec<(Range<usize>, Range<usize>)> = g.groups().into_iter().map(|g| (g.src, g.dst)).collect();
        assert_eq!(dims, vec![(0..1, 0..2), (1..2, 2..3), (2..4, 3..4)]);
    }
}
