//! From a parsed expression to a resolved tree: names bound to inputs or constants,
//! operators and functions bound to registry operations ([`super::ops`],
//! [`super::reduce`]), and every node's shape and dtype kind checked as numpy would.

use std::collections::HashMap;

use super::expr::{Ast, AxisArg, BinOp, Item};
use super::geometry::{self, broadcast};
use super::ops::{self, CONSTANTS, Kind, Op};
use super::plan::{InputSpec, PlanError, ReduceOp};
use super::reduce::{Histogram, ReduceDef};
use super::view::{self, Dim, View};
use crate::config::did_you_mean;

pub(super) struct Ctx<'a> {
    pub index: usize,
    pub expr: &'a str,
    pub names: &'a HashMap<&'a str, u32>,
    pub inputs: &'a [InputSpec],
    pub lets: &'a Lets<'a>,
}

/// The `[let]` intermediates: each resolved once, on first use, then reused; a name
/// met again while it is being resolved is a cycle.
pub(super) struct Lets<'a> {
    pub exprs: HashMap<&'a str, &'a str>,
    done: std::cell::RefCell<HashMap<String, Resolved>>,
    visiting: std::cell::RefCell<Vec<String>>,
}

impl<'a> Lets<'a> {
    pub fn new(lets: &'a [(String, String)]) -> Self {
        Lets {
            exprs: lets.iter().map(|(n, e)| (n.as_str(), e.as_str())).collect(),
            done: Default::default(),
            visiting: Default::default(),
        }
    }

    /// Resolve every intermediate, used or not, so a bad one is reported before any
    /// work starts.
    pub fn check_all(&self, cx: &Ctx) -> Result<(), PlanError> {
        let mut names: Vec<&str> = self.exprs.keys().copied().collect();
        names.sort_unstable();
        names.into_iter().try_for_each(|n| self.get(n, cx).map(|_| ()))
    }

    /// The resolved intermediate `name`, or the error, reported as the `[let]` entry's.
    fn get(&self, name: &str, cx: &Ctx) -> Result<Resolved, PlanError> {
        if let Some(r) = self.done.borrow().get(name) {
            return Ok(r.clone());
        }
        let expr = self.exprs[name];
        let let_err = |e: PlanError| match e {
            e @ PlanError::Let { .. } => e,
            e => {
                let text = e.to_string();
                let message = text.split_once("]: ").map_or(text.clone(), |(_, m)| m.to_string());
                PlanError::Let {
                    name: name.to_string(),
                    message,
                }
            }
        };
        if self.visiting.borrow().iter().any(|v| v == name) {
            let mut chain = self.visiting.borrow().clone();
            chain.push(name.to_string());
            let start = chain.iter().position(|v| v == name).unwrap_or(0);
            return Err(PlanError::Let {
                name: name.to_string(),
                message: format!("refers to itself through {}; remove the cycle", chain[start..].join(" -> ")),
            });
        }
        self.visiting.borrow_mut().push(name.to_string());
        let result = super::expr::parse(expr)
            .map_err(|source| let_err(PlanError::Syntax { index: cx.index, source }))
            .and_then(|ast| {
                let inner = Ctx { expr, ..*cx };
                resolve(&ast, &inner).map_err(let_err)
            });
        self.visiting.borrow_mut().pop();
        let r = result?;
        self.done.borrow_mut().insert(name.to_string(), r.clone());
        Ok(r)
    }
}

/// A resolved expression node, before reductions are lowered.
#[derive(Clone)]
pub(super) enum Node {
    Input(u32),
    Num(f64),
    Map(Op, Vec<Node>),
    /// A view (indexing, transpose, ...) of the node's result.
    View(Box<Node>, View),
    Reduce {
        op: ReduceOp,
        axes: Vec<usize>,
        arg: Box<Node>,
        ddof: f64,
        /// Keep the reduced axes as length 1 (`keepdims=True`).
        keepdims: bool,
        hist: Option<Histogram>,
        /// Grouped by time (`by=`): the groups replace the one reduced axis.
        groups: Option<super::calendar::Groups>,
    },
    /// numpy's reshape of the node's result.
    Reshape(Box<Node>, super::reshape::Reshape),
    /// An operation along axes (order statistics, sort, scans, windows).
    Along(Box<Node>, Box<super::along::Along>),
    /// Rows of a reduction result picked along `axis` by an index table.
    Take {
        src: Box<Node>,
        table: Vec<u32>,
        axis: usize,
    },
}

