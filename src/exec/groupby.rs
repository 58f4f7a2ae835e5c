//! `by=` on reductions: the groups of the reduced time axis, from the time coordinate
//! of an input the reduced array is computed from elementwise.

use super::calendar::{GROUPINGS, GroupBy, Groups};
use super::resolve::{Ctx, Node};

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
