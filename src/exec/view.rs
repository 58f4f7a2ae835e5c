//! Views: numpy basic indexing and axis rearrangements as one affine map from the
//! axes of a view to the axes of its source (offset, step, permutation, new and
//! dropped axes). Views are pushed down to the leaves of a kernel (inputs and
//! consts), so a block of a viewed expression reads only the source region it touches
//! (`x[0:10]` reads ten rows) and offset views of one input combine freely
//! (`x[1:] - x[:-1]`), whatever the block boundaries.

use std::ops::Range;

use ndarray::{ArrayD, ArrayViewD, Axis, Slice};
use serde::{Deserialize, Serialize};

/// One axis of a view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Dim {
    /// Element `i` of this axis is element `start + step * i` of source axis `axis`.
    Src { axis: usize, start: usize, step: i64, len: usize },
    /// A new axis of length 1 (`None` in an index, `expand_dims`, broadcasting).
    New,
}

/// A view of an array of shape `src`: its axes in order, and the source axes fixed at
/// one index (integer indices, which drop the axis).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    pub src: Vec<usize>,
    pub dims: Vec<Dim>,
    pub fixed: Vec<(usize, usize)>,
}

impl View {
    /// The whole array, as it is.
    pub fn identity(shape: &[usize]) -> View {
        View {
            src: shape.to_vec(),
            dims: shape
                .iter()
                .enumerate()
                .map(|(axis, &len)| Dim::Src {
                    axis,
                    start: 0,
                    step: 1,
                    len,
                })
                .collect(),
            fixed: vec![],
        }
    }

    /// Axes in a new order: axis `d` of the view is axis `perm[d]` of the source.
    pub fn permute(shape: &[usize], perm: &[usize]) -> View {
        let id = View::identity(shape);
        View {
            dims: perm.iter().map(|&p| id.dims[p].clone()).collect(),
            ..id
        }
    }

    pub fn shape(&self) -> Vec<usize> {
        self.dims
            .iter()
            .map(|d| match d {
                Dim::Src { len, .. } => *len,
                Dim::New => 1,
            })
            .collect()
    }

    pub fn is_identity(&self) -> bool {
        *self == View::identity(&self.src)
    }

    /// This view of `inner`'s result, as one view of `inner`'s source.
    pub fn compose(&self, inner: &View) -> View {
        let mut fixed = inner.fixed.clone();
        for &(a, idx) in &self.fixed {
            if let Dim::Src { axis, start, step, .. } = inner.dims[a] {
                fixed.push((axis, at(start, step, idx)));
            }
        }
        let dims = self
            .dims
            .iter()
            .map(|d| match (d, d_of(d).map(|a| &inner.dims[a])) {
                (
                    Dim::Src { start, step, len, .. },
                    Some(Dim::Src {
                        axis: b,
                        start: s2,
                        step: t2,
                        ..
                    }),
                ) => Dim::Src {
                    axis: *b,
                    start: at(*s2, *t2, *start),
                    step: t2 * step,
                    len: *len,
                },
                _ => Dim::New,
            })
            .collect();
        fixed.sort_unstable();
        View {
            src: inner.src.clone(),
            dims,
            fixed,
        }
    }

    /// This view of an array of shape `src` (the view's source), taken of one operand
    /// of shape `arg` that numpy broadcasts to `src` (aligned from the right): the
    /// operand's own axes where it has them, new axes where it is broadcast.
    pub fn for_operand(&self, arg: &[usize]) -> View {
        let off = self.src.len() - arg.len();
        let own = |a: usize| a >= off && !(arg[a - off] == 1 && self.src[a] != 1);
        let dims = self
            .dims
            .iter()
            .map(|d| match d {
                Dim::Src { axis, start, step, len } if own(*axis) => Dim::Src {
                    axis: axis - off,
                    start: *start,
                    step: *step,
                    len: *len,
                },
                _ => Dim::New,
            })
            .collect();
        let fixed = self
            .fixed
            .iter()
            .filter(|(a, _)| *a >= off)
            .map(|&(a, idx)| (a - off, if own(a) { idx } else { 0 }))
            .collect();
        View {
            src: arg.to_vec(),
            dims,
            fixed,
        }
    }

