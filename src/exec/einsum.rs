//! Contractions: `matmul` (`@`), `dot`, `tensordot` and `einsum`, resolved into the
//! engine's primitives.
//!
//! Every contraction is written as einsum labels: each operand's axes get labels, the
//! output lists the labels it keeps, the others are summed. It resolves to views of the
//! operands laid out on the *stage axes* (the output labels, then the summed ones; an
//! operand lacking a label gets a new axis there), their elementwise product, and a
//! `sum` over the summed axes. So a contraction is blocked, scheduled, merged and
//! finalized like any reduction: a task multiplies tiles, partial products are summed
//! as partials are. The executor recognizes a sum of a product of two operands and
//! computes each tile with a matrix product (`exec::gemm`) instead of forming the
//! product elementwise.

use super::expr::{Ast, AxisArg};
use super::geometry::fmt_shape;
use super::ops::Op;
use super::plan::{PlanError, ReduceOp};
use super::reduce::ReduceDef;
use super::resolve::{Bad, Ctx, Node, Resolved, map, resolve, viewed};
use super::view::{Dim, View};

/// The contraction functions (besides the `@` operator).
pub(super) const CONTRACTIONS: &[&str] = &["matmul", "dot", "tensordot", "einsum"];

/// A contraction call, or `None` when `func` is not one.
pub(super) fn call(
    func: &str,
    args: &[Ast],
    kwargs: &[(String, AxisArg, usize)],
    pos: usize,
    cx: &Ctx,
    bad: &Bad,
    accepts: &dyn Fn(&[&str]) -> Result<(), PlanError>,
) -> Result<Option<Resolved>, PlanError> {
    if !CONTRACTIONS.contains(&func) {
        return Ok(None);
    }
    if func == "einsum" {
        accepts(&[])?;
        let Some(Ast::Str(subscripts, _)) = args.first() else {
            return Err(bad(
                "takes the subscripts as a string first, then the operands (einsum('ij,jk->ik', a, b))".into(),
            ));
        };
        let operands = args[1..].iter().map(|a| resolve(a, cx)).collect::<Result<Vec<_>, _>>()?;
        if operands.is_empty() {
            return Err(bad(format!("'{subscripts}' needs at least one operand after the subscripts")));
        }
        let (ins, out) = parse_subscripts(subscripts, &operands).map_err(bad)?;
        let labelled = operands.into_iter().zip(ins).collect();
        return contract(labelled, &out, cx, (func, pos)).map(Some);
    }
    accepts(if func == "tensordot" { &["axes"] } else { &[] })?;
    if args.len() != 2 {
        return Err(bad(format!("takes 2 array arguments but {} were given", args.len())));
    }
    let a = resolve(&args[0], cx)?;
    let b = resolve(&args[1], cx)?;
    let (ra, rb) = (a.1.len(), b.1.len());
    let labels = |n: usize, from: u8| -> Vec<u8> { (0..n as u8).map(|i| from + i).collect() };
    let (la, lb, out) = match func {
        "matmul" => return matmul(a, b, cx, (func, pos)).map(Some),
        "dot" => {
            if ra == 0 || rb == 0 {
                // numpy: dot with a scalar is multiplication.
                return map(Op::of("multiply"), vec![a, b], cx, (func, pos)).map(Some);
            }
            // Sum over the last axis of a and the second-to-last of b (the only one if 1-D).
            let la = labels(ra, b'a');
            let mut lb = labels(rb, b'A');
            let kb = rb.saturating_sub(2);
            lb[kb] = la[ra - 1];
            let out: Vec<u8> = la[..ra - 1]
                .iter()
                .chain(lb.iter().enumerate().filter(|(i, _)| *i != kb).map(|(_, l)| l))
                .copied()
                .collect();
            (la, lb, out)
        }
        _ => {
            // tensordot: axes=N (the last N of a with the first N of b) or ((a axes), (b axes)).
            let kw = kwargs.iter().find(|k| k.0 == "axes").map(|k| &k.1);
            let (xa, xb): (Vec<i64>, Vec<i64>) = match kw {
                None => ((ra as i64 - 2..ra as i64).collect(), (0..2).collect()),
                Some(AxisArg::Axes(v)) if v.len() == 1 && v[0] >= 0 => {
                    let n = v[0];
                    if n as usize > ra.min(rb) {
                        return Err(bad(format!(
                            "axes={n} is more axes than the operands have (shapes {} and {})",
                            fmt_shape(&a.1),
                            fmt_shape(&b.1)
                        )));
                    }
                    ((ra as i64 - n..ra as i64).collect(), (0..n).collect())
                }
                Some(AxisArg::Axes(v)) if v.len() == 2 => (vec![v[0]], vec![v[1]]),
                Some(AxisArg::Lists(l)) if l.len() == 2 && l[0].len() == l[1].len() => (l[0].clone(), l[1].clone()),
                Some(_) => {
                    return Err(bad(
                        "axes= takes a number N (the last N axes of a with the first N of b) or two tuples of the same length, e.g. axes=((1, 0), (0, 1))".into(),
                    ));
                }
            };
            let norm = |list: &[i64], rank: usize, which: &str| -> Result<Vec<usize>, PlanError> {
                let mut out = Vec::new();
                for &x in list {
                    let r = rank as i64;
                    if x >= r || x < -r {
                        return Err(bad(format!(
                            "axis {x} is out of range for the {which} operand of {rank} dimensions"
                        )));
                    }
                    let x = x.rem_euclid(r) as usize;
                    if out.contains(&x) {
                        return Err(bad(format!("axis {x} of the {which} operand is given twice")));
                    }
                    out.push(x);
                }
                Ok(out)
            };
            let (xa, xb) = (norm(&xa, ra, "first")?, norm(&xb, rb, "second")?);
            let la = labels(ra, b'a');
            let mut lb = labels(rb, b'A');
            for (&i, &j) in xa.iter().zip(&xb) {
                lb[j] = la[i];
            }
            let out: Vec<u8> = (0..ra)
                .filter(|i| !xa.contains(i))
                .map(|i| la[i])
                .chain((0..rb).filter(|j| !xb.contains(j)).map(|j| lb[j]))
                .collect();
            (la, lb, out)
        }
    };
    contract(vec![(a, la), (b, lb)], &out, cx, (func, pos)).map(Some)
}

