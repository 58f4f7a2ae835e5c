//! Simulated workers for the scale benchmark (issue 15): N workers over real QUIC
//! from one process (one UDP socket): the real handshake with the pinned
//! certificate, the token, registration (`Hello` -> `Welcome`), heartbeats carrying
//! load, and task-job commands finished at once (no process is spawned: each command
//! is reported started and exited 0 as soon as it arrives, so the server's side of
//! a task is all that is measured).
//!
//!   cargo run --release --example loadgen -- --access SRV/access.toml --workers 1000
//!
//! Prints JSON lines on stdout: `{"event":"registered","workers":N,"seconds":S}` once
//! every worker joined, then `{"event":"done","tasks":T}` when stdin closes (the
//! workers leave with their connections closed) or nothing when it is killed (the
//! workers vanish without a word, as a lost node's do).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use drover::proto::jobs::End;
use drover::proto::{self, Hello, PROTOCOL_VERSION, PeerMsg, Role, ServerMsg, WorkerInfo};
use drover::transport::{self, Access};
use tokio::sync::{Semaphore, mpsc};

struct Args {
    access: std::path::PathBuf,
    workers: usize,
    threads: u32,
    heartbeat: Duration,
    idle: Duration,
    handshakes: usize,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        access: std::path::PathBuf::new(),
        workers: 0,
        threads: 1,
        heartbeat: Duration::from_secs(5),
        idle: Duration::from_secs(30),
        handshakes: 256,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().ok_or(format!("{k} needs a value"));
        match k.as_str() {
            "--access" => a.access = v()?.into(),
            "--workers" => a.workers = v()?.parse().map_err(|e| format!("--workers: {e}"))?,
            "--threads" => a.threads = v()?.parse().map_err(|e| format!("--threads: {e}"))?,
            "--heartbeat" => a.heartbeat = Duration::from_secs_f64(v()?.parse().map_err(|e| format!("--heartbeat: {e}"))?),
            "--idle" => a.idle = Duration::from_secs_f64(v()?.parse().map_err(|e| format!("--idle: {e}"))?),
            "--handshakes" => a.handshakes = v()?.parse().map_err(|e| format!("--handshakes: {e}"))?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.workers == 0 || a.access.as_os_str().is_empty() {
        return Err("usage: loadgen --access ACCESS --workers N [--threads T] [--heartbeat S] [--idle S] [--handshakes K]".into());
    }
    Ok(a)
}

#[derive(Default)]
struct Stats {
    registered: AtomicU64,
    tasks: AtomicU64,
    failed: AtomicU64,
}

/// What every simulated worker shares.
struct Ctx {
    endpoint: quinn::Endpoint,
    config: quinn::ClientConfig,
    addr: SocketAddr,
    token: String,
    args: Arc<Args>,
    stats: Arc<Stats>,
    /// Handshakes in flight at most.
    gate: Semaphore,
    /// true when a worker joined, false when one failed.
    registered: mpsc::UnboundedSender<bool>,
}

/// One simulated worker: join, then finish every command at once until told to stop.
async fn worker(i: usize, cx: Arc<Ctx>) -> Result<(), String> {
    let (a, stats) = (&cx.args, &cx.stats);
    let permit = cx.gate.acquire().await.map_err(|e| e.to_string())?;
    let conn = cx
        .endpoint
        .connect_with(cx.config.clone(), cx.addr, transport::SERVER_NAME)
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let hello = Hello {
        version: PROTOCOL_VERSION,
        role: Role::Worker,
        token: cx.token.clone(),
        worker: Some(WorkerInfo {
            host: format!("sim{}-{i:05}", std::process::id()),
            pid: std::process::id(),
            threads: a.threads,
            memory: 1 << 30,
            batch_job: None,
            node: None,
            walltime_left_ms: None,
            memory_bound: None,
            shared_fs: drover::exec::hdf::shared_fs::SharedFs::Off,
            transport: "quic".into(),
        }),
    };
    proto::write_frame(&mut send, &PeerMsg::Hello(hello), &[])
        .await
        .map_err(|e| e.to_string())?;
    match proto::read_frame::<_, ServerMsg>(&mut recv).await {
        Ok((ServerMsg::Welcome { .. }, _)) => {}
        Ok((other, _)) => return Err(format!("not welcomed: {other:?}")),
        Err(e) => return Err(format!("not welcomed: {e}")),
    }
    drop(permit);
    stats.registered.fetch_add(1, Ordering::Relaxed);
    let _ = cx.registered.send(true);
    // A reader task: a frame read must never be cancelled halfway.
    let (tx, mut rx) = mpsc::unbounded_channel::<ServerMsg>();
    tokio::spawn(async move {
        while let Ok((msg, _)) = proto::read_frame::<_, ServerMsg>(&mut recv).await {
            if tx.send(msg).is_err() {
                break;
            }
        }
    });
    let mut beat = tokio::time::interval(a.heartbeat);
    beat.tick().await;
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(ServerMsg::RunCommands { job, tasks }) => {
                    for t in tasks {
                        let started = PeerMsg::TaskStarted { job, task: t.task };
                        let ended = PeerMsg::TaskEnded { job, task: t.task, end: End::Exited(0), millis: 0 };
                        for m in [started, ended] {
                            proto::write_frame(&mut send, &m, &[]).await.map_err(|e| e.to_string())?;
                        }
                        stats.tasks.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Some(ServerMsg::Shutdown { .. }) | None => break,
                Some(_) => {}
            },
            _ = beat.tick() => {
                let load = PeerMsg::Load { rss_bytes: 16 << 20, cpu_ms: 0, running_ms: 0 };
                proto::write_frame(&mut send, &load, &[]).await.map_err(|e| e.to_string())?;
            }
        }
    }
    let _ = send.finish();
    conn.close(0u32.into(), b"bye");
    Ok(())
}

