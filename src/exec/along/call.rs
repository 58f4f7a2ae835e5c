//! Resolving calls of the operations along axes: their arguments checked as numpy
//! checks them, their result shapes and kinds.

use super::super::expr::{Ast, AxisArg};
use super::super::ops::Kind;
use super::super::plan::PlanError;
use super::super::resolve::{Bad, Ctx, Node, Resolved, resolve};
use super::{Along, AlongOp, Roll, Scan};

/// Order statistics: (name, nan-skipping, median, q in percent).
const ORDER: &[(&str, bool, bool, bool)] = &[
    ("median", false, true, false),
    ("nanmedian", true, true, false),
    ("quantile", false, false, false),
    ("nanquantile", true, false, false),
    ("percentile", false, false, true),
    ("nanpercentile", true, false, true),
];

const SCANS: &[(&str, Scan)] = &[
    ("cumsum", Scan::Sum),
    ("cumprod", Scan::Prod),
    ("nancumsum", Scan::NanSum),
    ("nancumprod", Scan::NanProd),
];

const ROLLING: &[(&str, Roll)] = &[
    ("rolling_sum", Roll::Sum),
    ("rolling_mean", Roll::Mean),
    ("rolling_min", Roll::Min),
    ("rolling_max", Roll::Max),
    ("rolling_std", Roll::Std),
];

/// Every function of this module, for did-you-mean hints.
pub(in crate::exec) fn names() -> impl Iterator<Item = &'static str> {
    ORDER
        .iter()
        .map(|o| o.0)
        .chain(SCANS.iter().map(|s| s.0))
        .chain(ROLLING.iter().map(|r| r.0))
        .chain(["diff", "sort"])
}

fn int_kw(kwargs: &[(String, AxisArg, usize)], name: &str) -> Option<Result<i64, ()>> {
    kwargs.iter().find(|k| k.0 == name).map(|k| match &k.1 {
        AxisArg::Axes(v) if v.len() == 1 => Ok(v[0]),
        _ => Err(()),
    })
}

/// The one axis of `axis=` (default `default`, `None` when not given and there is no
/// default) over `rank` axes.
fn one_axis(axis: Option<&(AxisArg, usize)>, rank: usize, default: Option<i64>, bad: &Bad) -> Result<Option<usize>, PlanError> {
    let a = match axis {
        Some((AxisArg::Axes(v), _)) if v.len() == 1 => v[0],
        Some((AxisArg::All, _)) | None => match default {
            Some(d) => d,
            None => return Ok(None),
        },
        Some(_) => return Err(bad("takes axis= as one integer".into())),
    };
    let r = rank as i64;
    if a >= r || a < -r {
        return Err(bad(format!(
            "axis {a} is out of range for an array of {rank} dimension{}",
            if rank == 1 { "" } else { "s" }
        )));
    }
    Ok(Some(a.rem_euclid(r) as usize))
}

fn resolve_one(args: &[Ast], cx: &Ctx, bad: &Bad, usage: &str) -> Result<Resolved, PlanError> {
    match args.first() {
        Some(a) => resolve(a, cx),
        None => Err(bad(usage.into())),
    }
}

