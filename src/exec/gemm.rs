//! Contractions as matrix products.
//!
//! A contraction (`exec::einsum`) lowers to a reduce stage whose kernel is the product
//! of two operands `x * y` and whose const is their `sum` over some axes. Formed
//! elementwise, that product has the size of every axis together (m·n·k for a matrix
//! product). Here each stage axis gets a role instead: *batch* (both operands vary
//! along it and it is kept), *m* (only x, kept), *n* (only y, kept) or *k* (both,
//! summed). A block's tile of x is then a stack of m×k matrices, y's a stack of k×n,
//! and the block's partial sum is their matrix product (ndarray's `general_mat_mul`,
//! backed by `matrixmultiply`), never the m·n·k product. A stage that does not fit
//! these roles (an axis summed in one operand only, say) keeps the elementwise path,
//! which gives the same values.
//!
//! The planner sizes such stages by their tiles (`tile_block`), not by the volume of
//! the stage, which would make tiles of a few hundred elements a side.

use std::ops::Range;

use ndarray::{Array3, ArrayD, ArrayView3, ArrayViewD, Axis, Ix3, IxDyn, linalg::general_mat_mul};

use super::ops::Op;
use super::plan::{Kernel, ReduceOp};

unsafe extern "C" {
    /// OpenBLAS's thread count for the calls that follow (process-wide).
    fn openblas_set_num_threads(n: std::ffi::c_int);
}

/// Make BLAS single-threaded: the parallelism is drover's (tasks on worker threads);
/// OpenBLAS's own threads on top would oversubscribe the cores.
///
/// OpenBLAS built with pthreads (Debian's default) starts its thread pool when the
/// library is loaded, before `main`, and each pool thread waits for work spinning on
/// `sched_yield` for about 2^28 cycles before it sleeps: in every drover process, CPU
/// taken from the task threads at the start of each run (943 `sched_yield` calls in one
/// `drover run` of the int16 mean; perf: about 7% of its CPU). Setting the count does not
/// stop threads already started, so the pool is shut down here (the call OpenBLAS's own
/// fork handler makes); with one thread later products run in the caller and start none.
/// Looked up at run time: serial and OpenMP builds may not have it.
pub fn single_threaded_blas() {
    // SAFETY: a setter of an integer in OpenBLAS, called before any matrix product.
    unsafe { openblas_set_num_threads(1) }
    // SAFETY: dlsym with a NUL-terminated name; the symbol, when present, is OpenBLAS's
    // `int blas_thread_shutdown_(void)`, called once from `main` before any thread
    // could be in a BLAS call.
    unsafe {
        let f = nix::libc::dlsym(nix::libc::RTLD_DEFAULT, c"blas_thread_shutdown_".as_ptr());
        if !f.is_null() {
            let shutdown: extern "C" fn() -> std::ffi::c_int = std::mem::transmute(f);
            shutdown();
        }
    }
}

/// What a stage axis is to a contraction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Batch,
    M,
    N,
    K,
}

/// A reduce stage computed as matrix products: its two factors and each axis's role.
pub struct Contraction<'a> {
    pub x: &'a Kernel,
    pub y: &'a Kernel,
    pub roles: Vec<Role>,
}

/// Along which axes of a stage of rank `rank` the kernel's value varies (a leaf's
/// shape aligned from the right; length-1 axes broadcast).
fn varies(k: &Kernel, rank: usize, shape_of: &dyn Fn(&Kernel) -> Vec<usize>) -> Vec<bool> {
    match k {
        Kernel::Num(_) => vec![false; rank],
        Kernel::Map(_, args) => args
            .iter()
            .map(|a| varies(a, rank, shape_of))
            .fold(vec![false; rank], |a, b| a.iter().zip(&b).map(|(p, q)| *p || *q).collect()),
        leaf => {
            let s = shape_of(leaf);
            let off = rank - s.len();
            (0..rank).map(|d| d >= off && s[d - off] > 1).collect()
        }
    }
}

