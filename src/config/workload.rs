//! The workload file: named HDF5 inputs and output expressions.
//!
//! ```toml
//! [inputs.x]
//! file = "temperature.h5"      # relative to the workload file's folder
//! dataset = "/t2m"
//! chunks = [24, 721, 1440]     # optional block shape
//!
//! [[outputs]]
//! expr = "x - mean(x, axis=0)"
//! file = "anomaly.h5"
//! dataset = "/t2m_anomaly"
//! dtype = "f32"                # optional (f64 f32 i8..i64 u8..u64 bool)
//!
//! [let]                        # optional named intermediates
//! clim = "mean(x, axis=0)"     # usable in outputs and later [let] entries
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::toml_error_line;

/// A bad workload file.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("cannot read workload file \"{path}\": {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid workload file {0}")]
    Toml(String),
    #[error("{path}: no [[outputs]] defined; add at least one [[outputs]] table with expr, file and dataset")]
    NoOutputs { path: PathBuf },
    #[error("{path}: input name \"{name}\" cannot be used in expressions; {hint}")]
    BadInputName { path: PathBuf, name: String, hint: &'static str },
    #[error("{path}: [inputs.{name}] {message}")]
    BadInput { path: PathBuf, name: String, message: String },
    #[error("{path}: [inputs.{name}] chunks {chunks:?} has an entry below 1; every entry must be a positive block length")]
    BadChunks { path: PathBuf, name: String, chunks: Vec<i64> },
    #[error(
        "{path}: outputs[{index}] dtype \"{dtype}\" is not supported; use one of f64, f32, i8, i16, i32, i64, u8, u16, u32, u64, bool (or numpy's names, e.g. \"int64\")"
    )]
    BadDtype { path: PathBuf, index: usize, dtype: String },
    #[error("{path}: [let] name \"{name}\" {hint}")]
    BadLetName { path: PathBuf, name: String, hint: &'static str },
    #[error("{path}: outputs[{index}] {message}")]
    BadOutput { path: PathBuf, index: usize, message: String },
    #[error("{path}: outputs[{index}] dataset \"{dataset}\" is not a dataset path; use a name like \"/result\" or \"/group/result\"")]
    BadDatasetPath { path: PathBuf, index: usize, dataset: String },
}

/// Element type of an output dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutDtype {
    F64,
    F32,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    Bool,
}

/// Every output dtype: drover's name, numpy's name, size in bytes.
const OUT_DTYPES: &[(OutDtype, &str, &str, usize)] = &[
    (OutDtype::F64, "f64", "float64", 8),
    (OutDtype::F32, "f32", "float32", 4),
    (OutDtype::I8, "i8", "int8", 1),
    (OutDtype::I16, "i16", "int16", 2),
    (OutDtype::I32, "i32", "int32", 4),
    (OutDtype::I64, "i64", "int64", 8),
    (OutDtype::U8, "u8", "uint8", 1),
    (OutDtype::U16, "u16", "uint16", 2),
    (OutDtype::U32, "u32", "uint32", 4),
    (OutDtype::U64, "u64", "uint64", 8),
    (OutDtype::Bool, "bool", "bool", 1),
];