/// A resolved node with its shape and kind.
pub(super) type Resolved = (Node, Vec<usize>, Kind);

fn input_kind(spec: &InputSpec) -> Kind {
    use super::hdf::Dtype;
    use crate::config::workload::GenKind;
    if let Some(g) = &spec.generate {
        return if g.kind == GenKind::Arange { Kind::Index } else { Kind::Float };
    }
    if spec.cf.is_some() {
        return Kind::Float; // CF-decoded: NaN for missing values, scaled
    }
    match spec.dtype {
        Dtype::F32 | Dtype::F64 => Kind::Float,
        _ => Kind::Int,
    }
}

/// Apply `op` to resolved arguments: broadcast their shapes, check their kinds.
pub(super) fn map(op: Op, args: Vec<Resolved>, cx: &Ctx, at: (&str, usize)) -> Result<Resolved, PlanError> {
    let kinds: Vec<Kind> = args.iter().map(|a| a.2).collect();
    let kind = ops::result_kind(op.get(), &kinds).map_err(|problem| PlanError::BadOperator {
        index: cx.index,
        op: at.0.to_string(),
        pos: at.1,
        expr: cx.expr.into(),
        problem,
    })?;
    let mut shape: Vec<usize> = vec![];
    for (i, a) in args.iter().enumerate() {
        shape = broadcast(&shape, &a.1).ok_or_else(|| PlanError::Broadcast {
            index: cx.index,
            expr: cx.expr.into(),
            op: at.0.to_string(),
            left: if i == 1 { args[0].1.clone() } else { shape.clone() },
            right: a.1.clone(),
        })?;
    }
    let op = ops::on_kinds(op, &kinds);
    Ok((Node::Map(op, args.into_iter().map(|a| a.0).collect()), shape, kind))
}

