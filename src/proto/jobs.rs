//! Wire types of task jobs (issue 13): what a client submits, what a worker is told to
//! run and reports, and what `drover jobs`, `drover tasks` and `drover wait` show.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where a task's stdout or stderr goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Log {
    /// One file per task under the server's folder: `jobs/JOB/TASK.out` / `.err`.
    Default,
    /// `--stdout none`.
    Discard,
    /// A path template (`{task}`, `{job}`, `{entry}`), absolute.
    Path(String),
}

/// A task job as a client submits it. The server checks it all again.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskJobRequest {
    pub name: Option<String>,
    pub priority: i32,
    /// Runs of a failed task after its first (tasks of lost workers always run again).
    pub max_retries: u8,
    /// Jobs that must have succeeded before this one starts (`--after`).
    pub after: Vec<u64>,
    /// One command (`drover submit -- CMD`), or the entries of a task graph file.
    pub groups: Vec<GroupRequest>,
}

/// Tasks that run one command: a plain job's, or one `[[task]]` of a graph file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupRequest {
    /// Its name in a graph file; empty for a plain job.
    pub name: String,
    /// The program and its arguments, with placeholders.
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The task's working folder (absolute): `--cwd`, else where `submit` ran.
    pub cwd: PathBuf,
    pub stdout: Log,
    pub stderr: Log,
    /// `--array` as given.
    pub array: Option<String>,
    /// `--each-line`: one task per entry.
    pub entries: Option<Vec<String>>,
    pub time_limit: Option<Duration>,
    pub cores: u32,
    /// Groups (by name) whose every task must succeed first.
    pub after: Vec<String>,
}

/// How every task of a job runs, sent once to each worker that gets one of its tasks.
/// Placeholders are replaced per task by the worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CommandSpec {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// Path templates; `None` discards.
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub time_limit: Option<Duration>,
    pub cores: u32,
}

/// One task to run: the core's task number, the user's id (`--array` index or line
/// number) and its entry.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CommandRef {
    pub task: u32,
    /// Its group ([`ServerMsg::TaskJob`](super::ServerMsg::TaskJob) gave its spec).
    pub group: u32,
    /// What `{task}` and `$DROVER_TASK_ID` stand for: its `--array` index or line.
    pub id: u64,
    pub entry: Option<String>,
}

/// How a task that ran ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum End {
    Exited(i32),
    Signalled(i32),
    TimedOut,
    Cancelled,
}

/// A task's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum TaskState {
    Waiting,
    Running,
    Succeeded,
    Failed,
    Timeout,
    Cancelled,
}

impl TaskState {
    pub const ALL: [TaskState; 6] = [
        TaskState::Waiting,
        TaskState::Running,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Timeout,
        TaskState::Cancelled,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TaskState::Waiting => "waiting",
            TaskState::Running => "running",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Timeout => "timeout",
            TaskState::Cancelled => "cancelled",
        }
    }

    /// `--state failed` and the like; the error lists the states.
    pub fn parse(s: &str) -> Result<TaskState, String> {
        TaskState::ALL.into_iter().find(|t| t.name() == s).ok_or_else(|| {
            let names: Vec<&str> = TaskState::ALL.iter().map(|t| t.name()).collect();
            format!("--state \"{s}\": not a task state; the states are {}", names.join(", "))
        })
    }

    pub fn ended(self) -> bool {
        !matches!(self, TaskState::Waiting | TaskState::Running)
    }
}

/// One task as `drover tasks --json` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    pub id: u64,
    /// Its `[[task]]` entry's name (task graph files).
    pub name: Option<String>,
    pub state: TaskState,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub worker: Option<u32>,
    pub host: Option<String>,
    /// Seconds after the job started.
    pub started: Option<f64>,
    pub seconds: Option<f64>,
    pub requeues: u32,
    pub entry: Option<String>,
}

/// Tasks of a job in each state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub waiting: u64,
    pub running: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub timeout: u64,
    pub cancelled: u64,
}

impl Counts {
    /// Tasks that ended, in any way.
    pub fn ended(&self) -> u64 {
        self.succeeded + self.failed + self.timeout + self.cancelled
    }
}

impl From<[u64; 6]> for Counts {
    fn from(c: [u64; 6]) -> Self {
        Counts {
            waiting: c[0],
            running: c[1],
            succeeded: c[2],
            failed: c[3],
            timeout: c[4],
            cancelled: c[5],
        }
    }
}

/// A job as `drover jobs` shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JobInfo {
    pub id: u64,
    pub name: String,
    /// `tasks` or `array`.
    pub kind: String,
    /// waiting, running, succeeded, failed or cancelled.
    pub state: String,
    pub tasks: u64,
    pub counts: Counts,
    pub priority: i32,
}

impl JobInfo {
    pub fn ended(&self) -> bool {
        matches!(self.state.as_str(), "succeeded" | "failed" | "cancelled")
    }
}
