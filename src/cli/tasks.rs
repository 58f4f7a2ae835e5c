//! `drover submit`, `jobs`, `tasks`, `wait`, `cancel`: task jobs on a running server.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use clap::Args;

use super::{DirArg, Failure, client_failure, input, load_access, runtime, runtime_builder};
use crate::config::{taskgraph, taskjob};
use crate::proto::jobs::{GroupRequest, JobInfo, Log, TaskJobRequest, TaskState, TaskView};
use crate::server::client::Session;

#[derive(Args, Debug)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub dir: DirArg,
    /// One task per index: `1-1000`, `0-99:10`, `1,5,9-12`.
    #[arg(long, value_name = "SPEC", conflicts_with = "each_line")]
    pub array: Option<String>,
    /// One task per line of FILE; the line is its {entry} and $DROVER_ENTRY.
    #[arg(long, value_name = "FILE")]
    pub each_line: Option<PathBuf>,
    /// Slots of a worker each task occupies.
    #[arg(long, default_value_t = 1)]
    pub cores: u32,
    /// Stop a task (its whole process group) after this long: 90s, 10m, 2h, HH:MM:SS.
    #[arg(long, value_name = "DURATION")]
    pub time_limit: Option<String>,
    /// Run a failed task again up to N times (tasks of lost workers always run again).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub max_retries: u8,
    /// The tasks' working folder (default: the current one).
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Set K=V in the tasks' environment (repeatable).
    #[arg(long, value_name = "K=V")]
    pub env: Vec<String>,
    /// A name for `drover jobs` (default: the program's).
    #[arg(long)]
    pub name: Option<String>,
    /// Jobs share the workers in proportion to 2^priority.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub priority: i32,
    /// Each task's stdout: a path with {task}, {job}, {entry}, or `none` (default: one
    /// file per task in the server's folder, jobs/JOB/TASK.out).
    #[arg(long, value_name = "PATH")]
    pub stdout: Option<String>,
    /// Each task's stderr, like --stdout (default jobs/JOB/TASK.err).
    #[arg(long, value_name = "PATH")]
    pub stderr: Option<String>,
    /// Start only once these jobs succeeded (ids: 3 or 3,7); if one does not, the
    /// job is cancelled.
    #[arg(long, value_name = "JOBS")]
    pub after: Option<String>,
    /// Wait for the job to end; exit 1 if any task did not succeed.
    #[arg(long)]
    pub wait: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// The command and its arguments (after --), or a task graph file (graph.toml
    /// with [[task]] entries).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

fn log_arg(v: Option<&String>, cwd: &Path) -> Log {
    match v.map(String::as_str) {
        None => Log::Default,
        Some("none") => Log::Discard,
        Some(p) if Path::new(p).is_absolute() => Log::Path(p.to_string()),
        // Relative to the tasks' folder, braces in that folder's name kept literal.
        Some(p) => Log::Path(format!("{}/{p}", cwd.display().to_string().replace('{', "{{").replace('}', "}}"))),
    }
}

/// The lines of an `--each-line` file, one task each; `what` names the option.
fn read_lines(path: &Path, what: &str) -> Result<Vec<String>, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        input(anyhow!(
            "{what} \"{}\": cannot read it ({e}); give a file with one entry per line",
            path.display()
        ))
    })?;
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    if lines.is_empty() {
        return Err(input(anyhow!(
            "{what} \"{}\": the file is empty; one task runs per line",
            path.display()
        )));
    }
    Ok(lines)
}

fn existing_dir(d: PathBuf, what: &str) -> Result<PathBuf, Failure> {
    if d.is_dir() {
        Ok(d)
    } else {
        Err(input(anyhow!("{what} \"{}\": not a folder; give an existing folder", d.display())))
    }
}

fn parse_env(kv: &str) -> Result<(String, String), Failure> {
    match kv.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(input(anyhow!("--env \"{kv}\": expected NAME=VALUE"))),
    }
}

/// `drover submit graph.toml`: one argument naming a TOML file.
fn graph_file(command: &[String]) -> Option<PathBuf> {
    match command {
        [one] if one.ends_with(".toml") && Path::new(one).is_file() => Some(PathBuf::from(one)),
        _ => None,
    }
}

