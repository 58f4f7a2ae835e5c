//! From a parsed expression to a resolved tree: names bound to inputs or constants,
//! operators and functions bound to registry operations ([`super::ops`],
//! [`super::reduce`]), and every node's shape and dtype kind checked as numpy would.

use std::collections::HashMap;

use super::expr::{Ast, AxisArg};
use super::geometry::{self, broadcast};
use super::ops::{self, CONSTANTS, Kind, Op};
use super::plan::{InputSpec, PlanError, ReduceOp};
use super::reduce::ReduceDef;
use crate::config::did_you_mean;

pub(super) struct Ctx<'a> {
    pub index: usize,
    pub expr: &'a str,
    pub names: &'a HashMap<&'a str, u32>,
    pub inputs: &'a [InputSpec],
}

/// A resolved expression node, before reductions are lowered.
pub(super) enum Node {
    Input(u32),
    Num(f64),
    Map(Op, Vec<Node>),
    Reduce { op: ReduceOp, axes: Vec<usize>, arg: Box<Node> },
}

/// A resolved node with its shape and kind.
type Resolved = (Node, Vec<usize>, Kind);

fn input_kind(spec: &InputSpec) -> Kind {
    use super::hdf::Dtype;
    match spec.dtype {
        Dtype::F32 | Dtype::F64 => Kind::Float,
        _ => Kind::Int,
    }
}

/// Apply `op` to resolved arguments: broadcast their shapes, check their kinds.
fn map(op: Op, args: Vec<Resolved>, cx: &Ctx, at: (&str, usize)) -> Result<Resolved, PlanError> {
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
        Ast::Int(v) => (Node::Num(*v as f64), vec![], Kind::Int),
        Ast::Name { name, pos } => match cx.names.get(name.as_str()) {
            Some(&i) => {
                let spec = &cx.inputs[i as usize];
                (Node::Input(i), spec.shape.clone(), input_kind(spec))
            }
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
            map(Op::of(op.op_name()), vec![l, r], cx, (op.symbol(), *pos))?
        }
        Ast::Call { func, pos, args, axis } => {
            let bad = |problem: String| PlanError::BadCall {
                index: cx.index,
                func: func.clone(),
                pos: *pos,
                expr: cx.expr.into(),
                problem,
            };
            if let Some(op) = Op::named(func) {
                let def = op.get();
                if axis.is_some() {
                    return Err(bad("takes no axis argument".into()));
                }
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
            } else if let Some(def) = ReduceDef::named(func) {
                if args.len() != 1 {
                    return Err(bad(format!("takes 1 array argument (and axis=) but {} were given", args.len())));
                }
                let (n, s, kind) = resolve(&args[0], cx)?;
                let axes = reduce_axes(axis.as_ref().map(|a| &a.0), &s, func, cx)?;
                let shape = geometry::kept(&s, &axes);
                (
                    Node::Reduce {
                        op: def.op,
                        axes,
                        arg: Box::new(n),
                    },
                    shape,
                    def.result_kind(kind),
                )
            } else {
                let known = super::reduce::REDUCTIONS
                    .iter()
                    .map(|r| r.name)
                    .chain(ops::ELEMENTWISE.iter().map(|e| e.name));
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
    let hint = did_you_mean(name, cx.names.keys().copied().chain(CONSTANTS.iter().map(|c| c.0)))
        .map(|s| format!(" (did you mean \"{s}\"?)"))
        .unwrap_or_default();
    let mut inputs: Vec<&str> = cx.names.keys().copied().collect();
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
fn reduce_axes(axis: Option<&AxisArg>, shape: &[usize], func: &str, cx: &Ctx) -> Result<Vec<usize>, PlanError> {
    let rank = shape.len() as i64;
    let Some(AxisArg::Axes(list)) = axis else {
        return Ok((0..shape.len()).collect());
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
