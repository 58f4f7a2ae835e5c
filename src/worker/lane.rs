//! The worker's side of a results lane (see `server/lane.rs`): a worker on QUIC whose
//! server also listens on TCP dials, once it has sent [`DIAL_AFTER`] bytes of results
//! over a QUIC connection that lost (almost) none of its packets, a TLS-over-TCP link
//! that then carries its `Results`. Until it is up, and where it cannot be had (a
//! lossy path, TCP blocked), results go over QUIC. Only with `transport = auto`:
//! `--transport quic` keeps everything on QUIC.

use std::time::Duration;

use crate::proto::{self, Hello, PROTOCOL_VERSION, PeerMsg, Role, ServerMsg};
use crate::transport::{self, Access, Conn, Dialed, LinkKind, RecvHalf, SendHalf, Transport};

/// Bytes of results sent over QUIC after which a lane is dialed (if QUIC lost few of
/// its packets): a worker whose results are small (partial reductions, blocks it
/// writes itself) never needs one.
///
/// 8 MiB is some 6,000 packets: enough for QUIC's loss to tell a lossy path (where
/// packets are lost in bursts of a segmentation-offload batch) from a clean one.
const DIAL_AFTER: usize = 8 << 20;

/// A QUIC connection that lost more than one packet in [`LOSSY`] is on a lossy
/// path, where a lane is not dialed: quinn's QUIC (BBR, acknowledgements of every
/// packet range) recovers from random loss better than the kernel's TCP: in the netns
/// testbed with 1% of packets dropped, runs whose blocks went over lanes had a long
/// tail (0.48-1.30 s against QUIC's 0.57-0.98 s; docs/PERFORMANCE.md, "Results
/// lanes").
const LOSSY: u64 = 1000;

/// Packets QUIC must have sent before its loss is judged.
const JUDGE_AFTER: u64 = 1024;

/// What QUIC's `(sent, lost)` packets say of the path: `None` while too few were sent.
fn lossy((sent, lost): (u64, u64)) -> Option<bool> {
    (sent >= JUDGE_AFTER).then_some(lost * LOSSY > sent)
}

/// The TCP connect, the TLS handshake and the server's welcome, each.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// How to dial a lane: the access file and the id the worker was welcomed with.
pub(super) struct Dial {
    /// The worker's QUIC connection, whose loss decides.
    quic: Conn,
    access: Access,
    worker: u32,
    idle: Duration,
}

impl Dial {
    /// A lane for a worker connected by `conn`, if it can have one.
    pub(super) fn for_worker(access: &Access, conn: &Conn, worker: u32, idle: Duration) -> Option<Dial> {
        (conn.kind() == LinkKind::Quic && access.transport == Transport::Auto && !access.tcp_addresses.is_empty()).then(|| Dial {
            quic: conn.clone(),
            access: Access {
                transport: Transport::Tcp,
                ..access.clone()
            },
            worker,
            idle,
        })
    }
}

pub(super) struct Open {
    dialed: Dialed,
    send: SendHalf,
    recv: RecvHalf,
}

/// Where the worker's results lane is.
pub(super) enum Lane {
    /// Not dialed yet (the bytes of results sent so far), or never (`None`).
    Idle(Option<Dial>, usize),
    Dialing(tokio::task::JoinHandle<Result<Open, String>>),
    Open(Open),
}

impl Lane {
    pub(super) fn new(dial: Option<Dial>) -> Lane {
        Lane::Idle(dial, 0)
    }

    /// The lane to send `bytes` of results on, if it is open; [`DIAL_AFTER`] bytes
    /// sent dial it (in the background: results meanwhile go over QUIC).
    pub(super) async fn ready(&mut self, bytes: usize) -> Option<&mut SendHalf> {
        if let Lane::Idle(slot, sent) = self {
            // Judged on what went over QUIC before this frame.
            let before = std::mem::replace(sent, *sent + bytes);
            if before >= DIAL_AFTER
                && let Some(d) = slot.take()
            {
                // `for_worker` made it for QUIC only, which counts its packets.
                let (packets, lost) = d.quic.packets_lost().unwrap_or_default();
                match lossy((packets, lost)) {
                    // Too few packets yet to tell.
                    None => *slot = Some(d),
                    Some(true) => tracing::info!(
                        packets,
                        lost,
                        "QUIC is losing packets here; results stay on QUIC, which recovers better than TCP"
                    ),
                    Some(false) => *self = Lane::Dialing(tokio::spawn(dial(d))),
                }
            }
        }
        if matches!(self, Lane::Dialing(h) if h.is_finished()) {
            let Lane::Dialing(h) = std::mem::replace(self, Lane::Idle(None, 0)) else {
                unreachable!("matched above")
            };
            match h.await {
                Ok(Ok(open)) => {
                    tracing::info!(remote = %open.dialed.conn.remote_address(), "results lane open: blocks go over TCP beside QUIC");
                    *self = Lane::Open(open);
                }
                Ok(Err(reason)) => tracing::info!(%reason, "no results lane; results stay on QUIC"),
                Err(e) => tracing::warn!(error = %e, "results lane dial failed"),
            }
        }
        match self {
            Lane::Open(o) => Some(&mut o.send),
            _ => None,
        }
    }

    /// No more results: end the lane's stream and wait until the server has read it
    /// all (it closes the lane then), so that nothing sent is cut off.
    pub(super) async fn finish(self) {
        match self {
            Lane::Open(mut o) => {
                o.send.finish().await;
                let _ = tokio::time::timeout(Duration::from_secs(10), o.recv.until_closed(&o.dialed.conn)).await;
            }
            Lane::Dialing(h) => h.abort(),
            Lane::Idle(..) => {}
        }
    }
}

async fn dial(d: Dial) -> Result<Open, String> {
    let dialed = transport::connect(&d.access, DIAL_TIMEOUT, d.idle)
        .await
        .map_err(|e| e.to_string())?;
    let conn = dialed.conn.clone();
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let hello = Hello {
        version: PROTOCOL_VERSION,
        role: Role::Lane { worker: d.worker },
        token: d.access.token.expose().to_string(),
        worker: None,
    };
    proto::write_frame(&mut send, &PeerMsg::Hello(hello), &[])
        .await
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(DIAL_TIMEOUT, proto::read_frame::<_, ServerMsg>(&mut recv)).await {
        Ok(Ok((ServerMsg::Welcome { .. }, _))) => Ok(Open { dialed, send, recv }),
        Ok(Ok((ServerMsg::Rejected { reason }, _))) => Err(format!("the server refused it: {reason}")),
        Ok(Ok((other, _))) => Err(format!("unexpected answer {other:?}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {}s", DIAL_TIMEOUT.as_secs())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_judged_lossy_only_after_enough_packets() {
        assert_eq!(lossy((100, 50)), None, "too few packets to tell");
        assert_eq!(lossy((6000, 0)), Some(false));
        assert_eq!(lossy((6000, 6)), Some(false), "one in a thousand is not lossy");
        assert_eq!(lossy((6000, 7)), Some(true));
        assert_eq!(lossy((6000, 60)), Some(true), "1% is");
    }
}