/// `func(...)` if it is an operation along axes.
pub(in crate::exec) fn call(
    func: &str,
    args: &[Ast],
    axis: Option<&(AxisArg, usize)>,
    kwargs: &[(String, AxisArg, usize)],
    cx: &Ctx,
    bad: &Bad,
    accepts: &dyn Fn(&[&str]) -> Result<(), PlanError>,
) -> Result<Option<Resolved>, PlanError> {
    if let Some(&(_, nan, median, percent)) = ORDER.iter().find(|o| o.0 == func) {
        return order(func, nan, median, percent, args, axis, kwargs, cx, bad, accepts).map(Some);
    }
    if let Some(&(_, op)) = SCANS.iter().find(|s| s.0 == func) {
        accepts(&["axis"])?;
        let usage = format!("takes one array and axis= ({func}(x, axis=0))");
        if args.len() != 1 {
            return Err(bad(usage));
        }
        let (node, shape, kind) = resolve(&args[0], cx)?;
        let (node, shape, a) = match one_axis(axis, shape.len(), None, bad)? {
            Some(a) => (node, shape, a),
            // numpy: axis=None scans the flattened array.
            None => {
                let size: usize = shape.iter().product();
                let r = super::super::reshape::Reshape {
                    from: shape,
                    to: vec![size],
                };
                (Node::Reshape(Box::new(node), r), vec![size], 0)
            }
        };
        let al = Along {
            op: AlongOp::Scan { op, seg: 0 },
            axes: vec![a],
            from: shape.clone(),
            to: shape,
            carry: None,
        };
        let to = al.to.clone();
        return Ok(Some((Node::Along(Box::new(node), Box::new(al)), to, kind.max(Kind::Index))));
    }
    if let Some(&(_, op)) = ROLLING.iter().find(|r| r.0 == func) {
        let mut allowed = vec!["axis", "window"];
        if op == Roll::Std {
            allowed.push("ddof");
        }
        accepts(&allowed)?;
        let usage = format!("takes one array, window= and axis= ({func}(x, window=30, axis=0))");
        let window = match (args.get(1), int_kw(kwargs, "window")) {
            (Some(Ast::Int(w)), None) => *w,
            (None, Some(Ok(w))) => w,
            _ => return Err(bad(usage)),
        };
        if args.len() > 2 {
            return Err(bad(usage));
        }
        let (node, shape, kind) = resolve_one(args, cx, bad, &usage)?;
        let Some(a) = one_axis(axis, shape.len(), (shape.len() == 1).then_some(0), bad)? else {
            return Err(bad(format!(
                "needs axis= on an array of {} dimensions ({func}(x, window={window}, axis=0))",
                shape.len()
            )));
        };
        if window < 1 || window as usize > shape[a] {
            return Err(bad(format!(
                "window={window} must be between 1 and the length of axis {a} ({}): only whole windows are computed",
                shape[a]
            )));
        }
        let ddof = match int_kw(kwargs, "ddof") {
            None => 0.0,
            Some(Ok(d)) if d >= 0 && d < window => d as f64,
            Some(_) => return Err(bad(format!("ddof= takes an integer from 0 to window - 1 ({})", window - 1))),
        };
        let mut to = shape.clone();
        to[a] = shape[a] + 1 - window as usize;
        let kind = match op {
            Roll::Sum => kind.max(Kind::Index),
            Roll::Mean | Roll::Std => Kind::Float,
            Roll::Min | Roll::Max => kind,
        };
        let al = Along {
            op: AlongOp::Rolling {
                op,
                window: window as usize,
                ddof,
            },
            axes: vec![a],
            from: shape,
            to: to.clone(),
            carry: None,
        };
        return Ok(Some((Node::Along(Box::new(node), Box::new(al)), to, kind)));
    }
    match func {
        "diff" => {
            accepts(&["axis", "n"])?;
            let usage = "takes one array, n= and axis= (diff(x, n=1, axis=0))";
            let n = match (args.get(1), int_kw(kwargs, "n")) {
                (Some(Ast::Int(n)), None) => *n,
                (None, Some(Ok(n))) => n,
                (None, None) => 1,
                _ => return Err(bad(usage.into())),
            };
            if args.len() > 2 {
                return Err(bad(usage.into()));
            }
            let (node, shape, kind) = resolve_one(args, cx, bad, usage)?;
            if shape.is_empty() {
                return Err(bad("needs an array of at least one dimension".into()));
            }
            let a = one_axis(axis, shape.len(), Some(-1), bad)?.expect("a default");
            if n < 0 {
                return Err(bad(format!("n={n}: the order of the difference must be non-negative")));
            }
            if n as usize >= shape[a] {
                return Err(bad(format!(
                    "n={n} leaves nothing of axis {a} (length {}); drover writes no empty outputs",
                    shape[a]
                )));
            }
            if n == 0 {
                return Ok(Some((node, shape, kind)));
            }
            let mut to = shape.clone();
            to[a] -= n as usize;
            let al = Along {
                op: AlongOp::Diff {
                    n: n as usize,
                    logical: kind == Kind::Bool,
                },
                axes: vec![a],
                from: shape,
                to: to.clone(),
                carry: None,
            };
            Ok(Some((Node::Along(Box::new(node), Box::new(al)), to, kind)))
        }
        "sort" => {
            accepts(&["axis"])?;
            let usage = "takes one array and axis= (sort(x, axis=0))";
            if args.len() != 1 {
                return Err(bad(usage.into()));
            }
            let (node, shape, kind) = resolve(&args[0], cx)?;
            if shape.is_empty() {
                return Err(bad("needs an array of at least one dimension".into()));
            }
            let Some(a) = one_axis(
                axis,
                shape.len(),
                Some(-1).filter(|_| !matches!(axis, Some((AxisArg::All, _)))),
                bad,
            )?
            else {
                return Err(bad(
                    "axis=None (a sort of the flattened array) is not supported; sort along one axis".into(),
                ));
            };
            let al = Along {
                op: AlongOp::Sort,
                axes: vec![a],
                from: shape.clone(),
                to: shape.clone(),
                carry: None,
            };
            if let Some(problem) = al.problem(func) {
                return Err(bad(problem));
            }
            Ok(Some((Node::Along(Box::new(node), Box::new(al)), shape, kind)))
        }
        "argsort" | "partition" | "argpartition" | "lexsort" | "searchsorted" | "unique" => Err(bad(
            "is not supported: for order statistics use median, quantile or percentile (exact, along any axes), or sort(x, axis=k)".into(),
        )),
        _ => Ok(None),
    }
}

