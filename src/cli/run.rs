//! `drover run`: validate first, then run on an embedded local cluster, a running
//! server, or a pool from a batch site; print a summary or JSON.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow};
use tokio::process::{Child, Command};

use super::{
    Failure, RunArgs, client_failure, cores, drover_home, input, interrupted, load_access, load_site_to_submit, runtime, runtime_builder,
    site_advertise,
};
use crate::config::site::Site;
use crate::config::workload::{MemoryBound, Workload};
use crate::core::CoreConfig;
use crate::exec::geometry::fmt_shape;
use crate::exec::plan::Plan;
use crate::proto::Summary;
use crate::server::client::Session;
use crate::server::{self, ServerOptions};
use crate::transport::Access;

pub fn run(args: RunArgs) -> Result<(), Failure> {
    let mut workload = Workload::load(&args.workload).map_err(input)?;
    if args.workers == Some(0) {
        return Err(input(anyhow!("--workers 0: the run needs at least one worker")));
    }
    if args.threads == Some(0) {
        return Err(input(anyhow!("--threads 0: a worker needs at least one thread")));
    }
    let site = args.site.as_deref().map(load_site_to_submit).transpose()?;
    if site.as_ref().is_some_and(|s| s.adapt.is_none()) && args.workers.is_none() {
        return Err(input(anyhow!(
            "--site needs --workers N (how many workers to get from the batch system), or `adapt = {{ min, max }}` in the site file"
        )));
    }
    let workers = args.workers.unwrap_or_else(cores);
    let threads = args.threads.unwrap_or((cores() / workers).max(1));
    workload.memory = memory_bound(&args, site.as_ref(), workers, threads);
    // Validate everything (files, datasets, expressions, outputs) and size the tasks
    // to the memory bound before starting anything.
    let plan = Plan::build(&workload).map_err(input)?;
    if args.explain {
        print!(
            "{}",
            super::explain::explain(&plan, workload.memory.as_ref(), threads as u32, args.json)
        );
        return Ok(());
    }
    let decoded = decoded_inputs(&plan);
    // Output files there before the run, which a successful run replaces.
    let mut existing: Vec<std::path::PathBuf> = plan.user_outputs().iter().map(|o| o.file.clone()).filter(|f| f.exists()).collect();
    existing.sort();
    existing.dedup();
    if let Some(r) = &args.report {
        super::report::check_path("--report", r)?;
    }
    let extras = Extras {
        report: args.report.clone(),
        dashboard: args.dashboard,
        workload: std::fs::read_to_string(&args.workload).ok(),
        task_timeout: args.task_timeout.unwrap_or_default(),
    };
    let rt = runtime_builder()?;
    let progress = (!args.json && std::io::stdout().is_terminal()).then(|| progress_message(&decoded));
    let mut summary = match (&args.connect, site) {
        (Some(dir), _) => {
            let access = load_access(dir, "--connect")?;
            rt.block_on(async {
                let session = Session::open(&access).await.map_err(runtime)?;
                run_session(session, workload, progress).await
            })?
        }
        (None, Some(site)) => rt.block_on(on_site(workload, site, args.workers.unwrap_or(0) as u32, progress, &extras))?,
        (None, None) => rt.block_on(embedded(workload, workers, threads, progress, &extras))?,
    };
    summary.driver_peak_rss_bytes = crate::worker::peak_rss();
    print_summary(&summary, &decoded, &existing, args.json)
}

