//! `drover worker`: one worker, or a node agent starting several.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;
use tokio::process::Command;

use super::{Failure, cores, input, runtime, runtime_builder};
use crate::exec::hdf::shared_fs::SharedFs;
use crate::worker::{self, WorkerOptions};

/// `drover worker`.
#[derive(clap::Args, Debug, Clone)]
pub struct WorkerArgs {
    /// The server's access.toml.
    #[arg(long)]
    pub access: PathBuf,
    /// Task threads per worker (default: the cores of this machine).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Start this many worker processes on this node.
    #[arg(long, default_value_t = 1)]
    pub processes: u32,
    /// Seconds to keep trying to reach a lost server before exiting.
    #[arg(long, default_value_t = 60)]
    pub death_timeout: u64,
    /// The batch job's walltime in seconds, counted from $DROVER_JOB_START (set
    /// by drover's job scripts) or from now: the worker drains before it ends.
    #[arg(long)]
    pub walltime: Option<u64>,
    /// Memory this worker may use ("4 GiB", "500MB", bytes): it runs no more
    /// tasks at once than fit (job scripts pass the site's memory / processes).
    #[arg(long, value_name = "SIZE", value_parser = super::parse_size)]
    pub memory_per_worker: Option<super::Size>,
    /// Write output chunks straight into the output file whenever this node sees the
    /// same file (same inode) through a shared file system that keeps one coherent
    /// file for all nodes (default: on the same host, or on Lustre, GPFS, BeeGFS or
    /// WekaFS, recognised by statfs).
    #[arg(long, conflicts_with = "no_shared_fs")]
    pub shared_fs: bool,
    /// Never write output chunks into the output file: send every block to the server.
    #[arg(long)]
    pub no_shared_fs: bool,
}

impl WorkerArgs {
    fn shared_fs(&self) -> SharedFs {
        match (self.shared_fs, self.no_shared_fs) {
            (true, _) => SharedFs::On,
            (_, true) => SharedFs::Off,
            _ => SharedFs::Auto,
        }
    }
}

pub fn worker(args: &WorkerArgs) -> Result<(), Failure> {
    let (access, threads, processes, death_timeout, walltime) =
        (&args.access, args.threads, args.processes, args.death_timeout, args.walltime);
    let memory = args.memory_per_worker.as_ref().map(|s| s.bytes);
    if threads == Some(0) {
        return Err(input(anyhow!("--threads 0: a worker needs at least one thread")));
    }
    if processes == 0 {
        return Err(input(anyhow!("--processes 0: start at least one worker process")));
    }
    if death_timeout == 0 {
        return Err(input(anyhow!(
            "--death-timeout 0: give the worker at least 1 s to reach its server"
        )));
    }
    let threads = threads.unwrap_or_else(|| (cores() / processes as usize).max(1));
    let rt = runtime_builder()?;
    if processes > 1 {
        return rt.block_on(node_agent(args, threads));
    }
    let dial = super::dial();
    let opts = WorkerOptions {
        threads,
        heartbeat: Duration::from_secs(5),
        death_timeout: Duration::from_secs(death_timeout),
        walltime: walltime.map(job_end),
        memory: memory.map(|b| b.0),
        shared_fs: args.shared_fs(),
        transport: dial.transport,
        address: dial.address,
    };
    rt.block_on(worker::run(access, opts)).map_err(|e| Failure {
        input: e.is_input(),
        error: anyhow::Error::new(e),
    })
}

/// When the job ends: `$DROVER_JOB_START` (Unix seconds, written by the job script
/// before its prologue) plus the walltime; from now when the variable is absent.
fn job_end(walltime: u64) -> (std::time::Instant, Duration) {
    let total = Duration::from_secs(walltime);
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let start = std::env::var("DROVER_JOB_START")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|&s| s <= now_unix)
        .unwrap_or(now_unix);
    let elapsed = Duration::from_secs(now_unix - start);
    (std::time::Instant::now() + total.saturating_sub(elapsed), total)
}

/// Start `processes` single workers on this node, pass SIGTERM/SIGINT on, wait for all.
async fn node_agent(args: &WorkerArgs, threads: usize) -> Result<(), Failure> {
    let (access, processes, death_timeout, walltime) = (&args.access, args.processes, args.death_timeout, args.walltime);
    let memory = args.memory_per_worker.as_ref().map(|s| s.bytes);
    let exe = std::env::current_exe().map_err(runtime)?;
    let dial = super::dial();
    let mut children = Vec::new();
    for _ in 0..processes {
        let child = Command::new(&exe)
            .arg("worker")
            .arg("--access")
            .arg(access)
            .args(["--threads", &threads.to_string(), "--death-timeout", &death_timeout.to_string()])
            .args(walltime.map(|w| vec!["--walltime".to_string(), w.to_string()]).unwrap_or_default())
            .args(
                memory
                    .map(|m| vec!["--memory-per-worker".to_string(), m.0.to_string()])
                    .unwrap_or_default(),
            )
            .args(match args.shared_fs() {
                SharedFs::On => vec!["--shared-fs"],
                SharedFs::Off => vec!["--no-shared-fs"],
                SharedFs::Auto => vec![],
            })
            .args(["--transport", dial.transport.name()])
            .args(dial.address.iter().flat_map(|a| ["--server-address", a.as_str()]))
            .kill_on_drop(true)
            .spawn()
            .map_err(runtime)?;
        children.push(child);
    }
    let pids: Vec<i32> = children.iter().filter_map(|c| c.id()).map(|p| p as i32).collect();
    let forward = |sig: nix::sys::signal::Signal| {
        for &p in &pids {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), sig);
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(runtime)?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).map_err(runtime)?;
    let wait_all = async {
        let mut failed = 0;
        for c in children.iter_mut() {
            if !c.wait().await.map(|s| s.success()).unwrap_or(false) {
                failed += 1;
            }
        }
        failed
    };
    tokio::pin!(wait_all);
    let failed = loop {
        tokio::select! {
            f = &mut wait_all => break f,
            _ = term.recv() => forward(nix::sys::signal::Signal::SIGTERM),
            _ = int.recv() => forward(nix::sys::signal::Signal::SIGINT),
        }
    };
    if failed > 0 {
        return Err(runtime(anyhow!(
            "{failed} of {processes} worker processes failed; see their messages above"
        )));
    }
    Ok(())
}