pub(super) fn resolve(ast: &Ast, cx: &Ctx) -> Result<Resolved, PlanError> {
    Ok(match ast {
        Ast::Num(v) => (Node::Num(*v), vec![], Kind::Float),
        Ast::Int(v) => (Node::Num(*v as f64), vec![], Kind::Index),
        Ast::Str(s, pos) => {
            return Err(PlanError::BadOperator {
                index: cx.index,
                op: s.clone(),
                pos: *pos,
                expr: cx.expr.into(),
                problem: "is a string, which only einsum takes (its subscripts, first: einsum('ij,jk->ik', a, b))".into(),
            });
        }
        Ast::Name { name, pos } => match cx.names.get(name.as_str()) {
            Some(&i) => {
                let spec = &cx.inputs[i as usize];
                (Node::Input(i), spec.shape.clone(), input_kind(spec))
            }
            None if cx.lets.exprs.contains_key(name.as_str()) => cx.lets.get(name, cx)?,
            None => match CONSTANTS.iter().find(|(n, _)| n == name) {
                Some(&(_, v)) => (Node::Num(v), vec![], Kind::Float),
                None => return Err(unknown_name(name, *pos, cx)),
            },
        },
        Ast::Unary(op, a, pos) => {
            let arg = resolve(a, cx)?;
            map(Op::of(op.op_name()), vec![arg], cx, (op.symbol(), *pos))?
        }
        Ast::Bin(op, a, b, pos) => {
            let (l, r) = (resolve(a, cx)?, resolve(b, cx)?);
            if *op == BinOp::MatMul {
                return super::einsum::matmul(l, r, cx, (op.symbol(), *pos));
            }
            map(Op::of(op.op_name()), vec![l, r], cx, (op.symbol(), *pos))?
        }
        Ast::Index { base, items, pos } => {
            let (node, shape, kind) = resolve(base, cx)?;
            let list: Vec<Item> = items.iter().map(|(i, _)| i.clone()).collect();
            let v = view::index(&shape, &list).map_err(|(k, problem)| PlanError::BadIndex {
                index: cx.index,
                pos: items.get(k).map_or(*pos, |i| i.1),
                expr: cx.expr.into(),
                problem: format!("{problem} (the array indexed has shape {})", geometry::fmt_shape(&shape)),
            })?;
            if v.shape().contains(&0) {
                return Err(PlanError::BadIndex {
                    index: cx.index,
                    pos: *pos,
                    expr: cx.expr.into(),
                    problem: format!(
                        "selects no elements of an array of shape {}; drover writes no empty outputs",
                        geometry::fmt_shape(&shape)
                    ),
                });
            }
            viewed(node, v, kind)
        }
        Ast::Call {
            func,
            pos,
            args,
            axis,
            kwargs,
        } => {
            let bad = |problem: String| PlanError::BadCall {
                index: cx.index,
                func: func.clone(),
                pos: *pos,
                expr: cx.expr.into(),
                problem,
            };
            let accepts = |allowed: &[&str]| -> Result<(), PlanError> {
                let given = axis.iter().map(|a| ("axis", a.1)).chain(kwargs.iter().map(|k| (k.0.as_str(), k.2)));
                for (kw, _) in given {
                    if !allowed.contains(&kw) {
                        return Err(bad(format!(
                            "got an unexpected keyword argument '{kw}' ({})",
                            if allowed.is_empty() {
                                "it takes none".to_string()
                            } else {
                                format!("accepted: {}", allowed.join(", "))
                            }
                        )));
                    }
                }
                Ok(())
            };
            if let Some(r) = view_call(func, args, axis.as_ref().map(|a| &a.0), kwargs, cx, &bad, &accepts)? {
                return Ok(r);
            }
            if func == "reshape" {
                return reshape_call(args, kwargs, cx, &bad, &accepts);
            }
            if let Some(r) = super::einsum::call(func, args, kwargs, *pos, cx, &bad, &accepts)? {
                return Ok(r);
            }
            if let Some(r) = super::groupby::call(func, args, axis.as_ref(), cx, &bad, &accepts)? {
                return Ok(r);
            }
            if let Some(r) = super::along::call(func, args, axis.as_ref(), kwargs, cx, &bad, &accepts)? {
                return Ok(r);
            }
            if let Some(op) = Op::named(func) {
                let def = op.get();
                if axis.is_some() {
                    return Err(bad("takes no axis argument".into()));
                }
                accepts(&[])?;
                if args.len() != def.params.len() {
                    return Err(bad(format!(
                        "takes {} argument{} ({}) but {} {} given",
                        def.params.len(),
                        if def.params.len() == 1 { "" } else { "s" },
                        def.params.join(", "),
                        args.len(),
                        if args.len() == 1 { "was" } else { "were" }
                    )));
                }
                let args = args.iter().map(|a| resolve(a, cx)).collect::<Result<Vec<_>, _>>()?;
                map(op, args, cx, (func, *pos))?
            } else if func == "histogram" {
                accepts(&["bins", "range"])?;
                if args.len() != 1 {
                    return Err(bad(format!(
                        "takes 1 array argument (and bins=, range=) but {} were given",
                        args.len()
                    )));
                }
                let kw = |name: &str| kwargs.iter().find(|k| k.0 == name).map(|k| &k.1);
                let bins = match kw("bins") {
                    None => 10,
                    Some(AxisArg::Axes(v)) if v.len() == 1 && v[0] > 0 => v[0] as usize,
                    Some(_) => return Err(bad("bins= takes a positive integer (the number of equal bins)".into())),
                };
                let (lo, hi) = match kw("range") {
                    Some(AxisArg::Axes(v)) if v.len() == 2 => (v[0] as f64, v[1] as f64),
                    Some(AxisArg::Nums(v)) if v.len() == 2 => (v[0], v[1]),
                    None => return Err(bad("needs range=(lo, hi): drover bins in one pass over the data".into())),
                    Some(_) => return Err(bad("range= takes two numbers (lo, hi)".into())),
                };
                if !lo.is_finite() || !hi.is_finite() || lo >= hi {
                    return Err(bad(format!("range=({lo}, {hi}) must have lo < hi, both finite")));
                }
                let (n, s, _) = resolve(&args[0], cx)?;
                (
                    Node::Reduce {
                        op: ReduceOp::Histogram,
                        axes: (0..s.len()).collect(),
                        arg: Box::new(n),
                        ddof: 0.0,
                        keepdims: false,
                        hist: Some(Histogram { bins, lo, hi }),
                        groups: None,
                    },
                    vec![bins],
                    Kind::Index,
                )
            } else if let Some(def) = ReduceDef::named(func)
                .filter(|d| d.op != ReduceOp::Histogram)
                .or_else(|| (func == "norm").then(|| ReduceDef::named("sum").expect("sum")))
            {
                let norm = func == "norm";
                let mut allowed = vec!["axis", "keepdims"];
                if def.op.takes_ddof() {
                    allowed.push("ddof");
                }
                if !norm && super::weighted::WEIGHTED.contains(&def.op) {
                    allowed.push("weights");
                }
                if !norm && !def.op.single_axis() {
                    allowed.push("by");
                }
                accepts(&allowed)?;
                if args.len() != 1 {
                    return Err(bad(format!(
                        "takes 1 array argument (and {}=) but {} were given",
                        allowed.join("=, "),
                        args.len()
                    )));
                }
                let (n, s, kind) = resolve(&args[0], cx)?;
                if def.op.single_axis()
                    && let Some((AxisArg::Axes(list), _)) = axis
                    && list.len() != 1
                {
                    return Err(bad(format!(
                        "takes one axis or none (axis=None: over the flattened array), not {list:?}"
                    )));
                }
                let axes = reduce_axes(axis.as_ref().map(|a| &a.0), &s, func, cx)?;
                let kw = |name: &str| kwargs.iter().find(|k| k.0 == name).map(|k| &k.1);
                let keepdims = match kw("keepdims") {
                    None | Some(AxisArg::Flag(false)) => false,
                    Some(AxisArg::Flag(true)) => true,
                    Some(_) => return Err(bad("keepdims= takes True or False".into())),
                };
                let ddof = match kw("ddof") {
                    None => 0.0,
                    Some(AxisArg::Axes(v)) if v.len() == 1 && v[0] >= 0 => v[0] as f64,
                    Some(_) => return Err(bad("ddof= takes a non-negative integer (ddof=1: the sample variance)".into())),
                };
                if let Some(w) = kw("weights") {
                    let AxisArg::Expr(w) = w else {
                        return Err(bad("weights= takes an array expression".into()));
                    };
                    if ddof != 0.0 {
                        return Err(bad(
                            "takes ddof= or weights=, not both (a weighted variance is xarray's, without ddof)".into(),
                        ));
                    }
                    let w = resolve(w, cx)?;
                    return super::weighted::reduce(def.op, (n, s, kind), w, axes, keepdims).map_err(bad);
                }
                let groups = match kw("by") {
                    None => None,
                    Some(AxisArg::Str(by)) => {
                        if keepdims || kw("weights").is_some() {
                            return Err(bad("takes by= without keepdims= or weights=".into()));
                        }
                        Some(super::groupby::groups(by, &n, &s, &axes, cx).map_err(bad)?)
                    }
                    Some(_) => return Err(bad(format!("by= takes a string: {}", super::calendar::GROUPINGS))),
                };
                let mut shape = if keepdims {
                    s.iter().enumerate().map(|(d, &n)| if axes.contains(&d) { 1 } else { n }).collect()
                } else {
                    geometry::kept(&s, &axes)
                };
                if let Some(g) = &groups {
                    shape.insert(axes[0], g.len());
                }
                // norm: numpy.linalg.norm's 2-norm / Frobenius norm, sqrt(sum(x**2)).
                let arg = if norm { Node::Map(Op::of("square"), vec![n]) } else { n };
                let node = Node::Reduce {
                    op: def.op,
                    axes,
                    arg: Box::new(arg),
                    ddof,
                    keepdims,
                    hist: None,
                    groups,
                };
                if norm {
                    (Node::Map(Op::of("sqrt"), vec![node]), shape, Kind::Float)
                } else {
                    (node, shape, def.result_kind(kind))
                }
            } else {
                let known = super::reduce::REDUCTIONS
                    .iter()
                    .map(|r| r.name)
                    .chain(ops::ELEMENTWISE.iter().map(|e| e.name))
                    .chain(VIEW_FUNCTIONS.iter().copied())
                    .chain(super::einsum::CONTRACTIONS.iter().copied())
                    .chain(["take", "groups", "reshape"])
                    .chain(super::along::names())
                    .chain(["norm"]);
                let hint = did_you_mean(func, known)
                    .map(|s| format!(" (did you mean \"{s}\"?)"))
                    .unwrap_or_default();
                return Err(PlanError::UnknownFunction {
                    index: cx.index,
                    func: func.clone(),
                    expr: cx.expr.into(),
                    hint,
                });
            }
        }
    })
}

