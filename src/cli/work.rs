//! `drover worker`: one worker, or a node agent starting several.

use std::path::Path;
use std::time::Duration;

use anyhow::anyhow;
use tokio::process::Command;

use super::{Failure, cores, input, runtime, runtime_builder};
use crate::config::site::Bytes;
use crate::worker::{self, WorkerOptions};

pub fn worker(
    access: &Path,
    threads: Option<usize>,
    processes: u32,
    death_timeout: u64,
    walltime: Option<u64>,
    memory: Option<Bytes>,
) -> Result<(), Failure> {
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
        return rt.block_on(node_agent(access, threads, processes, death_timeout, walltime, memory));
    }
    let opts = WorkerOptions {
        threads,
        heartbeat: Duration::from_secs(5),
        death_timeout: Duration::from_secs(death_timeout),
        walltime: walltime.map(job_end),
        memory: memory.map(|b| b.0),
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
async fn node_agent(
    access: &Path,
    threads: usize,
    processes: u32,
    death_timeout: u64,
    walltime: Option<u64>,
    memory: Option<Bytes>,
) -> Result<(), Failure> {
    let exe = std::env::current_exe().map_err(runtime)?;
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
