//! Per-connection tasks: the handshake (version, token), then frames in and out.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::actor::{Event, Outgoing};
use crate::core::WorkerId;
use crate::proto::{self, Hello, PROTOCOL_VERSION, PeerMsg, Role, ServerMsg};
use crate::transport::{Conn, LinkKind, RecvHalf, SendHalf, Token};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections not yet authenticated (TLS handshake, stream, `Hello` with the token)
/// held at once; more are refused (QUIC: first asked to prove their address with a
/// stateless retry) until some finish or time out. Far above what workers joining at
/// once need (the scale benchmark's load generator keeps 256 handshakes in flight).
pub(super) const MAX_PENDING: usize = 1024;

/// The connections accepted so far that may still be open.
#[derive(Clone, Default)]
pub(super) struct Peers(Arc<std::sync::Mutex<Vec<Conn>>>);

impl Peers {
    fn add(&self, conn: &Conn) {
        let mut all = self.0.lock().expect("peers lock");
        all.retain(Conn::is_open);
        all.push(conn.clone());
    }

    /// Whether some QUIC connection is still open: closing the endpoint must then send
    /// it a close before the process exits.
    pub(super) fn any_quic_open(&self) -> bool {
        let all = self.0.lock().expect("peers lock");
        all.iter().any(|c| c.is_open() && c.kind() == LinkKind::Quic)
    }

    /// Close the TCP and Unix connections still open (the QUIC endpoint closes its own).
    pub(super) fn close_streams(&self, reason: &[u8]) {
        for c in self.0.lock().expect("peers lock").iter() {
            if c.kind() != LinkKind::Quic {
                c.close(0, reason);
            }
        }
    }
}

/// The longest round trip seen to any worker, so that queues of prefetched tasks
/// cover it (a worker far away would otherwise wait a round trip between tasks).
#[derive(Clone, Default)]
pub(super) struct Rtt(Arc<std::sync::atomic::AtomicU64>);

impl Rtt {
    fn observe(&self, conn: &Conn) {
        if let Some(r) = conn.rtt() {
            self.0.fetch_max(r.as_micros() as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }

    pub(super) fn longest(&self) -> Duration {
        Duration::from_micros(self.0.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// Bounds the bytes of large result payloads the server holds (received but not yet
/// merged or written). A worker's frame payload is read only once it fits, so a writer
/// slower than the workers pushes back through QUIC flow control to them instead of
/// the driver's memory growing. The limit is set per job: twice its largest payload.
#[derive(Clone)]
pub(super) struct Inbound(Arc<std::sync::Mutex<(Arc<tokio::sync::Semaphore>, u32)>>);

/// Inbound budgets count KiB; payloads under [`Inbound::LARGE`] are not counted.
const KIB: u64 = 1 << 10;

impl Inbound {
    const LARGE: u64 = 1 << 20;

    pub(super) fn new(limit: u64) -> Self {
        let units = Self::units(limit);
        Self(Arc::new(std::sync::Mutex::new((
            Arc::new(tokio::sync::Semaphore::new(units as usize)),
            units,
        ))))
    }

    fn units(bytes: u64) -> u32 {
        bytes.div_ceil(KIB).clamp(1, u64::from(u32::MAX >> 4)) as u32
    }

    /// A new limit, for the payloads read from now on.
    pub(super) fn set_limit(&self, bytes: u64) {
        let units = Self::units(bytes);
        *self.0.lock().expect("inbound lock") = (Arc::new(tokio::sync::Semaphore::new(units as usize)), units);
    }

    /// Wait until a payload of `len` bytes fits; the permit is held with the payload.
    /// `waiting` is called every few seconds of waiting: the worker is alive (it sent
    /// the frame's head), only held back, and must not be taken for lost meanwhile.
    async fn hold(&self, len: u64, mut waiting: impl FnMut()) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if len < Self::LARGE {
            return None;
        }
        let (sem, cap) = self.0.lock().expect("inbound lock").clone();
        let acquire = sem.acquire_many_owned(Self::units(len).min(cap));
        tokio::pin!(acquire);
        loop {
            tokio::select! {
                permit = &mut acquire => return permit.ok(),
                _ = tokio::time::sleep(Duration::from_secs(2)) => waiting(),
            }
        }
    }
}

/// A received payload and its share of the inbound budget, released when the last
/// slice of the payload is dropped.
struct Held {
    data: Vec<u8>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        crate::exec::buffers::PAYLOADS.give(std::mem::take(&mut self.data));
    }
}

/// What every connection's task needs from the server.
#[derive(Clone)]
pub(super) struct Accepting {
    pub token: Arc<Token>,
    pub events: mpsc::UnboundedSender<Event>,
    pub peers: Peers,
    pub inbound: Inbound,
    /// Permits for [`MAX_PENDING`] unauthenticated connections.
    pub pending: Arc<tokio::sync::Semaphore>,
    pub rtt: Rtt,
    pub lanes: super::lane::Lanes,
    /// The QUIC server configurations, with Cubic and with BBR, made once; each
    /// connection takes one by its peer's address ([`crate::transport::bbr_towards`]).
    pub quic: [Arc<quinn::ServerConfig>; 2],
}

/// Holds one of the [`MAX_PENDING`] places until the peer has shown its token.
type Pending = tokio::sync::OwnedSemaphorePermit;

/// A place for one more unauthenticated connection, if any is left (says so at most
/// every 10 s when none is).
fn pending_place(cx: &Accepting) -> Option<Pending> {
    static LAST_WARNED: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
    let p = cx.pending.clone().try_acquire_owned().ok();
    if p.is_none() {
        let mut last = LAST_WARNED.lock().expect("warn lock");
        if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            *last = Some(std::time::Instant::now());
            tracing::warn!(
                pending = MAX_PENDING,
                "too many connections without a token yet; refusing new ones for now"
            );
        }
    }
    p
}

pub(super) async fn accept_loop(endpoint: quinn::Endpoint, cx: Accepting) {
    while let Some(incoming) = endpoint.accept().await {
        let Some(place) = pending_place(&cx) else {
            // Unproven addresses must come back with a retry token (a spoofed flood
            // never does); proven ones are refused while the places are taken.
            if incoming.remote_address_validated() {
                incoming.refuse();
            } else {
                let _ = incoming.retry();
            }
            continue;
        };
        let cx = cx.clone();
        let remote = incoming.remote_address();
        let config = cx.quic[usize::from(crate::transport::bbr_towards(remote.ip()))].clone();
        let connecting = match incoming.accept_with(config) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, %remote, "handshake refused");
                continue;
            }
        };
        serve(
            async move { handle(tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await??.into(), cx, place).await },
            tracing::debug_span!("conn", %remote),
        );
    }
}