fn unknown_name(name: &str, pos: usize, cx: &Ctx) -> PlanError {
    let hint = did_you_mean(
        name,
        cx.names
            .keys()
            .copied()
            .chain(cx.lets.exprs.keys().copied())
            .chain(CONSTANTS.iter().map(|c| c.0)),
    )
    .map(|s| format!(" (did you mean \"{s}\"?)"))
    .unwrap_or_default();
    let mut inputs: Vec<&str> = cx.names.keys().copied().chain(cx.lets.exprs.keys().copied()).collect();
    inputs.sort_unstable();
    PlanError::UnknownName {
        index: cx.index,
        name: name.to_string(),
        pos,
        expr: cx.expr.into(),
        hint,
        inputs: if inputs.is_empty() {
            "(none defined)".into()
        } else {
            inputs.join(", ")
        },
    }
}

/// The reduced axes of an `axis=` argument over an array of `shape`, ascending.
pub(super) fn reduce_axes(axis: Option<&AxisArg>, shape: &[usize], func: &str, cx: &Ctx) -> Result<Vec<usize>, PlanError> {
    let rank = shape.len() as i64;
    let list = match axis {
        None | Some(AxisArg::All) => return Ok((0..shape.len()).collect()),
        Some(AxisArg::Axes(list)) => list,
        Some(_) => {
            return Err(PlanError::BadCall {
                index: cx.index,
                func: func.to_string(),
                pos: 0,
                expr: cx.expr.into(),
                problem: "takes axis= as an integer, a tuple of integers, or None".into(),
            });
        }
    };
    let mut out: Vec<usize> = Vec::new();
    for &a in list {
        if a >= rank || a < -rank {
            return Err(PlanError::AxisRange {
                index: cx.index,
                axis: a,
                func: func.to_string(),
                shape: shape.to_vec(),
                expr: cx.expr.into(),
            });
        }
        let norm = if a < 0 { (a + rank) as usize } else { a as usize };
        if out.contains(&norm) {
            return Err(PlanError::AxisRepeated {
                index: cx.index,
                axis: a,
                func: func.to_string(),
                expr: cx.expr.into(),
            });
        }
        out.push(norm);
    }
    out.sort_unstable();
    Ok(out)
}

