//! Command-line interface: argument parsing, the embedded local cluster, output, and
//! the mapping of errors to exit codes (0 success, 2 bad input, 1 runtime failure).
//! The only module that uses `anyhow`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::{Args, Parser, Subcommand};
use tokio::process::{Child, Command};

use crate::config::workload::Workload;
use crate::core::CoreConfig;
use crate::exec::geometry::fmt_shape;
use crate::exec::plan::Plan;
use crate::proto::Summary;
use crate::server::client::{ClientError, Session};
use crate::server::{self, ServerOptions};
use crate::transport::Access;
use crate::worker::{self, WorkerOptions};

#[derive(Parser, Debug)]
#[command(
    name = "drover",
    version,
    about = "Chunked HDF5 array work on worker pools over authenticated QUIC"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run a workload: on an embedded local cluster (default) or a running server.
    Run(RunArgs),
    /// Start or stop a server.
    #[command(subcommand)]
    Server(ServerCmd),
    /// Show a running server's workers and progress.
    Status {
        #[command(flatten)]
        dir: DirArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a worker that connects to the server named in an access file.
    Worker {
        /// The server's access.toml.
        #[arg(long)]
        access: PathBuf,
        /// Task threads (default: the cores of this machine).
        #[arg(long)]
        threads: Option<usize>,
    },
}

#[derive(Args, Debug)]
pub struct DirArg {
    /// The server's folder, holding access.toml (default ~/.drover/server).
    #[arg(long)]
    dir: Option<PathBuf>,
}

impl DirArg {
    fn get(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(default_dir)
    }
}

#[derive(Subcommand, Debug)]
pub enum ServerCmd {
    /// Start a server in the foreground until stopped (SIGINT/SIGTERM or `server stop`).
    Start {
        #[command(flatten)]
        dir: DirArg,
        /// UDP address to listen on.
        #[arg(long, default_value = "0.0.0.0:0")]
        bind: SocketAddr,
        /// Host name or address workers dial (repeatable; default: this host's name and 127.0.0.1).
        #[arg(long)]
        advertise: Vec<String>,
    },
    /// Stop a running server; its workers exit.
    Stop {
        #[command(flatten)]
        dir: DirArg,
    },
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The workload file (TOML).
    pub workload: PathBuf,
    /// Worker processes of the embedded cluster (default: the number of cores).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Use the running server whose folder holds access.toml instead of an embedded cluster.
    #[arg(long, value_name = "DIR")]
    pub connect: Option<PathBuf>,
    /// Print one JSON object with the results at the end.
    #[arg(long)]
    pub json: bool,
}

fn default_dir() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from(".drover/server"), |h| PathBuf::from(h).join(".drover/server"))
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

fn runtime_builder() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(runtime)
}

/// Run a parsed command line.
pub fn main(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Cmd::Run(args) => run(args),
        Cmd::Server(ServerCmd::Start { dir, bind, advertise }) => server_start(&dir.get(), bind, advertise),
        Cmd::Server(ServerCmd::Stop { dir }) => {
            let dir = dir.get();
            let access = load_access(&dir)?;
            runtime_builder()?.block_on(async {
                let s = Session::open(&access).await.map_err(runtime)?;
                s.stop().await.map_err(runtime)
            })?;
            eprintln!("drover: server in {} stopped", dir.display());
            Ok(())
        }
        Cmd::Status { dir, json } => {
            let access = load_access(&dir.get())?;
            let status = runtime_builder()?
                .block_on(async { Session::open(&access).await?.status().await })
                .map_err(runtime)?;
            if json {
                println!("{}", serde_json::to_string(&status).map_err(runtime)?);
            } else {
                println!("workers: {}", status.workers.len());
                for w in &status.workers {
                    let job = w.batch_job.as_deref().unwrap_or("-");
                    println!(
                        "  w{:<5} {}:{} threads={} queued={} batch-job={job}",
                        w.id, w.host, w.pid, w.threads, w.assigned
                    );
                }
                match (status.running_job, status.progress) {
                    (Some(j), Some((d, t))) => println!("job {j}: {d}/{t} tasks"),
                    _ => println!("no job running"),
                }
                println!(
                    "tasks done: {}, retried: {}, workers lost: {}",
                    status.tasks_done, status.tasks_retried, status.workers_lost
                );
            }
            Ok(())
        }
        Cmd::Worker { access, threads } => {
            if threads == Some(0) {
                return Err(input(anyhow!("--threads 0: a worker needs at least one thread")));
            }
            let opts = WorkerOptions {
                threads: threads.unwrap_or_else(cores),
                heartbeat: Duration::from_secs(5),
            };
            runtime_builder()?.block_on(worker::run(&access, opts)).map_err(|e| {
                let is_input = e.is_input();
                let err = anyhow::Error::new(e);
                Failure {
                    input: is_input,
                    error: err,
                }
            })
        }
    }
}

fn load_access(dir: &Path) -> Result<Access, Failure> {
    let path = server::access_path(dir);
    if !path.exists() {
        return Err(input(anyhow!(
            "no access file at \"{}\"; start a server with `drover server start --dir {}` or pass the right --dir",
            path.display(),
            dir.display()
        )));
    }
    Access::load(&path).map_err(input)
}

