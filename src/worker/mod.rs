//! The worker process: connects back to the server, authenticates, and runs the tasks
//! it is given on a pool of threads sized to its cores.
//!
//! Three async tasks share one connection: the reader (plans, consts, assignments,
//! shutdown), the sender (batches finished results into few frames; heartbeats), and the
//! main task waiting for either to end. Task execution (HDF5 reads, kernels) happens on
//! plain OS threads fed from a queue; results cross back through a channel.

pub mod command;
mod host;
mod lane;
mod send;

pub use self::host::{batch_job_from_env, peak_rss, total_memory};

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock};
use std::time::Duration;

use ndarray::ArrayD;
use tokio::sync::mpsc;

use crate::exec::{self, plan::Plan};
use crate::proto::jobs::{CommandRef, CommandSpec, End};
use crate::proto::{self, Hello, PROTOCOL_VERSION, PeerMsg, Role, ServerMsg, TaskResult, WorkerInfo};
use crate::transport::{self, Access, ConnectError, TransportError};

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Access(#[from] TransportError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("{0}")]
    Rejected(String),
    #[error("lost the connection to the server: {0}")]
    Lost(String),
    #[error("the server told this worker to exit: {0}")]
    Told(String),
    #[error("could not reach the server for {secs} s (death timeout), giving up; last error: {last}")]
    DeathTimeout { secs: u64, last: String },
}

impl WorkerError {
    /// Bad input (the access file) rather than a runtime failure.
    pub fn is_input(&self) -> bool {
        matches!(self, WorkerError::Access(_))
    }
}

/// Options of `drover worker`.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    pub threads: usize,
    pub heartbeat: Duration,
    /// When the batch job ends, and its whole walltime: the worker drains before it.
    pub walltime: Option<(std::time::Instant, Duration)>,
    /// How long to keep trying to reach a lost (or not yet reachable) server.
    pub death_timeout: Duration,
    /// `--memory-per-worker`: the worker runs no more tasks at once than fit it.
    pub memory: Option<u64>,
    /// Whether it writes output chunks into the output file itself.
    pub shared_fs: crate::exec::hdf::shared_fs::SharedFs,
    /// How to dial the server, and an address to dial instead of the access file's.
    pub transport: transport::Transport,
    pub address: Option<String>,
}

struct JobCtx {
    plan: Plan,
    /// Per output: the file's chunks, when this worker writes its blocks itself.
    sinks: Vec<Option<exec::hdf::ChunkSink>>,
    datasets: OnceLock<Result<Vec<exec::Source>, String>>,
    consts: RwLock<HashMap<u32, Arc<ArrayD<f64>>>>,
}

/// A queued task: a block of an array workload, or a command of a task job.
enum Item {
    Block(proto::TaskRef),
    Command(CommandRef),
}

impl Item {
    fn task(&self) -> u32 {
        match self {
            Item::Block(t) => t.task,
            Item::Command(c) => c.task,
        }
    }
}

#[derive(Default)]
struct Queue {
    tasks: VecDeque<(u64, Item)>,
    stop: bool,
    /// Handing back what arrives; finishing what runs.
    draining: bool,
    /// Slots taken by the tasks being executed right now (a command takes its
    /// `--cores`).
    running: usize,
    /// Large results (at least [`LARGE_RESULT`] bytes) not yet handed to QUIC.
    unsent_large: usize,
}

/// Results this large count against the send back-pressure: a task thread starts a
/// new task only while fewer than `threads` of them wait to be sent, so a worker holds
/// at most two large results per thread (one sending, one being computed) however
/// slowly the server takes them.
const LARGE_RESULT: usize = 1 << 20;

struct Shared {
    threads: usize,
    /// Tasks that may run at once: `threads`, or fewer under a memory bound.
    limit: std::sync::atomic::AtomicUsize,
    memory: Option<u64>,
    shared_fs: crate::exec::hdf::shared_fs::SharedFs,
    queue: Mutex<Queue>,
    ready: Condvar,
    jobs: RwLock<HashMap<u64, Arc<JobCtx>>>,
    /// How the commands of each (task job, group) run.
    commands: RwLock<HashMap<(u64, u32), Arc<CommandSpec>>>,
    /// Running commands, to stop them.
    stops: Mutex<HashMap<(u64, u32), command::Stop>>,
    /// This worker's id at the server (`DROVER_WORKER_ID`).
    worker_id: u32,
    /// When its batch job ends.
    walltime_end: Option<std::time::Instant>,
    host: String,
    /// Longest task seen, in milliseconds (sizes the walltime margin).
    longest_task_ms: std::sync::atomic::AtomicU64,
    /// Per task thread, when its running array task started (heartbeats report the
    /// oldest, so that the server sees a task stuck in a read that never returns).
    running_since: Vec<Mutex<Option<std::time::Instant>>>,
}