/// Functions that rearrange axes: views, no computation.
pub(super) const VIEW_FUNCTIONS: &[&str] = &["transpose", "moveaxis", "squeeze", "expand_dims"];

/// A view of a resolved node (views of views compose).
pub(super) fn viewed(node: Node, v: View, kind: Kind) -> Resolved {
    let shape = v.shape();
    match node {
        Node::View(inner, w) => (Node::View(inner, v.compose(&w)), shape, kind),
        Node::Num(x) => (Node::Num(x), shape, kind),
        other => (Node::View(Box::new(other), v), shape, kind),
    }
}

/// An axis argument normalized against `rank` (negative counts from the end).
fn norm_axis(a: i64, rank: usize, what: &str) -> Result<usize, String> {
    let r = rank as i64;
    if a >= r || a < -r {
        return Err(format!(
            "{what} {a} is out of range for an array of {rank} dimensions (valid: -{rank}..{})",
            rank as i64 - 1
        ));
    }
    Ok(if a < 0 { (a + r) as usize } else { a as usize })
}

/// An integer constant written as a positional argument (`moveaxis(x, 0, -1)`).
fn int_arg(a: &Ast) -> Option<i64> {
    match a {
        Ast::Int(v) => Some(*v),
        Ast::Unary(super::expr::UnOp::Neg, x, _) => int_arg(x).map(|v| -v),
        _ => None,
    }
}

