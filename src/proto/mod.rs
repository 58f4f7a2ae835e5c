//! Wire messages and framing (a pure codec plus thin async helpers).
//!
//! A frame is `u32 header length | u64 payload length | header | payload` (little
//! endian). The header is a postcard-encoded message; the payload carries array data as
//! raw little-endian bytes, never re-encoded.
//!
//! Every connection starts with [`Hello`] from the peer and [`Welcome`]/`Rejected` from the
//! server on the first bidirectional stream; the rest of the conversation stays on it.

pub mod jobs;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::workload::Workload;
use crate::exec::plan::Plan;

/// Bumped on any incompatible change of the messages below.
pub const PROTOCOL_VERSION: u32 = 9;

/// The reason the server closes every connection with when it stops (workers still
/// joining then leave quietly).
pub const STOPPED_REASON: &[u8] = b"server stopped";

/// Largest header accepted (a plan for a big workload is a few KiB).
pub const MAX_HEADER: u32 = 64 << 20;
/// Largest payload accepted.
pub const MAX_PAYLOAD: u64 = 16 << 30;
/// Largest first frame (a `Hello`, read before the peer's token is checked): a
/// stranger makes the server allocate at most this much.
pub const MAX_HELLO: u32 = 64 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Worker,
    Client,
    /// A registered worker's second link, TLS over TCP beside its QUIC connection,
    /// that carries only its `Results` (the blocks it must send): TCP moves bulk
    /// bytes at a fraction of QUIC's CPU per byte (the kernel segments and
    /// acknowledges them). `worker`: the id its QUIC connection was welcomed with.
    Lane {
        worker: u32,
    },
}

/// First message on a connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
    pub role: Role,
    pub token: String,
    pub worker: Option<WorkerInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub host: String,
    pub pid: u32,
    pub threads: u32,
    pub memory: u64,
    /// Batch job id from the environment, if any.
    pub batch_job: Option<String>,
    /// The batch system's name of the node (SLURMD_NODENAME ...), when it has one.
    pub node: Option<String>,
    /// Milliseconds until the worker's batch job ends (`--walltime`): it gets no
    /// task whose time limit would outlive it.
    pub walltime_left_ms: Option<u64>,
    /// `--memory-per-worker`, when given.
    pub memory_bound: Option<u64>,
    /// Whether it writes output chunks into output files through a shared file
    /// system (`drover worker --shared-fs`, `--no-shared-fs`).
    pub shared_fs: crate::exec::hdf::shared_fs::SharedFs,
    /// "quic" or "tcp": set by the server from the connection the worker came on.
    pub transport: String,
}

/// A task handed to a worker.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct TaskRef {
    pub task: u32,
    pub stage: u32,
    pub block: u64,
}

/// One finished task; its bytes are the next `len` bytes of the frame's payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskResult {
    pub task: u32,
    pub bytes_read: u64,
    pub len: u64,
    /// How long the task ran, in microseconds.
    pub micros: u64,
    /// The block was written into the output file by the worker ([`DirectOutput`]);
    /// no payload follows.
    pub written: bool,
    /// Floating-point events of the block: divisions by zero, invalid values,
    /// overflows (`exec::fpe`).
    pub fp: [u64; 3],
}

/// An output the workers that see the same file may write blocks into themselves:
/// every chunk is allocated, stored raw, at a known offset, and every block of the
/// stage that writes it covers whole chunks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DirectOutput {
    /// The temporary file being written, and its identity as the server sees it: a
    /// worker writes only if it sees the same device and inode (the same host).
    pub path: std::path::PathBuf,
    pub dev: u64,
    pub ino: u64,
    pub chunk: Vec<usize>,
    /// File offset of each chunk, row-major over the chunk grid.
    pub addrs: Vec<u64>,
}

