//! Runs the batch system's real commands: writes job scripts into the log folder,
//! submits, polls and cancels. Every submission keeps its script and a `.submit.log`
//! with the command, exit status, stdout and stderr for debugging.
//!
//! The `local` scheduler has no commands: its "jobs" are `drover worker` process groups
//! on this machine.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

use super::{BatchError, BatchSystem, JobId, JobRequest, JobState, render, shell_quote, system_for};
use crate::config::site::{Scheduler, Site};

const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// How workers are started: the `drover worker` command line without `--processes`.
pub fn worker_command(exe: &Path, access: &Path, site: &Site) -> String {
    let mut cmd = format!(
        "{} worker --access {} --threads {} --death-timeout {}",
        shell_quote(&exe.display().to_string()),
        shell_quote(&access.display().to_string()),
        site.threads_per_worker(),
        site.death_timeout
    );
    if let Some(w) = site.walltime {
        cmd.push_str(&format!(" --walltime {}", w.seconds()));
    }
    if let Some(m) = site.memory_per_worker() {
        cmd.push_str(&format!(" --memory-per-worker {m}"));
    }
    cmd.push_str(shared_fs_flag(site));
    cmd.push_str(transport_flag(site));
    cmd
}

/// The worker's flag for the site's `transport` (none for the default, auto).
fn transport_flag(site: &Site) -> &'static str {
    match site.transport {
        crate::transport::Transport::Auto => "",
        crate::transport::Transport::Quic => " --transport quic",
        crate::transport::Transport::Tcp => " --transport tcp",
    }
}

/// The worker's flag for the site's `shared_fs`.
fn shared_fs_flag(site: &Site) -> &'static str {
    match site.shared_fs {
        Some(true) => " --shared-fs",
        Some(false) => " --no-shared-fs",
        None => "",
    }
}

/// One line of a command's stderr (or stdout) for messages.
fn one_line(s: &str) -> String {
    let joined: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let line = joined.join(" | ");
    if line.chars().count() > 400 {
        format!("{}...", line.chars().take(400).collect::<String>())
    } else {
        line
    }
}

pub struct Runner {
    site: Site,
    sys: Option<Box<dyn BatchSystem>>,
    log_dir: PathBuf,
    exe: PathBuf,
    access: PathBuf,
    seq: AtomicU32,
    local: Mutex<HashMap<JobId, Child>>,
}

impl Runner {
    pub fn new(site: Site, log_dir: PathBuf, exe: PathBuf, access: PathBuf) -> Result<Self, BatchError> {
        let sys = if site.scheduler == Scheduler::Local {
            None
        } else {
            Some(system_for(&site)?)
        };
        Ok(Self {
            site,
            sys,
            log_dir,
            exe,
            access,
            seq: AtomicU32::new(0),
            local: Mutex::new(HashMap::new()),
        })
    }

    pub fn site(&self) -> &Site {
        &self.site
    }

    /// The request for one submission of `array_size` elements (0: not an array).
    pub fn request(&self, array_size: u32) -> JobRequest {
        let n = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        JobRequest {
            worker_command: worker_command(&self.exe, &self.access, &self.site),
            array_size,
            log_dir: self.log_dir.clone(),
            script_stem: self.log_dir.join(format!("{}-{}-{n}", self.site.job_name, std::process::id())),
        }
    }