pub(super) type Bad<'a> = dyn Fn(String) -> PlanError + 'a;

/// `reshape(x, (d0, d1, ...))`, `reshape(x, shape=(...))`, `x.reshape(d0, d1, ...)`:
/// numpy's C-order reshape, with at most one `-1` inferred.
fn reshape_call(
    args: &[Ast],
    kwargs: &[(String, AxisArg, usize)],
    cx: &Ctx,
    bad: &Bad,
    accepts: &dyn Fn(&[&str]) -> Result<(), PlanError>,
) -> Result<Resolved, PlanError> {
    accepts(&["shape", "newshape"])?;
    let usage = "takes the array and the new shape (reshape(x, (3, 4)), reshape(x, shape=(3, -1)) or x.reshape(3, 4))";
    let Some(first) = args.first() else {
        return Err(bad(usage.into()));
    };
    let dims: Vec<i64> = match (kwargs.first(), &args[1..]) {
        (Some((_, AxisArg::Axes(v), _)), []) if kwargs.len() == 1 => v.clone(),
        (None, rest) if !rest.is_empty() => rest
            .iter()
            .map(int_arg)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad(usage.into()))?,
        _ => return Err(bad(usage.into())),
    };
    let (node, shape, kind) = resolve(first, cx)?;
    let size: usize = shape.iter().product();
    let written = format!("({})", dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "));
    if dims.iter().filter(|&&d| d == -1).count() > 1 {
        return Err(bad(format!("can only specify one unknown dimension (-1) in {written}")));
    }
    if let Some(d) = dims.iter().find(|&&d| d < -1) {
        return Err(bad(format!("negative dimension {d} in {written}; only -1 (inferred) is allowed")));
    }
    let known: usize = dims.iter().filter(|&&d| d >= 0).map(|&d| d as usize).product();
    let to: Vec<usize> = dims
        .iter()
        .map(|&d| {
            if d >= 0 {
                Ok(d as usize)
            } else if known > 0 && size % known == 0 {
                Ok(size / known)
            } else {
                Err(())
            }
        })
        .collect::<Result<_, _>>()
        .ok()
        .filter(|to: &Vec<usize>| to.iter().product::<usize>() == size)
        .ok_or_else(|| {
            bad(format!(
                "cannot reshape an array of size {size} (shape {}) into shape {written}",
                geometry::fmt_shape(&shape)
            ))
        })?;
    let r = super::reshape::Reshape {
        from: shape,
        to: to.clone(),
    };
    Ok((Node::Reshape(Box::new(node), r), to, kind))
}