/// Messages from the server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ServerMsg {
    Welcome {
        id: u32,
    },
    Rejected {
        reason: String,
    },
    /// A job's plan; precedes any task of the job.
    Job {
        job: u64,
        plan: Plan,
        /// Per output: where a worker may write its blocks itself.
        direct: Vec<Option<DirectOutput>>,
    },
    /// A finished reduction; payload: f64 values of `shape`.
    Const {
        job: u64,
        id: u32,
        shape: Vec<usize>,
    },
    /// Tasks to append to the worker's queue.
    Assign {
        job: u64,
        tasks: Vec<TaskRef>,
    },
    /// Forget queued tasks of a job; stop its running commands.
    Cancel {
        job: u64,
    },
    /// How the tasks of a task job run; precedes any of its tasks.
    TaskJob {
        job: u64,
        group: u32,
        spec: jobs::CommandSpec,
    },
    /// Commands to append to the worker's queue.
    RunCommands {
        job: u64,
        tasks: Vec<jobs::CommandRef>,
    },
    /// Forget these queued tasks of a task job; stop them where they run.
    CancelTasks {
        job: u64,
        tasks: Vec<u32>,
    },
    /// Exit cleanly.
    Shutdown {
        reason: String,
    },
    /// Exit now, without waiting for running tasks (one of them is stuck: the server
    /// runs its tasks elsewhere).
    Exit {
        reason: String,
    },
    /// The server has seen the worker's first `Draining`: it assigns nothing more, so
    /// once its running tasks are reported the worker may leave without losing any.
    Drained,
    // To clients:
    Accepted {
        job: u64,
        tasks: u32,
    },
    Progress {
        done: u32,
        total: u32,
    },
    Finished {
        summary: Summary,
    },
    Failed {
        input_error: bool,
        message: String,
    },
    Status {
        status: Status,
    },
    Ok,
    /// A task job was accepted; `note` says why it may wait.
    Submitted {
        job: u64,
        tasks: u64,
        note: Option<String>,
    },
    Jobs {
        jobs: Vec<jobs::JobInfo>,
    },
    Tasks {
        tasks: Vec<jobs::TaskView>,
    },
    /// A task of a watched job ended (`drover wait --as-completed`).
    TaskEnded {
        job: u64,
        task: jobs::TaskView,
    },
    /// A watched job ended.
    JobEnded {
        job: jobs::JobInfo,
    },
    /// A job's report (HTML).
    Report {
        html: String,
    },
}

/// Messages to the server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerMsg {
    Hello(Hello),
    Heartbeat,
    /// A heartbeat with the worker's resident memory and CPU time so far, and how long
    /// its longest-running array task has been running (0: none runs).
    Load {
        rss_bytes: u64,
        cpu_ms: u64,
        running_ms: u64,
    },
    /// Results of finished tasks; payload: their bytes, concatenated in order.
    /// `peak_rss`: the worker's peak resident memory so far (VmHWM), in bytes.
    Results {
        job: u64,
        results: Vec<TaskResult>,
        peak_rss: u64,
    },
    TaskError {
        job: u64,
        task: u32,
        message: String,
    },
    /// A command of a task job started.
    TaskStarted {
        job: u64,
        task: u32,
    },
    /// A command of a task job ended after `millis`.
    TaskEnded {
        job: u64,
        task: u32,
        end: jobs::End,
        millis: u64,
    },
    /// Tasks the worker will not start: their time limit outlives its walltime (the
    /// server learned of it too late). They go back to the queue, not counted as
    /// retries.
    HandBack {
        tasks: Vec<(u64, u32)>,
    },
    /// The worker's batch job ends soon: it takes no more tasks, hands back these
    /// (job, task) pairs it had not started, and leaves when its running tasks are done.
    Draining {
        released: Vec<(u64, u32)>,
    },
    // From clients:
    Submit {
        workload: Workload,
    },
    GetStatus,
    Stop,
    /// Hold this many workers (servers with a site).
    Scale {
        workers: u32,
    },
    /// Size the pool from the backlog between min and max workers.
    Adapt {
        min: u32,
        max: u32,
    },
    SubmitTasks {
        request: jobs::TaskJobRequest,
    },
    ListJobs,
    /// The tasks of a job, all or those in `state`.
    ListTasks {
        job: u64,
        state: Option<jobs::TaskState>,
    },
    /// Answer `JobEnded` for each job once it ended; with `as_completed`, `TaskEnded`
    /// for each task as it ends.
    Wait {
        jobs: Vec<u64>,
        as_completed: bool,
    },
    /// Cancel a job, or only these tasks (user ids) of it.
    CancelJob {
        job: u64,
        tasks: Option<Vec<u64>>,
    },
    /// The report of a job (one self-contained HTML page).
    GetReport {
        job: u64,
    },
}