/// The memory each worker may use, which the plan is sized against: the flag, else
/// the site's memory per worker process, else (embedded) three quarters of this
/// machine's memory shared among the workers. A server reached with --connect sizes
/// nothing without the flag: its workers' memory is not known here.
fn memory_bound(args: &RunArgs, site: Option<&Site>, workers: usize, threads: usize) -> Option<MemoryBound> {
    let site_threads = site.map(Site::threads_per_worker);
    match (&args.memory_per_worker, site) {
        (Some(b), _) => Some(MemoryBound {
            bytes: b.bytes.0,
            threads: site_threads.unwrap_or(if args.connect.is_some() { cores() as u32 } else { threads as u32 }),
            source: format!("--memory-per-worker {}", b.text),
        }),
        (None, Some(s)) => s.memory_per_worker().map(|m| MemoryBound {
            bytes: m,
            threads: s.threads_per_worker(),
            source: format!(
                "the site's memory {} / {} process{}; set --memory-per-worker to change it",
                s.memory.map(|m| m.to_string()).unwrap_or_default(),
                s.processes,
                if s.processes == 1 { "" } else { "es" }
            ),
        }),
        (None, None) if args.connect.is_some() => None,
        (None, None) => {
            let total = crate::worker::total_memory();
            (total > 0).then(|| MemoryBound {
                bytes: total / 4 * 3 / workers.max(1) as u64,
                threads: threads as u32,
                source: format!(
                    "3/4 of this machine's {} shared by {workers} worker{}; set --memory-per-worker to change it",
                    crate::exec::memory::mib(total),
                    if workers == 1 { "" } else { "s" }
                ),
            })
        }
    }
}

/// What the run says of each input's CF decoding.
struct InputReport {
    name: String,
    cf: Option<crate::exec::hdf::cf::Cf>,
    /// Bytes of its values as stored (0 for a generated input).
    bytes: u64,
}

fn decoded_inputs(plan: &Plan) -> Vec<InputReport> {
    plan.inputs
        .iter()
        .filter(|i| i.staged.is_none())
        .map(|i| InputReport {
            name: i.name.clone(),
            cf: i.cf.clone(),
            bytes: if i.generate.is_some() {
                0
            } else {
                (i.shape.iter().product::<usize>() * i.dtype.size()) as u64
            },
        })
        .collect()
}

/// The progress line's message: which inputs are CF-decoded.
fn progress_message(inputs: &[InputReport]) -> String {
    let names: Vec<&str> = inputs.iter().filter(|i| i.cf.is_some()).map(|i| i.name.as_str()).collect();
    if names.is_empty() {
        String::new()
    } else {
        format!("CF-decoded: {}", names.join(", "))
    }
}

fn print_summary(summary: &Summary, inputs: &[InputReport], replaced: &[std::path::PathBuf], json: bool) -> Result<(), Failure> {
    for line in fp_warnings(summary) {
        eprintln!("{line}");
    }
    if json {
        let inputs: Vec<serde_json::Value> = inputs
            .iter()
            .map(|i| {
                let cf = i.cf.as_ref().map(|cf| {
                    serde_json::json!({
                        "fill_values": cf.fill_value.iter().chain(&cf.missing_values).collect::<Vec<_>>(),
                        "scale_factor": cf.scale_factor,
                        "add_offset": cf.add_offset,
                    })
                });
                serde_json::json!({"name": i.name, "decoded": i.cf.is_some(), "cf": cf})
            })
            .collect();
        let outputs: Vec<serde_json::Value> = summary
            .outputs
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let [div, invalid, overflow] = summary.fp_events.get(i).copied().unwrap_or_default();
                serde_json::json!({
                    "file": o.file, "dataset": o.dataset, "shape": o.shape, "dtype": o.dtype, "expr": o.expr,
                    "fp_events": {"divide_by_zero": div, "invalid": invalid, "overflow": overflow},
                })
            })
            .collect();
        let v = serde_json::json!({
            "tasks_total": summary.tasks_total,
            "tasks_retried": summary.tasks_retried,
            "tasks_resumed": summary.tasks_resumed,
            "workers_lost": summary.workers_lost,
            "workers_drained": summary.workers_drained,
            "blocks_written_by_workers": summary.blocks_written_by_workers,
            "blocks_sent_to_writer": summary.blocks_sent_to_writer,
            "writer_busy_seconds": summary.writer_busy_seconds,
            "bytes_read": summary.bytes_read,
            "seconds": summary.seconds,
            "workers": summary.workers,
            "inputs": inputs,
            "outputs": outputs,
            "driver_peak_rss_bytes": summary.driver_peak_rss_bytes,
            "worker_peak_rss_bytes": summary.worker_peak_rss_bytes,
            "workers_peak_rss_bytes": summary.workers_peak_rss_bytes,
            "replaced": replaced,
        });
        println!("{v}");
    } else {
        print!("{}", human_summary(summary, inputs, replaced));
    }
    Ok(())
}