impl OutDtype {
    fn row(self) -> &'static (OutDtype, &'static str, &'static str, usize) {
        OUT_DTYPES.iter().find(|r| r.0 == self).expect("every dtype has a row")
    }

    pub fn name(self) -> &'static str {
        self.row().1
    }

    pub fn size(self) -> usize {
        self.row().3
    }

    /// A dtype by drover's or numpy's name.
    pub fn parse(name: &str) -> Option<OutDtype> {
        OUT_DTYPES.iter().find(|r| r.1 == name || r.2 == name).map(|r| r.0)
    }

    /// The range of integers the dtype holds (`None` for floats and bool).
    pub fn int_range(self) -> Option<(f64, f64)> {
        Some(match self {
            OutDtype::I8 => (i8::MIN as f64, i8::MAX as f64),
            OutDtype::I16 => (i16::MIN as f64, i16::MAX as f64),
            OutDtype::I32 => (i32::MIN as f64, i32::MAX as f64),
            OutDtype::I64 => (i64::MIN as f64, i64::MAX as f64),
            OutDtype::U8 => (0.0, u8::MAX as f64),
            OutDtype::U16 => (0.0, u16::MAX as f64),
            OutDtype::U32 => (0.0, u32::MAX as f64),
            OutDtype::U64 => (0.0, u64::MAX as f64),
            _ => return None,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkload {
    #[serde(default)]
    inputs: BTreeMap<String, RawInput>,
    #[serde(default)]
    outputs: Vec<RawOutput>,
    #[serde(default, rename = "let")]
    lets: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput {
    file: Option<PathBuf>,
    dataset: Option<String>,
    chunks: Option<Vec<i64>>,
    generate: Option<String>,
    shape: Option<Vec<i64>>,
    value: Option<f64>,
    seed: Option<u64>,
    /// CF decoding (`_FillValue`, `missing_value`, `scale_factor`, `add_offset`).
    decode: Option<toml::Value>,
    /// The time coordinate dataset, when it is not found next to the variable.
    time: Option<String>,
}

/// What a generated input holds (numpy's `ones`, `zeros`, `full`, `arange`, and
/// uniform or normal random values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GenKind {
    Ones,
    Zeros,
    Full,
    Arange,
    Random,
    Normal,
}

const GENERATORS: &[(&str, GenKind)] = &[
    ("ones", GenKind::Ones),
    ("zeros", GenKind::Zeros),
    ("full", GenKind::Full),
    ("arange", GenKind::Arange),
    ("random", GenKind::Random),
    ("normal", GenKind::Normal),
];

/// A generated input: no file; element `k` (row-major) is a function of `k` (and of
/// `seed`), so the values are the same whatever the chunking and the workers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Generate {
    pub kind: GenKind,
    pub shape: Vec<usize>,
    /// `full`'s value.
    pub value: f64,
    pub seed: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    expr: String,
    file: PathBuf,
    dataset: String,
    dtype: Option<String>,
    compression: Option<String>,
    level: Option<i64>,
    shuffle: Option<bool>,
    chunks: Option<Vec<i64>>,
}

/// A compressed output: gzip (HDF5's deflate filter, zlib streams) at `level`, after
/// the shuffle filter when `shuffle`. Workers compress whole chunks; the writer
/// stores them as they are (HDF5 direct chunk writes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compression {
    pub level: u8,
    pub shuffle: bool,
}

/// One named input, paths resolved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Input {
    pub name: String,
    /// Empty for a generated input.
    pub file: PathBuf,
    pub dataset: String,
    pub chunks: Option<Vec<usize>>,
    #[serde(default)]
    pub generate: Option<Generate>,
    /// Decode CF packing and missing values as xarray's `open_dataset` does (the
    /// default); `decode = false` reads the stored values.
    #[serde(default = "yes")]
    pub decode: bool,
    /// The time coordinate dataset (`time = "/time"`), else found next to the variable.
    #[serde(default)]
    pub time: Option<String>,
}

fn yes() -> bool {
    true
}

/// One output, paths resolved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Output {
    pub expr: String,
    pub file: PathBuf,
    pub dataset: String,
    /// `None`: from the expression (bool for comparisons, i64 for counts and
    /// indices, f64 otherwise).
    pub dtype: Option<OutDtype>,
    /// `compression = "gzip"` (with `level`, `shuffle`).
    #[serde(default)]
    pub compression: Option<Compression>,
    /// `chunks = [...]`: the output's HDF5 chunk shape, whatever the inputs' (a
    /// rechunk when the expression is an input).
    #[serde(default)]
    pub chunks: Option<Vec<usize>>,
}

/// A validated workload with absolute paths.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    /// The file it came from (for messages).
    pub source: PathBuf,
    pub inputs: Vec<Input>,
    pub outputs: Vec<Output>,
    /// Named intermediates (`[let]`): name and expression.
    #[serde(default)]
    pub lets: Vec<(String, String)>,
    /// The memory each worker may use, which the plan is sized against (set by the
    /// command that runs the workload, not by the file).
    #[serde(default)]
    pub memory: Option<MemoryBound>,
}

/// A bound on each worker's memory and the task threads that share it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryBound {
    pub bytes: u64,
    pub threads: u32,
    /// Where the bound came from, for messages ("--memory-per-worker 2 GiB").
    pub source: String,
}

/// Names that would shadow functions or keywords in expressions.
const RESERVED: &[&str] = &[
    "sum", "mean", "min", "max", "var", "std", "abs", "sqrt", "exp", "log", "sin", "cos", "axis", "None",
];