#[allow(clippy::too_many_arguments)]
fn order(
    func: &str,
    nan: bool,
    median: bool,
    percent: bool,
    args: &[Ast],
    axis: Option<&(AxisArg, usize)>,
    kwargs: &[(String, AxisArg, usize)],
    cx: &Ctx,
    bad: &Bad,
    accepts: &dyn Fn(&[&str]) -> Result<(), PlanError>,
) -> Result<Resolved, PlanError> {
    let mut allowed = vec!["axis", "keepdims"];
    if !median {
        allowed.extend(["q", "method"]);
    }
    accepts(&allowed)?;
    let usage = if median {
        format!("takes one array, axis= and keepdims= ({func}(x, axis=0))")
    } else {
        let q = if percent { "90" } else { "0.9" };
        format!("takes one array and q, a number or a tuple ({func}(x, {q}, axis=0) or {func}(x, q=({q}, ...), axis=0))")
    };
    let kw = |name: &str| kwargs.iter().find(|k| k.0 == name).map(|k| &k.1);
    if let Some(m) = kw("method")
        && *m != AxisArg::Str("linear".into())
    {
        return Err(bad("supports method=\"linear\" only (numpy's default)".into()));
    }
    // q: a number (no result axis) or a tuple (a leading result axis).
    let (q, tuple, integral): (Vec<f64>, bool, bool) = if median {
        if args.len() != 1 {
            return Err(bad(usage));
        }
        (vec![0.5], false, false)
    } else {
        let scalar = |a: &Ast| match a {
            Ast::Num(v) => Some((*v, false)),
            Ast::Int(v) => Some((*v as f64, true)),
            _ => None,
        };
        let (q, tuple, int) = match (args.get(1), kw("q")) {
            (Some(a), None) => {
                let (v, int) = scalar(a).ok_or_else(|| bad(usage.clone()))?;
                (vec![v], false, int)
            }
            (None, Some(AxisArg::Expr(a))) => {
                let (v, int) = scalar(a).ok_or_else(|| bad(usage.clone()))?;
                (vec![v], false, int)
            }
            (None, Some(AxisArg::Nums(v))) if !v.is_empty() => (v.clone(), true, false),
            (None, Some(AxisArg::Axes(v))) if !v.is_empty() => (v.iter().map(|&x| x as f64).collect(), true, true),
            _ => return Err(bad(usage)),
        };
        if args.len() > 2 {
            return Err(bad(usage));
        }
        let top = if percent { 100.0 } else { 1.0 };
        if let Some(bad_q) = q.iter().find(|&&v| !(0.0..=top).contains(&v)) {
            return Err(bad(format!(
                "q={bad_q} is outside [0, {top}]: {}",
                if percent {
                    "percentiles are in percent"
                } else {
                    "quantiles are fractions (percentile() takes percent)"
                }
            )));
        }
        // numpy's percentile divides by 100 (a float division, however q was written).
        let q = if percent { q.iter().map(|v| v / 100.0).collect() } else { q };
        (q, tuple, int && !percent)
    };
    let (node, shape, _) = resolve(&args[0], cx)?;
    let axes = super::super::resolve::reduce_axes(axis.map(|a| &a.0), &shape, func, cx)?;
    if axes.is_empty() {
        return Err(bad("needs at least one axis to compute over".into()));
    }
    let keepdims = match kw("keepdims") {
        None | Some(AxisArg::Flag(false)) => false,
        Some(AxisArg::Flag(true)) => true,
        Some(_) => return Err(bad("keepdims= takes True or False".into())),
    };
    let mut to: Vec<usize> = (0..shape.len()).filter(|d| !axes.contains(d)).map(|d| shape[d]).collect();
    if tuple {
        to.insert(0, q.len());
    }
    let nq = q.len();
    let al = Along {
        op: AlongOp::Quantile {
            q,
            tuple,
            integral,
            nan,
            median,
        },
        axes: axes.clone(),
        from: shape.clone(),
        to: to.clone(),
        carry: None,
    };
    if let Some(problem) = al.problem(func) {
        return Err(bad(problem));
    }
    let node = Node::Along(Box::new(node), Box::new(al));
    if !keepdims {
        return Ok((node, to, Kind::Float));
    }
    // keepdims: length-1 axes where the operated ones were (after a tuple's axis).
    let lead = usize::from(tuple);
    let mut kept = (lead..to.len()).map(|j| super::super::view::Dim::Src {
        axis: j,
        start: 0,
        step: 1,
        len: to[j],
    });
    let mut dims: Vec<super::super::view::Dim> = Vec::new();
    if tuple {
        dims.push(super::super::view::Dim::Src {
            axis: 0,
            start: 0,
            step: 1,
            len: nq,
        });
    }
    for d in 0..shape.len() {
        dims.push(if axes.contains(&d) {
            super::super::view::Dim::New
        } else {
            kept.next().expect("a kept axis")
        });
    }
    let v = super::super::view::View {
        src: to,
        dims,
        fixed: vec![],
    };
    Ok(super::super::resolve::viewed(node, v, Kind::Float))
}
