//! Batch systems: one file per system behind one pure trait, templates as data.
//!
//! A [`BatchSystem`] knows how its directives express a site's resources (with exact,
//! never-rounded-down conversions), which commands submit, poll and cancel, and how to
//! parse their output. It does no IO: [`runner`] spawns the real commands.
//! Templates live in `templates/` (compiled in as defaults) and may be replaced per site
//! with `template = "file.j2"`; they are rendered by minijinja.

pub mod htcondor;
pub mod lsf;
pub mod pbs;
pub mod runner;
pub mod sge;
pub mod slurm;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::site::{Scheduler, Site};

/// Errors of rendering and of reading batch command output.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("cannot read template \"{path}\": {source}")]
    TemplateRead { path: PathBuf, source: std::io::Error },
    #[error("template {name}: {message}")]
    Template { name: String, message: String },
    #[error("{system}: {message}")]
    Unsupported { system: &'static str, message: String },
    #[error("could not find a job id in the output of `{command}`: {output:?}")]
    NoJobId { command: String, output: String },
    #[error("could not parse the output of `{command}`: {message}")]
    Parse { command: String, message: String },
}

/// A batch job id as the batch system prints it (array elements included).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobId(pub String);

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Pending,
    Running,
    /// Still in the queue but will never run without help (SGE `Eqw`, HTCondor held):
    /// the pool cancels and replaces it.
    Held,
    /// Finished, failed, cancelled, or no longer known to the batch system.
    Gone,
}

/// What to render: one submission.
#[derive(Clone, Debug)]
pub struct JobRequest {
    /// The command that starts workers on a node: `drover worker ...`.
    pub worker_command: String,
    /// Number of array elements (only with `site.array`).
    pub array_size: u32,
    /// Folder for job logs.
    pub log_dir: PathBuf,
    /// Path of the files to write, without suffix (`<stem><script_suffix>`, and
    /// `<stem><extra suffix>` for extra files).
    pub script_stem: PathBuf,
}

/// A rendered submission: the file handed to the submit command, and any other files it
/// refers to (HTCondor's executable script), as (file name suffix, text).
#[derive(Clone, Debug)]
pub struct Rendered {
    pub main: String,
    pub extra: Vec<(String, String)>,
}

/// How to submit: argv, and whether the script goes on stdin (LSF's `bsub < script`).
#[derive(Clone, Debug, PartialEq)]
pub struct SubmitCommand {
    pub argv: Vec<String>,
    pub stdin: bool,
}

/// One batch system. Pure: no IO, no processes.
pub trait BatchSystem: Send + Sync {
    fn name(&self) -> &'static str;
    /// The default template (from `templates/`).
    fn default_template(&self) -> &'static str;
    /// Template variables specific to this system (directive values), on top of the
    /// common ones from [`common_context`].
    fn context(&self, site: &Site, req: &JobRequest) -> Result<BTreeMap<String, minijinja::Value>, BatchError>;
    fn submit(&self, site: &Site, script: &Path) -> SubmitCommand;
    fn parse_submit(&self, stdout: &str) -> Result<JobId, BatchError>;
    /// Ids of the elements of an array submission (for per-element state and cancel).
    fn array_elements(&self, id: &JobId, size: u32) -> Vec<JobId>;
    /// The id to track for a non-array submission (what its workers report).
    fn single_job(&self, id: JobId) -> JobId {
        id
    }
    fn status(&self, ids: &[JobId]) -> Vec<String>;
    /// States of the given ids; ids absent from the output are [`JobState::Gone`].
    fn parse_status(&self, stdout: &str, ids: &[JobId]) -> Result<BTreeMap<JobId, JobState>, BatchError>;
    fn cancel(&self, ids: &[JobId]) -> Vec<String>;
    /// Extra files next to the main script (HTCondor's executable), rendered from
    /// these templates with the same context.
    fn extra_templates(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }
    /// Name of the main file's suffix.
    fn script_suffix(&self) -> &'static str {
        ".sh"
    }
}