impl Workload {
    /// Read and validate a workload file. Relative paths are resolved against its folder.
    pub fn load(path: &Path) -> Result<Self, WorkloadError> {
        let text = std::fs::read_to_string(path).map_err(|source| WorkloadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, WorkloadError> {
        let raw: RawWorkload = toml::from_str(text).map_err(|e| WorkloadError::Toml(toml_error_line(path, text, &e)))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = std::path::absolute(if base.as_os_str().is_empty() { Path::new(".") } else { &base }).unwrap_or(base);
        let p = path.to_path_buf();
        let mut inputs = Vec::new();
        for (name, inp) in raw.inputs {
            let ident_ok =
                name.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_') && name.chars().all(|c| c.is_alphanumeric() || c == '_');
            if !ident_ok {
                return Err(WorkloadError::BadInputName {
                    path: p,
                    name,
                    hint: "use letters, digits and '_' and start with a letter",
                });
            }
            if RESERVED.contains(&name.as_str()) {
                return Err(WorkloadError::BadInputName {
                    path: p,
                    name,
                    hint: "it names a function; rename the input",
                });
            }
            let chunks = match inp.chunks {
                None => None,
                Some(c) if c.iter().any(|&v| v < 1) => return Err(WorkloadError::BadChunks { path: p, name, chunks: c }),
                Some(c) => Some(c.into_iter().map(|v| v as usize).collect()),
            };
            let bad = |message: String| WorkloadError::BadInput {
                path: p.clone(),
                name: name.clone(),
                message,
            };
            let generate = match &inp.generate {
                None => {
                    if inp.shape.is_some() || inp.value.is_some() || inp.seed.is_some() {
                        return Err(bad(
                            "has shape, value or seed but no generate = \"...\"; those describe generated inputs".into(),
                        ));
                    }
                    None
                }
                Some(g) => {
                    let names: Vec<&str> = GENERATORS.iter().map(|g| g.0).collect();
                    let Some(&(_, kind)) = GENERATORS.iter().find(|(n, _)| n == g) else {
                        return Err(bad(format!(
                            "generate = \"{g}\" is not a generator; use one of {}",
                            names.join(", ")
                        )));
                    };
                    if inp.file.is_some() || inp.dataset.is_some() {
                        return Err(bad(format!("has both generate = \"{g}\" and file/dataset; give one or the other")));
                    }
                    let Some(shape) = &inp.shape else {
                        return Err(bad(format!("generate = \"{g}\" needs shape = [...] (e.g. shape = [1000, 1000])")));
                    };
                    if shape.is_empty() || shape.iter().any(|&n| n < 1) {
                        return Err(bad(format!("shape {shape:?} must have at least one dimension, each at least 1")));
                    }
                    if inp.value.is_some() != (kind == GenKind::Full) {
                        return Err(bad(format!(
                            "value = is for generate = \"full\" (and it needs one); this is \"{g}\""
                        )));
                    }
                    if inp.seed.is_some() && !matches!(kind, GenKind::Random | GenKind::Normal) {
                        return Err(bad(format!("seed = is for random and normal inputs, not \"{g}\"")));
                    }
                    Some(Generate {
                        kind,
                        shape: shape.iter().map(|&n| n as usize).collect(),
                        value: inp.value.unwrap_or(0.0),
                        seed: inp.seed.unwrap_or(0),
                    })
                }
            };
            let (file, dataset) = match (&generate, inp.file, inp.dataset) {
                (Some(_), _, _) => (PathBuf::new(), String::new()),
                (None, Some(f), Some(d)) => (base.join(f), d),
                (None, _, _) => {
                    return Err(bad("needs file = \"...\" and dataset = \"...\" (or generate = \"ones\" | \"zeros\" | \"full\" | \"arange\" | \"random\" | \"normal\" with shape)".into()));
                }
            };
            let decode = match (&inp.decode, &generate) {
                (None, _) => true,
                (Some(_), Some(_)) => {
                    return Err(bad(
                        "decode = is for inputs read from a file (CF attributes); a generated input has none".into(),
                    ));
                }
                (Some(toml::Value::Boolean(b)), None) => *b,
                (Some(v), None) => {
                    return Err(bad(format!(
                        "decode = {v} is not true or false; decode = false reads the stored values without CF decoding"
                    )));
                }
            };
            if let (Some(t), Some(_)) = (&inp.time, &generate) {
                return Err(bad(format!(
                    "time = \"{t}\" is for inputs read from a file; a generated input has no time coordinate"
                )));
            }
            if let Some(t) = inp.time.as_ref().filter(|t| !t.starts_with('/')) {
                return Err(bad(format!("time = \"{t}\" is not a dataset path; use a path like \"/time\"")));
            }
            inputs.push(Input {
                name,
                file,
                dataset,
                chunks,
                generate,
                decode,
                time: inp.time,
            });
        }
        let mut lets = Vec::new();
        for (name, expr) in raw.lets {
            let ident_ok =
                name.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_') && name.chars().all(|c| c.is_alphanumeric() || c == '_');
            let hint = if !ident_ok {
                Some("cannot be used in expressions; use letters, digits and '_' and start with a letter")
            } else if inputs.iter().any(|i| i.name == name) {
                Some("is also an input name; give the intermediate another name")
            } else if RESERVED.contains(&name.as_str()) {
                Some("names a function; rename the intermediate")
            } else {
                None
            };
            if let Some(hint) = hint {
                return Err(WorkloadError::BadLetName { path: p, name, hint });
            }
            lets.push((name, expr));
        }
        if raw.outputs.is_empty() {
            return Err(WorkloadError::NoOutputs { path: p });
        }
        let mut outputs = Vec::new();
        for (index, out) in raw.outputs.into_iter().enumerate() {
            let dtype = match out.dtype.as_deref() {
                None => None,
                Some(name) => match OutDtype::parse(name) {
                    Some(d) => Some(d),
                    None => {
                        return Err(WorkloadError::BadDtype {
                            path: p,
                            index,
                            dtype: name.to_string(),
                        });
                    }
                },
            };
            let ds = out.dataset.trim_start_matches('/');
            if ds.is_empty() || ds.ends_with('/') || ds.split('/').any(|part| part.is_empty() || part == "." || part == "..") {
                return Err(WorkloadError::BadDatasetPath {
                    path: p,
                    index,
                    dataset: out.dataset,
                });
            }
            let bad = |message: String| WorkloadError::BadOutput {
                path: p.clone(),
                index,
                message,
            };
            let compression = match out.compression.as_deref() {
                None => {
                    if out.level.is_some() || out.shuffle.is_some() {
                        return Err(bad(
                            "has level or shuffle but no compression = \"gzip\"; those describe a compressed output".into(),
                        ));
                    }
                    None
                }
                Some("gzip" | "zlib" | "deflate") => {
                    let level = out.level.unwrap_or(4);
                    if !(0..=9).contains(&level) {
                        return Err(bad(format!(
                            "level = {level} is not a gzip level; use 0 (store) to 9 (smallest), e.g. level = 4"
                        )));
                    }
                    Some(Compression {
                        level: level as u8,
                        shuffle: out.shuffle.unwrap_or(true),
                    })
                }
                Some(c @ ("zstd" | "lz4" | "blosc" | "szip")) => {
                    return Err(bad(format!(
                        "compression = \"{c}\" is not written yet; use compression = \"gzip\" (with level = 0..9 and shuffle = true), which every HDF5 and netCDF reader decodes"
                    )));
                }
                Some(c) => return Err(bad(format!("compression = \"{c}\" is not a compression; use \"gzip\""))),
            };
            let chunks = match out.chunks {
                None => None,
                Some(c) if !c.is_empty() && c.iter().all(|&n| n >= 1) => Some(c.iter().map(|&n| n as usize).collect()),
                Some(c) => {
                    return Err(bad(format!(
                        "chunks = {c:?} is not a chunk shape; give a positive length per dimension of the output, e.g. chunks = [365, 10, 10]"
                    )));
                }
            };
            outputs.push(Output {
                expr: out.expr,
                file: base.join(&out.file),
                dataset: format!("/{ds}"),
                dtype,
                compression,
                chunks,
            });
        }
        Ok(Workload {
            source: p,
            inputs,
            outputs,
            lets,
            memory: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Workload, WorkloadError> {
        Workload::parse(Path::new("/data/w.toml"), text)
    }

    #[test]
    fn resolves_paths_and_defaults() {
        let w = parse(
            r#"
            [inputs.x]
            file = "t.h5"
            dataset = "/a/b"
            [[outputs]]
            expr = "x * 2"
            file = "/abs/o.h5"
            dataset = "r"
            dtype = "f32"
            "#,
        )
        .unwrap();
        assert_eq!(w.inputs[0].file, PathBuf::from("/data/t.h5"));
        assert_eq!(w.outputs[0].file, PathBuf::from("/abs/o.h5"));
        assert_eq!(w.outputs[0].dataset, "/r");
        assert_eq!(w.outputs[0].dtype, Some(OutDtype::F32));
    }

    #[test]
    fn errors_quote_the_value() {
        let e = parse("[inputs.x]\nfiel = \"a\"\n").unwrap_err().to_string();
        assert!(e.contains("fiel") && e.contains("line 2"), "{e}");
        let e = parse("[inputs.x\n").unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
        let e = parse("[inputs.x]\nfile=\"a\"\ndataset=\"d\"\n").unwrap_err().to_string();
        assert!(e.contains("no [[outputs]]"), "{e}");
        let e = parse("[inputs.x]\nfile=\"a\"\ndataset=\"d\"\nchunks=[0,2]\n[[outputs]]\nexpr=\"x\"\nfile=\"o\"\ndataset=\"d\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("[0, 2]"), "{e}");
        let e = parse("[[outputs]]\nexpr=\"1\"\nfile=\"o\"\ndataset=\"d\"\ndtype=\"f16\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"f16\""), "{e}");
        let e = parse("[inputs.mean]\nfile=\"a\"\ndataset=\"d\"\n[[outputs]]\nexpr=\"1\"\nfile=\"o\"\ndataset=\"d\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"mean\""), "{e}");
    }
}
