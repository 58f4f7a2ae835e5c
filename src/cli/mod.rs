//! Command-line interface: argument parsing, dispatch, and the mapping of errors to
//! exit codes (0 success, 2 bad input, 1 runtime failure). The only module that uses
//! `anyhow`.
//!
//! - [`run`]: `drover run` (embedded local cluster, `--connect`, `--site`).
//! - [`serve`]: `drover server start|stop`, `status`, `scale`.
//! - [`batch`]: `drover job-script`, `drover sites`.
//! - [`work`]: `drover worker`.
//! - [`tasks`]: `drover submit`, `jobs`, `tasks`, `wait`, `cancel` (task jobs).

mod batch;
mod explain;
mod report;
mod run;
mod serve;
mod tasks;
mod work;

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use clap::{Args, Parser, Subcommand};

use crate::config::site::{Bytes, Site};
use crate::server::{self, client::ClientError};
use crate::transport::Access;

#[derive(Parser, Debug)]
#[command(
    name = "drover",
    version,
    about = "Chunked HDF5 array work on worker pools over authenticated QUIC"
)]
pub struct Cli {
    /// How to reach the server: auto (its Unix socket on its own host; elsewhere QUIC,
    /// and TLS over TCP when QUIC gets no answer within 3 s), quic or tcp. Default:
    /// $DROVER_TRANSPORT, else auto.
    #[arg(long, global = true, value_name = "auto|quic|tcp")]
    pub transport: Option<crate::transport::Transport>,
    /// Dial HOST:PORT instead of the addresses in the access file, such as the local
    /// end of an SSH port forward (`ssh -L 7000:login1:PORT login1`, then
    /// `--server-address 127.0.0.1:7000`). Default: $DROVER_SERVER_ADDRESS.
    #[arg(long, global = true, value_name = "HOST:PORT")]
    pub server_address: Option<String>,
    #[command(subcommand)]
    pub command: Cmd,
}

/// How this process dials servers, from the command line or the environment.
#[derive(Clone, Debug, Default)]
struct Dial {
    transport: crate::transport::Transport,
    address: Option<String>,
}

static DIAL: std::sync::OnceLock<Dial> = std::sync::OnceLock::new();

fn dial() -> Dial {
    DIAL.get().cloned().unwrap_or_default()
}

