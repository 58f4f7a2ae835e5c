//! `by=` on reductions: the groups of the reduced time axis, from the time coordinate
//! of an input the reduced array is computed from elementwise.

use super::calendar::{GROUPINGS, GroupBy, Groups};
use super::expr::{Ast, AxisArg};
use super::geometry::fmt_shape;
use super::plan::PlanError;
use super::resolve::{Bad, Ctx, Node, Resolved, resolve};

/// Input leaves reached through elementwise operations only.
fn elementwise_inputs(n: &Node, out: &mut Vec<u32>) {
    match n {
        Node::Input(i) => out.push(*i),
        Node::Map(_, args) => args.iter().for_each(|a| elementwise_inputs(a, out)),
        _ => {}
    }
}

/// The groups of `by` along the one reduced axis of `arg` (of `shape`).
pub(super) fn groups(by: &str, arg: &Node, shape: &[usize], axes: &[usize], cx: &Ctx) -> Result<Groups, String> {
    let by = GroupBy::parse(by).ok_or_else(|| format!("by=\"{by}\" is not a grouping; use one of {GROUPINGS}"))?;
    let [axis] = axes[..] else {
        return Err(format!(
            "by=\"{}\" groups one axis, the time axis (axis=0 for most files), not {axes:?}",
            by.name()
        ));
    };
    let mut leaves = Vec::new();
    elementwise_inputs(arg, &mut leaves);
    let rank = shape.len();
    let mut why = Vec::new();
    for i in leaves {
        let spec = &cx.inputs[i as usize];
        let ri = spec.shape.len();
        let Some(own) = (axis + ri).checked_sub(rank) else { continue };
        match &spec.time.axis {
            Some((t, dates)) if *t == own && spec.shape[own] == shape[axis] => return Ok(Groups::new(by, dates)),
            Some((t, _)) => why.push(format!(
                "input {} has its time axis ({}) at axis {t}, not at the reduced axis {axis}",
                spec.name, spec.time.coordinate
            )),
            None => why.push(format!("input {} has no time axis: {}", spec.name, spec.time.why_not)),
        }
    }
    if why.is_empty() {
        why.push("the reduced array is not an input or an elementwise expression of one (slice or reduce after grouping)".into());
    }
    Err(format!(
        "by=\"{}\" needs the reduced axis to be a decoded time axis; {}",
        by.name(),
        why.join("; ")
    ))
}

/// The column of an expression (for errors).
fn ast_pos(a: &Ast) -> usize {
    match a {
        Ast::Name { pos, .. } | Ast::Call { pos, .. } | Ast::Index { pos, .. } | Ast::Str(_, pos) => *pos,
        Ast::Unary(_, _, pos) | Ast::Bin(_, _, _, pos) => *pos,
        Ast::Num(_) | Ast::Int(_) => 0,
    }
}

/// An index array: `groups(x, by)`, the group of each step of x's time axis.
fn index_table(a: &Ast, cx: &Ctx) -> Result<Vec<u32>, PlanError> {
    let bad_index = |problem: String| PlanError::BadIndex {
        index: cx.index,
        pos: ast_pos(a),
        expr: cx.expr.into(),
        problem,
    };
    let Ast::Call {
        func, args, kwargs, axis, ..
    } = a
    else {
        return Err(bad_index(
            "is an array: integer-array indexing takes groups(x, \"month\") (other index arrays are not supported yet); basic indices are integer constants, slices, ... and None".into(),
        ));
    };
    if func != "groups" {
        return Err(bad_index(format!(
            "is {func}(...): integer-array indexing takes groups(x, \"month\") (other index arrays are not supported yet); basic indices are integer constants and slices"
        )));
    }
    let (Some(x), Some(Ast::Str(by, _)), 2, true, None) = (args.first(), args.get(1), args.len(), kwargs.is_empty(), axis) else {
        return Err(bad_index(format!(
            "groups() takes an array and a grouping: groups(t2m, \"month\"), with one of {GROUPINGS}"
        )));
    };
    let (node, shape, _) = resolve(x, cx)?;
    let mut leaves = Vec::new();
    elementwise_inputs(&node, &mut leaves);
    let time_axis = leaves.iter().find_map(|&i| {
        let spec = &cx.inputs[i as usize];
        let (t, _) = spec.time.axis.as_ref()?;
        (t + shape.len()).checked_sub(spec.shape.len())
    });
    let axis = time_axis.ok_or_else(|| {
        bad_index(format!(
            "groups() needs an array with a decoded time axis: {}",
            leaves
                .first()
                .map(|&i| format!(
                    "input {} has none: {}",
                    cx.inputs[i as usize].name, cx.inputs[i as usize].time.why_not
                ))
                .unwrap_or_else(|| "its argument is not an input or an elementwise expression of one".into())
        ))
    })?;
    groups(by, &node, &shape, &[axis], cx).map(|g| g.of_step).map_err(bad_index)
}

/// `take(a, indices, axis=k)` and `a[indices]` (which is `take` along axis 0), with
/// `groups()` as the indices and a reduction result as `a`; `groups()` alone is refused.
pub(super) fn call(
    func: &str,
    args: &[Ast],
    axis: Option<&(AxisArg, usize)>,
    cx: &Ctx,
    bad: &Bad,
    accepts: &dyn Fn(&[&str]) -> Result<(), PlanError>,
) -> Result<Option<Resolved>, PlanError> {
    match func {
        "groups" => Err(bad(
            "is an index array: pick rows of a grouped result with it, clim[groups(t2m, \"month\")] or take(clim, groups(t2m, \"month\"), axis=0)".into(),
        )),
        "take" => {
            accepts(&["axis"])?;
            if args.len() != 2 {
                return Err(bad("takes the array and the indices: take(clim, groups(t2m, \"month\"), axis=0)".into()));
            }
            let table = index_table(&args[1], cx)?;
            let (src, shape, kind) = resolve(&args[0], cx)?;
            let axis = match axis {
                Some((AxisArg::Axes(v), _)) if v.len() == 1 => {
                    let r = shape.len() as i64;
                    if v[0] >= r || v[0] < -r {
                        return Err(bad(format!("axis {} is out of range for an array of shape {}", v[0], fmt_shape(&shape))));
                    }
                    v[0].rem_euclid(r) as usize
                }
                _ => return Err(bad("takes axis= as one integer (take(clim, groups(t2m, \"month\"), axis=0))".into())),
            };
            let is_result = |n: &Node| matches!(n, Node::Reduce { .. });
            if !(is_result(&src) || matches!(&src, Node::View(inner, _) if is_result(inner))) {
                return Err(bad(
                    "picks rows of a reduction result (a grouped climatology, say, in [let]); picking rows of input data by an index array is not supported yet".into(),
                ));
            }
            if let Some(&worst) = table.iter().max()
                && worst as usize >= shape[axis]
            {
                return Err(bad(format!(
                    "index {worst} is out of bounds for axis {axis} with size {} (are the groups the ones the result was grouped by?)",
                    shape[axis]
                )));
            }
            let mut out = shape.clone();
            out[axis] = table.len();
            Ok(Some((Node::Take { src: Box::new(src), table, axis }, out, kind)))
        }
        _ => Ok(None),
    }
}