    /// Submit `jobs` jobs (one array of that size with `array = true`); returns the ids
    /// of the jobs, or of the array's elements, with their walltimes. Separate jobs of
    /// one batch get walltimes staggered over the last quarter, so that a pool started
    /// at once does not expire at once.
    pub async fn submit(&self, jobs: u32) -> Result<Vec<(JobId, Option<Duration>)>, String> {
        std::fs::create_dir_all(&self.log_dir).map_err(|e| format!("cannot create log folder \"{}\": {e}", self.log_dir.display()))?;
        let wall = self.site.walltime.map(|w| w.duration());
        let Some(sys) = &self.sys else {
            return self.submit_local(jobs).map(|v| v.into_iter().map(|id| (id, wall)).collect());
        };
        let mut ids = Vec::new();
        if self.site.array {
            let id = self.submit_one(sys.as_ref(), &self.site, jobs).await?;
            ids.extend(sys.array_elements(&id, jobs).into_iter().map(|id| (id, wall)));
        } else {
            for i in 0..jobs {
                let site = staggered(&self.site, i, jobs);
                let w = site.walltime.map(|w| w.duration());
                match self.submit_one(sys.as_ref(), &site, 0).await {
                    Ok(id) => ids.push((sys.single_job(id), w)),
                    Err(e) if ids.is_empty() => return Err(e),
                    Err(e) => {
                        tracing::warn!(error = %e, "a submission failed after {} succeeded", ids.len());
                        break;
                    }
                }
            }
        }
        Ok(ids)
    }

    async fn submit_one(&self, sys: &dyn BatchSystem, site: &Site, array_size: u32) -> Result<JobId, String> {
        let mut req = self.request(array_size);
        req.worker_command = worker_command(&self.exe, &self.access, site);
        let rendered = render(sys, site, &req).map_err(|e| e.to_string())?;
        let script = PathBuf::from(format!("{}{}", req.script_stem.display(), sys.script_suffix()));
        write_script(&script, &rendered.main)?;
        for (suffix, text) in &rendered.extra {
            write_script(Path::new(&format!("{}{suffix}", req.script_stem.display())), text)?;
        }
        let cmd = sys.submit(site, &script);
        let stdin = cmd.stdin.then(|| rendered.main.clone());
        let out = run(&cmd.argv, stdin.as_deref(), &self.log_dir).await;
        let log = PathBuf::from(format!("{}.submit.log", req.script_stem.display()));
        let _ = std::fs::write(
            &log,
            format!(
                "$ {}\nexit: {}\n--- stdout\n{}\n--- stderr\n{}\n",
                cmd.argv.join(" "),
                out.as_ref().map_or_else(|e| e.clone(), |o| o.status.to_string()),
                out.as_ref()
                    .map_or(String::new(), |o| String::from_utf8_lossy(&o.stdout).into_owned()),
                out.as_ref()
                    .map_or(String::new(), |o| String::from_utf8_lossy(&o.stderr).into_owned()),
            ),
        );
        let out = out?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let why = if stderr.trim().is_empty() {
                one_line(&stdout)
            } else {
                one_line(&stderr)
            };
            return Err(format!("`{}` failed ({}): {why}", cmd.argv[0], out.status));
        }
        let id = sys.parse_submit(&stdout).map_err(|e| e.to_string())?;
        tracing::info!(job = %id, script = %script.display(), "submitted");
        Ok(id)
    }

    fn submit_local(&self, jobs: u32) -> Result<Vec<JobId>, String> {
        let mut ids = Vec::new();
        let mut local = self.local.lock().expect("local jobs lock");
        for _ in 0..jobs {
            let n = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
            let id = JobId(format!("local-{n}"));
            let log = self.log_dir.join(format!("{}-{id}.log", self.site.job_name));
            let err = std::fs::File::create(&log).map_err(|e| format!("cannot create \"{}\": {e}", log.display()))?;
            let child = Command::new(&self.exe)
                .args(["worker", "--access"])
                .arg(&self.access)
                .args(["--threads", &self.site.threads_per_worker().to_string()])
                .args(["--death-timeout", &self.site.death_timeout.to_string()])
                .args(["--processes", &self.site.processes.to_string()])
                .args(shared_fs_flag(&self.site).split_whitespace())
                .args(transport_flag(&self.site).split_whitespace())
                .env("DROVER_LOCAL_JOB", &id.0)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(err)
                .process_group(0)
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("cannot start \"{}\": {e}", self.exe.display()))?;
            local.insert(id.clone(), child);
            ids.push(id);
        }
        Ok(ids)
    }

    /// Current states of jobs; `Err` when the status command itself failed (try later).
    pub async fn status(&self, ids: &[JobId]) -> Result<BTreeMap<JobId, JobState>, String> {
        let Some(sys) = &self.sys else {
            let mut local = self.local.lock().expect("local jobs lock");
            return Ok(ids
                .iter()
                .map(|id| {
                    let st = match local.get_mut(id).map(|c| c.try_wait()) {
                        Some(Ok(None)) => JobState::Running,
                        _ => JobState::Gone,
                    };
                    (id.clone(), st)
                })
                .collect());
        };
        if ids.is_empty() {
            return Ok(BTreeMap::new());
        }
        let argv = sys.status(ids);
        let out = run(&argv, None, &self.log_dir).await?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // PBS and LSF print found jobs and complain about unknown ones in one call;
        // anything else that fails without output is a failed poll.
        if !out.status.success() && stdout.trim().is_empty() && !stderr.contains("nknown Job") && !stderr.contains("not found") {
            return Err(format!("`{}` failed ({}): {}", argv[0], out.status, one_line(&stderr)));
        }
        sys.parse_status(&stdout, ids).map_err(|e| e.to_string())
    }

    pub async fn cancel(&self, ids: &[JobId]) -> Result<(), String> {
        if ids.is_empty() {
            return Ok(());
        }
        let Some(sys) = &self.sys else {
            let mut local = self.local.lock().expect("local jobs lock");
            for id in ids {
                if let Some(mut c) = local.remove(id) {
                    if let Some(pid) = c.id() {
                        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
                    }
                    // Reap in the background; kill if it ignores SIGTERM.
                    tokio::spawn(async move {
                        if tokio::time::timeout(Duration::from_secs(10), c.wait()).await.is_err() {
                            let _ = c.kill().await;
                        }
                    });
                }
            }
            return Ok(());
        };
        let argv = sys.cancel(ids);
        let out = run(&argv, None, &self.log_dir).await?;
        if !out.status.success() {
            tracing::warn!(command = %argv.join(" "), stderr = %one_line(&String::from_utf8_lossy(&out.stderr)), "cancel reported an error");
        }
        Ok(())
    }
}