fn resolve_dial(transport: Option<crate::transport::Transport>, address: Option<String>) -> Result<Dial, Failure> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let transport = match (transport, env("DROVER_TRANSPORT")) {
        (Some(t), _) => t,
        (None, Some(v)) => v.parse().map_err(|e| input(anyhow!("DROVER_TRANSPORT=\"{v}\": {e}")))?,
        (None, None) => crate::transport::Transport::Auto,
    };
    let address = match address {
        Some(a) => Some(("--server-address", a)),
        None => env("DROVER_SERVER_ADDRESS").map(|a| ("DROVER_SERVER_ADDRESS", a)),
    };
    if let Some((from, a)) = &address {
        let ok = a
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if !ok {
            return Err(input(anyhow!(
                "{from} \"{a}\" is not HOST:PORT; give the host and port to dial, e.g. 127.0.0.1:7000 for `ssh -L 7000:login1:PORT`"
            )));
        }
    }
    Ok(Dial {
        transport,
        address: address.map(|(_, a)| a),
    })
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run a workload: on an embedded local cluster (default), a running server
    /// (--connect), or workers from a batch system (--site).
    Run(RunArgs),
    /// Start or stop a server.
    #[command(subcommand)]
    Server(ServerCmd),
    /// Show a running server's workers, batch jobs and progress.
    Status {
        #[command(flatten)]
        dir: DirArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make a server with a site hold N workers (jobs = ceil(N / processes)).
    Scale {
        /// Number of workers.
        workers: u32,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Make a server with a site size its pool from the backlog, between MIN and MAX workers.
    Adapt {
        #[arg(long)]
        min: u32,
        #[arg(long)]
        max: u32,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Submit a task job to a running server: a command run once per --array index
    /// or --each-line line, on the server's workers.
    Submit(tasks::SubmitArgs),
    /// List a server's jobs with their tasks' counts by state.
    Jobs {
        #[command(flatten)]
        dir: DirArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the tasks of a job: state, exit code or signal, worker, host, times.
    Tasks {
        /// The job's id (see `drover jobs`).
        job: u64,
        /// Only tasks in this state (waiting, running, succeeded, failed, timeout, cancelled).
        #[arg(long)]
        state: Option<String>,
        #[command(flatten)]
        dir: DirArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Wait until jobs end; exit 1 if any of their tasks did not succeed.
    Wait {
        /// Job ids.
        #[arg(required = true)]
        jobs: Vec<u64>,
        /// Print each task as it ends.
        #[arg(long)]
        as_completed: bool,
        #[command(flatten)]
        dir: DirArg,
        /// Print JSON (one object per line with --as-completed).
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job (its running tasks' process groups are stopped), or some of its tasks.
    Cancel {
        /// The job's id.
        job: u64,
        /// Only these task ids: `3,7`, `10-20`.
        #[arg(long, value_name = "IDS")]
        tasks: Option<String>,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Write the report of a server's job: one HTML file that opens offline (its task
    /// stream, workers, stage timings, memory over time, summary).
    Report {
        /// The job's id (see `drover jobs`).
        job: u64,
        /// The file to write (default: drover-report-JOB.html).
        #[arg(short, long, value_name = "FILE")]
        output: Option<std::path::PathBuf>,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Print the batch script(s) that would be submitted for a site.
    JobScript {
        /// A bundled site name (see `drover sites`) or a site file.
        #[arg(long)]
        site: String,
        /// Workers wanted (decides the array size with `array = true`).
        #[arg(long)]
        workers: Option<u32>,
        #[command(flatten)]
        dir: DirArg,
    },
    /// List the bundled site files.
    Sites,
    /// Print the URL of a server's dashboard (it carries a read-only key).
    Dashboard {
        #[command(flatten)]
        dir: DirArg,
    },
    /// Run a worker that connects to the server named in an access file.
    Worker(work::WorkerArgs),
}

#[derive(Args, Debug, Clone)]
pub struct DirArg {
    /// The server's folder, holding access.toml (default ~/.drover/server).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

impl DirArg {
    fn get(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| drover_home().join("server"))
    }
}

#[derive(Subcommand, Debug)]
pub enum ServerCmd {
    /// Start a server in the foreground until stopped (SIGINT/SIGTERM or `server stop`).
    Start(serve::StartArgs),
    /// Stop a running server: its workers exit and its batch jobs are cancelled.
    Stop {
        #[command(flatten)]
        dir: DirArg,
    },
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The workload file (TOML).
    pub workload: PathBuf,
    /// Workers (default: the number of cores for the embedded cluster; required with --site).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Threads per worker of the embedded cluster (default: the cores shared out among
    /// the workers).
    #[arg(long, conflicts_with_all = ["connect", "site"])]
    pub threads: Option<usize>,
    /// Use the running server whose folder holds access.toml instead of an embedded cluster.
    #[arg(long, value_name = "DIR", conflicts_with = "site")]
    pub connect: Option<PathBuf>,
    /// Get the workers through this site's batch system (bundled name or file); every
    /// job started is cancelled at the end.
    #[arg(long)]
    pub site: Option<String>,
    /// Print one JSON object with the results at the end.
    #[arg(long)]
    pub json: bool,
    /// Memory each worker may use ("4 GiB", "500MB", bytes): the plan's tasks are
    /// sized to fit it, and a plan that cannot fit is refused before any work.
    /// Default: the site's memory / processes, or for the embedded cluster three
    /// quarters of this machine's memory shared among the workers.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memory_per_worker: Option<Size>,
    /// Print the plan (stages, tasks, bytes read and written, memory per task against
    /// the bound) and exit without running it.
    #[arg(long)]
    pub explain: bool,
    /// Write a self-contained HTML report of the run (task stream, workers, stages,
    /// bytes, the workload and the summary) that opens offline.
    #[arg(long, value_name = "FILE", conflicts_with = "connect")]
    pub report: Option<PathBuf>,
    /// Serve the live dashboard while the run goes (its URL is printed on stderr).
    #[arg(long, conflicts_with = "connect")]
    pub dashboard: bool,
    /// How long a task may run before its worker is taken for stuck (a read that never
    /// returns) and its tasks run elsewhere: a multiple of the slowest task so far
    /// ("10x", the default, never under 10 minutes) or a duration ("90s", "5m").
    #[arg(long, value_name = "LIMIT", value_parser = crate::server::actor::hung::TaskTimeout::parse, conflicts_with = "connect")]
    pub task_timeout: Option<crate::server::actor::hung::TaskTimeout>,
}

/// A size argument as given, and its bytes.
#[derive(Clone, Debug)]
pub struct Size {
    pub bytes: Bytes,
    pub text: String,
}

/// A size argument: "4 GiB", "500MB", "2T", or bytes.
fn parse_size(s: &str) -> Result<Size, String> {
    Bytes::parse(s).map(|bytes| Size {
        bytes,
        text: s.to_string(),
    })
}

/// `~/.drover`: the default home of server folders and logs.
fn drover_home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from(".drover"), |h| PathBuf::from(h).join(".drover"))
}

/// A failure with its exit code.
#[derive(Debug)]
pub struct Failure {
    pub input: bool,
    pub error: anyhow::Error,
}

impl Failure {
    pub fn exit_code(&self) -> i32 {
        if self.input { 2 } else { 1 }
    }

    /// The one-line message: the error and its causes, each cause added only when
    /// the message does not already quote it (most of drover's errors put their
    /// cause in their own text).
    pub fn message(&self) -> String {
        let mut msg = self.error.to_string();
        for cause in self.error.chain().skip(1) {
            let c = cause.to_string();
            if !msg.contains(&c) {
                msg.push_str(": ");
                msg.push_str(&c);
            }
        }
        msg
    }
}

fn input(e: impl Into<anyhow::Error>) -> Failure {
    Failure {
        input: true,
        error: e.into(),
    }
}

fn runtime(e: impl Into<anyhow::Error>) -> Failure {
    Failure {
        input: false,
        error: e.into(),
    }
}

fn client_failure(e: ClientError) -> Failure {
    match e {
        ClientError::Failed {
            input_error: true,
            message,
        } => input(anyhow!(message)),
        other => runtime(other),
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Resolves on the first SIGINT or SIGTERM (Ctrl-C, `kill`, `timeout`, a batch system's
/// walltime), so a foreground command can stop what it started and remove its files.
/// If the handlers cannot be installed it never resolves (the default action applies).
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(mut int), Ok(mut term)) => tokio::select! {
            _ = int.recv() => "interrupted (SIGINT)",
            _ = term.recv() => "terminated (SIGTERM)",
        },
        _ => std::future::pending().await,
    }
}

fn runtime_builder() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(runtime)
}

/// Set in the environment of the workers an embedded run starts (their logs default to
/// errors only: the run reports what goes wrong).
pub const EMBEDDED_WORKER: &str = "DROVER_EMBEDDED_WORKER";

/// The access file of the server in `dir`, named on the command line by `flag`
/// (`--connect` for `run`, `--dir` elsewhere).
fn load_access(dir: &Path, flag: &str) -> Result<Access, Failure> {
    let path = server::access_path(dir);
    if !path.exists() {
        return Err(input(anyhow!(
            "no access file at \"{}\"; start a server with `drover server start --dir {}` or pass the right {flag}",
            path.display(),
            dir.display()
        )));
    }
    let mut access = Access::load(&path).map_err(input)?;
    let d = dial();
    access.dial_via(d.transport, d.address.as_deref());
    Ok(access)
}

fn load_site(name: &str) -> Result<Site, Failure> {
    Site::resolve(name).map_err(input)
}

/// A site to submit jobs with: one with placeholders left (`account = "mXXXX"`) is
/// refused before anything is submitted.
fn load_site_to_submit(name: &str) -> Result<Site, Failure> {
    let site = load_site(name)?;
    match site.placeholders().first() {
        None => Ok(site),
        Some(p) => Err(input(anyhow!(
            "site {name}: {p} is a placeholder; copy the site file (drover sites lists them), set your own value and pass --site FILE"
        ))),
    }
}

/// Addresses workers of a site should dial: the site's interface, else this host's name.
fn site_advertise(site: &Site) -> Result<Vec<String>, Failure> {
    match &site.interface {
        Some(iface) => crate::transport::interface_addr(iface)
            .map(|ip| vec![ip.to_string()])
            .map_err(|e| input(anyhow!("site {}: interface = \"{iface}\": {e}", site.name))),
        None => crate::transport::listen::default_announced(&hostname(), false).map_err(runtime),
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// Run a parsed command line.
pub fn main(cli: Cli) -> Result<(), Failure> {
    let _ = DIAL.set(resolve_dial(cli.transport, cli.server_address)?);
    match cli.command {
        Cmd::Run(args) => run::run(args),
        Cmd::Server(ServerCmd::Start(args)) => serve::start(&args),
        Cmd::Dashboard { dir } => serve::dashboard(&dir.get()),
        Cmd::Server(ServerCmd::Stop { dir }) => serve::stop(&dir.get()),
        Cmd::Status { dir, json } => serve::status(&dir.get(), json),
        Cmd::Scale { workers, dir } => serve::scale(&dir.get(), workers),
        Cmd::Adapt { min, max, dir } => serve::adapt(&dir.get(), min, max),
        Cmd::JobScript { site, workers, dir } => batch::job_script(&site, workers, &dir.get()),
        Cmd::Sites => batch::sites(),
        Cmd::Submit(args) => tasks::submit(args),
        Cmd::Jobs { dir, json } => tasks::jobs(&dir.get(), json),
        Cmd::Tasks { job, state, dir, json } => tasks::tasks(&dir.get(), job, state.as_deref(), json),
        Cmd::Wait {
            jobs,
            as_completed,
            dir,
            json,
        } => tasks::wait(&dir.get(), &jobs, as_completed, json),
        Cmd::Cancel { job, tasks, dir } => tasks::cancel(&dir.get(), job, tasks.as_deref()),
        Cmd::Report { job, output, dir } => report::report(&dir.get(), job, output),
        Cmd::Worker(args) => work::worker(&args),
    }
}
