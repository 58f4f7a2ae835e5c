//! The worker's sender: finished results batched into few frames, task starts and
//! ends, hand-backs, heartbeats with the process's memory and CPU time.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::host::{load, peak_rss};
use super::lane::{Dial, Lane};
use super::{LARGE_RESULT, Out, Shared};
use crate::exec;
use crate::proto::{self, PeerMsg};

/// Most bytes of results gathered into one frame.
const BATCH_BYTES: usize = 8 << 20;

pub(super) async fn send_loop(
    send: crate::transport::SendHalf,
    rx: mpsc::UnboundedReceiver<Out>,
    heartbeat: Duration,
    shared: Arc<Shared>,
    lane: Option<Dial>,
) {
    send_frames(send, rx, heartbeat, &shared, Lane::new(lane)).await;
    // Nothing more will be sent: task threads must not wait for room.
    shared.queue.lock().expect("queue lock").unsent_large = 0;
    shared.ready.notify_all();
}

/// Mark `n` large results as handed to QUIC.
fn large_sent(shared: &Shared, n: usize) {
    if n > 0 {
        let mut q = shared.queue.lock().expect("queue lock");
        q.unsent_large = q.unsent_large.saturating_sub(n);
        drop(q);
        shared.ready.notify_all();
    }
}

async fn send_frames(
    mut send: crate::transport::SendHalf,
    mut rx: mpsc::UnboundedReceiver<Out>,
    heartbeat: Duration,
    shared: &Shared,
    mut lane: Lane,
) {
    let mut beat = tokio::time::interval(heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending: Option<Out> = None;
    let mut peak = (peak_rss().unwrap_or(0), std::time::Instant::now());
    loop {
        let first = match pending.take() {
            Some(o) => o,
            None => tokio::select! {
                o = rx.recv() => match o {
                    Some(o) => o,
                    None => break,
                },
                _ = beat.tick() => {
                    let beat = match load() {
                        Some((rss_bytes, cpu_ms)) => PeerMsg::Load {
                            rss_bytes,
                            cpu_ms,
                            running_ms: shared.running_for().as_millis() as u64,
                        },
                        None => PeerMsg::Heartbeat,
                    };
                    if proto::write_frame(&mut send, &beat, &[]).await.is_err() {
                        return;
                    }
                    continue;
                }
            },
        };
        let res = match first {
            Out::Error { job, task, message } => proto::write_frame(&mut send, &PeerMsg::TaskError { job, task, message }, &[]).await,
            Out::Draining { released } => proto::write_frame(&mut send, &PeerMsg::Draining { released }, &[]).await,
            Out::Started { job, task } => proto::write_frame(&mut send, &PeerMsg::TaskStarted { job, task }, &[]).await,
            Out::HandBack { job, task } => proto::write_frame(&mut send, &PeerMsg::HandBack { tasks: vec![(job, task)] }, &[]).await,
            Out::Ended { job, task, end, millis } => {
                proto::write_frame(&mut send, &PeerMsg::TaskEnded { job, task, end, millis }, &[]).await
            }
            Out::Done { job, result, payload } => {
                // Gather more finished results of the same job that are already waiting.
                let mut results = vec![result];
                let mut large = usize::from(payload.len() >= LARGE_RESULT);
                let mut bytes = payload;
                while bytes.len() < BATCH_BYTES {
                    match rx.try_recv() {
                        Ok(Out::Done { job: j, result, payload }) if j == job => {
                            results.push(result);
                            large += usize::from(payload.len() >= LARGE_RESULT);
                            bytes.extend_from_slice(&payload);
                        }
                        Ok(other) => {
                            pending = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                if peak.1.elapsed() >= Duration::from_millis(100) {
                    peak = (peak_rss().unwrap_or(peak.0), std::time::Instant::now());
                }
                // Over the results lane when it is open; handed to QUIC without a
                // copy otherwise (the buffer returns to the pool once the driver has
                // acknowledged it).
                let link = match lane.ready(bytes.len()).await {
                    Some(l) => l,
                    None => &mut send,
                };
                let res = link
                    .write_frame_shared(
                        &PeerMsg::Results {
                            job,
                            results,
                            peak_rss: peak.0,
                        },
                        exec::buffers::shared_payload(bytes),
                    )
                    .await;
                large_sent(shared, large);
                res
            }
        };
        if res.is_err() {
            return;
        }
    }
    // The lane first: the server reads all it carries before the end of `send`.
    lane.finish().await;
    send.finish().await;
}