/// The contraction a reduce stage computes, if its kernel is a product of two
/// factors summed (`op`, `axes`) along axes that give every axis a role.
pub fn contraction<'a>(
    kernel: &'a Kernel,
    shape: &[usize],
    op: ReduceOp,
    axes: &[usize],
    shape_of: &dyn Fn(&Kernel) -> Vec<usize>,
) -> Option<Contraction<'a>> {
    let Kernel::Map(m, args) = kernel else { return None };
    if op != ReduceOp::Sum || *m != Op::of("multiply") || args.len() != 2 || axes.is_empty() {
        return None;
    }
    let (x, y) = (&args[0], &args[1]);
    let (vx, vy) = (varies(x, shape.len(), shape_of), varies(y, shape.len(), shape_of));
    let roles = (0..shape.len())
        .map(|d| {
            let summed = axes.contains(&d);
            match (shape[d] == 1, vx[d], vy[d], summed) {
                (true, _, _, true) | (false, true, true, true) => Some(Role::K),
                (true, _, _, false) | (false, true, true, false) => Some(Role::Batch),
                (false, true, false, false) => Some(Role::M),
                (false, false, true, false) => Some(Role::N),
                _ => None,
            }
        })
        .collect::<Option<Vec<_>>>()?;
    // Something on each side of the product: otherwise it is a plain sum of a product.
    roles.contains(&Role::K).then_some(Contraction { x, y, roles })
}

impl Contraction<'_> {
    fn axes(&self, role: Role) -> Vec<usize> {
        (0..self.roles.len()).filter(|&d| self.roles[d] == role).collect()
    }

    /// The region each factor is evaluated on: the block's, collapsed to one element
    /// along the axes the factor does not vary on.
    pub fn factor_regions(&self, region: &[Range<usize>]) -> (Vec<Range<usize>>, Vec<Range<usize>>) {
        let collapse = |skip: Role| -> Vec<Range<usize>> {
            region
                .iter()
                .zip(&self.roles)
                .map(|(r, &role)| if role == skip { r.start..r.start + 1 } else { r.clone() })
                .collect()
        };
        (collapse(Role::N), collapse(Role::M))
    }

    /// The block's partial sum (the kept axes, in stage order) from the factors
    /// evaluated on [`Self::factor_regions`], in any memory layout.
    pub fn multiply(&self, region: &[Range<usize>], x: ArrayViewD<'_, f64>, y: ArrayViewD<'_, f64>) -> ArrayD<f64> {
        let (batch, m, n, k) = (self.axes(Role::Batch), self.axes(Role::M), self.axes(Role::N), self.axes(Role::K));
        let len = |axes: &[usize]| axes.iter().map(|&a| region[a].len()).product::<usize>();
        let (nb, nm, nn, nk) = (len(&batch), len(&m), len(&n), len(&k));
        // Each factor as a stack of matrices: seen through strides when each role has
        // at most one axis longer than 1 (no copy: BLAS and matrixmultiply take
        // strided matrices), copied into that order otherwise.
        let cat = |parts: &[&[usize]]| -> Vec<usize> { parts.iter().flat_map(|p| p.iter().copied()).collect() };
        let xo = [Role::Batch, Role::M, Role::K];
        let yo = [Role::Batch, Role::K, Role::N];
        let (xs, ys);
        let (xv, yv) = match (stack_view(x.clone(), &self.roles, xo), stack_view(y.clone(), &self.roles, yo)) {
            (Some(a), Some(b)) => (a, b),
            _ => {
                xs = stack_copy(x, cat(&[&batch, &m, &k, &n]), (nb, nm, nk));
                ys = stack_copy(y, cat(&[&batch, &k, &n, &m]), (nb, nk, nn));
                (xs.view(), ys.view())
            }
        };
        let mut out = Array3::<f64>::zeros((nb, nm, nn));
        for b in 0..nb {
            let (xb, yb) = (xv.index_axis(Axis(0), b), yv.index_axis(Axis(0), b));
            let mut ob = out.index_axis_mut(Axis(0), b);
            if nm == 1 && nn == 1 {
                // A dot product per batch element ('ij,ij->i').
                ob[[0, 0]] = xb.row(0).dot(&yb.column(0));
            } else {
                general_mat_mul(1.0, &xb, &yb, 0.0, &mut ob);
            }
        }
        // (batch, m, n) back to the kept axes in stage order.
        let order = cat(&[&batch, &m, &n]);
        let dims: Vec<usize> = order.iter().map(|&a| region[a].len()).collect();
        let out = out.into_shape_with_order(IxDyn(&dims)).expect("same element count");
        let mut kept = order.clone();
        kept.sort_unstable();
        let perm: Vec<usize> = kept.iter().map(|a| order.iter().position(|b| b == a).expect("kept axis")).collect();
        out.permuted_axes(IxDyn(&perm)).as_standard_layout().into_owned()
    }
}