/// Job `i` of `n` submitted together: its walltime shortened by up to a quarter, in
/// whole minutes (what batch systems honour), never below one minute.
fn staggered(site: &Site, i: u32, n: u32) -> Site {
    let mut s = site.clone();
    if let Some(w) = site.walltime
        && n > 1
        && i > 0
    {
        let cut = w.seconds() / 4 * u64::from(i) / u64::from(n);
        let secs = (w.seconds() - cut).max(60);
        s.walltime = Some(crate::config::site::Walltime(secs / 60 * 60).max(crate::config::site::Walltime(60.min(w.seconds()))));
    }
    s
}

fn write_script(path: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).map_err(|e| format!("cannot write \"{}\": {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).map_err(|e| format!("cannot chmod \"{}\": {e}", path.display()))
}

async fn run(argv: &[String], stdin: Option<&str>, cwd: &Path) -> Result<std::process::Output, String> {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(cwd)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run `{}`: {e}; is the batch system's client installed and on PATH?", argv[0]))?;
    if let Some(text) = stdin
        && let Some(mut pipe) = child.stdin.take()
    {
        pipe.write_all(text.as_bytes())
            .await
            .map_err(|e| format!("writing to `{}`: {e}", argv[0]))?;
        drop(pipe);
    }
    match tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output()).await {
        Ok(r) => r.map_err(|e| format!("`{}`: {e}", argv[0])),
        Err(_) => Err(format!(
            "`{}` did not finish within {} s",
            argv.join(" "),
            COMMAND_TIMEOUT.as_secs()
        )),
    }
}