/// `a @ b` and `matmul(a, b)`, numpy's rules: 1-D operands are vectors (their axis
/// removed from the result), leading axes are stacks of matrices, broadcast.
pub(super) fn matmul(a: Resolved, b: Resolved, cx: &Ctx, at: (&str, usize)) -> Result<Resolved, PlanError> {
    let (ra, rb) = (a.1.len(), b.1.len());
    if ra == 0 || rb == 0 {
        return Err(bad_operands(
            cx,
            at,
            &a.1,
            &b.1,
            "takes arrays of at least one dimension, not scalars (use * to scale)",
        ));
    }
    let k = b'k';
    let (m, n) = (b'm', b'n');
    let batch = ra.saturating_sub(2).max(rb.saturating_sub(2));
    let batch_labels: Vec<u8> = (0..batch as u8).map(|i| b'A' + i).collect();
    let la: Vec<u8> = if ra == 1 {
        vec![k]
    } else {
        batch_labels[batch - (ra - 2)..].iter().copied().chain([m, k]).collect()
    };
    let lb: Vec<u8> = if rb == 1 {
        vec![k]
    } else {
        batch_labels[batch - (rb - 2)..].iter().copied().chain([k, n]).collect()
    };
    let (ka, kb) = (a.1[ra - 1], if rb == 1 { b.1[0] } else { b.1[rb - 2] });
    if ka != kb {
        return Err(bad_operands(
            cx,
            at,
            &a.1,
            &b.1,
            &format!(
                "do not align: the last axis of the first ({ka}) must equal the {} of the second ({kb})",
                if rb == 1 { "length" } else { "second-to-last axis" }
            ),
        ));
    }
    let mut out = batch_labels.clone();
    if ra > 1 {
        out.push(m);
    }
    if rb > 1 {
        out.push(n);
    }
    contract(vec![(a, la), (b, lb)], &out, cx, at)
}

fn bad_operands(cx: &Ctx, at: (&str, usize), a: &[usize], b: &[usize], problem: &str) -> PlanError {
    PlanError::BadOperator {
        index: cx.index,
        op: at.0.to_string(),
        pos: at.1,
        expr: cx.expr.into(),
        problem: format!("of shapes {} and {} {problem}", fmt_shape(a), fmt_shape(b)),
    }
}