/// A factor (one axis per stage axis) as a 3-D view in the roles' `order`, without
/// copying: axes of length 1 are dropped, each role keeps at most one axis (`None`
/// when a role has several: their merge needs a copy), missing roles become length 1.
fn stack_view<'a>(mut a: ArrayViewD<'a, f64>, roles: &[Role], order: [Role; 3]) -> Option<ArrayView3<'a, f64>> {
    let mut left: Vec<Role> = roles.to_vec();
    for d in (0..roles.len()).rev() {
        if a.len_of(Axis(d)) == 1 {
            a.index_axis_inplace(Axis(d), 0);
            left.remove(d);
        }
    }
    let mut perm = Vec::new();
    let mut present = [false; 3];
    for (slot, r) in order.iter().enumerate() {
        let mut at = left.iter().enumerate().filter(|(_, l)| *l == r).map(|(i, _)| i);
        if let Some(i) = at.next() {
            perm.push(i);
            present[slot] = true;
        }
        if at.next().is_some() {
            return None;
        }
    }
    if perm.len() != left.len() {
        return None; // an axis of another role (the other factor's) longer than 1
    }
    let mut a = a.permuted_axes(IxDyn(&perm));
    for (slot, &p) in present.iter().enumerate() {
        if !p {
            a.insert_axis_inplace(Axis(slot));
        }
    }
    a.into_dimensionality::<Ix3>().ok()
}

/// A factor copied into `order` and reshaped to a stack of matrices.
fn stack_copy(a: ArrayViewD<'_, f64>, order: Vec<usize>, shape: (usize, usize, usize)) -> Array3<f64> {
    a.permuted_axes(IxDyn(&order))
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order(shape)
        .expect("a factor holds batch × rows × cols elements")
}

