//! The operation registry: every elementwise operation and reduction drover knows, as
//! rows of one table each, read by the resolver (names, arity, dtype kinds), the
//! planner and the kernels (evaluation). Adding an operation is adding a row.
//!
//! Values are computed in float64 with numpy's semantics (NaN rules, remainder and
//! floor division signs, round half to even); booleans are 0.0 / 1.0 and integers are
//! exact up to 2**53, as in numpy's float64 arithmetic on them.

use ndarray::{ArrayD, IxDyn, Zip};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What numpy would make of a value: the dtype family that decides which operations
/// apply (`&`, `|` and `~` take booleans) and, later, an output's default dtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    Bool,
    /// Integers drover makes itself: counts, indices, integer literals (numpy's int64).
    Index,
    /// Integer input data (computed in float64; written as f64 unless asked).
    Int,
    Float,
}

impl Kind {
    /// numpy's dtype for a result of this kind, as an output's default: bool, int64
    /// for counts and indices; float64 otherwise (integer input data is computed in
    /// float64, as drover always does).
    pub fn default_dtype(self) -> crate::config::workload::OutDtype {
        use crate::config::workload::OutDtype;
        match self {
            Kind::Bool => OutDtype::Bool,
            Kind::Index => OutDtype::I64,
            Kind::Int | Kind::Float => OutDtype::F64,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Bool => "boolean",
            Kind::Index | Kind::Int => "integer",
            Kind::Float => "floating-point",
        }
    }
}

/// A value during evaluation: numbers stay scalars until they meet an array.
#[derive(Clone)]
pub enum Value {
    Scalar(f64),
    Array(ArrayD<f64>),
}

/// How an operation evaluates, monomorphized per operation (no call per element).
#[derive(Clone, Copy)]
pub enum Eval {
    Unary(fn(Value) -> Value),
    Binary(fn(Value, Value) -> Value),
    Ternary(fn(Value, Value, Value) -> Value),
}

impl Eval {
    pub fn arity(self) -> usize {
        match self {
            Eval::Unary(_) => 1,
            Eval::Binary(_) => 2,
            Eval::Ternary(_) => 3,
        }
    }
}

/// How an operation's result kind follows from its arguments' kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KindRule {
    /// The widest argument kind (booleans count as integers in arithmetic).
    Promote,
    /// Always float (true division, transcendental functions).
    Float,
    /// Always boolean (comparisons, predicates).
    Bool,
    /// Boolean, from boolean arguments only (`&`, `|`, `~`).
    Logical,
    /// The widest of the arguments after the first (`where(cond, a, b)`).
    Select,
}

/// One elementwise operation.
pub struct ElemOp {
    pub name: &'static str,
    /// Parameter names, for keyword arguments and messages.
    pub params: &'static [&'static str],
    pub kind: KindRule,
    pub eval: Eval,
}

/// An elementwise operation by its place in [`ELEMENTWISE`]; serialized as its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Op(u16);

impl Op {
    pub fn get(self) -> &'static ElemOp {
        &ELEMENTWISE[self.0 as usize]
    }

    pub fn named(name: &str) -> Option<Op> {
        ELEMENTWISE.iter().position(|o| o.name == name).map(|i| Op(i as u16))
    }

    /// The operation of a registry name that must exist (operators' lowering).
    pub fn of(name: &str) -> Op {
        Op::named(name).unwrap_or_else(|| panic!("\"{name}\" is in the registry"))
    }

    pub fn name(self) -> &'static str {
        self.get().name
    }
}

impl Serialize for Op {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Op {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Op::named(&name).ok_or_else(|| serde::de::Error::custom(format!("unknown operation \"{name}\"")))
    }
}

/// Apply `f` to every element of a value.
fn map1(v: Value, f: impl Fn(f64) -> f64) -> Value {
    match v {
        Value::Scalar(x) => Value::Scalar(f(x)),
        Value::Array(mut a) => {
            a.mapv_inplace(f);
            Value::Array(a)
        }
    }
}

