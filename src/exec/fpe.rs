//! Floating-point events of elementwise operations, counted as numpy warns of them
//! (issue 17 item 6): a division by zero (an infinity from finite values by a
//! division or a logarithm), an invalid value (a NaN from values none of which was
//! NaN), an overflow (an infinity from finite values by anything else). Counted per
//! thread while a block runs ([`take`]); `execute_block` hands the counts to the
//! server with the block's result.
//!
//! The check costs one pass over each result (in cache, vectorized) when the
//! arguments are finite, and one more over the arguments when they are not: a NaN or
//! infinity an argument brings is carried, not counted, at every element it reaches.

use std::cell::Cell;

use ndarray::{ArrayD, IxDyn};

use super::ops::{Op, Value, apply};

/// Counts of the three events: division by zero, invalid value, overflow.
pub type Events = [u64; 3];

thread_local! {
    static EVENTS: Cell<Events> = const { Cell::new([0; 3]) };
}

/// The events counted on this thread since the last call, and start again.
pub fn take() -> Events {
    EVENTS.with(|e| e.replace([0; 3]))
}

fn add(div: u64, invalid: u64, overflow: u64) {
    if div + invalid + overflow > 0 {
        EVENTS.with(|e| {
            let [a, b, c] = e.get();
            e.set([a + div, b + invalid, c + overflow]);
        });
    }
}

/// Operations whose infinities from finite values numpy reports as divisions by zero.
fn divides(op: Op) -> bool {
    matches!(
        op.name(),
        "divide" | "floor_divide" | "remainder" | "log" | "log10" | "log2" | "log1p"
    )
}

fn finite_slice(a: &ArrayD<f64>) -> bool {
    // Blocks of 64 folded without branches: vectorized, stopping at the first bad block.
    let all = |s: &[f64]| s.chunks(64).all(|c| c.iter().fold(true, |ok, v| ok & v.is_finite()));
    match a.as_slice_memory_order() {
        Some(s) => all(s),
        None => a.iter().all(|v| v.is_finite()),
    }
}

fn shape_of(v: &Value) -> &[usize] {
    match v {
        Value::Scalar(_) => &[],
        Value::Array(a) => a.shape(),
    }
}

/// Whether events are counted (`DROVER_FP_EVENTS=0` turns it off, to measure its cost).
fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("DROVER_FP_EVENTS").map_or(true, |v| v != "0"))
}

/// Push the positions (from `base`) of the non-finite values of `s`, a block of eight
/// at a time (clean data costs one vectorized test per eight values).
fn non_finite_positions(s: &[f64], out: &mut Vec<usize>) {
    let mut chunks = s.chunks_exact(8);
    for (c, chunk) in chunks.by_ref().enumerate() {
        if chunk.iter().fold(false, |acc, v| acc | !v.is_finite()) {
            out.extend(chunk.iter().enumerate().filter(|(_, v)| !v.is_finite()).map(|(k, _)| c * 8 + k));
        }
    }
    let base = s.len() - chunks.remainder().len();
    out.extend(
        chunks
            .remainder()
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.is_finite())
            .map(|(k, _)| base + k),
    );
}

/// (non-finite, NaN) counts of `s`.
fn non_finite_counts(s: &[f64]) -> (u64, u64) {
    s.iter().fold((0u64, 0u64), |(nf, nan), v| {
        (nf + u64::from(!v.is_finite()), nan + u64::from(v.is_nan()))
    })
}

/// Operations that never make a NaN or an infinity from finite numbers: not checked.
fn never_raises(op: Op) -> bool {
    matches!(
        op.name(),
        "less"
            | "less_equal"
            | "greater"
            | "greater_equal"
            | "equal"
            | "not_equal"
            | "logical_and"
            | "logical_or"
            | "logical_xor"
            | "logical_not"
            | "minimum"
            | "maximum"
            | "fmin"
            | "fmax"
            | "arctan2"
            | "negative"
            | "abs"
            | "absolute"
            | "sin"
            | "cos"
            | "tan"
            | "arctan"
            | "tanh"
            | "deg2rad"
            | "floor"
            | "ceil"
            | "trunc"
            | "round"
            | "sign"
            | "isnan"
            | "isinf"
            | "isfinite"
            | "where"
            | "clip"
    )
}