impl Shared {
    /// How long the longest-running array task has been running.
    fn running_for(&self) -> Duration {
        self.running_since
            .iter()
            .filter_map(|s| *s.lock().expect("running lock"))
            .map(|t| t.elapsed())
            .max()
            .unwrap_or_default()
    }
}

enum Out {
    Done {
        job: u64,
        result: TaskResult,
        payload: Vec<u8>,
    },
    Error {
        job: u64,
        task: u32,
        message: String,
    },
    /// Tasks handed back before the walltime.
    Draining {
        released: Vec<(u64, u32)>,
    },
    Started {
        job: u64,
        task: u32,
    },
    /// A task not started: its time limit outlives the walltime.
    HandBack {
        job: u64,
        task: u32,
    },
    Ended {
        job: u64,
        task: u32,
        end: End,
        millis: u64,
    },
}

/// Run a worker until the server tells it to stop. A lost server is dialled again
/// until `death_timeout` has passed without a connection; then the worker exits, so a
/// crashed server never leaves jobs burning allocation.
pub async fn run(access_path: &Path, opts: WorkerOptions) -> Result<(), WorkerError> {
    let mut access = Access::load(access_path)?;
    access.dial_via(opts.transport, opts.address.as_deref());
    use tokio::signal::unix::{SignalKind, signal};
    let mut signals = Signals {
        term: signal(SignalKind::terminate()).map_err(|e| WorkerError::Lost(format!("installing signal handlers: {e}")))?,
        int: signal(SignalKind::interrupt()).map_err(|e| WorkerError::Lost(format!("installing signal handlers: {e}")))?,
    };
    let mut lost_since = std::time::Instant::now();
    let mut delay = Duration::from_millis(250);
    loop {
        let mut registered = false;
        let budget = opts.death_timeout.saturating_sub(lost_since.elapsed()).max(Duration::from_secs(1));
        match session(&access, &opts, budget, &mut registered, &mut signals).await {
            Ok(()) => return Ok(()),
            Err(
                e @ (WorkerError::Rejected(_)
                | WorkerError::Told(_)
                | WorkerError::Access(_)
                | WorkerError::Connect(ConnectError::CertificateMismatch { .. })),
            ) => {
                return Err(e);
            }
            Err(e) => {
                if registered {
                    lost_since = std::time::Instant::now();
                    delay = Duration::from_millis(250);
                }
                if lost_since.elapsed() >= opts.death_timeout {
                    return Err(WorkerError::DeathTimeout {
                        secs: opts.death_timeout.as_secs(),
                        last: e.to_string(),
                    });
                }
                tracing::warn!(error = %e, "server unreachable; retrying");
                let pause = delay.min(opts.death_timeout.saturating_sub(lost_since.elapsed()));
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = signals.term.recv() => return Ok(()),
                    _ = signals.int.recv() => return Ok(()),
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Termination signals, installed once per process.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

async fn session(
    access: &Access,
    opts: &WorkerOptions,
    budget: Duration,
    registered: &mut bool,
    signals: &mut Signals,
) -> Result<(), WorkerError> {
    let idle = (opts.death_timeout / 2).clamp(Duration::from_secs(5), Duration::from_secs(60));
    let dialed = transport::connect(access, Duration::from_secs(10).min(budget), idle).await?;
    let conn = dialed.conn.clone();
    tracing::debug!(transport = conn.kind().name(), remote = %conn.remote_address(), "connected");
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| WorkerError::Lost(e.to_string()))?;
    let info_host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "?".into());
    let info = WorkerInfo {
        host: info_host.clone(),
        pid: std::process::id(),
        threads: opts.threads as u32,
        memory: total_memory(),
        batch_job: batch_job_from_env(),
        node: ["SLURMD_NODENAME", "DROVER_NODE"]
            .iter()
            .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty())),
        memory_bound: opts.memory,
        shared_fs: opts.shared_fs,
        transport: conn.kind().name().to_string(),
        walltime_left_ms: opts
            .walltime
            .map(|(end, _)| end.saturating_duration_since(std::time::Instant::now()).as_millis() as u64),
    };
    let hello = Hello {
        version: PROTOCOL_VERSION,
        role: Role::Worker,
        token: access.token.expose().to_string(),
        worker: Some(info),
    };
    let lost = |e: proto::FrameError| WorkerError::Lost(e.to_string());
    proto::write_frame(&mut send, &PeerMsg::Hello(hello), &[]).await.map_err(lost)?;
    let id = match proto::read_frame::<_, ServerMsg>(&mut recv).await {
        Ok((ServerMsg::Welcome { id }, _)) => id,
        Ok((ServerMsg::Rejected { reason }, _)) => return Err(WorkerError::Rejected(reason)),
        // The server is stopping (an embedded run that just finished, `server stop`):
        // nothing to join and nothing wrong, so the worker leaves quietly.
        Ok((ServerMsg::Shutdown { reason }, _)) => {
            tracing::info!(%reason, "the server is stopping; leaving without joining");
            return Ok(());
        }
        Ok((other, _)) => return Err(WorkerError::Lost(format!("unexpected first message {other:?}"))),
        Err(e) => {
            // A rejection closes the connection; report its reason if that is what happened.
            if let Some(reason) = conn.peer_close_reason() {
                if stopped_on_purpose(&conn) {
                    tracing::info!("the server stopped before this worker joined; leaving");
                    return Ok(());
                }
                return Err(WorkerError::Rejected(String::from_utf8_lossy(&reason).into_owned()));
            }
            return Err(lost(e));
        }
    };
    *registered = true;
    let span = tracing::info_span!("worker", worker = id);
    let _enter = span.enter();
    tracing::info!(threads = opts.threads, "registered with the server");
    crate::exec::hdf::reader::set_read_threads(opts.threads);

    let shared = Arc::new(Shared {
        threads: opts.threads.max(1),
        limit: std::sync::atomic::AtomicUsize::new(opts.threads.max(1)),
        memory: opts.memory,
        shared_fs: opts.shared_fs,
        queue: Mutex::new(Queue::default()),
        ready: Condvar::new(),
        jobs: RwLock::new(HashMap::new()),
        commands: RwLock::new(HashMap::new()),
        stops: Mutex::new(HashMap::new()),
        worker_id: id,
        walltime_end: opts.walltime.map(|(end, _)| end),
        host: info_host.clone(),
        longest_task_ms: std::sync::atomic::AtomicU64::new(0),
        running_since: (0..opts.threads.max(1)).map(|_| Mutex::new(None)).collect(),
    });
    let (out_tx, out_rx) = mpsc::unbounded_channel::<Out>();
    let threads: Vec<_> = (0..opts.threads.max(1))
        .map(|i| {
            let shared = shared.clone();
            let out = out_tx.clone();
            std::thread::Builder::new()
                .name(format!("drover-task-{i}"))
                .spawn(move || task_loop(&shared, &out, i))
                .expect("spawn task thread")
        })
        .collect();
    let lane = lane::Dial::for_worker(access, &conn, id, idle);
    let sender = tokio::spawn(send::send_loop(send, out_rx, opts.heartbeat, shared.clone(), lane));
    // SIGTERM/SIGINT (scancel, qdel, walltime) end the worker like a Shutdown, but
    // without waiting for running tasks: the server requeues what this worker held.
    let mut signalled = false;
    let result = tokio::select! {
        r = read_loop(&mut recv, &shared, &out_tx) => r,
        _ = drain_before_walltime(&shared, &out_tx, opts.walltime) => Ok(()),
        _ = signals.term.recv() => { signalled = true; Ok(()) }
        _ = signals.int.recv() => { signalled = true; Ok(()) }
    };
    // A server that stopped on purpose (its run finished, `server stop`) closed the
    // connection saying so: that is an end, not a server to dial again.
    let result = match result {
        Err(WorkerError::Lost(_)) if stopped_on_purpose(&conn) => {
            tracing::info!("the server stopped; leaving");
            Ok(())
        }
        r => r,
    };
    // Told to exit (a task is stuck): leave like a signalled worker, without waiting
    // for the stuck task.
    signalled |= matches!(result, Err(WorkerError::Told(_)));
    let finishing = {
        let mut q = shared.queue.lock().expect("queue lock");
        q.stop = true;
        q.tasks.clear();
        q.draining
    };
    shared.ready.notify_all();
    // Commands still running: after a drain they finish (they were given within the
    // walltime); otherwise their process groups are stopped, at once when signalled.
    if !finishing || signalled {
        for stop in shared.stops.lock().expect("stops lock").values() {
            if signalled { stop.kill() } else { stop.cancel() }
        }
    }
    drop(out_tx);
    if signalled {
        tracing::info!("signalled; leaving");
    } else {
        for t in threads {
            let _ = t.join();
        }
        // The sender ends when all task threads dropped their result senders.
        let _ = tokio::time::timeout(Duration::from_secs(5), sender).await;
    }
    // Asked to stop, the worker has finished its stream and the server closes the
    // connection once it has read it all. Otherwise (or if that close does not come),
    // close from here and flush the close before the process exits, so the server sees
    // us leave at once instead of waiting for an idle timeout.
    // The wait is generous: closing first would drop frames the server has not read yet
    // (a late `Draining` hand-back among them, which the server would then count as
    // lost tasks and retry), and a loaded login node can take over a second to get to
    // them. A drained worker leaves at least 10 s before its walltime.
    let closed_by_server =
        !signalled && result.is_ok() && tokio::time::timeout(Duration::from_secs(5), recv.until_closed(&conn)).await.is_ok();
    // The close goes out at the endpoint's next turn; the wait only covers a busy
    // runtime, not the draining period (3 x PTO, 80 ms on loopback), which every
    // embedded run's end used to sit out. A connection the server closed first has
    // nothing to send.
    if !closed_by_server && conn.peer_close_reason().is_none() {
        conn.close(0, b"worker exiting");
        dialed.linger(Duration::from_millis(20)).await;
    }
    result
}