/// The batch system of a site.
pub fn system_for(site: &Site) -> Result<Box<dyn BatchSystem>, BatchError> {
    Ok(match site.scheduler {
        Scheduler::Slurm => Box::new(slurm::Slurm),
        Scheduler::Pbs => Box::new(pbs::Pbs { flavor: site.pbs_flavor }),
        Scheduler::Sge => Box::new(sge::Sge),
        Scheduler::Lsf => Box::new(lsf::Lsf),
        Scheduler::Htcondor => Box::new(htcondor::Htcondor),
        Scheduler::Local => {
            return Err(BatchError::Unsupported {
                system: "local",
                message: "the local site runs workers as plain processes; there is no job script".into(),
            });
        }
    })
}

fn v<T: Serialize>(x: T) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(x))
}

/// Variables every template gets.
pub fn common_context(site: &Site, req: &JobRequest) -> BTreeMap<String, minijinja::Value> {
    let mut c = BTreeMap::new();
    c.insert("job_name".into(), v(&site.job_name));
    c.insert("queue".into(), v(&site.queue));
    c.insert("account".into(), v(&site.account));
    c.insert("cores".into(), v(site.cores));
    c.insert("processes".into(), v(site.processes));
    c.insert("threads".into(), v(site.threads_per_worker()));
    c.insert("nodes".into(), v(site.nodes));
    c.insert("gpus".into(), v(site.gpus));
    c.insert("memory_bytes".into(), v(site.memory.map(|m| m.0)));
    c.insert("walltime_seconds".into(), v(site.walltime.map(|w| w.seconds())));
    c.insert("array".into(), v(site.array));
    c.insert("array_size".into(), v(req.array_size));
    c.insert("log_dir".into(), v(req.log_dir.display().to_string()));
    c.insert("prologue".into(), v(&site.prologue));
    c.insert("extra".into(), v(&site.job_extra_directives));
    c.insert("worker_command".into(), v(&req.worker_command));
    c
}

fn render_text(name: &str, template: &str, ctx: &BTreeMap<String, minijinja::Value>) -> Result<String, BatchError> {
    let mut env = minijinja::Environment::new();
    let terr = |e: minijinja::Error| BatchError::Template {
        name: name.into(),
        message: e.to_string(),
    };
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(true)
            .build()
            .map_err(terr)?,
    );
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.add_template(name, template).map_err(terr)?;
    env.get_template(name).map_err(terr)?.render(ctx).map_err(terr)
}

/// Render a submission for a site (its own template if it names one).
pub fn render(sys: &dyn BatchSystem, site: &Site, req: &JobRequest) -> Result<Rendered, BatchError> {
    let mut ctx = common_context(site, req);
    ctx.extend(sys.context(site, req)?);
    let (name, text) = match &site.template {
        Some(p) => (
            p.display().to_string(),
            std::fs::read_to_string(p).map_err(|source| BatchError::TemplateRead { path: p.clone(), source })?,
        ),
        None => (format!("templates/{}", sys.name()), sys.default_template().to_string()),
    };
    let main = render_text(&name, &text, &ctx)?;
    let extra = sys
        .extra_templates()
        .iter()
        .map(|(suffix, t)| render_text(suffix, t, &ctx).map(|s| (suffix.to_string(), s)))
        .collect::<Result<_, _>>()?;
    Ok(Rendered { main, extra })
}

/// `cmd [submit_extra_args...] script`, the submit line of most systems.
pub(crate) fn submit_with(cmd: &str, site: &Site, script: &Path) -> SubmitCommand {
    let mut argv = vec![cmd.to_string()];
    argv.extend(site.submit_extra_args.iter().cloned());
    argv.push(script.display().to_string());
    SubmitCommand { argv, stdin: false }
}

/// The last non-empty line of some output.
pub(crate) fn last_line(s: &str) -> &str {
    s.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or("")
}

/// Quote a word for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod golden;
