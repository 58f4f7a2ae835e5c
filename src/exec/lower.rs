//! Lowering resolved expressions into stages: reductions become reduce stages and
//! consts (identical reductions shared), views are pushed down to the leaves, and each
//! stage gets its block shape and each output its HDF5 chunk shape.

use super::along::AlongOp;
use super::calendar::Groups;
use super::geometry::{self, broadcast};
use super::plan::{ConstSpec, Contract, InputSpec, Kernel, Stage, StageKind};
use super::reshape::Reshape;
use super::resolve::Node;
use super::view::{Dim, View};

pub(super) struct Lowering<'a> {
    pub(super) inputs: &'a [InputSpec],
    pub(super) consts: Vec<ConstSpec>,
    pub(super) stages: Vec<Stage>,
    pub(super) const_shapes: Vec<Vec<usize>>,
    /// Elements a block aims at (the default, or less under a memory bound).
    pub(super) target: usize,
}

impl Lowering<'_> {
    pub(super) fn shape_of(&self, k: &Kernel) -> Vec<usize> {
        match k {
            Kernel::Input(i) => self.inputs[*i as usize].shape.clone(),
            Kernel::Const(c) => self.const_shapes[*c as usize].clone(),
            Kernel::Num(_) => vec![],
            Kernel::Map(_, args) => args
                .iter()
                .map(|a| self.shape_of(a))
                .reduce(|a, b| broadcast(&a, &b).expect("checked in resolve"))
                .unwrap_or_default(),
            Kernel::View(_, v) => v.shape(),
            Kernel::Reshape(_, r) => r.to.clone(),
            Kernel::Along(_, a) => a.to.clone(),
            Kernel::Take(src, table, axis) => {
                let mut s = self.shape_of(src);
                s[*axis] = table.len();
                s
            }
        }
    }

    pub(super) fn lower(&mut self, node: &Node) -> Kernel {
        match node {
            Node::Input(i) => Kernel::Input(*i),
            Node::Num(v) => Kernel::Num(*v),
            Node::Map(op, args) => Kernel::Map(*op, args.iter().map(|a| self.lower(a)).collect()),
            Node::View(arg, v) => {
                let k = self.lower(arg);
                self.push_view(k, v)
            }
            Node::Take { src, table, axis } => Kernel::Take(Box::new(self.lower(src)), table.clone(), *axis),
            Node::Reshape(arg, r) => Kernel::Reshape(Box::new(self.lower(arg)), r.clone()),
            Node::Along(arg, along) => {
                let kernel = self.lower(arg);
                let mut along = (**along).clone();
                if let AlongOp::Scan { op, .. } = along.op {
                    // A scan over several blocks starts each block from the totals of
                    // the segments (the operand's blocks) before it: a grouped
                    // reduction by segment, computed in parallel like any other.
                    let ax = along.axis();
                    let (own, local) = self.stage_block(&kernel, &along.from);
                    if !local && own[ax] < along.from[ax] {
                        let carry = Node::Reduce {
                            op: op.carry_op(),
                            axes: vec![ax],
                            arg: arg.clone(),
                            ddof: 0.0,
                            keepdims: false,
                            hist: None,
                            groups: Some(Groups::segments(along.from[ax], own[ax])),
                        };
                        let Kernel::Const(c) = self.lower(&carry) else {
                            unreachable!("a reduction without keepdims lowers to its const")
                        };
                        along.op = AlongOp::Scan { op, seg: own[ax] };
                        along.carry = Some(c);
                    }
                }
                Kernel::Along(Box::new(kernel), Box::new(along))
            }
            Node::Reduce {
                op,
                axes,
                arg,
                ddof,
                keepdims,
                hist,
                groups,
            } => {
                let kernel = self.lower(arg);
                let shape = self.shape_of(&kernel);
                let stage = match self
                    .stages
                    .iter()
                    .position(|s| matches!(s.kind, StageKind::Reduce { .. }) && s.kernel == kernel)
                {
                    Some(s) => s,
                    None => {
                        let (mut block, local) = self.stage_block(&kernel, &shape);
                        if let Some(c) = super::gemm::contraction(&kernel, &shape, *op, axes, &|k| self.shape_of(k))
                            && !local
                            && groups.is_none()
                        {
                            block = super::gemm::tile_block(&c, block, self.target / 4);
                        }
                        self.stages.push(Stage {
                            kernel,
                            shape: shape.clone(),
                            block,
                            kind: StageKind::Reduce { consts: vec![] },
                            local,
                            contract: None,
                            also: vec![],
                        });
                        self.stages.len() - 1
                    }
                };
                let existing = self.consts.iter().position(|c| {
                    c.stage == stage as u32 && c.op == *op && c.axes == *axes && c.ddof == *ddof && c.hist == *hist && c.groups == *groups
                });
                let id = match existing {
                    Some(c) => c,
                    None => {
                        let mut out_shape = match hist {
                            Some(h) => vec![h.bins],
                            None => geometry::kept(&shape, axes),
                        };
                        if let Some(g) = groups {
                            out_shape.insert(axes[0], g.len());
                        }
                        self.consts.push(ConstSpec {
                            op: *op,
                            axes: axes.clone(),
                            shape: out_shape.clone(),
                            stage: stage as u32,
                            ddof: *ddof,
                            hist: *hist,
                            groups: groups.clone(),
                        });
                        self.const_shapes.push(out_shape);
                        let StageKind::Reduce { consts } = &mut self.stages[stage].kind else {
                            unreachable!()
                        };
                        consts.push((self.consts.len() - 1) as u32);
                        self.consts.len() - 1
                    }
                };
                let k = Kernel::Const(id as u32);
                if !*keepdims {
                    return k;
                }
                // keepdims: the result with length-1 axes where the reduced ones were.
                let kept_shape = self.const_shapes[id].clone();
                let mut src = View::identity(&kept_shape).dims.into_iter();
                let dims = (0..shape.len())
                    .map(|d| {
                        if axes.contains(&d) {
                            Dim::New
                        } else {
                            src.next().expect("kept axes")
                        }
                    })
                    .collect();
                let v = View {
                    src: kept_shape,
                    dims,
                    fixed: vec![],
                };
                self.push_view(k, &v)
            }
        }
    }

    /// An output that is a contraction (`a @ b`, `einsum`, ...) whose summed axes fit
    /// whole in tiles of the factors: the product kernel over the contraction's whole
    /// space, the contraction, and the result's block. Each block of the result is then
    /// computed and written by one task, with no partial sums, reduce stage or const.
    /// `None` for anything else (the contraction then goes through a reduce stage).
    pub(super) fn fused_contraction(&mut self, node: &Node) -> Option<(Kernel, Contract, Vec<usize>)> {
        let Node::Reduce {
            op,
            axes,
            arg,
            keepdims: false,
            hist: None,
            groups: None,
            ..
        } = node
        else {
            return None;
        };
        let kernel = self.lower(arg);
        let shape = self.shape_of(&kernel);
        let (mut block, local) = self.stage_block(&kernel, &shape);
        let c = super::gemm::contraction(&kernel, &shape, *op, axes, &|k| self.shape_of(k))?;
        if local {
            return None;
        }
        for &a in axes {
            block[a] = shape[a];
        }
        let block = super::gemm::tile_block(&c, block, self.target / 4);
        if axes.iter().any(|&a| block[a] < shape[a]) {
            return None; // the summed axes are too long to stay whole: partial sums
        }
        let contract = Contract { shape, axes: axes.clone() };
        Some((kernel, contract, geometry::kept(&block, axes)))
    }

    /// `view` of the result of `k`, pushed down to its leaves: a view of an
    /// elementwise result is the elementwise result of views of its operands.
    pub(super) fn push_view(&self, k: Kernel, view: &View) -> Kernel {
        match k {
            Kernel::Num(_) => k,
            Kernel::Input(_) | Kernel::Const(_) if view.is_identity() => k,
            Kernel::Input(_) | Kernel::Const(_) => Kernel::View(Box::new(k), view.clone()),
            Kernel::View(leaf, inner) => Kernel::View(leaf, view.compose(&inner)),
            Kernel::Take(..) | Kernel::Reshape(..) | Kernel::Along(..) if view.is_identity() => k,
            Kernel::Take(..) | Kernel::Reshape(..) | Kernel::Along(..) => Kernel::View(Box::new(k), view.clone()),
            Kernel::Map(op, args) => Kernel::Map(
                op,
                args.into_iter()
                    .map(|a| {
                        let v = view.for_operand(&self.shape_of(&a));
                        self.push_view(a, &v)
                    })
                    .collect(),
            ),
        }
    }

    /// For each dimension of a stage of `shape`, the first input leaf that spans it:
    /// (input, its axis, the view's step along it; 1 without a view).
    pub(super) fn spanning_inputs(&self, kernel: &Kernel, shape: &[usize]) -> Vec<Option<(u32, usize, i64)>> {
        let r = shape.len();
        let mut out = vec![None; r];
        // Inputs inside an operation along axes span its operand, not the stage.
        visit_outside_along(kernel, &mut |k| {
            // Per view dimension: (source axis, step, length), or None for a new axis.
            type Dims = Vec<Option<(usize, i64, usize)>>;
            let (i, dims): (u32, Dims) = match k {
                Kernel::Input(i) => {
                    let s = &self.inputs[*i as usize].shape;
                    (*i, s.iter().enumerate().map(|(a, &n)| Some((a, 1, n))).collect())
                }
                Kernel::View(leaf, v) => match **leaf {
                    Kernel::Input(i) => (
                        i,
                        v.dims
                            .iter()
                            .map(|d| match d {
                                Dim::Src { axis, step, len, .. } => Some((*axis, *step, *len)),
                                Dim::New => None,
                            })
                            .collect(),
                    ),
                    _ => return,
                },
                _ => return,
            };
            let ri = dims.len();
            for j in 0..r {
                if out[j].is_none()
                    && j + ri >= r
                    && let Some((axis, step, len)) = dims[j + ri - r]
                    && len == shape[j]
                    && shape[j] > 1
                {
                    out[j] = Some((i, axis, step));
                }
            }
        });
        out
    }

    /// Block shape of a stage: per dimension, the block length of the first input that
    /// spans it (divided by a view's step, so a block still reads about one input
    /// block); the whole extent otherwise. Stages reading no input run locally.
    pub(super) fn stage_block(&self, kernel: &Kernel, shape: &[usize]) -> (Vec<usize>, bool) {
        if kernel.inputs().is_empty() {
            return (shape.iter().map(|&s| s.max(1)).collect(), true);
        }
        let spans = self.spanning_inputs(kernel, shape);
        let mut block: Vec<usize> = spans
            .iter()
            .zip(shape)
            .map(|(span, &n)| match span {
                Some((i, axis, step)) => {
                    let b = self.inputs[*i as usize].block[*axis];
                    (b / step.unsigned_abs() as usize).clamp(1, n)
                }
                None => n.max(1),
            })
            .collect();
        let spanned: Vec<bool> = spans.iter().map(Option::is_some).collect();
        self.leaf_blocks(kernel, shape, &mut block, &spanned);
        (block, false)
    }

    /// Along the dimensions no input spans: the blocks of the reshapes and operations
    /// along axes that span them (each follows its operand's blocks, [`Reshape::block`],
    /// [`super::along::Along::block`]), through a view of them where there is one. An
    /// operation over whole lanes (median, sort) bounds the block along every
    /// dimension it spans.
    fn leaf_blocks(&self, k: &Kernel, shape: &[usize], block: &mut [usize], spanned: &[bool]) {
        let (leaf, view) = match k {
            Kernel::Map(_, args) => {
                args.iter().for_each(|a| self.leaf_blocks(a, shape, block, spanned));
                return;
            }
            Kernel::View(leaf, v) if matches!(**leaf, Kernel::Reshape(..) | Kernel::Along(..)) => (&**leaf, Some(v)),
            Kernel::Reshape(..) | Kernel::Along(..) => (k, None),
            _ => return,
        };
        let (own, always, leaf_shape) = match leaf {
            Kernel::Reshape(arg, r) => (r.block(&self.stage_block(arg, &r.from).0), false, r.to.clone()),
            Kernel::Along(arg, a) => (
                a.block(&self.stage_block(arg, &a.from).0, self.target),
                a.whole_axes(),
                a.to.clone(),
            ),
            _ => unreachable!("matched above"),
        };
        // Per dimension of the leaf: (its reshape axis, the view's step).
        let dims: Vec<Option<(usize, i64)>> = match view {
            None => (0..own.len()).map(|a| Some((a, 1))).collect(),
            Some(v) => v
                .dims
                .iter()
                .map(|d| match d {
                    Dim::Src { axis, step, .. } => Some((*axis, *step)),
                    Dim::New => None,
                })
                .collect(),
        };
        let (ri, rr) = (dims.len(), shape.len());
        let seen = view.map_or(leaf_shape, |v| v.shape());
        for j in 0..rr {
            if (always || !spanned[j])
                && j + ri >= rr
                && shape[j] > 1
                && seen[j + ri - rr] == shape[j]
                && let Some((axis, step)) = dims[j + ri - rr]
            {
                block[j] = block[j].min((own[axis] / step.unsigned_abs() as usize).max(1));
            }
        }
        // Whole lanes broadcast along dimensions they do not have (the median in
        // `t - median(t, axis=0)`): a block cut along those would compute the same lanes
        // again for each cut, so it takes them whole while it stays within the target.
        if always {
            for j in 0..rr {
                let has = j + ri >= rr && seen[j + ri - rr] == shape[j] && dims[j + ri - rr].is_some();
                if has || shape[j] <= 1 || block[j] >= shape[j] {
                    continue;
                }
                let others: usize = block.iter().enumerate().filter(|&(d, _)| d != j).map(|(_, &b)| b).product();
                if others.saturating_mul(shape[j]) <= self.target {
                    block[j] = shape[j];
                }
            }
        }
    }

    /// A reshape in `k` that cannot be computed in bounded blocks, and why: its
    /// blocks would be too large, or would read far more of the operand than they hold.
    pub(super) fn reshape_problem(&self, k: &Kernel) -> Option<(Reshape, String)> {
        let mut found = None;
        k.visit(&mut |k| {
            if let (None, Kernel::Reshape(arg, r)) = (&found, k) {
                let (inner, local) = self.stage_block(arg, &r.from);
                if local {
                    return; // computed whole, in the driver
                }
                let b = r.block(&inner);
                let elems: usize = b.iter().product();
                let read = r.read_per_block(&b);
                let limit = 4 * super::plan::DEFAULT_BLOCK_ELEMS;
                if elems > limit || read > limit.max(8 * elems) {
                    found = Some((
                        r.clone(),
                        format!(
                            "cannot be cut into bounded blocks: a block of {} elements of the result would read {read} elements of the operand \
                             (blocks of the operand {}); split or merge axes so that each block of the operand maps to whole rows of the result, \
                             or give the input chunks= that align with the new shape",
                            elems,
                            geometry::fmt_shape(&inner)
                        ),
                    ));
                }
            }
        });
        found
    }

    /// The block of a compressed output's write stage: the stage's block halved along
    /// its outermost split dimension, when it is near the full target and the halves
    /// still hold whole HDF5 chunks of the input spanning that dimension. Compressing
    /// costs tens of nanoseconds an element (libdeflate level 4: a 64 MiB block takes
    /// half a second on one core), so the last block of a stage runs alone for that
    /// long while the other workers have nothing left: halves halve that tail (3.5% of
    /// the gzip anomaly on two workers) and the payload buffers a worker holds, for a
    /// per-task cost that stays under a thousandth.
    pub(super) fn compressed_block(&self, kernel: &Kernel, shape: &[usize], block: &[usize]) -> Vec<usize> {
        let mut out = block.to_vec();
        if block.iter().product::<usize>() < self.target / 2 {
            return out;
        }
        let Some(d) = block.iter().position(|&b| b > 1) else {
            return out;
        };
        let unit = match self.spanning_inputs(kernel, shape)[d] {
            Some((i, axis, step)) => self.inputs[i as usize]
                .hdf5_chunk
                .as_ref()
                .map_or(1, |c| (c[axis] / step.unsigned_abs() as usize).max(1)),
            None => 1,
        };
        if block[d] % (2 * unit) == 0 {
            out[d] /= 2;
        }
        out
    }

    /// HDF5 chunk shape for an output written block by block: the input's HDF5 chunk
    /// along the dimensions it spans, then halved until a chunk is at most 4 MiB.
    pub(super) fn output_chunk(&self, kernel: &Kernel, shape: &[usize], block: &[usize], elem: usize) -> Option<Vec<usize>> {
        if shape.is_empty() || shape.contains(&0) {
            return None;
        }
        let r = shape.len();
        let ins = kernel.inputs();
        let mut chunk: Vec<usize> = (0..r)
            .map(|j| {
                for &i in &ins {
                    let inp = &self.inputs[i as usize];
                    let ri = inp.shape.len();
                    if j + ri >= r && inp.shape[j + ri - r] == shape[j] && shape[j] > 1 {
                        if let Some(c) = &inp.hdf5_chunk {
                            return c[j + ri - r].min(block[j]);
                        }
                    }
                }
                block[j]
            })
            .collect();
        while chunk.iter().product::<usize>() * elem > 4 << 20 {
            let (d, _) = chunk.iter().enumerate().max_by_key(|(_, c)| **c).expect("rank > 0");
            if chunk[d] == 1 {
                break;
            }
            chunk[d] = chunk[d].div_ceil(2);
        }
        Some(chunk)
    }
}