fn broadcast_shape(a: &[usize], b: &[usize]) -> Vec<usize> {
    super::geometry::broadcast(a, b).expect("shapes checked at plan time")
}

/// Apply `f` elementwise to two values with numpy broadcasting, reusing a buffer.
fn map2(a: Value, b: Value, f: impl Fn(f64, f64) -> f64) -> Value {
    match (a, b) {
        (Value::Scalar(x), Value::Scalar(y)) => Value::Scalar(f(x, y)),
        (Value::Array(mut x), Value::Scalar(y)) => {
            x.mapv_inplace(|v| f(v, y));
            Value::Array(x)
        }
        (Value::Scalar(x), Value::Array(mut y)) => {
            y.mapv_inplace(|v| f(x, v));
            Value::Array(y)
        }
        (Value::Array(mut x), Value::Array(mut y)) => {
            let shape = broadcast_shape(x.shape(), y.shape());
            if x.shape() == shape.as_slice() {
                let yb = y.broadcast(IxDyn(&shape)).expect("broadcastable");
                Zip::from(&mut x).and(&yb).for_each(|a, &b| *a = f(*a, b));
                Value::Array(x)
            } else if y.shape() == shape.as_slice() {
                let xb = x.broadcast(IxDyn(&shape)).expect("broadcastable");
                Zip::from(&mut y).and(&xb).for_each(|b, &a| *b = f(a, *b));
                Value::Array(y)
            } else {
                let xb = x.broadcast(IxDyn(&shape)).expect("broadcastable");
                let yb = y.broadcast(IxDyn(&shape)).expect("broadcastable");
                Value::Array(Zip::from(&xb).and(&yb).map_collect(|&a, &b| f(a, b)))
            }
        }
    }
}

/// Apply `f` elementwise to three values with numpy broadcasting.
fn map3(a: Value, b: Value, c: Value, f: impl Fn(f64, f64, f64) -> f64) -> Value {
    let array = |v: Value| match v {
        Value::Scalar(s) => ArrayD::from_elem(IxDyn(&[]), s),
        Value::Array(x) => x,
    };
    if let (Value::Scalar(x), Value::Scalar(y), Value::Scalar(z)) = (&a, &b, &c) {
        return Value::Scalar(f(*x, *y, *z));
    }
    let (a, b, c) = (array(a), array(b), array(c));
    let shape = broadcast_shape(&broadcast_shape(a.shape(), b.shape()), c.shape());
    let (va, vb, vc) = (
        a.broadcast(IxDyn(&shape)).expect("broadcastable"),
        b.broadcast(IxDyn(&shape)).expect("broadcastable"),
        c.broadcast(IxDyn(&shape)).expect("broadcastable"),
    );
    Value::Array(Zip::from(&va).and(&vb).and(&vc).map_collect(|&x, &y, &z| f(x, y, z)))
}

fn truth(x: f64) -> bool {
    // numpy: any nonzero value, NaN included, is true.
    x != 0.0
}

fn flag(x: bool) -> f64 {
    if x { 1.0 } else { 0.0 }
}

/// numpy's float divmod: the remainder takes the divisor's sign; the quotient is
/// floored, and rounded back when the division was inexact by more than a half.
fn divmod(a: f64, d: f64) -> (f64, f64) {
    let m = a % d;
    if d == 0.0 {
        return (a / d, m);
    }
    let mut div = (a - m) / d;
    let m = if m != 0.0 {
        if (d < 0.0) != (m < 0.0) {
            div -= 1.0;
            m + d
        } else {
            m
        }
    } else {
        0.0f64.copysign(d)
    };
    let q = if div != 0.0 {
        let f = div.floor();
        if div - f > 0.5 { f + 1.0 } else { f }
    } else {
        0.0f64.copysign(a / d)
    };
    (q, m)
}

fn sign(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        x // 0.0, -0.0 and NaN as numpy
    }
}

fn nan_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() { f64::NAN } else { a.min(b) }
}

fn nan_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() { f64::NAN } else { a.max(b) }
}

#[inline]
fn pow(a: f64, b: f64) -> f64 {
    if b == 2.0 { a * a } else { a.powf(b) }
}