/// `transpose`, `moveaxis`, `squeeze`, `expand_dims` as views; `None` for other names.
fn view_call(
    func: &str,
    args: &[Ast],
    axis: Option<&AxisArg>,
    kwargs: &[(String, AxisArg, usize)],
    cx: &Ctx,
    bad: &Bad,
    accepts: &dyn Fn(&[&str]) -> Result<(), PlanError>,
) -> Result<Option<Resolved>, PlanError> {
    if !VIEW_FUNCTIONS.contains(&func) {
        return Ok(None);
    }
    let Some(first) = args.first() else {
        return Err(bad("takes an array as its first argument".into()));
    };
    let (node, shape, kind) = resolve(first, cx)?;
    let rank = shape.len();
    let ints = |v: &AxisArg| match v {
        AxisArg::Axes(a) => Ok(a.clone()),
        _ => Err(bad("takes integer axes here".into())),
    };
    let kw = |name: &str| kwargs.iter().find(|k| k.0 == name).map(|k| &k.1);
    let v = match func {
        "transpose" => {
            accepts(&["axes"])?;
            if args.len() > 1 {
                return Err(bad("takes the array and axes= (e.g. transpose(x, axes=(1, 0)))".into()));
            }
            let perm: Vec<usize> = match kw("axes") {
                None | Some(AxisArg::All) => (0..rank).rev().collect(),
                Some(a) => {
                    let list = ints(a)?;
                    let perm = list
                        .iter()
                        .map(|&a| norm_axis(a, rank, "axis"))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(bad)?;
                    let mut sorted = perm.clone();
                    sorted.sort_unstable();
                    if sorted != (0..rank).collect::<Vec<_>>() {
                        return Err(bad(format!(
                            "axes={list:?} is not a permutation of the {rank} axes of an array of shape {}",
                            geometry::fmt_shape(&shape)
                        )));
                    }
                    perm
                }
            };
            View::permute(&shape, &perm)
        }
        "moveaxis" => {
            accepts(&[])?;
            let (Some(src), Some(dst), 3) = (args.get(1).and_then(int_arg), args.get(2).and_then(int_arg), args.len()) else {
                return Err(bad(
                    "takes the array, source and destination axes as integers (moveaxis(x, 0, -1))".into()
                ));
            };
            let (s, d) = (
                norm_axis(src, rank, "source axis").map_err(bad)?,
                norm_axis(dst, rank, "destination axis").map_err(bad)?,
            );
            let mut order: Vec<usize> = (0..rank).filter(|&a| a != s).collect();
            order.insert(d, s);
            View::permute(&shape, &order)
        }
        "squeeze" => {
            accepts(&["axis"])?;
            if args.len() > 1 {
                return Err(bad("takes the array and axis=".into()));
            }
            let drop: Vec<usize> = match axis {
                None | Some(AxisArg::All) => (0..rank).filter(|&a| shape[a] == 1).collect(),
                Some(a) => {
                    let list = ints(a)?;
                    let mut out = Vec::new();
                    for &x in &list {
                        let n = norm_axis(x, rank, "axis").map_err(bad)?;
                        if shape[n] != 1 {
                            return Err(bad(format!(
                                "cannot squeeze axis {x} of length {} (shape {}); only length-1 axes can be removed",
                                shape[n],
                                geometry::fmt_shape(&shape)
                            )));
                        }
                        out.push(n);
                    }
                    out
                }
            };
            let id = View::identity(&shape);
            View {
                dims: id
                    .dims
                    .iter()
                    .enumerate()
                    .filter(|(a, _)| !drop.contains(a))
                    .map(|(_, d)| d.clone())
                    .collect(),
                fixed: drop.iter().map(|&a| (a, 0)).collect(),
                ..id
            }
        }
        _ => {
            // expand_dims(x, axis) or expand_dims(x, axis=...)
            accepts(&["axis"])?;
            let list = match (args.get(1).and_then(int_arg), axis, args.len()) {
                (Some(a), None, 2) => vec![a],
                (None, Some(a), 1) => ints(a)?,
                _ => {
                    return Err(bad(
                        "takes the array and the new axis position (expand_dims(x, 0) or axis=(0, 2))".into()
                    ));
                }
            };
            let out_rank = rank + list.len();
            let mut new: Vec<usize> = list
                .iter()
                .map(|&a| norm_axis(a, out_rank, "axis"))
                .collect::<Result<_, _>>()
                .map_err(bad)?;
            new.sort_unstable();
            if new.windows(2).any(|w| w[0] == w[1]) {
                return Err(bad(format!("repeated axis in {list:?}")));
            }
            let id = View::identity(&shape);
            let mut src = id.dims.into_iter();
            let dims = (0..out_rank)
                .map(|d| {
                    if new.contains(&d) {
                        Dim::New
                    } else {
                        src.next().expect("rank checked")
                    }
                })
                .collect();
            View {
                src: shape.clone(),
                dims,
                fixed: vec![],
            }
        }
    };
    Ok(Some(viewed(node, v, kind)))
}