/// einsum's subscripts: a label list per operand and the output's (numpy's implicit
/// output when there is no `->`: the labels used once, in alphabetical order).
fn parse_subscripts(s: &str, operands: &[Resolved]) -> Result<(Vec<Vec<u8>>, Vec<u8>), String> {
    let clean: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if clean.contains("...") {
        return Err(format!("'{s}': '...' is not supported; name every axis with a letter"));
    }
    if let Some(c) = clean
        .chars()
        .find(|c| !(c.is_ascii_alphabetic() || *c == ',' || *c == '-' || *c == '>'))
    {
        return Err(format!(
            "'{s}': '{c}' is not a subscript; use letters, ',' between operands and '->' before the output"
        ));
    }
    let (lhs, rhs) = match clean.split_once("->") {
        Some((l, r)) => (l, Some(r)),
        None => (clean.as_str(), None),
    };
    let ins: Vec<Vec<u8>> = lhs.split(',').map(|t| t.bytes().collect()).collect();
    if ins.len() != operands.len() {
        return Err(format!("'{s}' names {} operand(s) but {} were given", ins.len(), operands.len()));
    }
    for (i, (labels, op)) in ins.iter().zip(operands).enumerate() {
        if labels.len() != op.1.len() {
            return Err(format!(
                "'{s}': operand {i} has {} subscripts but {} dimensions (shape {})",
                labels.len(),
                op.1.len(),
                fmt_shape(&op.1)
            ));
        }
        if let Some(l) = labels.iter().find(|l| labels.iter().filter(|m| m == l).count() > 1) {
            return Err(format!(
                "'{s}': subscript '{}' repeats within operand {i}; diagonals are not supported",
                *l as char
            ));
        }
    }
    let count = |l: u8| ins.iter().flatten().filter(|&&m| m == l).count();
    let out: Vec<u8> = match rhs {
        Some(r) => {
            let out: Vec<u8> = r.bytes().collect();
            if r.contains(['-', '>', ',']) {
                return Err(format!("'{s}': the output after '->' must be letters only"));
            }
            for &l in &out {
                if count(l) == 0 {
                    return Err(format!("'{s}': output subscript '{}' appears in no operand", l as char));
                }
                if out.iter().filter(|&&m| m == l).count() > 1 {
                    return Err(format!("'{s}': output subscript '{}' is repeated", l as char));
                }
            }
            out
        }
        None => {
            if lhs.contains(['-', '>']) {
                return Err(format!("'{s}': write the output after '->'"));
            }
            let mut once: Vec<u8> = ins.iter().flatten().copied().filter(|&l| count(l) == 1).collect();
            once.sort_unstable();
            once
        }
    };
    Ok((ins, out))
}

/// Resolve a contraction: the operands' views on the stage axes (output labels, then
/// summed labels), their product, and its sum over the summed labels.
fn contract(ops: Vec<(Resolved, Vec<u8>)>, out: &[u8], cx: &Ctx, at: (&str, usize)) -> Result<Resolved, PlanError> {
    let mut stage: Vec<u8> = out.to_vec();
    for (_, labels) in &ops {
        for &l in labels {
            if !stage.contains(&l) {
                stage.push(l);
            }
        }
    }
    // Each label's length: equal in every operand that has it, or 1 (broadcast).
    let mut len = vec![1usize; stage.len()];
    for (op, labels) in &ops {
        for (d, &l) in labels.iter().enumerate() {
            let s = stage.iter().position(|&x| x == l).expect("every label is a stage label");
            let n = op.1[d];
            if len[s] != 1 && n != 1 && len[s] != n {
                let shapes: Vec<String> = ops.iter().map(|o| fmt_shape(&o.0.1)).collect();
                return Err(PlanError::BadOperator {
                    index: cx.index,
                    op: at.0.to_string(),
                    pos: at.1,
                    expr: cx.expr.into(),
                    problem: format!(
                        "of shapes {} contracts axes of lengths {} and {n} together; contracted and shared axes must have equal lengths",
                        shapes.join(" and "),
                        len[s]
                    ),
                });
            }
            len[s] = len[s].max(n);
        }
    }
    let mut product: Option<Resolved> = None;
    for (op, labels) in ops {
        let (node, shape, kind) = op;
        let dims: Vec<Dim> = stage
            .iter()
            .map(|l| match labels.iter().position(|m| m == l) {
                Some(axis) => Dim::Src {
                    axis,
                    start: 0,
                    step: 1,
                    len: shape[axis],
                },
                None => Dim::New,
            })
            .collect();
        let v = View {
            src: shape.clone(),
            dims,
            fixed: vec![],
        };
        let placed = if v.is_identity() {
            (node, shape, kind)
        } else {
            viewed(node, v, kind)
        };
        product = Some(match product {
            None => placed,
            Some(p) => map(Op::of("multiply"), vec![p, placed], cx, at)?,
        });
    }
    let (node, _, kind) = product.expect("at least one operand");
    let summed: Vec<usize> = (out.len()..stage.len()).collect();
    let out_shape = len[..out.len()].to_vec();
    if summed.is_empty() {
        // Nothing summed: an outer product or a transpose; broadcast to the full shape.
        return Ok((node, out_shape, kind));
    }
    let sum = ReduceDef::named("sum").expect("sum is a reduction");
    Ok((
        Node::Reduce {
            op: ReduceOp::Sum,
            axes: summed,
            arg: Box::new(node),
            ddof: 0.0,
            keepdims: false,
            hist: None,
            groups: None,
        },
        out_shape,
        sum.result_kind(kind),
    ))
}