/// Visit `k` and its sub-kernels, except those inside an operation along axes.
fn visit_outside_along<'a>(k: &'a Kernel, f: &mut impl FnMut(&'a Kernel)) {
    f(k);
    match k {
        Kernel::Map(_, args) => args.iter().for_each(|a| visit_outside_along(a, f)),
        Kernel::View(leaf, _) | Kernel::Take(leaf, ..) | Kernel::Reshape(leaf, _) => visit_outside_along(leaf, f),
        _ => {}
    }
}

/// Write stages of the same shape and block that share a sub-expression (a `[let]`
/// used by several outputs, or one repeated in their texts) merged into one stage
/// writing all of them: each block then computes the shared part once and reads its
/// inputs once. A stage merges into the later one (whose consts are all finalized
/// before it); the stages after a removed one move down, and consts follow them.
pub(super) fn merge_shared_writes(stages: &mut Vec<Stage>, consts: &mut [ConstSpec]) {
    let mergeable = |s: &Stage| matches!(s.kind, StageKind::Write { .. }) && !s.local && s.contract.is_none();
    let mut removed = vec![false; stages.len()];
    for i in 0..stages.len() {
        if !mergeable(&stages[i]) {
            continue;
        }
        let Some(j) = (i + 1..stages.len()).find(|&j| {
            !removed[j]
                && mergeable(&stages[j])
                && stages[j].shape == stages[i].shape
                && stages[j].block == stages[i].block
                && shares_work(&stages[i], &stages[j])
        }) else {
            continue;
        };
        let StageKind::Write { output } = stages[i].kind else {
            unreachable!("a write stage")
        };
        let kernel = std::mem::replace(&mut stages[i].kernel, Kernel::Num(0.0));
        let also = std::mem::take(&mut stages[i].also);
        stages[j].also.push((output, kernel));
        stages[j].also.extend(also);
        removed[i] = true;
    }
    let mut new_index = Vec::with_capacity(stages.len());
    let mut n = 0u32;
    for &r in &removed {
        new_index.push(n);
        n += u32::from(!r);
    }
    for c in consts.iter_mut() {
        c.stage = new_index[c.stage as usize];
    }
    let mut k = 0;
    stages.retain(|_| {
        k += 1;
        !removed[k - 1]
    });
}

/// Whether two stages' kernels have an elementwise sub-expression in common.
fn shares_work(a: &Stage, b: &Stage) -> bool {
    let mut maps: Vec<&Kernel> = Vec::new();
    for k in a.kernels() {
        k.visit(&mut |k| {
            if matches!(k, Kernel::Map(..)) {
                maps.push(k);
            }
        });
    }
    let mut found = false;
    for k in b.kernels() {
        k.visit(&mut |k| found |= matches!(k, Kernel::Map(..)) && maps.contains(&k));
    }
    found
}
