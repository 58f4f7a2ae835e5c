//! Weighted reductions (`weights=` on sum, mean, var, std and their nan-forms), resolved
//! into primitives: numpy's `average` for the plain forms (`sum(w * x) / sum(w)`, the
//! weights broadcast to the array), and xarray's `.weighted(w)` for the nan-forms, which
//! normalize by the weights of the non-NaN values only. Variances are two-pass:
//! `sum(w * (x - m)**2) / sum(w)` around the weighted mean `m` (xarray's weighted
//! variance: no ddof).

use super::geometry::{self, broadcast, fmt_shape};
use super::ops::{Kind, Op};
use super::plan::ReduceOp;
use super::resolve::{Node, Resolved};

/// The reductions that take `weights=`.
pub(super) const WEIGHTED: &[ReduceOp] = &[
    ReduceOp::Sum,
    ReduceOp::Mean,
    ReduceOp::NanSum,
    ReduceOp::NanMean,
    ReduceOp::Var,
    ReduceOp::Std,
    ReduceOp::NanVar,
    ReduceOp::NanStd,
];

fn call(name: &str, args: Vec<Node>) -> Node {
    Node::Map(Op::of(name), args)
}

/// `op(x, axis=axes, weights=w)`; `Err` says why the weights do not fit the array.
pub(super) fn reduce(op: ReduceOp, x: Resolved, w: Resolved, axes: Vec<usize>, keepdims: bool) -> Result<Resolved, String> {
    let (x, xs, _) = x;
    let (w, ws, _) = w;
    if broadcast(&xs, &ws).as_deref() != Some(xs.as_slice()) {
        return Err(format!(
            "weights of shape {} do not broadcast to the shape {} of the array reduced (numpy's rules, without enlarging the array)",
            fmt_shape(&ws),
            fmt_shape(&xs)
        ));
    }
    let skip_nan = matches!(op, ReduceOp::NanSum | ReduceOp::NanMean | ReduceOp::NanVar | ReduceOp::NanStd);
    let sum = |arg: Node, keep: bool| Node::Reduce {
        op: if skip_nan { ReduceOp::NanSum } else { ReduceOp::Sum },
        axes: axes.clone(),
        arg: Box::new(arg),
        ddof: 0.0,
        keepdims: keep,
        hist: None,
        groups: None,
    };
    // The weights over the array's shape: of the non-NaN values for the nan-forms.
    let weights_of = |x: &Node| {
        if skip_nan {
            call("where", vec![call("isnan", vec![x.clone()]), Node::Num(0.0), w.clone()])
        } else {
            call("where", vec![Node::Num(1.0), w.clone(), x.clone()])
        }
    };
    // The sum of the weights (of the non-NaN values for the nan-forms).
    let total_weight = |keep: bool| Node::Reduce {
        op: ReduceOp::Sum,
        axes: axes.clone(),
        arg: Box::new(weights_of(&x)),
        ddof: 0.0,
        keepdims: keep,
        hist: None,
        groups: None,
    };
    let mean = |keep: bool| {
        call(
            "divide",
            vec![sum(call("multiply", vec![w.clone(), x.clone()]), keep), total_weight(keep)],
        )
    };
    let node = match op {
        ReduceOp::Sum | ReduceOp::NanSum => sum(call("multiply", vec![w.clone(), x.clone()]), keepdims),
        ReduceOp::Mean | ReduceOp::NanMean => mean(keepdims),
        _ => {
            let dev = call("subtract", vec![x.clone(), mean(true)]);
            let var = call(
                "divide",
                vec![
                    sum(call("multiply", vec![w.clone(), call("square", vec![dev])]), keepdims),
                    total_weight(keepdims),
                ],
            );
            if matches!(op, ReduceOp::Std | ReduceOp::NanStd) {
                call("sqrt", vec![var])
            } else {
                var
            }
        }
    };
    let shape = if keepdims {
        xs.iter().enumerate().map(|(d, &n)| if axes.contains(&d) { 1 } else { n }).collect()
    } else {
        geometry::kept(&xs, &axes)
    };
    Ok((node, shape, Kind::Float))
}