/// Run one accepted connection's handshake and frames in a task of its own, in `span`.
fn serve(conn: impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static, span: tracing::Span) {
    tokio::spawn(
        async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended");
            }
        }
        .instrument(span),
    );
}

/// The accept loop of a stream listener (TCP, Unix), until aborted: accept errors (out
/// of descriptors and the like) are waited out rather than spun on, and while too many
/// connections are pending new ones are dropped; each other one goes to `serve_one`
/// with its pending place.
async fn accept_streams<S, F: std::future::Future<Output = std::io::Result<S>>>(
    what: &'static str,
    mut accept: impl FnMut() -> F,
    cx: &Accepting,
    mut serve_one: impl FnMut(S, Pending),
) {
    loop {
        let stream = match accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "{what} accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if let Some(place) = pending_place(cx) {
            serve_one(stream, place);
        }
    }
}

/// TLS 1.3 over TCP beside QUIC: the same certificate, then the same handshake.
pub(super) async fn accept_tcp_loop(listener: tokio::net::TcpListener, tls: Arc<rustls::ServerConfig>, cx: Accepting) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let listener = &listener;
    accept_streams(
        "TCP",
        move || listener.accept(),
        &cx,
        |(tcp, remote), place| {
            let (cx, acceptor) = (cx.clone(), acceptor.clone());
            let conn = async move {
                let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await??;
                let conn = Conn::tcp(tokio_rustls::TlsStream::Server(tls), remote, crate::transport::SERVER_IDLE)?;
                handle(conn, cx, place).await
            };
            serve(conn, tracing::debug_span!("conn", %remote, transport = "tcp"));
        },
    )
    .await
}

/// Peers on the server's host, over its Unix socket (`path`, for messages).
pub(super) async fn accept_unix_loop(listener: tokio::net::UnixListener, path: String, cx: Accepting) {
    let listener = &listener;
    accept_streams(
        "Unix socket",
        move || listener.accept(),
        &cx,
        |(stream, _), place| {
            let (cx, path) = (cx.clone(), path.clone());
            serve(
                async move { handle(Conn::unix(stream, &path)?, cx, place).await },
                tracing::debug_span!("conn", transport = "unix"),
            );
        },
    )
    .await
}