/// The report of a finished run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    pub tasks_total: u64,
    pub tasks_retried: u64,
    pub workers_lost: u64,
    pub bytes_read: u64,
    pub seconds: f64,
    pub workers: usize,
    pub outputs: Vec<OutputReport>,
    /// Peak resident memory of the driver process (filled in by the CLI).
    pub driver_peak_rss_bytes: Option<u64>,
    /// Largest peak resident memory of the workers that ran tasks of the job.
    pub worker_peak_rss_bytes: Option<u64>,
    /// Peak resident memory of each worker that ran tasks of the job.
    pub workers_peak_rss_bytes: Vec<u64>,
    /// Workers that left before their walltime (handing back queued tasks).
    pub workers_drained: u64,
    /// Tasks whose results were recovered from an interrupted run's journal.
    pub tasks_resumed: u64,
    /// Output blocks the workers wrote into the output file themselves, and those
    /// they sent to the server's writer.
    pub blocks_written_by_workers: u64,
    pub blocks_sent_to_writer: u64,
    /// The time the server's writer spent writing (blocks, partials, flushes, closing
    /// the files): near `seconds`, the writer bounded the run.
    pub writer_busy_seconds: f64,
    /// Per output: floating-point events of the stages it was computed by (divisions
    /// by zero, invalid values, overflows), as numpy would warn of them.
    pub fp_events: Vec<[u64; 3]>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutputReport {
    pub file: String,
    pub dataset: String,
    pub shape: Vec<usize>,
    pub dtype: String,
    pub expr: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {
    pub workers: Vec<WorkerStatus>,
    /// Batch jobs of the pool (servers with a site).
    pub jobs: Vec<JobStatus>,
    /// Workers the pool holds.
    pub target: Option<u32>,
    /// Adaptive bounds, when the pool sizes itself.
    pub adapt: Option<(u32, u32)>,
    /// The last failed submission, while it is being retried.
    pub submit_failure: Option<String>,
    /// Workers lost while holding tasks (most recent last, at most 50), with why.
    pub lost_workers: Vec<LostWorker>,
    pub running_job: Option<u64>,
    pub progress: Option<(u32, u32)>,
    pub tasks_done: u64,
    pub tasks_retried: u64,
    pub workers_lost: u64,
    pub workers_drained: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LostWorker {
    pub id: u32,
    pub host: String,
    pub pid: u32,
    pub batch_job: Option<String>,
    pub reason: String,
    /// Tasks it held, sent to other workers.
    pub tasks_requeued: usize,
    /// When (seconds since the server started).
    pub t: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobStatus {
    pub id: String,
    pub state: String,
    pub retiring: bool,
    /// Cancelled by drover: its workers stopped answering.
    pub abandoned: bool,
    pub workers: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub id: u32,
    pub host: String,
    pub pid: u32,
    pub threads: u32,
    pub batch_job: Option<String>,
    pub node: Option<String>,
    pub assigned: usize,
    /// Draining before its walltime.
    pub draining: bool,
    /// "quic" or "tcp".
    pub transport: String,
}

/// Framing or decoding failure.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame header of {0} bytes is larger than the limit")]
    HeaderTooLarge(u32),
    #[error("frame payload of {0} bytes is larger than the limit")]
    PayloadTooLarge(u64),
    #[error("undecodable message: {0}")]
    Decode(#[from] postcard::Error),
}

/// Encode a message header with its frame prefix; the payload follows separately.
pub fn encode<M: Serialize>(msg: &M, payload_len: u64) -> Result<Vec<u8>, FrameError> {
    let body = postcard::to_stdvec(msg)?;
    let mut out = Vec::with_capacity(12 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&payload_len.to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Write one frame.
pub async fn write_frame<W: AsyncWrite + Unpin, M: Serialize>(w: &mut W, msg: &M, payload: &[u8]) -> Result<(), FrameError> {
    let head = encode(msg, payload.len() as u64)?;
    w.write_all(&head).await?;
    if !payload.is_empty() {
        w.write_all(payload).await?;
    }
    // Over TLS/TCP the last record may wait in the TLS layer until flushed (QUIC's
    // flush does nothing).
    w.flush().await?;
    Ok(())
}

/// Read a peer's first frame as a stranger may send it: a message of at most
/// [`MAX_HELLO`] bytes and no payload (checked before anything is allocated).
pub async fn read_first<R: AsyncRead + Unpin, M: for<'de> Deserialize<'de>>(r: &mut R) -> Result<M, FrameError> {
    let (msg, _) = read_bounded(r, MAX_HELLO, 0).await?;
    Ok(msg)
}

/// Read one frame: the message and its payload.
pub async fn read_frame<R: AsyncRead + Unpin, M: for<'de> Deserialize<'de>>(r: &mut R) -> Result<(M, Vec<u8>), FrameError> {
    let (msg, plen) = read_head(r).await?;
    Ok((msg, read_payload(r, plen).await?))
}

/// Read a frame's message and its payload's length; the payload follows
/// ([`read_payload`]).
pub async fn read_head<R: AsyncRead + Unpin, M: for<'de> Deserialize<'de>>(r: &mut R) -> Result<(M, u64), FrameError> {
    read_bounded(r, MAX_HEADER, MAX_PAYLOAD).await
}

/// A frame's message (at most `max_header` bytes) and its payload's length (at most
/// `max_payload`), both checked from the 12-byte prefix before anything is allocated.
async fn read_bounded<R: AsyncRead + Unpin, M: for<'de> Deserialize<'de>>(
    r: &mut R,
    max_header: u32,
    max_payload: u64,
) -> Result<(M, u64), FrameError> {
    let mut pre = [0u8; 12];
    match r.read_exact(&mut pre).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let hlen = u32::from_le_bytes(pre[..4].try_into().expect("4 bytes"));
    let plen = u64::from_le_bytes(pre[4..].try_into().expect("8 bytes"));
    if hlen > max_header {
        return Err(FrameError::HeaderTooLarge(hlen));
    }
    if plen > max_payload {
        return Err(FrameError::PayloadTooLarge(plen));
    }
    let head = read_growing(r, hlen as usize).await?;
    Ok((postcard::from_bytes(&head)?, plen))
}

/// The most a payload's buffer grows ahead of the bytes received.
pub const PAYLOAD_STEP: usize = 1 << 20;

/// Read a payload of `len` bytes (at most [`MAX_PAYLOAD`], checked by [`read_head`]).
///
/// A buffer kept for reuse is filled when one is large enough; otherwise the buffer
/// grows as bytes arrive (doubling, from [`PAYLOAD_STEP`]), so that a peer claiming a
/// large payload it does not send makes the reader allocate at most twice what it
/// received plus one step.
pub async fn read_payload<R: AsyncRead + Unpin>(r: &mut R, len: u64) -> Result<Vec<u8>, FrameError> {
    let len = len as usize;
    if let Some(mut payload) = crate::exec::buffers::PAYLOADS.take_kept(len) {
        r.read_exact(&mut payload).await?;
        return Ok(payload);
    }
    Ok(read_growing(r, len).await?)
}

/// Read `len` bytes into a buffer that grows as they arrive (see [`read_payload`]).
async fn read_growing<R: AsyncRead + Unpin>(r: &mut R, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    while buf.len() < len {
        let have = buf.len();
        buf.resize(len.min(have.max(PAYLOAD_STEP / 2) * 2), 0);
        r.read_exact(&mut buf[have..]).await?;
    }
    Ok(buf)
}

/// A worker's results message for one task of 16 bytes (tests, fuzz seeds).
#[cfg(test)]
pub(crate) fn sample_results() -> PeerMsg {
    PeerMsg::Results {
        job: 7,
        results: vec![TaskResult {
            task: 3,
            bytes_read: 80,
            len: 16,
            micros: 5,
            written: false,
            fp: [1, 0, 2],
        }],
        peak_rss: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_with_payload() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let msg = sample_results();
        let payload: Vec<u8> = (0..16).collect();
        write_frame(&mut a, &msg, &payload).await.unwrap();
        write_frame(&mut a, &PeerMsg::Heartbeat, &[]).await.unwrap();
        drop(a);
        let (got, p): (PeerMsg, Vec<u8>) = read_frame(&mut b).await.unwrap();
        assert!(matches!(got, PeerMsg::Results { job: 7, ref results, .. } if results[0].task == 3));
        assert_eq!(p, payload);
        let (got, p): (PeerMsg, Vec<u8>) = read_frame(&mut b).await.unwrap();
        assert!(matches!(got, PeerMsg::Heartbeat) && p.is_empty());
        assert!(matches!(read_frame::<_, PeerMsg>(&mut b).await, Err(FrameError::Closed)));
    }

    #[tokio::test]
    async fn a_first_frame_may_not_claim_a_large_header_or_any_payload() {
        // A stranger's frame claiming 1 MiB of header or any payload is refused from its
        // 12-byte prefix, before anything of that size is allocated or read.
        for (hlen, plen) in [(MAX_HELLO + 1, 0u64), (16, 1), (16, MAX_PAYLOAD)] {
            let (mut a, mut b) = tokio::io::duplex(64);
            a.write_all(&hlen.to_le_bytes()).await.unwrap();
            a.write_all(&plen.to_le_bytes()).await.unwrap();
            let r = read_first::<_, PeerMsg>(&mut b).await;
            assert!(
                matches!(r, Err(FrameError::HeaderTooLarge(_) | FrameError::PayloadTooLarge(_))),
                "{hlen} {plen}: {r:?}"
            );
        }
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        write_frame(&mut a, &PeerMsg::Heartbeat, &[]).await.unwrap();
        assert!(matches!(read_first::<_, PeerMsg>(&mut b).await, Ok(PeerMsg::Heartbeat)));
    }

    #[tokio::test]
    async fn oversized_and_garbage_frames_are_refused() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(&u32::MAX.to_le_bytes()).await.unwrap();
        a.write_all(&0u64.to_le_bytes()).await.unwrap();
        assert!(matches!(read_frame::<_, PeerMsg>(&mut b).await, Err(FrameError::HeaderTooLarge(_))));
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(&3u32.to_le_bytes()).await.unwrap();
        a.write_all(&0u64.to_le_bytes()).await.unwrap();
        a.write_all(&[0xff, 0xff, 0xff]).await.unwrap();
        assert!(matches!(read_frame::<_, PeerMsg>(&mut b).await, Err(FrameError::Decode(_))));
    }
}