fn server_start(dir: &Path, bind: SocketAddr, advertise: Vec<String>) -> Result<(), Failure> {
    let rt = runtime_builder()?;
    rt.block_on(async {
        let path = server::access_path(dir);
        if let Ok(old) = Access::load(&path)
            && let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(3), Session::open(&old)).await
            && s.status().await.is_ok()
        {
            return Err(input(anyhow!(
                "a server is already running with folder \"{}\"; stop it with `drover server stop --dir {}` or choose another --dir",
                dir.display(),
                dir.display()
            )));
        }
        let advertise = if !advertise.is_empty() {
            advertise
        } else if bind.ip().is_unspecified() {
            let host = nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut v = Vec::new();
            if !host.is_empty() {
                v.push(host);
            }
            v.push("127.0.0.1".into());
            v
        } else {
            vec![bind.ip().to_string()]
        };
        let opts = ServerOptions {
            dir: dir.to_path_buf(),
            bind,
            advertise,
            core: CoreConfig::default(),
        };
        let handle = server::start(opts).await.map_err(runtime)?;
        eprintln!(
            "drover: server listening on {}; access file {}",
            handle.addr,
            handle.access_path.display()
        );
        let stop = handle.stop_signal();
        let wait = handle.wait();
        tokio::pin!(wait);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(runtime)?;
        tokio::select! {
            _ = &mut wait => {}
            _ = tokio::signal::ctrl_c() => { let _ = stop.send(server::actor::Event::Stop); wait.await; }
            _ = term.recv() => { let _ = stop.send(server::actor::Event::Stop); wait.await; }
        }
        eprintln!("drover: server stopped");
        Ok(())
    })
}

fn run(args: RunArgs) -> Result<(), Failure> {
    let workload = Workload::load(&args.workload).map_err(input)?;
    if args.workers == Some(0) {
        return Err(input(anyhow!("--workers 0: the run needs at least one worker")));
    }
    // Validate everything (files, datasets, expressions, outputs) before starting anything.
    Plan::build(&workload).map_err(input)?;
    let rt = runtime_builder()?;
    let show_progress = !args.json && std::io::stdout().is_terminal();
    let summary = match &args.connect {
        Some(dir) => {
            let access = load_access(dir)?;
            rt.block_on(async {
                let session = Session::open(&access).await.map_err(runtime)?;
                run_session(session, workload, show_progress).await
            })?
        }
        None => rt.block_on(embedded(workload, args.workers.unwrap_or_else(cores), show_progress))?,
    };
    if args.json {
        let outputs: Vec<serde_json::Value> = summary
            .outputs
            .iter()
            .map(|o| serde_json::json!({"file": o.file, "dataset": o.dataset, "shape": o.shape, "dtype": o.dtype, "expr": o.expr}))
            .collect();
        let v = serde_json::json!({
            "tasks_total": summary.tasks_total,
            "tasks_retried": summary.tasks_retried,
            "workers_lost": summary.workers_lost,
            "bytes_read": summary.bytes_read,
            "seconds": summary.seconds,
            "workers": summary.workers,
            "outputs": outputs,
        });
        println!("{v}");
    } else {
        println!(
            "drover: {} output(s) in {:.2} s ({} tasks, {:.1} MB read, {} workers)",
            summary.outputs.len(),
            summary.seconds,
            summary.tasks_total,
            summary.bytes_read as f64 / 1e6,
            summary.workers
        );
        for o in &summary.outputs {
            println!("  {}:{}  {} {}  = {}", o.file, o.dataset, fmt_shape(&o.shape), o.dtype, o.expr);
        }
    }
    Ok(())
}

async fn run_session(session: Session, workload: Workload, show_progress: bool) -> Result<Summary, Failure> {
    let bar = show_progress.then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} tasks ({per_sec}, eta {eta})")
                .expect("valid template"),
        );
        b
    });
    let result = session
        .run(workload, |done, total| {
            if let Some(b) = &bar {
                b.set_length(u64::from(total));
                b.set_position(u64::from(done));
            }
        })
        .await;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    result.map_err(client_failure)
}

/// The embedded local cluster: a server in this process and `n` worker processes over
/// loopback QUIC, stopped at the end whatever happens.
async fn embedded(workload: Workload, n: usize, show_progress: bool) -> Result<Summary, Failure> {
    let dir = tempfile::Builder::new()
        .prefix("drover-")
        .tempdir()
        .context("creating the server folder")
        .map_err(runtime)?;
    let opts = ServerOptions {
        dir: dir.path().to_path_buf(),
        bind: "127.0.0.1:0".parse().expect("loopback address"),
        advertise: vec!["127.0.0.1".into()],
        core: CoreConfig::default(),
    };
    let handle = server::start(opts).await.map_err(runtime)?;
    let access = Access::load(&handle.access_path).map_err(runtime)?;
    let threads = (cores() / n).max(1);
    let exe = std::env::current_exe().context("locating the drover executable").map_err(runtime)?;
    let mut children: Vec<Child> = Vec::with_capacity(n);
    for _ in 0..n {
        let child = Command::new(&exe)
            .arg("worker")
            .arg("--access")
            .arg(&handle.access_path)
            .arg("--threads")
            .arg(threads.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting a worker process")
            .map_err(runtime)?;
        children.push(child);
    }
    let result = {
        let session = Session::open(&access).await.map_err(runtime);
        let all_exited = async {
            let mut codes = Vec::new();
            for c in children.iter_mut() {
                codes.push(c.wait().await.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()));
            }
            codes
        };
        match session {
            Err(e) => Err(e),
            Ok(session) => tokio::select! {
                r = run_session(session, workload, show_progress) => r,
                codes = all_exited => Err(runtime(anyhow!(
                    "all {n} worker processes exited before the run finished ({}); see their messages above",
                    codes.join(", ")
                ))),
                _ = tokio::signal::ctrl_c() => Err(runtime(anyhow!("interrupted"))),
            },
        }
    };
    handle.stop().await;
    for c in children.iter_mut() {
        if tokio::time::timeout(Duration::from_secs(5), c.wait()).await.is_err() {
            let _ = c.kill().await;
        }
    }
    result
}