async fn reject(conn: &Conn, mut send: SendHalf, reason: String) {
    tracing::warn!(remote = %conn.remote_address(), %reason, "peer rejected");
    let _ = proto::write_frame(&mut send, &ServerMsg::Rejected { reason }, &[]).await;
    send.finish().await;
    // Give the peer a moment to read the reason before closing.
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
    conn.close(1, b"rejected");
}

async fn handle(conn: Conn, cx: Accepting, place: Pending) -> anyhow::Result<()> {
    cx.peers.add(&conn);
    // The stream and the first frame within one deadline; the frame read as a
    // stranger's (small, no payload) until the token is checked.
    let first = async {
        let (send, mut recv) = conn.accept_bi().await?;
        let hello = proto::read_first::<_, PeerMsg>(&mut recv).await?;
        anyhow::Ok((send, recv, hello))
    };
    let (send, mut recv, hello) = match tokio::time::timeout(HANDSHAKE_TIMEOUT, first).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            conn.close(1, b"protocol error");
            return Err(e);
        }
        Err(_) => {
            conn.close(1, b"no hello in time");
            anyhow::bail!("no Hello within {}s", HANDSHAKE_TIMEOUT.as_secs());
        }
    };
    let PeerMsg::Hello(Hello {
        version,
        role,
        token: presented,
        worker,
    }) = hello
    else {
        reject(&conn, send, "protocol error: the first message must be Hello".into()).await;
        return Ok(());
    };
    if version != PROTOCOL_VERSION {
        let reason = format!("protocol version {version} is not supported (server speaks {PROTOCOL_VERSION}); use the same drover build");
        reject(&conn, send, reason).await;
        return Ok(());
    }
    if !cx.token.matches(&presented) {
        let reason = "authentication rejected: the token does not match this server's; use the access file written by the running server"
            .to_string();
        reject(&conn, send, reason).await;
        return Ok(());
    }
    // Authenticated: its place goes to the next stranger.
    drop(place);
    let lane = match role {
        Role::Lane { worker } => match cx.lanes.attach(WorkerId(worker), &conn) {
            Some(attached) => Some((WorkerId(worker), attached)),
            None => {
                let reason = format!("no worker {worker} is connected over QUIC here to take a results lane");
                reject(&conn, send, reason).await;
                return Ok(());
            }
        },
        _ => None,
    };
    let (tx, rx) = mpsc::unbounded_channel::<Outgoing>();
    let writer = tokio::spawn(write_loop(send, rx, conn.clone()));
    match role {
        Role::Worker => {
            let Some(mut info) = worker else {
                let _ = tx.send(Outgoing::msg(ServerMsg::Rejected {
                    reason: "worker without worker info".into(),
                }));
                return Ok(());
            };
            info.transport = conn.kind().name().to_string();
            cx.rtt.observe(&conn);
            let (reply, id) = oneshot::channel();
            cx.events.send(Event::WorkerConnected {
                info,
                tx: tx.clone(),
                reply,
            })?;
            let id = id.await?;
            if conn.kind() == LinkKind::Quic {
                cx.lanes.open(id, &conn);
            }
            let ended = forward_frames(&mut recv, id, &cx, &conn, false)
                .instrument(tracing::info_span!("worker", worker = %id))
                .await;
            // What its lane still carries comes before the worker's end.
            cx.lanes.close(id, ended.is_ok()).await;
            // The worker finished its stream (it was asked to stop) or is gone: close
            // from this side, so a leaving worker need not sit out QUIC's draining
            // period to be sure its own close was sent.
            conn.close(0, b"goodbye");
            let reason = ended.err().unwrap_or_else(|| proto::FrameError::Closed.to_string());
            let _ = cx.events.send(Event::WorkerGone { id, reason });
        }
        Role::Lane { .. } => {
            let (id, attached) = lane.expect("attached above");
            let _ = tx.send(Outgoing::msg(ServerMsg::Welcome { id: id.0 }));
            let _ = cx.events.send(Event::LaneOpened { id });
            super::lane::serve(attached, forward_frames(&mut recv, id, &cx, &conn, true))
                .instrument(tracing::info_span!("worker", worker = %id, link = "lane"))
                .await;
        }
        Role::Client => {
            loop {
                match proto::read_frame::<_, PeerMsg>(&mut recv).await {
                    Ok((PeerMsg::Hello(_), _)) => tracing::debug!("a second Hello from a client"),
                    Ok((msg, _)) => cx.events.send(Event::Client { msg, client: tx.clone() })?,
                    Err(
                        e @ (proto::FrameError::HeaderTooLarge(_) | proto::FrameError::PayloadTooLarge(_) | proto::FrameError::Decode(_)),
                    ) => {
                        // Not a frame (or too large): nothing after it can be trusted.
                        tracing::warn!(remote = %conn.remote_address(), error = %e, "client sent a bad frame; closing");
                        conn.close(1, b"bad frame");
                        break;
                    }
                    // The end of its stream, or of its connection.
                    Err(_) => break,
                }
            }
            // The client went away: an array workload it submitted is cancelled.
            let _ = cx.events.send(Event::ClientGone { client: tx.clone() });
        }
    }
    drop(tx);
    let _ = writer.await;
    Ok(())
}