/// One warning line per output whose elementwise operations divided by zero, made
/// NaN from numbers, or overflowed, as numpy warns of them.
fn fp_warnings(summary: &Summary) -> Vec<String> {
    let count = |n: u64, one: &str, many: &str| {
        let n_text = match n {
            0..10_000 => n.to_string(),
            10_000..1_000_000 => format!("{:.1}K", n as f64 / 1e3),
            1_000_000..1_000_000_000 => format!("{:.1}M", n as f64 / 1e6),
            _ => format!("{:.1}G", n as f64 / 1e9),
        };
        format!("{n_text} {}", if n == 1 { one } else { many })
    };
    summary
        .outputs
        .iter()
        .zip(&summary.fp_events)
        .enumerate()
        .filter(|(_, (_, e))| e.iter().any(|&n| n > 0))
        .map(|(i, (o, &[div, invalid, overflow]))| {
            let parts: Vec<String> = [
                (div, "division by zero (inf produced)", "divisions by zero (inf produced)"),
                (invalid, "invalid value (NaN produced)", "invalid values (NaN produced)"),
                (overflow, "overflow (inf produced)", "overflows (inf produced)"),
            ]
            .into_iter()
            .filter(|(n, ..)| *n > 0)
            .map(|(n, one, many)| count(n, one, many))
            .collect();
            format!("warning: outputs[{i}] (\"{}\"): {}", o.expr, parts.join(", "))
        })
        .collect()
}

/// The summary a person reads: outputs, what was resumed or replaced, decoded inputs.
fn human_summary(summary: &Summary, inputs: &[InputReport], replaced: &[std::path::PathBuf]) -> String {
    use std::fmt::Write;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "drover: {} output(s) in {:.2} s ({} tasks, {:.1} MB read, {} worker{})",
        summary.outputs.len(),
        summary.seconds,
        summary.tasks_total,
        summary.bytes_read as f64 / 1e6,
        summary.workers,
        if summary.workers == 1 { "" } else { "s" }
    );
    for o in &summary.outputs {
        let _ = writeln!(t, "  {}:{}  {} {}  = {}", o.file, o.dataset, fmt_shape(&o.shape), o.dtype, o.expr);
    }
    // Reading more than the inputs hold is expected, and said: a stage that needs a
    // reduction's result (an anomaly) reads its input again after the reduction.
    let held: u64 = inputs.iter().map(|i| i.bytes).sum();
    if held > 0 && summary.bytes_read as f64 > 1.05 * held as f64 {
        let _ = writeln!(
            t,
            "  read {:.1} MB, {:.1}x the {:.1} MB the inputs hold: every stage reads what it needs (an anomaly reads its input once for the mean and again for the difference)",
            summary.bytes_read as f64 / 1e6,
            summary.bytes_read as f64 / held as f64,
            held as f64 / 1e6
        );
    }
    if summary.tasks_resumed > 0 {
        let _ = writeln!(
            t,
            "  resumed: {} of {} tasks were done by an earlier, interrupted run (kept in its journal)",
            summary.tasks_resumed, summary.tasks_total
        );
    }
    for f in replaced {
        let _ = writeln!(t, "  replaced {}", f.display());
    }
    for i in inputs {
        if let Some(cf) = &i.cf {
            let _ = writeln!(t, "  input {}: CF-decoded ({})", i.name, cf.attributes().join(", "));
        }
    }
    t
}

