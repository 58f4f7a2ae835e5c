//! What an output is beyond its values, worked out at plan time from its expression:
//! where each of its axes comes from (an input's dimension, elements picked by views
//! and takes; the groups of a grouped reduction; or nowhere known), and which input
//! variable's attributes it may carry (`units`, `long_name`, `standard_name`) with the
//! CF `cell_methods` of its reductions. The writer turns this into named dimensions
//! and coordinates (`hdf::dims`), so that xarray opens an output as it would have
//! computed it.

use std::collections::BTreeSet;

use super::calendar::GroupBy;
use super::hdf::dims::{Coord, DimSpec, Labels};
use super::plan::InputSpec;
use super::reduce::ReduceOp;
use super::resolve::Node;
use super::view::Dim;

/// Which elements of a source axis an axis holds, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pick {
    Range { start: usize, step: i64, len: usize },
    List(Vec<usize>),
}

impl Pick {
    pub fn all(len: usize) -> Pick {
        Pick::Range { start: 0, step: 1, len }
    }

    pub fn len(&self) -> usize {
        match self {
            Pick::Range { len, .. } => *len,
            Pick::List(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The source index of element `i`.
    pub fn at(&self, i: usize) -> usize {
        match self {
            Pick::Range { start, step, .. } => (*start as i64 + step * i as i64) as usize,
            Pick::List(v) => v[i],
        }
    }

    /// Elements `start + step * i` of this pick.
    fn then_range(&self, start: usize, step: i64, len: usize) -> Pick {
        match self {
            Pick::Range { start: s0, step: t0, .. } => Pick::Range {
                start: (*s0 as i64 + t0 * start as i64) as usize,
                step: t0 * step,
                len,
            },
            Pick::List(v) => Pick::List((0..len).map(|i| v[(start as i64 + step * i as i64) as usize]).collect()),
        }
    }

    fn then_list(&self, idx: &[u32]) -> Pick {
        Pick::List(idx.iter().map(|&i| self.at(i as usize)).collect())
    }
}

/// Where an output axis comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum AxisFrom {
    /// Axis `axis` of input `input`, these elements.
    Input { input: u32, axis: usize, pick: Pick },
    /// The groups of a grouped reduction (their keys), these of them.
    Groups { by: GroupBy, keys: Vec<i64>, pick: Pick },
    /// A new axis with a coordinate of its own: the quantiles of a tuple `q`
    /// (`quantile`, fractions in [0, 1] as xarray's `quantile` labels them).
    Values { name: &'static str, values: Vec<f64> },
    /// Nothing known (a reshape's new axis, a broadcast literal, a kept axis).
    Unknown,
}

/// An output's lineage: its axes, and the input variable it derives from.
#[derive(Clone, Debug, Default)]
pub struct OutputMeta {
    pub axes: Vec<AxisFrom>,
    /// The one input variable (read from a file) the output is computed from, when
    /// the computation keeps its units (selections, differences of it, means, ...).
    pub carries: Option<u32>,
    /// The one input variable the output is computed from, whatever its units.
    pub single: Option<u32>,
    /// CF cell methods of the reductions, in order: the reduced axes' dimension names
    /// and the method (`time: mean`).
    pub cell_methods: Vec<(Vec<String>, &'static str)>,
}

struct Walk {
    shape: Vec<usize>,
    axes: Vec<AxisFrom>,
    vars: BTreeSet<u32>,
    keeps_units: bool,
    methods: Vec<(Vec<String>, &'static str)>,
}

/// Elementwise operations whose result has the units of their arguments.
const UNIT_KEEPING: &[&str] = &[
    "add",
    "subtract",
    "negative",
    "positive",
    "abs",
    "absolute",
    "fabs",
    "minimum",
    "maximum",
    "fmin",
    "fmax",
    "clip",
    "round",
    "around",
    "rint",
    "floor",
    "ceil",
    "trunc",
    "fix",
    "where",
    "nan_to_num",
];

/// The CF method of a reduction, and whether its result has its argument's units.
fn method(op: ReduceOp) -> (Option<&'static str>, bool) {
    use ReduceOp::*;
    match op {
        Mean | NanMean => (Some("mean"), true),
        Sum | NanSum => (Some("sum"), true),
        Min | NanMin => (Some("minimum"), true),
        Max | NanMax => (Some("maximum"), true),
        Std | NanStd => (Some("standard_deviation"), true),
        Var | NanVar => (Some("variance"), false),
        _ => (None, false),
    }
}

/// The dimension name of an axis (for cell methods), if known.
pub fn axis_name(inputs: &[InputSpec], a: &AxisFrom) -> Option<String> {
    match a {
        AxisFrom::Input { input, axis, .. } => inputs[*input as usize].dims.get(*axis).map(|d| d.name.clone()),
        AxisFrom::Groups { .. } | AxisFrom::Values { .. } | AxisFrom::Unknown => None,
    }
}

/// A weighted mean as `weighted.rs` builds it, `sum(w * x) / sum(weights)` over the
/// same axes, as the plain mean of x it stands for.
fn weighted_mean(op: &str, args: &[Node]) -> Option<Node> {
    let [num, den] = args else { return None };
    let (
        Node::Reduce {
            op: top,
            axes,
            arg,
            keepdims,
            groups: None,
            ..
        },
        Node::Reduce {
            op: ReduceOp::Sum,
            axes: axes2,
            arg: warg,
            keepdims: keep2,
            groups: None,
            ..
        },
    ) = (num, den)
    else {
        return None;
    };
    let Node::Map(mul, factors) = arg.as_ref() else { return None };
    let Node::Map(wh, _) = warg.as_ref() else { return None };
    let [_, x] = &factors[..] else { return None };
    let plain = matches!(top, ReduceOp::Sum | ReduceOp::NanSum);
    (op == "divide" && plain && mul.name() == "multiply" && wh.name() == "where" && axes == axes2 && keepdims == keep2).then(|| {
        Node::Reduce {
            op: if *top == ReduceOp::NanSum {
                ReduceOp::NanMean
            } else {
                ReduceOp::Mean
            },
            axes: axes.clone(),
            arg: Box::new(x.clone()),
            ddof: 0.0,
            keepdims: *keepdims,
            hist: None,
            groups: None,
        }
    })
}

fn walk(node: &Node, inputs: &[InputSpec]) -> Walk {
    match node {
        Node::Input(i) => {
            let spec = &inputs[*i as usize];
            Walk {
                shape: spec.shape.clone(),
                axes: (0..spec.shape.len())
                    .map(|axis| AxisFrom::Input {
                        input: *i,
                        axis,
                        pick: Pick::all(spec.shape[axis]),
                    })
                    .collect(),
                vars: if spec.generate.is_none() {
                    BTreeSet::from([*i])
                } else {
                    BTreeSet::new()
                },
                keeps_units: true,
                methods: vec![],
            }
        }
        Node::Num(_) => Walk {
            shape: vec![],
            axes: vec![],
            vars: BTreeSet::new(),
            keeps_units: true,
            methods: vec![],
        },
        Node::Map(op, args) => {
            // sum(w * x) / sum(w): a weighted mean of x (`weighted.rs`), in x's units.
            if let Some(mean) = weighted_mean(op.name(), args) {
                return walk(&mean, inputs);
            }
            let walks: Vec<Walk> = args.iter().map(|a| walk(a, inputs)).collect();
            let rank = walks.iter().map(|w| w.shape.len()).max().unwrap_or(0);
            let mut shape = vec![1; rank];
            for w in &walks {
                let off = rank - w.shape.len();
                for (k, &n) in w.shape.iter().enumerate() {
                    if n != 1 {
                        shape[off + k] = n;
                    }
                }
            }
            // The first argument that has an axis (not broadcast along it) names it.
            let axes = (0..rank)
                .map(|k| {
                    walks
                        .iter()
                        .find_map(|w| {
                            let j = k.checked_sub(rank - w.shape.len())?;
                            (w.shape[j] == shape[k] && w.axes[j] != AxisFrom::Unknown).then(|| w.axes[j].clone())
                        })
                        .unwrap_or(AxisFrom::Unknown)
                })
                .collect();
            // A constant added or subtracted may change the units (a Celsius offset).
            let literal = args.iter().any(|a| matches!(a, Node::Num(_)));
            let keeps = walks.iter().all(|w| w.keeps_units)
                && UNIT_KEEPING.contains(&op.name())
                && !(literal && matches!(op.name(), "add" | "subtract"));
            Walk {
                shape,
                axes,
                vars: walks.iter().flat_map(|w| w.vars.iter().copied()).collect(),
                keeps_units: keeps,
                methods: walks.into_iter().flat_map(|w| w.methods).collect(),
            }
        }
        Node::View(arg, view) => {
            let w = walk(arg, inputs);
            let axes = view
                .dims
                .iter()
                .map(|d| match d {
                    Dim::Src { axis, start, step, len } => match &w.axes[*axis] {
                        AxisFrom::Input { input, axis, pick } => AxisFrom::Input {
                            input: *input,
                            axis: *axis,
                            pick: pick.then_range(*start, *step, *len),
                        },
                        AxisFrom::Groups { by, keys, pick } => AxisFrom::Groups {
                            by: *by,
                            keys: keys.clone(),
                            pick: pick.then_range(*start, *step, *len),
                        },
                        AxisFrom::Values { name, values } => AxisFrom::Values {
                            name,
                            values: (0..*len).map(|i| values[(*start as i64 + i as i64 * *step) as usize]).collect(),
                        },
                        AxisFrom::Unknown => AxisFrom::Unknown,
                    },
                    Dim::New => AxisFrom::Unknown,
                })
                .collect();
            Walk {
                shape: view.shape(),
                axes,
                ..w
            }
        }
        Node::Reduce {
            op,
            axes: reduced,
            arg,
            keepdims,
            groups,
            ..
        } => {
            let w = walk(arg, inputs);
            let (cf, keeps) = method(*op);
            let mut methods = w.methods;
            if let Some(m) = cf {
                let names: Vec<String> = reduced.iter().filter_map(|&a| axis_name(inputs, &w.axes[a])).collect();
                if !names.is_empty() {
                    methods.push((names, m));
                }
            }
            let mut shape = Vec::new();
            let mut axes = Vec::new();
            for (k, (&n, a)) in w.shape.iter().zip(w.axes).enumerate() {
                if !reduced.contains(&k) {
                    shape.push(n);
                    axes.push(a);
                } else if let Some(g) = groups {
                    shape.push(g.len());
                    axes.push(AxisFrom::Groups {
                        by: g.by,
                        keys: g.keys.clone(),
                        pick: Pick::all(g.len()),
                    });
                } else if *keepdims {
                    shape.push(1);
                    axes.push(AxisFrom::Unknown);
                }
            }
            if *op == ReduceOp::Histogram {
                shape = vec![];
                axes = vec![];
            }
            Walk {
                shape,
                axes,
                vars: w.vars,
                keeps_units: w.keeps_units && keeps,
                methods,
            }
        }
        Node::Reshape(arg, r) => {
            let w = walk(arg, inputs);
            let axes = r
                .same_axes()
                .into_iter()
                .map(|src| src.map_or(AxisFrom::Unknown, |s| w.axes[s].clone()))
                .collect();
            Walk {
                shape: r.to.clone(),
                axes,
                ..w
            }
        }
        Node::Along(arg, along) => {
            use super::along::{AlongOp, Scan};
            let w = walk(arg, inputs);
            let mut axes: Vec<AxisFrom> = (0..along.to.len())
                .map(|j| along.operand_dim(j).map_or(AxisFrom::Unknown, |d| w.axes[d].clone()))
                .collect();
            // A window is labelled by its last step (xarray's rolling and diff do the
            // same); sorted values have no coordinate.
            let shift = match along.op {
                AlongOp::Rolling { window, .. } => Some(window - 1),
                AlongOp::Diff { n, .. } => Some(n),
                _ => None,
            };
            if let Some(s) = shift {
                let a = along.axis();
                axes[a] = match &axes[a] {
                    AxisFrom::Input { input, axis, pick } => AxisFrom::Input {
                        input: *input,
                        axis: *axis,
                        pick: pick.then_range(s, 1, along.to[a]),
                    },
                    _ => AxisFrom::Unknown,
                };
            }
            if along.op == AlongOp::Sort {
                axes[along.axis()] = AxisFrom::Unknown;
            }
            if let AlongOp::Quantile { q, tuple: true, .. } = &along.op {
                axes[0] = AxisFrom::Values {
                    name: "quantile",
                    values: q.clone(),
                };
            }
            // Products change units; everything else here keeps them.
            let keeps = !matches!(
                along.op,
                AlongOp::Scan {
                    op: Scan::Prod | Scan::NanProd,
                    ..
                }
            );
            let mut methods = w.methods;
            if let AlongOp::Quantile { median: true, .. } = along.op {
                let names: Vec<String> = along.axes.iter().filter_map(|&a| axis_name(inputs, &w.axes[a])).collect();
                if !names.is_empty() {
                    methods.push((names, "median"));
                }
            }
            Walk {
                shape: along.to.clone(),
                axes,
                vars: w.vars,
                keeps_units: w.keeps_units && keeps,
                methods,
            }
        }
        Node::Take { src, table, axis } => {
            let mut w = walk(src, inputs);
            w.shape[*axis] = table.len();
            w.axes[*axis] = match &w.axes[*axis] {
                AxisFrom::Input { input, axis, pick } => AxisFrom::Input {
                    input: *input,
                    axis: *axis,
                    pick: pick.then_list(table),
                },
                AxisFrom::Groups { by, keys, pick } => AxisFrom::Groups {
                    by: *by,
                    keys: keys.clone(),
                    pick: pick.then_list(table),
                },
                AxisFrom::Values { name, values } => AxisFrom::Values {
                    name,
                    values: table.iter().map(|&i| values[i as usize]).collect(),
                },
                AxisFrom::Unknown => AxisFrom::Unknown,
            };
            w
        }
    }
}

/// The lineage of an output of `shape` computed as `node`.
pub fn of_output(node: &Node, shape: &[usize], inputs: &[InputSpec]) -> OutputMeta {
    let w = walk(node, inputs);
    // A histogram or anything whose shape this walk did not follow: no axes known.
    let axes = if w.shape == shape {
        w.axes
    } else {
        vec![AxisFrom::Unknown; shape.len()]
    };
    let carries = match (w.vars.len(), w.keeps_units) {
        (1, true) => w.vars.first().copied(),
        _ => None,
    };
    OutputMeta {
        axes,
        carries,
        single: (w.vars.len() == 1).then(|| w.vars.first().copied()).flatten(),
        cell_methods: w.methods,
    }
}

/// The dimensions, coordinates and attributes an output of `shape` computed as `node`
/// is written with.
pub fn labels(node: &Node, shape: &[usize], inputs: &[InputSpec]) -> Labels {
    let meta = of_output(node, shape, inputs);
    let dims = meta
        .axes
        .iter()
        .zip(shape)
        .enumerate()
        .map(|(k, (a, &len))| match a {
            AxisFrom::Input { input, axis, pick } => {
                let spec = &inputs[*input as usize];
                let dim = spec.dims.get(*axis);
                let coord = match dim.and_then(|d| d.coord.as_ref()) {
                    Some(path) if spec.generate.is_none() => Coord::Input {
                        file: spec.file.clone(),
                        dataset: path.clone(),
                        pick: pick.clone(),
                    },
                    _ => Coord::None,
                };
                DimSpec {
                    name: dim.map_or_else(|| format!("dim_{axis}"), |d| d.name.clone()),
                    len,
                    coord,
                }
            }
            AxisFrom::Groups { by, keys, pick } => DimSpec {
                name: by.name().to_string(),
                len,
                coord: Coord::Groups {
                    by: *by,
                    keys: keys.clone(),
                    pick: pick.clone(),
                },
            },
            AxisFrom::Values { name, values } => DimSpec {
                name: name.to_string(),
                len,
                coord: Coord::Values(values.clone()),
            },
            AxisFrom::Unknown => DimSpec {
                name: format!("dim_{k}"),
                len,
                coord: Coord::None,
            },
        })
        .collect::<Vec<DimSpec>>();
    let mut attrs = Vec::new();
    if let Some(i) = meta.carries {
        attrs.extend(inputs[i as usize].attrs.carried.iter().cloned());
    }
    // Methods over dimensions the output no longer has (an anomaly keeps time: the
    // climatology inside it is no method of the result).
    let kept: Vec<&str> = dims.iter().map(|d: &DimSpec| d.name.as_str()).collect();
    let methods: Vec<String> = meta
        .cell_methods
        .iter()
        .filter(|(names, _)| names.iter().all(|n| !kept.contains(&n.as_str())))
        .map(|(names, m)| format!("{}: {m}", names.join(": ")))
        .collect();
    if let Some(i) = meta.single
        && !methods.is_empty()
    {
        let before = inputs[i as usize].attrs.cell_methods.iter().cloned();
        attrs.push(("cell_methods".to_string(), before.chain(methods).collect::<Vec<_>>().join(" ")));
    }
    Labels { dims, attrs }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::reshape::Reshape;

    #[test]
    fn picks_compose_as_numpy_indexing_does() {
        // x[2:10][::3] -> elements 2, 5, 8 of x
        let p = Pick::all(20).then_range(2, 1, 8).then_range(0, 3, 3);
        assert_eq!((0..p.len()).map(|i| p.at(i)).collect::<Vec<_>>(), vec![2, 5, 8]);
        // x[::-2] of 7 -> 6, 4, 2, 0; then rows [3, 0, 0] of that
        let r = Pick::all(7).then_range(6, -2, 4);
        assert_eq!(r.then_list(&[3, 0, 0]), Pick::List(vec![0, 6, 6]));
    }

    #[test]
    fn a_reshape_keeps_only_the_axes_it_leaves_alone() {
        let r = Reshape {
            from: vec![12, 5],
            to: vec![3, 4, 5],
        };
        assert_eq!(r.same_axes(), vec![None, None, Some(1)]);
        let r = Reshape {
            from: vec![6, 1, 4],
            to: vec![6, 4],
        };
        assert_eq!(r.same_axes(), vec![Some(0), Some(2)]);
        let r = Reshape {
            from: vec![6, 4],
            to: vec![4, 6],
        };
        assert_eq!(r.same_axes(), vec![None, None]);
    }
}