macro_rules! unary {
    ($name:literal, $kind:ident, |$x:ident| $body:expr) => {
        ElemOp {
            name: $name,
            params: &["x"],
            kind: KindRule::$kind,
            eval: Eval::Unary(|v| map1(v, |$x: f64| $body)),
        }
    };
}

macro_rules! binary {
    ($name:literal, $kind:ident, |$a:ident, $b:ident| $body:expr) => {
        ElemOp {
            name: $name,
            params: &["x1", "x2"],
            kind: KindRule::$kind,
            eval: Eval::Binary(|l, r| map2(l, r, |$a: f64, $b: f64| $body)),
        }
    };
}

/// Every elementwise operation, by numpy's name. Operators lower to these rows:
/// `+ - * / // % **` to add, subtract, multiply, divide, floor_divide, remainder,
/// power; comparisons to less ... not_equal; `&`, `|`, `~` to logical_and,
/// logical_or, logical_not (on booleans, where numpy's bitwise forms agree); unary
/// minus to negative.
pub static ELEMENTWISE: &[ElemOp] = &[
    binary!("add", Promote, |a, b| a + b),
    binary!("subtract", Promote, |a, b| a - b),
    binary!("multiply", Promote, |a, b| a * b),
    binary!("divide", Float, |a, b| a / b),
    binary!("power", Promote, |a, b| pow(a, b)),
    binary!("remainder", Promote, |a, b| divmod(a, b).1),
    binary!("floor_divide", Promote, |a, b| divmod(a, b).0),
    binary!("less", Bool, |a, b| flag(a < b)),
    binary!("less_equal", Bool, |a, b| flag(a <= b)),
    binary!("greater", Bool, |a, b| flag(a > b)),
    binary!("greater_equal", Bool, |a, b| flag(a >= b)),
    binary!("equal", Bool, |a, b| flag(a == b)),
    binary!("not_equal", Bool, |a, b| flag(a != b)),
    binary!("logical_and", Logical, |a, b| flag(truth(a) && truth(b))),
    binary!("logical_or", Logical, |a, b| flag(truth(a) || truth(b))),
    binary!("logical_xor", Logical, |a, b| flag(truth(a) != truth(b))),
    binary!("minimum", Promote, |a, b| nan_min(a, b)),
    binary!("maximum", Promote, |a, b| nan_max(a, b)),
    binary!("fmin", Promote, |a, b| a.min(b)),
    binary!("fmax", Promote, |a, b| a.max(b)),
    binary!("arctan2", Float, |a, b| a.atan2(b)),
    binary!("hypot", Float, |a, b| a.hypot(b)),
    unary!("negative", Promote, |x| -x),
    unary!("logical_not", Logical, |x| flag(!truth(x))),
    unary!("abs", Promote, |x| x.abs()),
    unary!("absolute", Promote, |x| x.abs()),
    unary!("sqrt", Float, |x| x.sqrt()),
    unary!("square", Promote, |x| x * x),
    unary!("exp", Float, |x| x.exp()),
    unary!("expm1", Float, |x| x.exp_m1()),
    unary!("log", Float, |x| x.ln()),
    unary!("log10", Float, |x| x.log10()),
    unary!("log2", Float, |x| x.log2()),
    unary!("log1p", Float, |x| x.ln_1p()),
    unary!("sin", Float, |x| x.sin()),
    unary!("cos", Float, |x| x.cos()),
    unary!("tan", Float, |x| x.tan()),
    unary!("arcsin", Float, |x| x.asin()),
    unary!("arccos", Float, |x| x.acos()),
    unary!("arctan", Float, |x| x.atan()),
    unary!("sinh", Float, |x| x.sinh()),
    unary!("cosh", Float, |x| x.cosh()),
    unary!("tanh", Float, |x| x.tanh()),
    unary!("deg2rad", Float, |x| x.to_radians()),
    unary!("rad2deg", Float, |x| x.to_degrees()),
    unary!("floor", Promote, |x| x.floor()),
    unary!("ceil", Promote, |x| x.ceil()),
    unary!("trunc", Promote, |x| x.trunc()),
    unary!("round", Promote, |x| x.round_ties_even()),
    unary!("sign", Promote, |x| sign(x)),
    unary!("isnan", Bool, |x| flag(x.is_nan())),
    unary!("isinf", Bool, |x| flag(x.is_infinite())),
    unary!("isfinite", Bool, |x| flag(x.is_finite())),
    ElemOp {
        name: "where",
        params: &["condition", "x", "y"],
        kind: KindRule::Select,
        eval: Eval::Ternary(|c, x, y| map3(c, x, y, |c, x, y| if truth(c) { x } else { y })),
    },
    ElemOp {
        name: "clip",
        params: &["a", "a_min", "a_max"],
        kind: KindRule::Promote,
        eval: Eval::Ternary(|a, lo, hi| map3(a, lo, hi, |a, lo, hi| nan_min(nan_max(a, lo), hi))),
    },
];