/// A worker's frames, from its connection or (`lane`) its results lane, to the actor:
/// `Ok` at the clean end of the stream (after a whole frame), else why it ended. A
/// large payload is read only once it fits in the inbound budget.
async fn forward_frames(recv: &mut RecvHalf, id: WorkerId, cx: &Accepting, conn: &Conn, lane: bool) -> Result<(), String> {
    let Accepting { events, inbound, rtt, .. } = cx;
    loop {
        let frame = async {
            let (msg, len) = proto::read_head::<_, PeerMsg>(&mut *recv).await?;
            let alive = || {
                let _ = events.send(Event::WorkerMsg {
                    id,
                    msg: PeerMsg::Heartbeat,
                    payload: Bytes::new(),
                });
            };
            let permit = inbound.hold(len, alive).await;
            let data = proto::read_payload(&mut *recv, len).await?;
            let payload = match permit {
                Some(p) => Bytes::from_owner(Held { data, _permit: p }),
                None => Bytes::from(data),
            };
            Ok::<_, proto::FrameError>((msg, payload))
        };
        match frame.await {
            Ok((msg, _)) if lane && !matches!(msg, PeerMsg::Results { .. }) => {
                return Err("a results lane sent something other than results".into());
            }
            Ok((msg, payload)) => {
                // quinn's estimate takes its connection lock: read it with
                // the heartbeats (every few seconds), not every result.
                if matches!(msg, PeerMsg::Load { .. } | PeerMsg::Heartbeat) {
                    rtt.observe(conn);
                }
                if events.send(Event::WorkerMsg { id, msg, payload }).is_err() {
                    return Err("server stopping".to_string());
                }
            }
            Err(proto::FrameError::Closed) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

async fn write_loop(mut send: SendHalf, mut rx: mpsc::UnboundedReceiver<Outgoing>, conn: Conn) {
    while let Some(out) = rx.recv().await {
        let shutdown = matches!(out.msg, ServerMsg::Shutdown { .. });
        // Payloads (a stage's constants go to every worker) are shared, not copied.
        if let Err(e) = send.write_frame_shared(&out.msg, out.payload).await {
            tracing::debug!(error = %e, "send failed");
            return;
        }
        if shutdown {
            send.finish().await;
            let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
            return;
        }
    }
    send.finish().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn inbound_budget_holds_back_large_payloads_and_reports_waiting() {
        let inbound = Inbound::new(3 << 20);
        assert!(inbound.hold(1000, || {}).await.is_none(), "small payloads are not counted");
        let first = inbound.hold(2 << 20, || {}).await.expect("fits");
        // A second 2 MiB payload does not fit beside the first: it waits, saying so.
        let waits = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let w = waits.clone();
        let inb = inbound.clone();
        let second = tokio::spawn(async move {
            inb.hold(2 << 20, move || {
                w.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(2300)).await;
        assert!(!second.is_finished(), "held back while the first payload is held");
        assert_eq!(
            waits.load(std::sync::atomic::Ordering::Relaxed),
            1,
            "reported waiting once in 2.3 s"
        );
        drop(first);
        assert!(second.await.unwrap().is_some(), "admitted once the first is released");
        // A payload larger than the whole budget is admitted alone, not refused forever.
        inbound.set_limit(1 << 20);
        assert!(inbound.hold(8 << 20, || {}).await.is_some());
    }
}