/// [`apply`], counting the floating-point events of the result.
pub fn apply_counted(op: Op, args: Vec<Value>) -> Value {
    if !enabled() || never_raises(op) {
        return apply(op, args);
    }
    // A NaN or infinite scalar argument reaches every element: nothing can be new.
    if args.iter().any(|a| matches!(a, Value::Scalar(s) if !s.is_finite())) {
        return apply(op, args);
    }
    let shape = args
        .iter()
        .map(shape_of)
        .fold(Vec::new(), |s, t| super::geometry::broadcast(&s, t).unwrap_or(s));
    // Where an argument is not finite, whatever the result holds is carried from it:
    // those places, in the result's row-major order.
    let mut carried: Vec<usize> = Vec::new();
    let mut sources = 0;
    for a in &args {
        let Value::Array(a) = a else { continue };
        let before = carried.len();
        match a.as_slice().filter(|_| a.shape() == shape.as_slice()) {
            Some(s) => non_finite_positions(s, &mut carried),
            None if finite_slice(a) => {}
            None => {
                if let Some(b) = a.broadcast(IxDyn(&shape)) {
                    carried.extend(b.iter().enumerate().filter(|(_, v)| !v.is_finite()).map(|(k, _)| k));
                }
            }
        }
        sources += usize::from(carried.len() > before);
    }
    if sources > 1 {
        carried.sort_unstable();
        carried.dedup();
    }
    let out = apply(op, args);
    let (nf, nan, carried_nf, carried_nan) = match &out {
        Value::Scalar(v) if carried.is_empty() => (u64::from(!v.is_finite()), u64::from(v.is_nan()), 0, 0),
        Value::Scalar(_) => return out,
        Value::Array(a) => {
            if finite_slice(a) {
                return out;
            }
            let owned;
            let s = match a.as_slice() {
                Some(s) => s,
                None => {
                    owned = a.iter().copied().collect::<Vec<f64>>();
                    &owned
                }
            };
            let (nf, nan) = non_finite_counts(s);
            let at: Vec<f64> = carried.iter().filter_map(|&k| s.get(k).copied()).collect();
            let (cnf, cnan) = non_finite_counts(&at);
            (nf, nan, cnf, cnan)
        }
    };
    // New places only: NaN from numbers is invalid; an infinity from finite numbers is
    // a division by zero for divisions and logarithms, an overflow otherwise.
    let invalid = nan - carried_nan;
    let inf = (nf - nan) - (carried_nf - carried_nan);
    if divides(op) {
        add(inf, invalid, 0)
    } else {
        add(0, invalid, inf)
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arr(v: &[f64]) -> Value {
        Value::Array(ArrayD::from_shape_vec(IxDyn(&[v.len()]), v.to_vec()).unwrap())
    }

    #[test]
    fn events_are_counted_as_numpy_warns_of_them() {
        take();
        // 1/0, -1/0 and 2/0: divisions by zero; 0/0: invalid; NaN/0 carried.
        apply_counted(Op::of("divide"), vec![arr(&[1.0, -1.0, 0.0, f64::NAN, 2.0]), Value::Scalar(0.0)]);
        assert_eq!(take(), [3, 1, 0]);
        // exp(1000) overflows; sqrt(-1) is invalid; NaN in, NaN out is not counted.
        apply_counted(Op::of("exp"), vec![arr(&[1000.0, 1.0, f64::NAN])]);
        apply_counted(Op::of("sqrt"), vec![arr(&[-1.0, 4.0, f64::NAN])]);
        assert_eq!(take(), [0, 1, 1]);
        // log(0): numpy's divide by zero; inf - inf from infinite arguments: carried.
        apply_counted(Op::of("log"), vec![Value::Scalar(0.0)]);
        apply_counted(Op::of("subtract"), vec![arr(&[f64::INFINITY]), Value::Scalar(f64::INFINITY)]);
        assert_eq!(take(), [1, 0, 0]);
        // where(c, x, nan): the NaN is an argument's.
        apply_counted(Op::of("where"), vec![arr(&[1.0, 0.0]), arr(&[3.0, 4.0]), Value::Scalar(f64::NAN)]);
        assert_eq!(take(), [0, 0, 0]);
    }
}