/// Whether the server closed the connection because it stopped on purpose.
fn stopped_on_purpose(conn: &transport::Conn) -> bool {
    conn.peer_close_reason().is_some_and(|r| r == proto::STOPPED_REASON)
}

/// Before the batch job's end, by a margin of at least 10 s and 3 times the longest
/// task seen (at most half the walltime): hand back queued tasks and tell the server.
/// The server answers `Drained` once it will assign nothing more; `read_loop` then
/// returns and the session ends like a `Shutdown`, finishing the running tasks and
/// reporting them. Leaving any earlier would drop an `Assign` already on its way, which
/// the server would count as lost and run again. Without an answer the worker still
/// leaves a few seconds before the walltime.
async fn drain_before_walltime(shared: &Shared, out: &mpsc::UnboundedSender<Out>, walltime: Option<(std::time::Instant, Duration)>) {
    let Some((end, total)) = walltime else {
        return std::future::pending().await;
    };
    loop {
        let longest = Duration::from_millis(shared.longest_task_ms.load(std::sync::atomic::Ordering::Relaxed));
        let margin = (longest * 3).max(Duration::from_secs(10)).min(total / 2);
        if std::time::Instant::now() + margin >= end {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let released: Vec<(u64, u32)> = {
        let mut q = shared.queue.lock().expect("queue lock");
        q.draining = true;
        q.tasks.drain(..).map(|(j, t)| (j, t.task())).collect()
    };
    tracing::info!(released = released.len(), "draining before the walltime");
    let _ = out.send(Out::Draining { released });
    let last_call = end.checked_sub(Duration::from_secs(3)).unwrap_or(end);
    tokio::time::sleep_until(last_call.into()).await;
    tracing::warn!("no answer to draining from the server; leaving before the walltime");
}

async fn read_loop(recv: &mut transport::RecvHalf, shared: &Shared, out: &mpsc::UnboundedSender<Out>) -> Result<(), WorkerError> {
    loop {
        let (msg, payload) = proto::read_frame::<_, ServerMsg>(recv)
            .await
            .map_err(|e| WorkerError::Lost(e.to_string()))?;
        match msg {
            ServerMsg::Job { job, plan, direct } => {
                let sinks = plan
                    .outputs
                    .iter()
                    .enumerate()
                    .map(|(i, out)| {
                        let d = direct.get(i)?.as_ref()?;
                        let sink = exec::hdf::ChunkSink::open(d, &out.shape, out.dtype.size(), shared.shared_fs);
                        tracing::debug!(output = i, direct = sink.is_some(), "output blocks");
                        sink
                    })
                    .collect();
                if let Some(bound) = shared.memory {
                    shared
                        .limit
                        .store(tasks_within(&plan, shared.threads, bound), std::sync::atomic::Ordering::Relaxed);
                }
                let ctx = JobCtx {
                    plan,
                    sinks,
                    datasets: OnceLock::new(),
                    consts: RwLock::new(HashMap::new()),
                };
                let mut jobs = shared.jobs.write().expect("jobs lock");
                jobs.retain(|&j, _| j >= job);
                jobs.insert(job, Arc::new(ctx));
            }
            ServerMsg::Const { job, id, shape } => {
                let mut off = 0;
                let arr = exec::take_f64(&payload, &mut off, &shape).ok_or_else(|| WorkerError::Lost("malformed const".into()))?;
                if let Some(ctx) = shared.jobs.read().expect("jobs lock").get(&job) {
                    ctx.consts.write().expect("consts lock").insert(id, Arc::new(arr));
                }
            }
            ServerMsg::Assign { job, tasks } => enqueue(shared, out, job, tasks.into_iter().map(Item::Block).collect()),
            ServerMsg::TaskJob { job, group, spec } => {
                shared.commands.write().expect("commands lock").insert((job, group), Arc::new(spec));
            }
            ServerMsg::RunCommands { job, tasks } => enqueue(shared, out, job, tasks.into_iter().map(Item::Command).collect()),
            ServerMsg::CancelTasks { job, tasks } => {
                let gone: std::collections::HashSet<u32> = tasks.into_iter().collect();
                shared
                    .queue
                    .lock()
                    .expect("queue lock")
                    .tasks
                    .retain(|(j, t)| *j != job || !gone.contains(&t.task()));
                for (&(j, t), stop) in shared.stops.lock().expect("stops lock").iter() {
                    if j == job && gone.contains(&t) {
                        stop.cancel();
                    }
                }
            }
            ServerMsg::Cancel { job } => {
                shared.queue.lock().expect("queue lock").tasks.retain(|(j, _)| *j != job);
                shared.jobs.write().expect("jobs lock").remove(&job);
                for (&(j, _), stop) in shared.stops.lock().expect("stops lock").iter() {
                    if j == job {
                        stop.cancel();
                    }
                }
            }
            ServerMsg::Shutdown { reason } => {
                tracing::info!(%reason, "server asked to stop");
                return Ok(());
            }
            ServerMsg::Exit { reason } => {
                tracing::warn!(%reason, "server told this worker to exit now");
                return Err(WorkerError::Told(reason));
            }
            ServerMsg::Drained => {
                tracing::info!("server saw the drain; finishing running tasks");
                return Ok(());
            }
            other => tracing::debug!(?other, "unexpected message"),
        }
    }
}

/// Queue tasks of `job`; a draining worker hands them straight back (they were sent
/// before the server saw it draining).
fn enqueue(shared: &Shared, out: &mpsc::UnboundedSender<Out>, job: u64, items: Vec<Item>) {
    let mut q = shared.queue.lock().expect("queue lock");
    if q.draining {
        drop(q);
        let _ = out.send(Out::Draining {
            released: items.iter().map(|t| (job, t.task())).collect(),
        });
        return;
    }
    q.tasks.extend(items.into_iter().map(|t| (job, t)));
    drop(q);
    shared.ready.notify_all();
}

/// How many of `threads` tasks of `plan` may run at once within `bound` bytes (at
/// least one: a plan that does not fit was refused by its planner, which knew the
/// run's bound; this one is the worker's own).
fn tasks_within(plan: &Plan, threads: usize, bound: u64) -> usize {
    let fp = exec::memory::footprint(plan, threads as u32);
    let fixed = fp.base + fp.inputs + fp.consts;
    let per = fp.per_thread().max(1);
    let n = (bound.saturating_sub(fixed) / per) as usize;
    if n < threads {
        tracing::info!(
            tasks = n.max(1),
            threads,
            bound = %exec::memory::mib(bound),
            per_task = %exec::memory::mib(per),
            "running fewer tasks at once to stay within --memory-per-worker"
        );
    }
    if n == 0 {
        tracing::warn!(
            needs = %exec::memory::mib(fixed + per),
            bound = %exec::memory::mib(bound),
            "one task of this job needs more than --memory-per-worker; running one at a time"
        );
    }
    n.clamp(1, threads)
}

fn task_loop(shared: &Shared, out: &mpsc::UnboundedSender<Out>, index: usize) {
    loop {
        let (job, item, slots) = {
            let mut q = shared.queue.lock().expect("queue lock");
            loop {
                if q.stop {
                    return;
                }
                // A command of several cores waits at the head of the queue until that
                // many slots are free (or none is taken: a worker smaller than the
                // task still runs it alone).
                let limit = shared.limit.load(std::sync::atomic::Ordering::Relaxed);
                let need = match q.tasks.front() {
                    Some((j, Item::Command(c))) => shared
                        .commands
                        .read()
                        .expect("commands lock")
                        .get(&(*j, c.group))
                        .map_or(1, |s| s.cores.max(1) as usize),
                    _ => 1,
                };
                if q.unsent_large < shared.threads
                    && (q.running + need <= limit || q.running == 0)
                    && let Some((job, item)) = q.tasks.pop_front()
                {
                    q.running += need;
                    break (job, item, need);
                }
                q = shared.ready.wait(q).expect("queue lock");
            }
        };
        let t = match item {
            Item::Block(t) => t,
            Item::Command(c) => {
                let msg = run_command(shared, out, job, c);
                let mut q = shared.queue.lock().expect("queue lock");
                q.running -= slots;
                drop(q);
                shared.ready.notify_all();
                if out.send(msg).is_err() {
                    return;
                }
                continue;
            }
        };
        let Some(ctx) = shared.jobs.read().expect("jobs lock").get(&job).cloned() else {
            shared.queue.lock().expect("queue lock").running -= 1;
            continue;
        };
        let started = std::time::Instant::now();
        *shared.running_since[index].lock().expect("running lock") = Some(started);
        let span = tracing::debug_span!("task", job, task = t.task, stage = t.stage, block = t.block);
        let _e = span.enter();
        let run = || -> Result<exec::BlockResult, String> {
            let datasets = ctx
                .datasets
                .get_or_init(|| exec::open_inputs(&ctx.plan).map_err(|e| e.to_string()))
                .as_ref()
                .map_err(Clone::clone)?;
            let consts = |c: u32| ctx.consts.read().expect("consts lock").get(&c).cloned();
            exec::execute_block(&ctx.plan, datasets, &consts, t.stage, t.block).map_err(|e| e.to_string())
        };
        let msg = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
            Ok(Ok(r)) => {
                let written = write_direct(&ctx, t.stage, t.block, &r.payload);
                let payload = if written {
                    exec::buffers::PAYLOADS.give(r.payload);
                    Vec::new()
                } else {
                    r.payload
                };
                Out::Done {
                    job,
                    result: TaskResult {
                        task: t.task,
                        bytes_read: r.bytes_read,
                        len: payload.len() as u64,
                        micros: started.elapsed().as_micros() as u64,
                        written,
                        fp: r.fp,
                    },
                    payload,
                }
            }
            Ok(Err(message)) => Out::Error {
                job,
                task: t.task,
                message,
            },
            Err(p) => {
                let what = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Out::Error {
                    job,
                    task: t.task,
                    message: format!("worker panicked: {what}"),
                }
            }
        };
        *shared.running_since[index].lock().expect("running lock") = None;
        shared
            .longest_task_ms
            .fetch_max(started.elapsed().as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
        let large = matches!(&msg, Out::Done { payload, .. } if payload.len() >= LARGE_RESULT);
        let mut q = shared.queue.lock().expect("queue lock");
        q.running -= 1;
        q.unsent_large += usize::from(large);
        drop(q);
        // A thread held back by the memory bound may start now.
        shared.ready.notify_one();
        if out.send(msg).is_err() {
            return;
        }
    }
}

/// Run one command of task job `job` to its end; the message reporting how it ended.
fn run_command(shared: &Shared, out: &mpsc::UnboundedSender<Out>, job: u64, c: CommandRef) -> Out {
    let started = std::time::Instant::now();
    let Some(spec) = shared.commands.read().expect("commands lock").get(&(job, c.group)).cloned() else {
        tracing::warn!(job, task = c.task, "a command of an unknown task job");
        return Out::Ended {
            job,
            task: c.task,
            end: End::Exited(127),
            millis: 0,
        };
    };
    let span = tracing::debug_span!("task", job, task = c.id);
    let _e = span.enter();
    // The server holds back such tasks from this worker already (it knows the
    // walltime from the hello); this is for a task already queued. The second of
    // slack keeps both sides' clocks from handing one back and forth.
    if let (Some(limit), Some(end)) = (spec.time_limit, shared.walltime_end)
        && std::time::Instant::now() + limit > end + Duration::from_secs(1)
    {
        tracing::info!(limit = ?limit, "handing back a task whose time limit outlives this worker's walltime");
        return Out::HandBack { job, task: c.task };
    }
    let entry = c.entry.as_deref().unwrap_or("");
    let vars = crate::config::taskjob::Vars { task: c.id, job, entry };
    let sub = |t: &str| crate::config::taskjob::substitute(t, &vars).unwrap_or_else(|_| t.to_string());
    let sink = |p: &Option<String>| match p {
        Some(p) => command::Sink::File(sub(p).into()),
        None => command::Sink::Discard,
    };
    let mut env = spec.env.clone();
    env.extend([
        ("DROVER_JOB_ID".to_string(), job.to_string()),
        ("DROVER_TASK_ID".to_string(), c.id.to_string()),
        ("DROVER_ENTRY".to_string(), entry.to_string()),
        ("DROVER_WORKER_ID".to_string(), shared.worker_id.to_string()),
    ]);
    let task = command::CommandTask {
        argv: spec.argv.iter().map(|a| sub(a)).collect(),
        env,
        cwd: Some(spec.cwd.clone()),
        stdout: sink(&spec.stdout),
        stderr: sink(&spec.stderr),
        time_limit: spec.time_limit,
        marker: format!(
            "--- drover: job {job} task {} again, on worker {} ({}) ---",
            c.id, shared.worker_id, shared.host
        ),
    };
    let stop = command::Stop::default();
    shared.stops.lock().expect("stops lock").insert((job, c.task), stop.clone());
    let _ = out.send(Out::Started { job, task: c.task });
    let (outcome, took) = command::run(&task, &stop);
    shared.stops.lock().expect("stops lock").remove(&(job, c.task));
    shared
        .longest_task_ms
        .fetch_max(started.elapsed().as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
    let end = match outcome {
        command::Outcome::Exited(code) => End::Exited(code),
        command::Outcome::Signalled(s) => End::Signalled(s),
        command::Outcome::TimedOut => End::TimedOut,
        command::Outcome::Cancelled => End::Cancelled,
    };
    Out::Ended {
        job,
        task: c.task,
        end,
        millis: took.as_millis() as u64,
    }
}

/// Write a finished output block into the output file when this worker may
/// ([`JobCtx::sinks`]); `false`: the block is to be sent to the server.
fn write_direct(ctx: &JobCtx, stage: u32, block: u64, payload: &[u8]) -> bool {
    let st = &ctx.plan.stages[stage as usize];
    if !matches!(st.kind, exec::plan::StageKind::Write { .. }) {
        return false;
    }
    // Every output of the stage must be writable here (the task is recorded whole).
    let Some(parts) = exec::write::split(st, payload) else {
        return false;
    };
    let sinks: Option<Vec<_>> = parts
        .iter()
        .map(|(o, _)| ctx.sinks.get(*o as usize).and_then(Option::as_ref))
        .collect();
    let Some(sinks) = sinks else {
        return false;
    };
    let region = exec::geometry::block_region(&st.shape, &st.block, block);
    for (sink, (_, range)) in sinks.iter().zip(&parts) {
        if let Err(e) = sink.write_block(&region, &payload[range.clone()]) {
            // Blocks written so far are rewritten by the server: same bytes, same place.
            tracing::warn!(error = %e, "cannot write the block into the output file; sending it to the server");
            return false;
        }
    }
    true
}