    /// The bounding region of the source that the view's `region` touches.
    pub fn source_region(&self, region: &[Range<usize>]) -> Vec<Range<usize>> {
        let mut out: Vec<Range<usize>> = self.src.iter().map(|_| 0..0).collect();
        for (d, r) in self.dims.iter().zip(region) {
            if let Dim::Src { axis, start, step, .. } = *d {
                out[axis] = if r.is_empty() {
                    0..0
                } else {
                    let (a, b) = (at(start, step, r.start), at(start, step, r.end - 1));
                    a.min(b)..a.max(b) + 1
                };
            }
        }
        for &(axis, idx) in &self.fixed {
            out[axis] = idx..idx + 1;
        }
        out
    }

    /// The view's `region`, from the source values of [`View::source_region`] of it.
    pub fn apply(&self, src: ArrayViewD<'_, f64>) -> ArrayD<f64> {
        self.apply_view(src).as_standard_layout().into_owned()
    }

    /// [`View::apply`] without the copy: the values seen through strides (a transpose
    /// is a view with swapped strides), for consumers that take any layout.
    pub fn apply_view<'a>(&self, src: ArrayViewD<'a, f64>) -> ArrayViewD<'a, f64> {
        let mut v = src;
        // Steps: the bounding region holds exactly the elements needed, first to last
        // for a positive step, last to first for a negative one (ndarray steps back
        // from the end, which is the first element the view needs).
        for d in &self.dims {
            if let Dim::Src { axis, step, .. } = *d
                && step != 1
            {
                v.slice_axis_inplace(Axis(axis), Slice::new(0, None, step as isize));
            }
        }
        // Drop fixed axes (each of length 1 here), highest first, remembering where
        // the others went.
        let mut remaining: Vec<usize> = (0..self.src.len()).collect();
        let mut fixed: Vec<usize> = self.fixed.iter().map(|f| f.0).collect();
        fixed.sort_unstable();
        for &a in fixed.iter().rev() {
            v.index_axis_inplace(Axis(a), 0);
            remaining.remove(a);
        }
        // The view's own axes in its order, then new axes inserted.
        let perm: Vec<usize> = self
            .dims
            .iter()
            .filter_map(d_of)
            .map(|a| remaining.iter().position(|&r| r == a).expect("an unfixed axis"))
            .collect();
        let mut v = v.permuted_axes(perm);
        for (d, dim) in self.dims.iter().enumerate() {
            if *dim == Dim::New {
                v.insert_axis_inplace(Axis(d));
            }
        }
        v
    }
}

fn d_of(d: &Dim) -> Option<usize> {
    match d {
        Dim::Src { axis, .. } => Some(*axis),
        Dim::New => None,
    }
}

/// `start + step * i`, never negative for the indices a view holds.
fn at(start: usize, step: i64, i: usize) -> usize {
    (start as i64 + step * i as i64) as usize
}

/// One item of a numpy basic index, with the column it was written at.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Int(i64),
    Slice(Option<i64>, Option<i64>, Option<i64>),
    Ellipsis,
    NewAxis,
}

/// numpy's basic indexing of an array of `shape`: the view, or why it is refused
/// (with the index of the offending item).
pub fn index(shape: &[usize], items: &[Item]) -> Result<View, (usize, String)> {
    let consumes = |i: &Item| matches!(i, Item::Int(_) | Item::Slice(..));
    let used = items.iter().filter(|i| consumes(i)).count();
    let ellipses: Vec<usize> = items
        .iter()
        .enumerate()
        .filter(|(_, i)| **i == Item::Ellipsis)
        .map(|(k, _)| k)
        .collect();
    if ellipses.len() > 1 {
        return Err((ellipses[1], "an index can only have a single ellipsis ('...')".into()));
    }
    if used > shape.len() {
        let k = items
            .iter()
            .enumerate()
            .filter(|(_, i)| consumes(i))
            .nth(shape.len())
            .map_or(0, |(k, _)| k);
        return Err((
            k,
            format!(
                "too many indices: the array has {} dimension{} but {used} were indexed",
                shape.len(),
                if shape.len() == 1 { "" } else { "s" }
            ),
        ));
    }
    let mut dims = Vec::new();
    let mut fixed = Vec::new();
    let mut axis = 0;
    let full = |axis: usize| Dim::Src {
        axis,
        start: 0,
        step: 1,
        len: shape[axis],
    };
    for (k, item) in items.iter().enumerate() {
        match item {
            Item::NewAxis => dims.push(Dim::New),
            Item::Ellipsis => {
                for _ in 0..shape.len() - used {
                    dims.push(full(axis));
                    axis += 1;
                }
            }
            Item::Int(i) => {
                let n = shape[axis] as i64;
                let j = if *i < 0 { i + n } else { *i };
                if j < 0 || j >= n {
                    return Err((k, format!("index {i} is out of bounds for axis {axis} with size {n}")));
                }
                fixed.push((axis, j as usize));
                axis += 1;
            }
            Item::Slice(start, stop, step) => {
                let (start, step, len) = slice_indices(shape[axis], *start, *stop, *step).map_err(|m| (k, m))?;
                dims.push(Dim::Src { axis, start, step, len });
                axis += 1;
            }
        }
    }
    while axis < shape.len() {
        dims.push(full(axis));
        axis += 1;
    }
    Ok(View {
        src: shape.to_vec(),
        dims,
        fixed,
    })
}

