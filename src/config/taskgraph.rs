//! Task graph files (`drover submit graph.toml`): `[[task]]` entries, each a command
//! run once or per `array` index or `each_line` line, after the entries it names.
//!
//! ```toml
//! name = "pipeline"          # optional: the job's name, priority and retries
//! [[task]]
//! name = "prep"
//! command = "python prep.py > prepared.txt"     # a string runs with sh -c
//! [[task]]
//! name = "sim"
//! command = ["./sim", "--member", "{task}"]     # a list runs as is
//! array = "1-50"
//! after = ["prep"]
//! cores = 2
//! time_limit = "30m"
//! [[task]]
//! name = "merge"
//! command = "./merge.sh"
//! after = ["sim"]
//! ```
//!
//! Relative `each_line` and `cwd` paths are taken from the file's folder. Names,
//! dependencies and cycles are checked by the server (the same code checks every
//! submission), before anything runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphFile {
    pub name: Option<String>,
    pub priority: Option<i32>,
    pub max_retries: Option<u8>,
    #[serde(default)]
    pub task: Vec<TaskEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Command {
    /// Run by `sh -c`.
    Shell(String),
    Argv(Vec<String>),
}

impl Command {
    pub fn argv(&self) -> Vec<String> {
        match self {
            Command::Shell(s) => vec!["sh".into(), "-c".into(), s.clone()],
            Command::Argv(v) => v.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskEntry {
    pub name: String,
    pub command: Command,
    #[serde(default)]
    pub after: Vec<String>,
    pub array: Option<String>,
    pub each_line: Option<PathBuf>,
    pub cores: Option<u32>,
    pub time_limit: Option<String>,
    pub cwd: Option<PathBuf>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
}

/// Read a graph file: one line naming the file, line and key on error.
pub fn load(path: &Path) -> Result<GraphFile, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read it: {e}", path.display()))?;
    parse(path, &text)
}

/// Parse a graph file's text (`path` names it in messages).
pub fn parse(path: &Path, text: &str) -> Result<GraphFile, String> {
    let g: GraphFile = toml::from_str(text).map_err(|e| super::toml_error_line(path, text, &e))?;
    if g.task.is_empty() {
        return Err(format!(
            "{}: no [[task]] entry; each needs name = \"...\" and command = \"...\"",
            path.display()
        ));
    }
    Ok(g)
}

/// A path of the file, relative to its folder.
pub fn resolve(file: &Path, p: &Path) -> PathBuf {
    match file.parent() {
        Some(d) if p.is_relative() => d.join(p),
        _ => p.to_path_buf(),
    }
}
