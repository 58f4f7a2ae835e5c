//! Why a workload cannot be planned: every error names the output or input, quotes
//! the bad value, and says how to fix it.

use std::path::PathBuf;

use super::expr;
use super::geometry::fmt_shape;
use super::hdf::InputError;

/// A bad expression or dataset.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("input \"{name}\": {reason}; check [inputs.{name}] in the workload file (relative paths are relative to its folder)")]
    Input { name: String, reason: InputError },
    #[error("input \"{name}\": chunks {chunks:?} has {} entries but dataset \"{dataset}\" has {} dimensions (shape {}); give one block length per dimension", chunks.len(), shape.len(), fmt_shape(shape))]
    ChunkRank {
        name: String,
        chunks: Vec<usize>,
        dataset: String,
        shape: Vec<usize>,
    },
    #[error("outputs[{index}]: {source}")]
    Syntax { index: usize, source: expr::SyntaxError },
    #[error(
        "outputs[{index}]: unknown function \"{func}\" in \"{expr}\"{hint}; functions are {}",
        function_list()
    )]
    UnknownFunction {
        index: usize,
        func: String,
        expr: String,
        hint: String,
    },
    #[error("[let] {name}: {message}")]
    Let { name: String, message: String },
    #[error("outputs[{index}]: unknown name \"{name}\" at column {pos} of \"{expr}\"{hint}; inputs and [let] names are: {inputs}")]
    UnknownName {
        index: usize,
        name: String,
        pos: usize,
        expr: String,
        hint: String,
        inputs: String,
    },
    #[error("outputs[{index}]: {func}() at column {pos} of \"{expr}\" {problem}")]
    BadCall {
        index: usize,
        func: String,
        pos: usize,
        expr: String,
        problem: String,
    },
    #[error(
        "outputs[{index}]: shapes {} and {} do not broadcast in \"{expr}\" (operator '{op}'); numpy broadcasting needs equal or 1-sized dimensions, aligned from the right",
        fmt_shape(left),
        fmt_shape(right)
    )]
    Broadcast {
        index: usize,
        expr: String,
        op: String,
        left: Vec<usize>,
        right: Vec<usize>,
    },
    #[error("outputs[{index}]: the index at column {pos} of \"{expr}\" {problem}")]
    BadIndex {
        index: usize,
        pos: usize,
        expr: String,
        problem: String,
    },
    #[error("outputs[{index}]: '{op}' at column {pos} of \"{expr}\" {problem}")]
    BadOperator {
        index: usize,
        op: String,
        pos: usize,
        expr: String,
        problem: String,
    },
    #[error("outputs[{index}]: axis {axis} is out of range for {func}() of an array of shape {} in \"{expr}\"; valid axes are -{}..{}", fmt_shape(shape), shape.len(), shape.len().saturating_sub(1))]
    AxisRange {
        index: usize,
        axis: i64,
        func: String,
        shape: Vec<usize>,
        expr: String,
    },
    #[error("outputs[{index}]: axis {axis} is repeated in {func}() in \"{expr}\"")]
    AxisRepeated {
        index: usize,
        axis: i64,
        func: String,
        expr: String,
    },
    #[error(
        "outputs[{index}]: reshape of shape {} into {} in \"{expr}\" {problem}",
        fmt_shape(from),
        fmt_shape(to)
    )]
    Reshape {
        index: usize,
        expr: String,
        from: Vec<usize>,
        to: Vec<usize>,
        problem: String,
    },
    #[error("outputs[{a}] and outputs[{b}] both write dataset \"{dataset}\" in \"{}\"; give each output its own file or dataset", file.display())]
    DuplicateOutput {
        a: usize,
        b: usize,
        file: PathBuf,
        dataset: String,
    },
    #[error("{problem}")]
    Memory { problem: String },
    #[error(
        "outputs[{index}]: chunks = {chunks:?} does not fit the output's shape {}; give one chunk length per dimension{}",
        fmt_shape(shape),
        if shape.is_empty() { " (a 0-d output has no chunks: leave chunks out)" } else { "" }
    )]
    OutputChunks {
        index: usize,
        chunks: Vec<usize>,
        shape: Vec<usize>,
    },
    #[error("outputs[{index}] file \"{}\" is the input file of [inputs.{input}]; write the output to another file", file.display())]
    OverwritesInput { index: usize, file: PathBuf, input: String },
    #[error("outputs[{index}]: cannot write \"{}\": {reason}", file.display())]
    Unwritable { index: usize, file: PathBuf, reason: String },
}

fn function_list() -> String {
    let mut names: Vec<&str> = super::reduce::REDUCTIONS
        .iter()
        .map(|r| r.name)
        .chain(super::ops::ELEMENTWISE.iter().map(|e| e.name))
        .chain(super::along::names())
        .collect();
    names.sort_unstable();
    names.join(", ")
}