/// Named constants (numpy's `np.pi`, `np.e`, `np.nan`, `np.inf`), used where no input
/// has the name.
pub const CONSTANTS: &[(&str, f64)] = &[
    ("pi", std::f64::consts::PI),
    ("e", std::f64::consts::E),
    ("nan", f64::NAN),
    ("inf", f64::INFINITY),
];

/// The result kind of `op` over arguments of `kinds`, or why numpy would refuse it.
pub fn result_kind(op: &ElemOp, kinds: &[Kind]) -> Result<Kind, String> {
    let widest = |ks: &[Kind]| ks.iter().copied().max().unwrap_or(Kind::Index);
    match op.kind {
        KindRule::Float => Ok(Kind::Float),
        KindRule::Bool => Ok(Kind::Bool),
        KindRule::Logical => match kinds.iter().find(|&&k| k != Kind::Bool) {
            None => Ok(Kind::Bool),
            Some(k) => Err(format!(
                "takes boolean arrays (comparisons, isnan(), ...) but was given a {} one; compare first, e.g. (x > 0) & (y < 1)",
                k.name()
            )),
        },
        KindRule::Select => Ok(widest(&kinds[1..])),
        KindRule::Promote => {
            let k = widest(kinds);
            match (op.name, k) {
                ("subtract" | "negative", Kind::Bool) => {
                    Err("cannot subtract or negate booleans (numpy refuses too); use logical_xor() or ~, or multiply by 1 first".into())
                }
                // numpy's add and multiply of two boolean arrays are or and and.
                (_, Kind::Bool) if matches!(op.name, "add" | "multiply" | "maximum" | "minimum" | "fmax" | "fmin") => Ok(Kind::Bool),
                (_, Kind::Bool) => Ok(Kind::Index),
                _ => Ok(k),
            }
        }
    }
}

/// The operation that computes `op` on booleans as numpy does (`True + True` is
/// `True`: add is logical or, multiply logical and); `op` itself otherwise.
pub fn on_kinds(op: Op, kinds: &[Kind]) -> Op {
    if kinds.iter().all(|&k| k == Kind::Bool) {
        match op.name() {
            "add" => return Op::of("logical_or"),
            "multiply" => return Op::of("logical_and"),
            _ => {}
        }
    }
    op
}