#[tokio::main]
async fn main() {
    let a = match args() {
        Ok(a) => Arc::new(a),
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(2);
        }
    };
    let access = Access::load(&a.access).unwrap_or_else(|e| {
        eprintln!("loadgen: {e}");
        std::process::exit(2)
    });
    let config = transport::client_for(&access, a.idle).unwrap_or_else(|e| {
        eprintln!("loadgen: {e}");
        std::process::exit(2)
    });
    let addr: SocketAddr = tokio::net::lookup_host(access.addresses[0].as_str())
        .await
        .ok()
        .and_then(|mut it| it.next())
        .unwrap_or_else(|| {
            eprintln!("loadgen: cannot resolve {}", access.addresses[0]);
            std::process::exit(2)
        });
    let bind: SocketAddr = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("address");
    // One socket for all, with the buffers each worker's own socket gets: the default
    // would drop the server's answers to hundreds of handshakes at once.
    let endpoint = transport::endpoint(None, bind).unwrap_or_else(|e| {
        eprintln!("loadgen: {e}");
        std::process::exit(1)
    });
    let stats = Arc::new(Stats::default());
    let (reg_tx, mut reg_rx) = mpsc::unbounded_channel();
    let cx = Arc::new(Ctx {
        endpoint: endpoint.clone(),
        config,
        addr,
        token: access.token.expose().to_string(),
        args: a.clone(),
        stats: stats.clone(),
        gate: Semaphore::new(a.handshakes.max(1)),
        registered: reg_tx,
    });
    let t0 = Instant::now();
    let mut handles = Vec::with_capacity(a.workers);
    for i in 0..a.workers {
        let (cx, stats) = (cx.clone(), stats.clone());
        handles.push(tokio::spawn(async move {
            if let Err(e) = worker(i, cx.clone()).await {
                let _ = cx.registered.send(false);
                if stats.failed.fetch_add(1, Ordering::Relaxed) < 5 {
                    eprintln!("loadgen: worker {i}: {e}");
                }
            }
        }));
    }
    drop(cx);
    let (mut n, mut failed) = (0, 0);
    while n + failed < a.workers {
        match reg_rx.recv().await {
            Some(true) => n += 1,
            Some(false) => failed += 1,
            None => break,
        }
    }
    println!(
        "{{\"event\":\"registered\",\"workers\":{n},\"failed\":{},\"seconds\":{:.3}}}",
        stats.failed.load(Ordering::Relaxed),
        t0.elapsed().as_secs_f64()
    );
    // Until stdin closes (or the server sends every worker away).
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 64];
        while std::io::stdin().read(&mut buf).is_ok_and(|k| k > 0) {}
        let _ = closed_tx.send(());
    });
    let all_gone = async {
        for h in handles {
            let _ = h.await;
        }
    };
    tokio::select! {
        _ = closed_rx => {}
        _ = all_gone => {}
    }
    endpoint.close(0u32.into(), b"bye");
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    println!("{{\"event\":\"done\",\"tasks\":{}}}", stats.tasks.load(Ordering::Relaxed));
}