fn request(a: &SubmitArgs) -> Result<TaskJobRequest, Failure> {
    if a.command.is_empty() {
        return Err(input(anyhow!(
            "no command given: put it after --, as in `drover submit --array 1-10 -- ./run.sh {{task}}`, or name a task graph file"
        )));
    }
    let time_limit = a.time_limit.as_deref().map(taskjob::parse_time_limit).transpose().map_err(input)?;
    let env = a.env.iter().map(|kv| parse_env(kv)).collect::<Result<Vec<_>, _>>()?;
    let here = std::env::current_dir().map_err(runtime)?;
    let cwd = existing_dir(
        match &a.cwd {
            Some(d) => here.join(d),
            None => here.clone(),
        },
        "--cwd",
    )?;
    let after = match &a.after {
        None => vec![],
        Some(s) => s
            .split(',')
            .map(|t| {
                t.trim()
                    .parse::<u64>()
                    .map_err(|_| input(anyhow!("--after \"{s}\": expected job ids like 3 or 3,7")))
            })
            .collect::<Result<_, _>>()?,
    };
    let Some(path) = graph_file(&a.command) else {
        if let Some(spec) = &a.array {
            taskjob::parse_array(spec).map_err(input)?;
        }
        let entries = a.each_line.as_deref().map(|p| read_lines(p, "--each-line")).transpose()?;
        return Ok(TaskJobRequest {
            name: a.name.clone(),
            priority: a.priority,
            max_retries: a.max_retries,
            after,
            groups: vec![GroupRequest {
                name: String::new(),
                argv: a.command.clone(),
                env,
                stdout: log_arg(a.stdout.as_ref(), &cwd),
                stderr: log_arg(a.stderr.as_ref(), &cwd),
                cwd,
                array: a.array.clone(),
                entries,
                time_limit,
                cores: a.cores,
                after: vec![],
            }],
        });
    };
    if a.array.is_some() || a.each_line.is_some() {
        return Err(input(anyhow!(
            "--array and --each-line apply to a command; in \"{}\" give each [[task]] its own array = or each_line =",
            path.display()
        )));
    }
    let g = taskgraph::load(&path).map_err(|e| input(anyhow!(e)))?;
    let mut groups = Vec::with_capacity(g.task.len());
    for t in &g.task {
        let what = |key: &str| format!("{}: task \"{}\": {key}", path.display(), t.name);
        let entries = t
            .each_line
            .as_deref()
            .map(|p| read_lines(&taskgraph::resolve(&path, p), &what("each_line")))
            .transpose()?;
        let limit = match &t.time_limit {
            Some(l) => Some(taskjob::parse_time_limit(l).map_err(|e| input(anyhow!("{}: {e}", what("time_limit"))))?),
            None => time_limit,
        };
        let dir = match &t.cwd {
            Some(c) => existing_dir(here.join(taskgraph::resolve(&path, c)), &what("cwd"))?,
            None => cwd.clone(),
        };
        let mut env = env.clone();
        env.extend(t.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        groups.push(GroupRequest {
            name: t.name.clone(),
            argv: t.command.argv(),
            env,
            stdout: log_arg(t.stdout.as_ref().or(a.stdout.as_ref()), &dir),
            stderr: log_arg(t.stderr.as_ref().or(a.stderr.as_ref()), &dir),
            cwd: dir,
            array: t.array.clone(),
            entries,
            time_limit: limit,
            cores: t.cores.unwrap_or(a.cores),
            after: t.after.clone(),
        });
    }
    Ok(TaskJobRequest {
        name: a.name.clone().or(g.name),
        priority: if a.priority != 0 { a.priority } else { g.priority.unwrap_or(0) },
        max_retries: if a.max_retries != 0 {
            a.max_retries
        } else {
            g.max_retries.unwrap_or(0)
        },
        after,
        groups,
    })
}

pub fn submit(a: SubmitArgs) -> Result<(), Failure> {
    let dir = a.dir.get();
    let access = load_access(&dir, "--dir")?;
    let req = request(&a)?;
    runtime_builder()?.block_on(async {
        let mut s = Session::open(&access).await.map_err(runtime)?;
        let (job, tasks, note) = s.submit_tasks(req).await.map_err(client_failure)?;
        if a.json && !a.wait {
            println!("{}", serde_json::json!({ "job": job, "tasks": tasks }));
        } else if !a.json {
            println!("{job}");
        }
        if let Some(n) = note {
            eprintln!("drover: job {job}: {n}");
        }
        if !a.wait {
            s.done().await;
            return Ok(());
        }
        let ended = wait_on(s, &[job], false, a.json).await?;
        if a.json {
            println!("{}", serde_json::to_string(&ended[0]).map_err(runtime)?);
        }
        verdict(&ended)
    })
}

/// Wait for `jobs`; with `stream`, print each task as it ends (JSON lines with
/// `json`). A progress bar shows on a terminal otherwise.
async fn wait_on(mut s: Session, jobs: &[u64], stream: bool, json: bool) -> Result<Vec<JobInfo>, Failure> {
    let bar = (!stream && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} tasks (eta {eta})")
                .expect("valid template"),
        );
        b
    });
    if let Some(b) = &bar {
        let all = s.jobs().await.map_err(client_failure)?;
        let mine = all.iter().filter(|j| jobs.contains(&j.id));
        let (total, done) = mine.fold((0, 0), |(t, d), j| (t + j.tasks, d + j.counts.ended()));
        b.set_length(total);
        b.set_position(done);
    }
    let ended = s
        .wait(jobs, stream || bar.is_some(), |job, t| {
            if let Some(b) = &bar {
                b.inc(1);
            } else if json {
                println!(
                    "{}",
                    serde_json::json!({"job": job, "id": t.id, "state": t.state, "exit_code": t.exit_code, "signal": t.signal})
                );
            } else {
                println!("job {job} task {}: {}", t.id, describe(&t));
            }
        })
        .await
        .map_err(client_failure)?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    s.done().await;
    Ok(ended)
}

