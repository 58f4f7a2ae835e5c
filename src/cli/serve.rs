//! `drover server start|stop`, `drover status`, `drover scale`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::anyhow;

use super::{Failure, client_failure, hostname, input, load_access, load_site_to_submit, runtime, runtime_builder, site_advertise};
use crate::core::CoreConfig;
use crate::server::client::Session;
use crate::server::{self, ServerOptions};
use crate::transport::Access;

/// `drover server start`.
#[derive(clap::Args, Debug)]
pub struct StartArgs {
    #[command(flatten)]
    dir: super::DirArg,
    /// Listen on exactly this address (UDP for QUIC, TCP beside it) instead of the
    /// announced ones: e.g. 0.0.0.0:7000 for every address, behind NAT or a port forward.
    #[arg(long, value_name = "ADDR:PORT")]
    bind: Option<SocketAddr>,
    /// The port to listen on, on every announced address (default: a free one).
    #[arg(long, default_value_t = 0, conflicts_with = "bind")]
    port: u16,
    /// Host name or address workers dial (repeatable; default: --interface's address,
    /// else the site's interface, else this host's name, its interfaces' addresses when
    /// the name resolves here to loopback only, and 127.0.0.1). The server listens on
    /// these addresses only, unless --bind says otherwise.
    #[arg(long, conflicts_with = "interface")]
    advertise: Vec<String>,
    /// The network interface workers reach this host on (e.g. ib0): its address is
    /// announced in the access file, and the server listens only there.
    #[arg(long, value_name = "NAME")]
    interface: Option<String>,
    /// Get workers through this site's batch system (bundled name or file).
    #[arg(long)]
    site: Option<String>,
    /// Workers to hold from the start (with --site).
    #[arg(long, default_value_t = 0)]
    workers: u32,
    /// Serve the dashboard here (`drover dashboard` prints its URL).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:0")]
    dashboard: SocketAddr,
    /// No dashboard.
    #[arg(long)]
    no_dashboard: bool,
    /// How long a task may run before its worker is taken for stuck and its tasks run
    /// elsewhere: a multiple of the slowest task so far ("10x", the default, never
    /// under 10 minutes) or a duration ("90s", "5m").
    #[arg(long, value_name = "LIMIT", value_parser = crate::server::actor::hung::TaskTimeout::parse)]
    task_timeout: Option<crate::server::actor::hung::TaskTimeout>,
}

pub fn start(args: &StartArgs) -> Result<(), Failure> {
    let dir = &args.dir.get();
    let (advertise, workers) = (args.advertise.clone(), args.workers);
    let dashboard = (!args.no_dashboard).then_some(args.dashboard);
    let site = args.site.as_deref().map(load_site_to_submit).transpose()?;
    let iface_ip = match &args.interface {
        Some(name) => Some(crate::transport::interface_addr(name).map_err(|e| input(anyhow!("--interface {name}: {e}")))?),
        None => None,
    };
    let listen = match (args.bind, iface_ip) {
        (Some(mut bind), Some(ip)) if bind.ip().is_unspecified() => {
            bind.set_ip(ip);
            server::Listen::On(bind)
        }
        (Some(bind), _) => server::Listen::On(bind),
        (None, _) => server::Listen::Announced { port: args.port },
    };
    if workers > 0 && site.is_none() {
        return Err(input(anyhow!(
            "--workers {workers} needs --site: without a batch site, start workers with `drover worker --access`"
        )));
    }
    let advertise = if !advertise.is_empty() {
        advertise
    } else if let Some(ip) = iface_ip {
        vec![ip.to_string()]
    } else if let Some(s) = &site {
        site_advertise(s)?
    } else {
        match listen {
            server::Listen::On(bind) if !bind.ip().is_unspecified() => vec![bind.ip().to_string()],
            server::Listen::On(_) | server::Listen::Announced { .. } => {
                crate::transport::listen::default_announced(&hostname(), true).map_err(runtime)?
            }
        }
    };
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
        let opts = ServerOptions {
            dir: dir.to_path_buf(),
            listen,
            advertise,
            core: CoreConfig::default(),
            site,
            workers,
            give_up_after: None,
            dashboard,
            task_timeout: args.task_timeout.unwrap_or_default(),
        };
        let handle = server::start(opts).await.map_err(|e| match e {
            e @ (server::StartError::Dashboard { .. }
            | server::StartError::Listen(crate::transport::listen::ListenError::NotLocal { .. })
            | server::StartError::Listen(crate::transport::listen::ListenError::Nothing { .. })) => input(e),
            e => runtime(e),
        })?;
        let addrs: Vec<String> = handle.addrs.iter().map(ToString::to_string).collect();
        eprintln!(
            "drover: server listening on {}; access file {}",
            addrs.join(", "),
            handle.access_path.display()
        );
        if handle.dashboard.is_some() {
            eprintln!(
                "drover: dashboard: `drover dashboard --dir {}` prints its URL (it carries a key: keep it private)",
                dir.display()
            );
        }
        let stop = handle.stop_signal();
        let wait = handle.wait();
        tokio::pin!(wait);
        tokio::select! {
            _ = &mut wait => {}
            _ = super::interrupted() => { let _ = stop.send(server::actor::Event::Stop); wait.await; }
        }
        eprintln!("drover: server stopped");
        Ok(())
    })
}