/// Python's `slice(start, stop, step).indices(n)`: the first index, the step and the
/// number of elements.
fn slice_indices(n: usize, start: Option<i64>, stop: Option<i64>, step: Option<i64>) -> Result<(usize, i64, usize), String> {
    let n = n as i64;
    let step = step.unwrap_or(1);
    if step == 0 {
        return Err("slice step cannot be zero".into());
    }
    let clamp = |v: i64, lo: i64, hi: i64| v.clamp(lo, hi);
    let norm = |v: i64| if v < 0 { v + n } else { v };
    let (first, len) = if step > 0 {
        let a = clamp(start.map_or(0, norm), 0, n);
        let b = clamp(stop.map_or(n, norm), 0, n);
        (a, if b > a { (b - a + step - 1) / step } else { 0 })
    } else {
        let a = clamp(start.map_or(n - 1, norm), -1, n - 1);
        let b = clamp(stop.map_or(-1, norm), -1, n - 1);
        (a, if a > b { (a - b - step - 1) / (-step) } else { 0 })
    };
    Ok((first.max(0) as usize, step, len as usize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn, s};

    fn arange(shape: &[usize]) -> ArrayD<f64> {
        let n: usize = shape.iter().product();
        ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(|i| i as f64).collect()).unwrap()
    }

    /// The view's values over `region`, read through the source region as a worker does.
    fn read(v: &View, src: &ArrayD<f64>, region: &[Range<usize>]) -> ArrayD<f64> {
        let sr = v.source_region(region);
        let mut part = src.view();
        for (d, r) in sr.iter().enumerate() {
            part.slice_axis_inplace(Axis(d), Slice::from(r.clone()));
        }
        v.apply(part)
    }

    #[test]
    fn slices_follow_python() {
        assert_eq!(slice_indices(10, None, None, None), Ok((0, 1, 10)));
        assert_eq!(slice_indices(10, Some(1), None, None), Ok((1, 1, 9)));
        assert_eq!(slice_indices(10, None, Some(-1), None), Ok((0, 1, 9)));
        assert_eq!(slice_indices(10, None, None, Some(-1)), Ok((9, -1, 10)));
        assert_eq!(slice_indices(10, Some(8), Some(2), Some(-3)), Ok((8, -3, 2)));
        assert_eq!(slice_indices(10, Some(-3), None, Some(2)), Ok((7, 2, 2)));
        assert_eq!(slice_indices(10, Some(20), None, None), Ok((10, 1, 0)));
        assert_eq!(slice_indices(10, None, None, Some(4)), Ok((0, 4, 3)));
        assert!(slice_indices(10, None, None, Some(0)).is_err());
    }

    #[test]
    fn views_read_by_region_equal_ndarray_slicing() {
        let a = arange(&[7, 6, 5]);
        let cases: Vec<(Vec<Item>, ArrayD<f64>)> = vec![
            (
                vec![Item::Slice(Some(1), None, None)],
                a.slice(s![1.., .., ..]).to_owned().into_dyn(),
            ),
            (
                vec![Item::Int(-1), Item::Slice(None, None, Some(-2))],
                a.slice(s![-1, ..;-2, ..]).to_owned().into_dyn(),
            ),
            (
                vec![Item::Ellipsis, Item::Int(2), Item::NewAxis],
                a.slice(s![.., .., 2]).insert_axis(Axis(2)).to_owned().into_dyn(),
            ),
            (
                vec![Item::NewAxis, Item::Slice(Some(5), Some(0), Some(-2)), Item::Int(3)],
                ArrayD::zeros(IxDyn(&[1, 3, 5])), // numpy's a[None, 5:0:-2, 3], built below
            ),
        ];
        for (items, want) in cases {
            let mut want = want;
            if items.first() == Some(&Item::NewAxis) {
                // ndarray's s![5..0;-2] is empty; build numpy's a[5:0:-2] by hand.
                let rows: Vec<usize> = vec![5, 3, 1];
                let mut w = ArrayD::zeros(IxDyn(&[1, 3, 5]));
                for (i, &r) in rows.iter().enumerate() {
                    for k in 0..5 {
                        w[[0, i, k]] = a[[r, 3, k]];
                    }
                }
                want = w;
            }
            let v = index(a.shape(), &items).unwrap();
            assert_eq!(v.shape(), want.shape(), "{items:?}");
            let whole: Vec<Range<usize>> = v.shape().iter().map(|&n| 0..n).collect();
            assert_eq!(read(&v, &a, &whole), want, "{items:?} whole");
            // Every single-element region reads the right element.
            let shape = v.shape();
            let mut idx = vec![0usize; shape.len()];
            loop {
                let region: Vec<Range<usize>> = idx.iter().map(|&i| i..i + 1).collect();
                assert_eq!(
                    read(&v, &a, &region).iter().next(),
                    Some(&want[IxDyn(&idx)]),
                    "{items:?} at {idx:?}"
                );
                let mut d = shape.len();
                loop {
                    if d == 0 {
                        break;
                    }
                    d -= 1;
                    idx[d] += 1;
                    if idx[d] < shape[d] {
                        break;
                    }
                    idx[d] = 0;
                }
                if idx.iter().all(|&i| i == 0) {
                    break;
                }
            }
        }
    }

    #[test]
    fn compose_and_transpose() {
        let a = arange(&[4, 6]);
        let t = View::permute(&[4, 6], &[1, 0]);
        assert_eq!(t.shape(), vec![6, 4]);
        // (a.T)[1:5:2, -1] == a[-1, 1:5:2]
        let outer = index(&t.shape(), &[Item::Slice(Some(1), Some(5), Some(2)), Item::Int(-1)]).unwrap();
        let v = outer.compose(&t);
        let whole: Vec<Range<usize>> = v.shape().iter().map(|&n| 0..n).collect();
        assert_eq!(read(&v, &a, &whole), a.slice(s![-1, 1..5;2]).to_owned().into_dyn());
        let tt = View::permute(&[6, 4], &[1, 0]).compose(&t);
        assert!(tt.is_identity());
    }

    #[test]
    fn index_errors_name_the_item() {
        assert_eq!(index(&[3], &[Item::Int(3)]).unwrap_err().0, 0);
        assert!(
            index(&[3], &[Item::Int(-4)])
                .unwrap_err()
                .1
                .contains("index -4 is out of bounds for axis 0 with size 3")
        );
        assert!(
            index(&[3], &[Item::Int(0), Item::Int(0)])
                .unwrap_err()
                .1
                .contains("too many indices")
        );
        assert!(
            index(&[3, 3], &[Item::Ellipsis, Item::Ellipsis])
                .unwrap_err()
                .1
                .contains("single ellipsis")
        );
        assert!(index(&[3], &[Item::Slice(None, None, Some(0))]).unwrap_err().1.contains("zero"));
    }

    #[test]
    fn operands_keep_broadcast_axes_new() {
        // v = (x + lat)[1:3, ::-1] with x (4, 5) and lat (4, 1)
        let v = index(&[4, 5], &[Item::Slice(Some(1), Some(3), None), Item::Slice(None, None, Some(-1))]).unwrap();
        let lat = v.for_operand(&[4, 1]);
        assert_eq!(lat.shape(), vec![2, 1]);
        let row = v.for_operand(&[5]);
        assert_eq!(row.shape(), vec![1, 5]);
        let a = arange(&[5]);
        let whole = [0..1, 0..5];
        assert_eq!(
            read(&row, &a, &whole).iter().copied().collect::<Vec<_>>(),
            vec![4.0, 3.0, 2.0, 1.0, 0.0]
        );
    }
}