/// Block shape of a contraction stage: starting from `block` (the inputs' blocks),
/// halve the longest axis of the largest tile until each factor's tile holds at most
/// `max_tile` elements and the partial half of that. Kept axes are cut before summed
/// ones, so partial sums stay few.
pub fn tile_block(c: &Contraction, mut block: Vec<usize>, max_tile: usize) -> Vec<usize> {
    let tile = |block: &[usize], skip: Role| -> usize { (0..block.len()).filter(|&d| c.roles[d] != skip).map(|d| block[d]).product() };
    let out = |block: &[usize]| -> usize { (0..block.len()).filter(|&d| c.roles[d] != Role::K).map(|d| block[d]).product() };
    loop {
        let (tx, ty, to) = (tile(&block, Role::N), tile(&block, Role::M), out(&block));
        let over: Vec<Role> = [(tx > max_tile, Role::N), (ty > max_tile, Role::M), (to > max_tile / 2, Role::K)]
            .into_iter()
            .filter(|(o, _)| *o)
            .map(|(_, skip)| skip)
            .collect();
        let Some(&skip) = over.first() else { return block };
        let pick = |allow_k: bool| {
            (0..block.len())
                .filter(|&d| c.roles[d] != skip && block[d] > 1 && (allow_k || c.roles[d] != Role::K))
                .max_by_key(|&d| block[d])
        };
        let Some(d) = pick(false).filter(|&d| block[d] > 256).or_else(|| pick(true)) else {
            return block;
        };
        block[d] = block[d].div_ceil(2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::view::{Dim, View};
    use ndarray::{Array, Array2};

    fn leaf(src: &[usize], dims: Vec<Dim>) -> Kernel {
        Kernel::View(
            Box::new(Kernel::Input(0)),
            View {
                src: src.to_vec(),
                dims,
                fixed: vec![],
            },
        )
    }

    fn src(axis: usize, len: usize) -> Dim {
        Dim::Src {
            axis,
            start: 0,
            step: 1,
            len,
        }
    }

    #[test]
    fn matmul_tiles_equal_the_elementwise_sum() {
        // Stage axes (i, j, k): x = a[i, k] placed as (i, new, k), y = b[k, j] as (new, j, k).
        let (ni, nj, nk) = (5, 7, 11);
        let x = leaf(&[ni, nk], vec![src(0, ni), Dim::New, src(1, nk)]);
        let y = leaf(&[nk, nj], vec![Dim::New, src(1, nj), src(0, nk)]);
        let kernel = Kernel::Map(Op::of("multiply"), vec![x, y]);
        let shape_of = |k: &Kernel| match k {
            Kernel::View(_, v) => v.shape(),
            _ => vec![],
        };
        let c = contraction(&kernel, &[ni, nj, nk], ReduceOp::Sum, &[2], &shape_of).expect("a contraction");
        assert_eq!(c.roles, vec![Role::M, Role::N, Role::K]);
        let region = [1..4, 2..7, 3..11];
        let a = Array::from_shape_fn((ni, nk), |(i, k)| (i * 31 + k * 7) as f64 * 0.25 - 3.0);
        let b = Array::from_shape_fn((nk, nj), |(k, j)| (k * 13 + j * 5) as f64 * 0.5 - 7.0);
        let (rx, ry) = c.factor_regions(&region);
        assert_eq!(rx, vec![1..4, 2..3, 3..11]);
        assert_eq!(ry, vec![1..2, 2..7, 3..11]);
        let xt = Array::from_shape_fn((3, 1, 8), |(i, _, k)| a[[i + 1, k + 3]]).into_dyn();
        let yt = Array::from_shape_fn((1, 5, 8), |(_, j, k)| b[[k + 3, j + 2]]).into_dyn();
        let got = c.multiply(&region, xt.view(), yt.view());
        // a transposed (strided) factor gives the same values
        let yt_t = yt.view().reversed_axes().as_standard_layout().into_owned();
        let yt_strided = yt_t.view().reversed_axes();
        assert_eq!(c.multiply(&region, xt.view(), yt_strided), got);
        let want = Array2::from_shape_fn((3, 5), |(i, j)| (3..11).map(|k| a[[i + 1, k]] * b[[k, j + 2]]).sum::<f64>());
        assert_eq!(got.shape(), &[3, 5]);
        for (g, w) in got.iter().zip(want.iter()) {
            assert!((g - w).abs() <= 1e-12 * w.abs().max(1.0), "{g} vs {w}");
        }
    }

    #[test]
    fn a_sum_along_one_factor_only_is_not_a_contraction() {
        let x = leaf(&[4, 6], vec![src(0, 4), src(1, 6)]);
        let y = leaf(&[4], vec![src(0, 4), Dim::New]);
        let kernel = Kernel::Map(Op::of("multiply"), vec![x, y]);
        let shape_of = |k: &Kernel| match k {
            Kernel::View(_, v) => v.shape(),
            _ => vec![],
        };
        assert!(contraction(&kernel, &[4, 6], ReduceOp::Sum, &[1], &shape_of).is_none());
        assert!(contraction(&kernel, &[4, 6], ReduceOp::Mean, &[0], &shape_of).is_none());
    }

    #[test]
    fn tiles_are_cut_to_size_kept_axes_first() {
        let c = Contraction {
            x: &Kernel::Num(0.0),
            y: &Kernel::Num(0.0),
            roles: vec![Role::M, Role::N, Role::K],
        };
        let b = tile_block(&c, vec![4096, 4096, 4096], 1 << 23);
        assert!(b[0] * b[2] <= 1 << 23 && b[1] * b[2] <= 1 << 23 && b[0] * b[1] <= 1 << 22, "{b:?}");
        assert_eq!(b[2], 4096, "the summed axis is kept whole while kept axes can be cut: {b:?}");
    }
}