/// A rate rounded to three significant digits (`9.66`, `123`, `45600`).
fn three_digits(v: f64) -> String {
    if !v.is_finite() || v <= 0.0 {
        return "0".into();
    }
    let digits = v.log10().floor() as i32;
    let decimals = (2 - digits).max(0) as usize;
    let scale = 10f64.powi(digits - 2);
    let rounded = if digits > 2 { (v / scale).round() * scale } else { v };
    format!("{rounded:.decimals$}")
}

async fn run_session(session: Session, workload: Workload, progress: Option<String>) -> Result<Summary, Failure> {
    let bar = progress.map(|message| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} tasks ({rate}, eta {eta}) {msg}")
                .expect("valid template")
                .with_key("rate", |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{} tasks/s", three_digits(s.per_sec()));
                }),
        );
        b.set_message(message);
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

/// A server in this process whose workers come from a batch site; every job it
/// started is cancelled before returning, and the queue is checked empty.
async fn on_site(workload: Workload, mut site: Site, workers: u32, progress: Option<String>, extras: &Extras) -> Result<Summary, Failure> {
    let home = drover_home();
    let dir = home.join("runs").join(format!("run-{}", std::process::id()));
    if site.log_dir.is_none() {
        site.log_dir = Some(home.join("logs"));
    }
    let advertise = site_advertise(&site)?;
    let opts = ServerOptions {
        dir: dir.clone(),
        listen: server::Listen::Announced { port: 0 },
        advertise,
        core: CoreConfig::default(),
        site: Some(site),
        workers,
        give_up_after: Some(3),
        dashboard: extras.dashboard_addr(),
        task_timeout: extras.task_timeout,
    };
    let handle = server::start(opts).await.map_err(runtime)?;
    extras.announce(&handle);
    let access = Access::load(&handle.access_path).map_err(runtime)?;
    let result = async {
        let session = Session::open(&access).await.map_err(runtime)?.in_process();
        tokio::select! {
            r = run_session(session, workload, progress) => r,
            why = interrupted() => Err(runtime(anyhow!("{why}"))),
        }
    }
    .await;
    extras.write_report(&handle, &result).await?;
    // Cancels every job and waits until the batch system shows none.
    handle.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Seconds without any connected worker after which an embedded run gives up.
const DESERTED_AFTER: u32 = 15;

/// The embedded local cluster: a server in this process and `n` worker processes over
/// loopback QUIC, stopped at the end whatever happens.
async fn embedded(workload: Workload, n: usize, threads: usize, progress: Option<String>, extras: &Extras) -> Result<Summary, Failure> {
    sweep_stale_folders(&std::env::temp_dir());
    let dir = tempfile::Builder::new()
        .prefix("drover-")
        .tempdir()
        .context("creating the server folder")
        .map_err(runtime)?;
    // Whose folder this is: a run killed with SIGKILL cannot remove it; the next
    // run does (`sweep_stale_folders`).
    std::fs::write(dir.path().join(OWNER_FILE), std::process::id().to_string())
        .context("creating the server folder")
        .map_err(runtime)?;
    let opts = ServerOptions {
        dir: dir.path().to_path_buf(),
        listen: server::Listen::On("127.0.0.1:0".parse().expect("loopback address")),
        advertise: vec!["127.0.0.1".into()],
        core: CoreConfig::default(),
        site: None,
        workers: 0,
        give_up_after: None,
        dashboard: extras.dashboard_addr(),
        task_timeout: extras.task_timeout,
    };
    let handle = server::start(opts).await.map_err(runtime)?;
    extras.announce(&handle);
    let access = Access::load(&handle.access_path).map_err(runtime)?;
    let memory = workload.memory.as_ref().map(|m| m.bytes.to_string());
    let exe = std::env::current_exe().context("locating the drover executable").map_err(runtime)?;
    let mut children: Vec<Child> = Vec::with_capacity(n);
    for _ in 0..n {
        let mut cmd = Command::new(&exe);
        let parent = std::process::id();
        // SAFETY: only async-signal-safe calls (prctl, getppid) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // The worker gets SIGTERM when this process dies, however it dies
                // (SIGKILL included), instead of waiting out its death timeout.
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM).map_err(std::io::Error::from)?;
                if nix::unistd::getppid().as_raw() as u32 != parent {
                    return Err(std::io::Error::other("drover run exited before its worker started"));
                }
                Ok(())
            });
        }
        let child = cmd
            .env(super::EMBEDDED_WORKER, "1")
            .arg("worker")
            .arg("--access")
            .arg(&handle.access_path)
            .args(["--threads", &threads.to_string(), "--death-timeout", "10"])
            .args(memory.iter().flat_map(|m| ["--memory-per-worker", m.as_str()]))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting a worker process")
            .map_err(runtime)?;
        children.push(child);
    }
    let result = {
        let session = Session::open(&access).await.map(Session::in_process).map_err(runtime);
        let all_exited = async {
            let mut codes = Vec::new();
            for c in children.iter_mut() {
                codes.push(c.wait().await.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()));
            }
            codes
        };
        // Workers that joined and are all gone (lost, told to exit as stuck) while one
        // of their processes cannot end (stuck in the kernel): nothing would run the
        // tasks left, and `all_exited` would wait for that process forever.
        let deserted = async {
            let (mut joined, mut alone) = (false, 0u32);
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if handle.workers_connected() > 0 {
                    (joined, alone) = (true, 0);
                } else if joined {
                    alone += 1;
                    if alone >= DESERTED_AFTER {
                        return;
                    }
                }
            }
        };
        match session {
            Err(e) => Err(e),
            Ok(session) => tokio::select! {
                r = run_session(session, workload, progress) => r,
                codes = all_exited => Err(runtime(anyhow!(
                    "all {n} worker processes exited before the run finished ({}); see their messages above",
                    codes.join(", ")
                ))),
                _ = deserted => Err(runtime(anyhow!(
                    "no worker has been connected for {DESERTED_AFTER} s (each exited, was lost or was told to exit); see their messages above"
                ))),
                why = interrupted() => Err(runtime(anyhow!("{why}"))),
            },
        }
    };
    // The report first, while the workers are still there to be shown.
    let reported = extras.write_report(&handle, &result).await;
    // The workers go first, while the server and its folder are still there: one still
    // starting or connecting would otherwise find them gone and say so. SIGTERM ends a
    // worker cleanly (the run is over: nothing of it is running).
    for c in children.iter_mut() {
        if let (Ok(None), Some(pid)) = (c.try_wait(), c.id()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
        }
    }
    for c in children.iter_mut() {
        if tokio::time::timeout(Duration::from_secs(5), c.wait()).await.is_err() {
            // A worker stuck in the kernel (a read its file server never answers) ends
            // only when that read does: it is not waited for.
            let _ = c.start_kill();
            if tokio::time::timeout(Duration::from_secs(5), c.wait()).await.is_err() {
                tracing::warn!(pid = c.id(), "a worker process does not end (stuck in the kernel); leaving it");
            }
        }
    }
    handle.stop().await;
    reported?;
    result
}

