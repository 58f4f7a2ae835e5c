//! Blockwise evaluation of kernels: every elementwise operation comes from the
//! registry ([`super::ops`]); reductions are in [`super::reduce`].

use std::ops::Range;

use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn};

use super::geometry::operand_region;
pub use super::ops::Value;
use super::plan::Kernel;

/// Evaluate a kernel; `leaf` produces the block of an input or const leaf.
pub fn eval<E>(k: &Kernel, leaf: &mut impl FnMut(&Kernel) -> Result<ArrayD<f64>, E>) -> Result<Value, E> {
    Ok(match k {
        Kernel::Num(v) => Value::Scalar(*v),
        Kernel::Input(_) | Kernel::Const(_) | Kernel::View(..) | Kernel::Take(..) | Kernel::Reshape(..) | Kernel::Along(..) => {
            Value::Array(leaf(k)?)
        }
        Kernel::Map(op, args) => {
            let values = args.iter().map(|a| eval(a, leaf)).collect::<Result<Vec<_>, E>>()?;
            super::fpe::apply_counted(*op, values)
        }
    })
}

/// Evaluate several kernels over one block, each sub-expression in `shared` (found
/// in more than one place) computed once and reused.
pub fn eval_shared<'k, E>(
    kernels: &[&'k Kernel],
    shared: &[&'k Kernel],
    leaf: &mut impl FnMut(&Kernel) -> Result<ArrayD<f64>, E>,
) -> Result<Vec<Value>, E> {
    let mut memo: Vec<Option<Value>> = vec![None; shared.len()];
    kernels.iter().map(|k| eval_memo(k, shared, &mut memo, leaf)).collect()
}

fn eval_memo<E>(
    k: &Kernel,
    shared: &[&Kernel],
    memo: &mut [Option<Value>],
    leaf: &mut impl FnMut(&Kernel) -> Result<ArrayD<f64>, E>,
) -> Result<Value, E> {
    let slot = shared.iter().position(|s| *s == k);
    if let Some(v) = slot.and_then(|i| memo[i].clone()) {
        return Ok(v);
    }
    let v = match k {
        Kernel::Map(op, args) => {
            let values = args
                .iter()
                .map(|a| eval_memo(a, shared, memo, leaf))
                .collect::<Result<Vec<_>, E>>()?;
            super::fpe::apply_counted(*op, values)
        }
        other => eval(other, leaf)?,
    };
    if let Some(i) = slot {
        memo[i] = Some(v.clone());
    }
    Ok(v)
}

/// The elementwise sub-expressions found more than once in `kernels` (in one of them
/// or across several): those [`eval_shared`] computes once.
pub fn repeated<'k>(kernels: &[&'k Kernel]) -> Vec<&'k Kernel> {
    let mut seen: Vec<&Kernel> = Vec::new();
    let mut twice: Vec<&Kernel> = Vec::new();
    for k in kernels {
        k.visit(&mut |n| {
            if matches!(n, Kernel::Map(..)) {
                if seen.contains(&n) {
                    if !twice.contains(&n) {
                        twice.push(n);
                    }
                } else {
                    seen.push(n);
                }
            }
        });
    }
    twice
}

/// Materialize a value over a block shape (broadcasting scalars and smaller arrays).
pub fn materialize(v: Value, shape: &[usize]) -> ArrayD<f64> {
    match v {
        Value::Scalar(s) => ArrayD::from_elem(IxDyn(shape), s),
        Value::Array(a) if a.shape() == shape => a,
        Value::Array(a) => a.broadcast(IxDyn(shape)).expect("broadcastable").to_owned(),
    }
}

/// The slice of a whole const array that a block needs.
pub fn const_slice(c: &ArrayD<f64>, region: &[Range<usize>]) -> ArrayD<f64> {
    let r = operand_region(region, c.shape());
    let mut v: ArrayViewD<f64> = c.view();
    for (d, range) in r.iter().enumerate() {
        v.slice_axis_inplace(Axis(d), ndarray::Slice::from(range.clone()));
    }
    v.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::ops::Op;

    fn data(shape: &[usize]) -> ArrayD<f64> {
        let n: usize = shape.iter().product();
        ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(|i| i as f64 * 0.5 + 1.0).collect()).unwrap()
    }

    #[test]
    fn evaluation_broadcasts() {
        let x = data(&[3, 4]);
        let y = ArrayD::from_shape_vec(IxDyn(&[4]), vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let k = Kernel::Map(Op::of("subtract"), vec![Kernel::Input(0), Kernel::Const(0)]);
        let v = eval::<()>(&k, &mut |leaf| {
            Ok(if matches!(leaf, Kernel::Input(_)) { x.clone() } else { y.clone() })
        })
        .unwrap();
        let out = materialize(v, &[3, 4]);
        assert_eq!(out[[2, 3]], x[[2, 3]] - 4.0);
        let k = Kernel::Map(Op::of("subtract"), vec![Kernel::Num(1.0), Kernel::Const(0)]);
        let v = eval::<()>(&k, &mut |_| Ok(y.clone())).unwrap();
        assert_eq!(materialize(v, &[2, 4])[[1, 1]], -1.0);
    }
}