fn describe(t: &TaskView) -> String {
    match (t.exit_code, t.signal) {
        (Some(c), _) => format!("{} (exit code {c})", t.state.name()),
        (None, Some(s)) => format!("{} (signal {s})", t.state.name()),
        _ => t.state.name().to_string(),
    }
}

/// Exit 0 when every job succeeded; else 1, naming what did not.
fn verdict(ended: &[JobInfo]) -> Result<(), Failure> {
    let bad: Vec<String> = ended
        .iter()
        .filter(|j| j.state != "succeeded")
        .map(|j| {
            let c = &j.counts;
            format!(
                "job {} {}: {} of {} tasks succeeded, {} failed, {} timed out, {} cancelled (`drover tasks {} --state failed` lists the failures)",
                j.id, j.state, c.succeeded, j.tasks, c.failed, c.timeout, c.cancelled, j.id
            )
        })
        .collect();
    if bad.is_empty() {
        for j in ended {
            eprintln!("drover: job {} succeeded: {} tasks", j.id, j.tasks);
        }
        Ok(())
    } else {
        Err(runtime(anyhow!(bad.join("; "))))
    }
}

/// One request to the server in `dir`, on a session of its own.
pub(super) fn ask<T>(
    dir: &Path,
    request: impl AsyncFnOnce(&mut Session) -> Result<T, crate::server::client::ClientError>,
) -> Result<T, Failure> {
    let access = load_access(dir, "--dir")?;
    runtime_builder()?.block_on(async {
        let mut s = Session::open(&access).await.map_err(runtime)?;
        let answer = request(&mut s).await.map_err(client_failure)?;
        s.done().await;
        Ok(answer)
    })
}

pub fn jobs(dir: &Path, json: bool) -> Result<(), Failure> {
    let jobs = ask(dir, async |s| s.jobs().await)?;
    if json {
        println!("{}", serde_json::to_string(&jobs).map_err(runtime)?);
        return Ok(());
    }
    println!(
        "{:>5} {:<6} {:<10} {:>8} {:>8} {:>8} {:>9} {:>7} {:>7} {:>9}  NAME",
        "ID", "KIND", "STATE", "TASKS", "WAITING", "RUNNING", "SUCCEEDED", "FAILED", "TIMEOUT", "CANCELLED"
    );
    for j in &jobs {
        let c = &j.counts;
        println!(
            "{:>5} {:<6} {:<10} {:>8} {:>8} {:>8} {:>9} {:>7} {:>7} {:>9}  {}",
            j.id, j.kind, j.state, j.tasks, c.waiting, c.running, c.succeeded, c.failed, c.timeout, c.cancelled, j.name
        );
    }
    Ok(())
}

pub fn tasks(dir: &Path, job: u64, state: Option<&str>, json: bool) -> Result<(), Failure> {
    let state = state.map(TaskState::parse).transpose().map_err(|e| input(anyhow!(e)))?;
    let tasks = ask(dir, async |s| s.tasks(job, state).await)?;
    if json {
        println!("{}", serde_json::to_string(&tasks).map_err(runtime)?);
        return Ok(());
    }
    println!(
        "{:>8} {:<10} {:>5} {:>6} {:<16} {:>9} {:>9} {:>8}  ENTRY",
        "ID", "STATE", "EXIT", "WORKER", "HOST", "STARTED", "SECONDS", "REQUEUES"
    );
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    for t in &tasks {
        let exit = match (t.exit_code, t.signal) {
            (Some(c), _) => c.to_string(),
            (None, Some(s)) => format!("sig{s}"),
            _ => "-".into(),
        };
        println!(
            "{:>8} {:<10} {:>5} {:>6} {:<16} {:>9} {:>9} {:>8}  {}",
            t.id,
            t.state.name(),
            exit,
            opt(t.worker.map(|w| format!("w{w}"))),
            opt(t.host.clone()),
            opt(t.started.map(|s| format!("{s:.1}"))),
            opt(t.seconds.map(|s| format!("{s:.2}"))),
            t.requeues,
            t.entry.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

pub fn wait(dir: &Path, jobs: &[u64], as_completed: bool, json: bool) -> Result<(), Failure> {
    let access = load_access(dir, "--dir")?;
    let ended = runtime_builder()?.block_on(async {
        let s = Session::open(&access).await.map_err(runtime)?;
        wait_on(s, jobs, as_completed, json).await
    })?;
    if json && !as_completed {
        println!("{}", serde_json::to_string(&ended).map_err(runtime)?);
    }
    verdict(&ended)
}

pub fn cancel(dir: &Path, job: u64, tasks: Option<&str>) -> Result<(), Failure> {
    let ids = tasks
        .map(|t| taskjob::parse_array(t).map_err(|e| input(anyhow!("--tasks: {}", e.to_string().replace("--array ", "")))))
        .transpose()?;
    ask(dir, async |s| s.cancel(job, ids).await)?;
    match tasks {
        Some(t) => eprintln!("drover: job {job}: tasks {t} cancelled"),
        None => eprintln!("drover: job {job} cancelled"),
    }
    Ok(())
}