pub fn stop(dir: &Path) -> Result<(), Failure> {
    let access = load_access(dir, "--dir")?;
    runtime_builder()?.block_on(async {
        let s = Session::open(&access).await.map_err(runtime)?;
        s.stop().await.map_err(runtime)
    })?;
    eprintln!("drover: server in {} stopped", dir.display());
    Ok(())
}

pub fn scale(dir: &Path, workers: u32) -> Result<(), Failure> {
    let access = load_access(dir, "--dir")?;
    runtime_builder()?.block_on(async {
        let s = Session::open(&access).await.map_err(runtime)?;
        s.scale(workers).await.map_err(client_failure)
    })?;
    eprintln!("drover: scaling to {workers} workers");
    Ok(())
}

pub fn adapt(dir: &Path, min: u32, max: u32) -> Result<(), Failure> {
    if min > max || max == 0 {
        return Err(input(anyhow!("--min {min} --max {max}: the pool needs min <= max and max >= 1")));
    }
    let access = load_access(dir, "--dir")?;
    runtime_builder()?.block_on(async {
        let s = Session::open(&access).await.map_err(runtime)?;
        s.adapt(min, max).await.map_err(client_failure)
    })?;
    eprintln!("drover: sizing the pool from the backlog, {min} to {max} workers");
    Ok(())
}

pub fn status(dir: &Path, json: bool) -> Result<(), Failure> {
    let access = load_access(dir, "--dir")?;
    let status = runtime_builder()?
        .block_on(async { Session::open(&access).await?.status().await })
        .map_err(runtime)?;
    if json {
        println!("{}", serde_json::to_string(&status).map_err(runtime)?);
        return Ok(());
    }
    println!("workers: {}", status.workers.len());
    for w in &status.workers {
        let job = w.batch_job.as_deref().unwrap_or("-");
        let node = w.node.as_deref().map(|n| format!(" node={n}")).unwrap_or_default();
        let via = match w.transport.as_str() {
            "quic" => String::new(),
            other => format!(" transport={other}"),
        };
        println!(
            "  w{:<5} {}:{} threads={} queued={} batch-job={job}{node}{via}",
            w.id, w.host, w.pid, w.threads, w.assigned
        );
    }
    if let Some(t) = status.target {
        let how = status.adapt.map(|(a, b)| format!(" (adaptive {a}..{b})")).unwrap_or_default();
        println!(
            "pool: target {t} workers{how}, {} batch jobs",
            status.jobs.iter().filter(|j| j.state != "gone").count()
        );
        for j in &status.jobs {
            println!(
                "  job {:<20} {:<8} workers={}{}",
                j.id,
                j.state,
                j.workers,
                if j.retiring { " (retiring)" } else { "" }
            );
        }
    }
    if let Some(f) = &status.submit_failure {
        println!("submission failing: {f}");
    }
    for l in &status.lost_workers {
        let job = l.batch_job.as_deref().map(|j| format!(" batch-job={j}")).unwrap_or_default();
        println!(
            "lost: w{} {}:{}{job}: {} ({} tasks requeued)",
            l.id, l.host, l.pid, l.reason, l.tasks_requeued
        );
    }
    match (status.running_job, status.progress) {
        (Some(j), Some((d, t))) => println!("job {j}: {d}/{t} tasks"),
        _ => println!("no workload running"),
    }
    println!(
        "tasks done: {}, retried: {}, workers lost: {}",
        status.tasks_done, status.tasks_retried, status.workers_lost
    );
    Ok(())
}

/// `drover dashboard`: the URL of the server's dashboard.
pub fn dashboard(dir: &Path) -> Result<(), Failure> {
    let access = load_access(dir, "--dir")?;
    match access.dashboard {
        Some(url) => {
            println!("{url}");
            if let Some(port) = url
                .split("//")
                .nth(1)
                .and_then(|h| h.split('/').next())
                .and_then(|h| h.rsplit(':').next())
            {
                eprintln!("drover: from a laptop: ssh -L {port}:127.0.0.1:{port} LOGIN-NODE, then open the URL there");
            }
            Ok(())
        }
        None => Err(input(anyhow!(
            "the server in \"{}\" runs without a dashboard; start it without --no-dashboard",
            dir.display()
        ))),
    }
}