/// Evaluate `op` over argument values.
pub fn apply(op: Op, mut args: Vec<Value>) -> Value {
    match op.get().eval {
        Eval::Unary(f) => f(args.pop().expect("one argument")),
        Eval::Binary(f) => {
            let r = args.pop().expect("two arguments");
            f(args.pop().expect("two arguments"), r)
        }
        Eval::Ternary(f) => {
            let z = args.pop().expect("three arguments");
            let y = args.pop().expect("three arguments");
            f(args.pop().expect("three arguments"), y, z)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(op: &str, args: &[f64]) -> f64 {
        match apply(Op::of(op), args.iter().map(|&x| Value::Scalar(x)).collect()) {
            Value::Scalar(v) => v,
            Value::Array(_) => panic!("scalar in, scalar out"),
        }
    }

    #[test]
    fn remainder_and_floor_divide_follow_numpy_signs() {
        // numpy: np.remainder(-7, 3) == 2, np.floor_divide(-7, 3) == -3, and so on.
        for (a, d, q, m) in [
            (7.0, 3.0, 2.0, 1.0),
            (-7.0, 3.0, -3.0, 2.0),
            (7.0, -3.0, -3.0, -2.0),
            (-7.0, -3.0, 2.0, -1.0),
            (7.5, 2.0, 3.0, 1.5),
            (-0.5, 1.0, -1.0, 0.5),
        ] {
            assert_eq!(scalar("floor_divide", &[a, d]), q, "{a} // {d}");
            assert_eq!(scalar("remainder", &[a, d]), m, "{a} % {d}");
        }
        assert!(scalar("remainder", &[1.0, 0.0]).is_nan());
        assert_eq!(scalar("floor_divide", &[1.0, 0.0]), f64::INFINITY);
        assert!(
            scalar("remainder", &[6.0, -3.0]).is_sign_negative(),
            "zero takes the divisor's sign"
        );
    }

    #[test]
    fn nan_rules() {
        assert!(scalar("minimum", &[1.0, f64::NAN]).is_nan());
        assert_eq!(scalar("fmin", &[1.0, f64::NAN]), 1.0);
        assert_eq!(scalar("round", &[2.5]), 2.0, "half to even");
        assert_eq!(scalar("round", &[-3.5]), -4.0);
        assert!(scalar("sign", &[f64::NAN]).is_nan());
        assert_eq!(scalar("logical_not", &[f64::NAN]), 0.0, "NaN is true");
        assert_eq!(scalar("where", &[f64::NAN, 1.0, 2.0]), 1.0);
        assert!(scalar("clip", &[f64::NAN, 0.0, 1.0]).is_nan());
        assert_eq!(scalar("not_equal", &[f64::NAN, f64::NAN]), 1.0);
        assert_eq!(scalar("equal", &[f64::NAN, f64::NAN]), 0.0);
    }

    #[test]
    fn names_are_unique_and_round_trip() {
        for (i, op) in ELEMENTWISE.iter().enumerate() {
            assert_eq!(Op::named(op.name), Some(Op(i as u16)), "{} is listed once", op.name);
            assert_eq!(op.params.len(), op.eval.arity(), "{} parameters", op.name);
        }
        let json = serde_json::to_string(&Op::of("hypot")).unwrap();
        assert_eq!(json, "\"hypot\"");
        assert_eq!(serde_json::from_str::<Op>(&json).unwrap(), Op::of("hypot"));
        assert!(serde_json::from_str::<Op>("\"frobnicate\"").is_err());
    }

    #[test]
    fn kinds_follow_numpy() {
        let k = |op: &str, ks: &[Kind]| result_kind(Op::of(op).get(), ks);
        assert_eq!(k("add", &[Kind::Bool, Kind::Bool]), Ok(Kind::Bool));
        assert_eq!(k("add", &[Kind::Bool, Kind::Int]), Ok(Kind::Int));
        assert_eq!(k("add", &[Kind::Bool, Kind::Index]), Ok(Kind::Index));
        assert_eq!(k("multiply", &[Kind::Bool, Kind::Bool]), Ok(Kind::Bool));
        assert_eq!(k("sign", &[Kind::Bool]), Ok(Kind::Index));
        assert_eq!(k("divide", &[Kind::Index, Kind::Int]), Ok(Kind::Float));
        assert_eq!(k("less", &[Kind::Float, Kind::Int]), Ok(Kind::Bool));
        assert!(k("logical_and", &[Kind::Float, Kind::Bool]).is_err());
        assert!(k("subtract", &[Kind::Bool, Kind::Bool]).is_err());
        assert_eq!(k("where", &[Kind::Bool, Kind::Int, Kind::Float]), Ok(Kind::Float));
        assert_eq!(on_kinds(Op::of("add"), &[Kind::Bool, Kind::Bool]), Op::of("logical_or"));
        assert_eq!(on_kinds(Op::of("add"), &[Kind::Bool, Kind::Int]), Op::of("add"));
    }
}