/// What a run with its own server may add: a report file, a dashboard.
struct Extras {
    report: Option<PathBuf>,
    dashboard: bool,
    workload: Option<String>,
    task_timeout: server::actor::hung::TaskTimeout,
}

impl Extras {
    fn dashboard_addr(&self) -> Option<std::net::SocketAddr> {
        self.dashboard.then(|| "127.0.0.1:0".parse().expect("loopback address"))
    }

    fn announce(&self, handle: &server::ServerHandle) {
        if let Some(url) = &handle.dashboard {
            eprintln!("drover: dashboard at {url}");
        }
    }

    /// Write the report, whatever the run's outcome (a failed run's report shows why).
    async fn write_report(&self, handle: &server::ServerHandle, result: &Result<Summary, Failure>) -> Result<(), Failure> {
        let Some(path) = &self.report else { return Ok(()) };
        let summary = result.as_ref().ok().and_then(|s| serde_json::to_value(s).ok());
        let html = handle.report(self.workload.as_deref(), summary.as_ref()).await;
        super::report::write("--report", path, &html)
    }
}

/// The file in an embedded run's private folder naming the process it belongs to.
const OWNER_FILE: &str = "owner.pid";

/// Remove the private folders (`drover-*` in `tmp`) of embedded runs whose process is
/// gone (killed with SIGKILL, or the machine lost power): each names its owner in
/// `OWNER_FILE`. Folders without one, or of live processes, are left alone.
fn sweep_stale_folders(tmp: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else { return };
    for e in entries.flatten() {
        let path = e.path();
        if !e.file_name().to_string_lossy().starts_with("drover-") || !path.is_dir() {
            continue;
        }
        let Some(pid) = std::fs::read_to_string(path.join(OWNER_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        else {
            continue;
        };
        let gone = matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        );
        if gone {
            tracing::info!(folder = %path.display(), pid, "removing the folder of a run that was killed");
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::three_digits;

    #[test]
    fn the_human_summary_says_what_was_resumed_and_replaced() {
        let s = crate::proto::Summary {
            tasks_total: 80,
            tasks_resumed: 30,
            workers: 1,
            ..Default::default()
        };
        let t = super::human_summary(&s, &[], &[std::path::PathBuf::from("/data/out.h5")]);
        assert!(t.contains("(80 tasks, 0.0 MB read, 1 worker)"), "{t}");
        assert!(t.contains("resumed: 30 of 80 tasks"), "{t}");
        assert!(t.contains("replaced /data/out.h5"), "{t}");
        let input = super::InputReport {
            name: "t".into(),
            cf: None,
            bytes: 100_000_000,
        };
        let twice = crate::proto::Summary {
            bytes_read: 200_000_000,
            workers: 2,
            ..Default::default()
        };
        let t = super::human_summary(&twice, std::slice::from_ref(&input), &[]);
        assert!(t.contains("read 200.0 MB, 2.0x the 100.0 MB the inputs hold"), "{t}");
        let once = crate::proto::Summary {
            bytes_read: 100_000_000,
            ..twice
        };
        assert!(!super::human_summary(&once, &[input], &[]).contains("the inputs hold"));
        let fresh = super::human_summary(
            &crate::proto::Summary {
                tasks_total: 80,
                workers: 2,
                ..Default::default()
            },
            &[],
            &[],
        );
        assert!(
            !fresh.contains("resumed") && !fresh.contains("replaced") && fresh.contains("2 workers)"),
            "{fresh}"
        );
    }

    #[test]
    fn folders_of_dead_runs_are_swept_and_others_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let mk = |name: &str, owner: Option<String>| {
            let d = tmp.path().join(name);
            std::fs::create_dir(&d).unwrap();
            if let Some(o) = owner {
                std::fs::write(d.join(super::OWNER_FILE), o).unwrap();
            }
            d
        };
        // a pid that cannot be alive: above the kernel's pid_max
        let dead = mk("drover-dead", Some("2147483000".into()));
        let live = mk("drover-live", Some(std::process::id().to_string()));
        let unowned = mk("drover-unowned", None);
        let other = mk("other-dead", Some("2147483000".into()));
        super::sweep_stale_folders(tmp.path());
        assert!(!dead.exists(), "a dead run's folder is removed");
        assert!(live.exists() && unowned.exists() && other.exists());
    }

    #[test]
    fn rates_keep_three_significant_digits() {
        assert_eq!(three_digits(9.6566), "9.66");
        assert_eq!(three_digits(123.456), "123");
        assert_eq!(three_digits(45612.0), "45600");
        assert_eq!(three_digits(0.012345), "0.0123");
        assert_eq!(three_digits(0.0), "0");
        assert_eq!(three_digits(f64::NAN), "0");
    }
}
