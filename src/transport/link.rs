//! One connection between a peer and the server: QUIC, or TLS 1.3 over TCP where UDP
//! does not get through (firewalls that pass only TCP, SSH port forwarding), or a Unix
//! socket between processes of one host. All carry one bidirectional byte stream of
//! frames and the same token; QUIC and TCP sit behind the same certificate pinning; the
//! rest of drover sees only [`Conn`], [`SendHalf`] and [`RecvHalf`].
//!
//! Choosing: [`Transport::Quic`] and [`Transport::Tcp`] use that transport only;
//! [`Transport::Auto`] (the default) first takes the server's Unix socket when the
//! access file lists one and this process runs on the server's host (same kernel boot
//! and network namespace, [`host_id`]), then dials QUIC and falls back to TCP when the
//! QUIC handshake gets no answer within [`FALLBACK_AFTER`]; a process that fell back
//! once dials TCP first from then on (its network does not pass UDP).
//!
//! The Unix link: the socket lives in the server's private folder (mode 0700), so only
//! its user (and root) can reach it, and each side checks the other's user id
//! (`SO_PEERCRED`) before the token is sent. Bytes between two processes of one kernel
//! need no encryption; what it saves is QUIC's per-packet work (encryption, packet
//! building and acknowledgements, about 1.4 us per 1452 bytes on each side) on every
//! result a same-host worker sends (docs/PERFORMANCE.md, "Same-host link").
//!
//! TCP connections are kept honest like QUIC's: no Nagle delay, keep-alive probes
//! after a third of the idle timeout, and `TCP_USER_TIMEOUT` so that data left
//! unacknowledged for the idle timeout ends the connection (a partitioned peer is
//! noticed in the same time as over QUIC). What TCP cannot carry is QUIC's close
//! reason: the server's deliberate stop reaches TCP peers as its `Shutdown` message.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::BufWriter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::TlsStream;

use super::{Access, ConnectError, SERVER_NAME, TransportError, tls_client};

/// How long `auto` waits for a QUIC handshake before trying TCP.
pub const FALLBACK_AFTER: Duration = Duration::from_secs(3);

/// Set once this process's QUIC handshakes went unanswered and TCP answered.
static PREFER_TCP: AtomicBool = AtomicBool::new(false);

/// Which transport to dial (`transport` in a site file, `--transport`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// QUIC, falling back to TCP when QUIC gets no answer.
    #[default]
    Auto,
    Quic,
    Tcp,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Auto => "auto",
            Transport::Quic => "quic",
            Transport::Tcp => "tcp",
        }
    }
}

impl std::str::FromStr for Transport {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Transport::Auto),
            "quic" => Ok(Transport::Quic),
            "tcp" => Ok(Transport::Tcp),
            other => Err(format!("unknown transport \"{other}\"; expected auto, quic or tcp")),
        }
    }
}

/// What a connection runs over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKind {
    Quic,
    Tcp,
    Unix,
}

impl LinkKind {
    pub fn name(self) -> &'static str {
        match self {
            LinkKind::Quic => "quic",
            LinkKind::Tcp => "tcp",
            LinkKind::Unix => "unix",
        }
    }
}

/// A connection lost or refused below the frames.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LinkError(pub String);

impl From<quinn::ConnectionError> for LinkError {
    fn from(e: quinn::ConnectionError) -> Self {
        LinkError(e.to_string())
    }
}

type Tls = TlsStream<TcpStream>;

/// The byte stream under a connection that is not QUIC: TLS over TCP, or a Unix socket.
trait ByteStream: AsyncRead + AsyncWrite + std::marker::Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + std::marker::Send + Unpin> ByteStream for T {}
type Stream = Box<dyn ByteStream>;

/// Small frames are gathered here and leave in one write (a TLS record, a system
/// call) when the frame is flushed; payloads larger than this pass straight through.
const STREAM_WRITE_BUFFER: usize = 64 << 10;

/// An established connection, authenticated by certificate (QUIC, TCP) or by user id
/// (Unix); the token comes next, in the first frame. Clones share the connection.
#[derive(Clone)]
pub struct Conn(Inner);

#[derive(Clone)]
enum Inner {
    Quic(quinn::Connection),
    Stream(Arc<StreamConn>),
}

/// A TLS-over-TCP or Unix connection: one byte stream.
struct StreamConn {
    kind: LinkKind,
    /// The peer, for messages: an address, or the socket's path.
    remote: String,
    /// The one stream, until `open_bi`/`accept_bi` takes it.
    stream: std::sync::Mutex<Option<Stream>>,
    /// A duplicate of the socket, to shut it down from any clone of the connection.
    fd: OwnedFd,
    closed: tokio::sync::watch::Sender<bool>,
}

impl StreamConn {
    fn conn(kind: LinkKind, remote: String, stream: Stream, fd: OwnedFd) -> Conn {
        let (closed, _) = tokio::sync::watch::channel(false);
        Conn(Inner::Stream(Arc::new(StreamConn {
            kind,
            remote,
            stream: std::sync::Mutex::new(Some(stream)),
            fd,
            closed,
        })))
    }

    fn shut(&self) {
        let _ = nix::sys::socket::shutdown(std::os::fd::AsRawFd::as_raw_fd(&self.fd), nix::sys::socket::Shutdown::Both);
        self.closed.send_replace(true);
    }
}

impl Drop for StreamConn {
    fn drop(&mut self) {
        self.shut();
    }
}

impl From<quinn::Connection> for Conn {
    fn from(c: quinn::Connection) -> Self {
        Conn(Inner::Quic(c))
    }
}

impl Conn {
    /// A TLS connection over TCP whose handshake is done.
    pub fn tcp(stream: Tls, remote: SocketAddr, idle: Duration) -> io::Result<Self> {
        let tcp = stream.get_ref().0;
        tune_tcp(tcp, idle)?;
        let fd = tcp.as_fd().try_clone_to_owned()?;
        Ok(StreamConn::conn(LinkKind::Tcp, remote.to_string(), Box::new(stream), fd))
    }

    /// A Unix socket connection whose peer runs as this process's user, either side
    /// (`path`: the socket's, for messages).
    pub fn unix(stream: UnixStream, path: &str) -> io::Result<Self> {
        same_user(&stream)?;
        let fd = stream.as_fd().try_clone_to_owned()?;
        super::enlarge_send_buffer(&stream);
        Ok(StreamConn::conn(LinkKind::Unix, format!("unix:{path}"), Box::new(stream), fd))
    }

    pub fn kind(&self) -> LinkKind {
        match &self.0 {
            Inner::Quic(_) => LinkKind::Quic,
            Inner::Stream(t) => t.kind,
        }
    }

    /// The peer, for messages.
    pub fn remote_address(&self) -> String {
        match &self.0 {
            Inner::Quic(c) => c.remote_address().to_string(),
            Inner::Stream(t) => t.remote.clone(),
        }
    }

    fn take_stream(t: &Arc<StreamConn>) -> Result<(SendHalf, RecvHalf), LinkError> {
        let s = t.stream.lock().expect("stream lock").take();
        let s = s.ok_or_else(|| LinkError(format!("a {} connection carries one stream only", t.kind.name())))?;
        let (r, w) = tokio::io::split(s);
        let w = BufWriter::with_capacity(STREAM_WRITE_BUFFER, w);
        Ok((SendHalf(Send::Stream(w)), RecvHalf(Recv::Stream { read: r, conn: t.clone() })))
    }

    /// Open the connection's stream (the dialling side).
    pub async fn open_bi(&self) -> Result<(SendHalf, RecvHalf), LinkError> {
        match &self.0 {
            Inner::Quic(c) => {
                let (s, r) = c.open_bi().await?;
                Ok((SendHalf(Send::Quic(s)), RecvHalf(Recv::Quic(r))))
            }
            Inner::Stream(t) => Self::take_stream(t),
        }
    }

    /// Accept the connection's stream (the server).
    pub async fn accept_bi(&self) -> Result<(SendHalf, RecvHalf), LinkError> {
        match &self.0 {
            Inner::Quic(c) => {
                let (s, r) = c.accept_bi().await?;
                Ok((SendHalf(Send::Quic(s)), RecvHalf(Recv::Quic(r))))
            }
            Inner::Stream(t) => Self::take_stream(t),
        }
    }

    /// Close at once (with a reason the peer sees over QUIC).
    pub fn close(&self, code: u32, reason: &[u8]) {
        match &self.0 {
            Inner::Quic(c) => c.close(quinn::VarInt::from_u32(code), reason),
            Inner::Stream(t) => t.shut(),
        }
    }

    /// Until the connection is closed, by either side. Over TCP a peer's close is seen
    /// by whoever reads the stream; see [`RecvHalf::until_closed`] when nobody does.
    pub async fn closed(&self) {
        match &self.0 {
            Inner::Quic(c) => {
                c.closed().await;
            }
            Inner::Stream(t) => {
                let mut rx = t.closed.subscribe();
                let _ = rx.wait_for(|c| *c).await;
            }
        }
    }

    /// The measured round trip (QUIC; unknown over streams).
    pub fn rtt(&self) -> Option<Duration> {
        match &self.0 {
            Inner::Quic(c) => Some(c.rtt()),
            Inner::Stream(_) => None,
        }
    }

    /// Packets sent so far and those of them declared lost (QUIC; unknown over
    /// streams).
    pub fn packets_lost(&self) -> Option<(u64, u64)> {
        match &self.0 {
            Inner::Quic(c) => {
                let path = c.stats().path;
                Some((path.sent_packets, path.lost_packets))
            }
            Inner::Stream(_) => None,
        }
    }

    pub fn is_open(&self) -> bool {
        match &self.0 {
            Inner::Quic(c) => c.close_reason().is_none(),
            Inner::Stream(t) => !*t.closed.borrow(),
        }
    }

    /// The reason the peer gave when it closed the connection on purpose (QUIC only).
    pub fn peer_close_reason(&self) -> Option<Vec<u8>> {
        match &self.0 {
            Inner::Quic(c) => match c.close_reason() {
                Some(quinn::ConnectionError::ApplicationClosed(a)) => Some(a.reason.to_vec()),
                _ => None,
            },
            Inner::Stream(_) => None,
        }
    }
}

/// Refuse a Unix peer that runs as another user (the socket's folder is private, so
/// only root could be one).
fn same_user(stream: &UnixStream) -> io::Result<()> {
    let cred = stream.peer_cred()?;
    let me = nix::unistd::getuid().as_raw();
    if cred.uid() != me {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("the peer on the Unix socket runs as user {}, not {me}", cred.uid()),
        ));
    }
    Ok(())
}

/// No Nagle delay; keep-alive probes after a third of `idle` of silence, three of
/// them a ninth apart; unacknowledged data ends the connection after `idle`.
fn tune_tcp(tcp: &TcpStream, idle: Duration) -> io::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    tcp.set_nodelay(true)?;
    let secs = |d: Duration| (d.as_secs() as u32).max(1);
    let fd = tcp.as_fd();
    let err = |e: nix::Error| io::Error::from_raw_os_error(e as i32);
    setsockopt(&fd, sockopt::KeepAlive, &true).map_err(err)?;
    setsockopt(&fd, sockopt::TcpKeepIdle, &secs(idle / 3)).map_err(err)?;
    setsockopt(&fd, sockopt::TcpKeepInterval, &secs(idle / 9)).map_err(err)?;
    setsockopt(&fd, sockopt::TcpKeepCount, &3).map_err(err)?;
    setsockopt(&fd, sockopt::TcpUserTimeout, &(idle.as_millis() as u32)).map_err(err)?;
    Ok(())
}

enum Send {
    Quic(quinn::SendStream),
    Stream(BufWriter<WriteHalf<Stream>>),
}

/// The sending half of a connection's stream.
pub struct SendHalf(Send);

impl SendHalf {
    /// Write one frame ([`crate::proto::write_frame`]'s format) whose payload is shared
    /// bytes: QUIC takes them as they are, without a copy, and keeps them until the
    /// peer has acknowledged them (a buffer shared by several streams, or one whose
    /// owner gives it back to a pool once dropped); over streams they are written.
    pub async fn write_frame_shared<M: Serialize>(&mut self, msg: &M, payload: bytes::Bytes) -> Result<(), crate::proto::FrameError> {
        let Send::Quic(s) = &mut self.0 else {
            return crate::proto::write_frame(self, msg, &payload).await;
        };
        let head = crate::proto::encode(msg, payload.len() as u64)?;
        s.write_chunk(head.into()).await.map_err(io::Error::from)?;
        if !payload.is_empty() {
            s.write_chunk(payload).await.map_err(io::Error::from)?;
        }
        Ok(())
    }

    /// No more data: the peer reads the end of the stream after what was sent.
    pub async fn finish(&mut self) {
        match &mut self.0 {
            Send::Quic(s) => {
                let _ = s.finish();
            }
            Send::Stream(w) => {
                let _ = w.shutdown().await;
            }
        }
    }
}

impl AsyncWrite for SendHalf {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            Send::Quic(s) => Pin::new(s).poll_write(cx, buf).map_err(io::Error::from),
            Send::Stream(w) => Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Send::Quic(s) => Pin::new(s).poll_flush(cx),
            Send::Stream(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Send::Quic(s) => Pin::new(s).poll_shutdown(cx),
            Send::Stream(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}

enum Recv {
    Quic(quinn::RecvStream),
    Stream { read: ReadHalf<Stream>, conn: Arc<StreamConn> },
}

/// The receiving half of a connection's stream.
pub struct RecvHalf(Recv);

impl RecvHalf {
    /// Until the peer closes the connection (its stream ends), reading and dropping
    /// anything still sent.
    pub async fn until_closed(&mut self, conn: &Conn) {
        match &mut self.0 {
            Recv::Quic(_) => conn.closed().await,
            Recv::Stream { .. } => {
                let mut buf = [0u8; 4096];
                while matches!(self.read(&mut buf).await, Ok(n) if n > 0) {}
            }
        }
    }
}

impl AsyncRead for RecvHalf {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Recv::Quic(r) => Pin::new(r).poll_read(cx, buf),
            Recv::Stream { read, conn } => {
                let before = buf.filled().len();
                let r = Pin::new(read).poll_read(cx, buf);
                // The end of the stream or an error: the connection is over.
                if matches!(&r, Poll::Ready(Err(_))) || matches!(&r, Poll::Ready(Ok(())) if buf.filled().len() == before) {
                    conn.closed.send_replace(true);
                }
                r
            }
        }
    }
}

/// Connect to the server of an access file, by its transport ([`Access::dial_via`]).
/// The connection is declared dead after `idle` without any packet from the server
/// (keep-alives flow every `idle / 3` on a quiet connection). The client endpoint
/// (QUIC) lives in the returned [`Dialed`].
pub async fn connect(access: &Access, connect_timeout: Duration, idle: Duration) -> Result<Dialed, ConnectError> {
    if access.transport == Transport::Auto
        && let Some(d) = connect_unix(access).await
    {
        return Ok(d);
    }
    match access.transport {
        Transport::Quic => connect_quic(access, connect_timeout, idle).await,
        Transport::Tcp => connect_tcp(access, connect_timeout, idle).await,
        Transport::Auto if access.tcp_addresses.is_empty() => connect_quic(access, connect_timeout, idle).await,
        Transport::Auto if PREFER_TCP.load(Ordering::Relaxed) => match connect_tcp(access, connect_timeout, idle).await {
            Ok(d) => Ok(d),
            Err(ConnectError::Unreachable { .. }) => connect_quic(access, connect_timeout, idle).await,
            Err(e) => Err(e),
        },
        Transport::Auto => match connect_quic(access, connect_timeout.min(FALLBACK_AFTER), idle).await {
            Ok(d) => Ok(d),
            Err(ConnectError::Unreachable { reason: quic, .. }) => match connect_tcp(access, connect_timeout, idle).await {
                Ok(d) => {
                    tracing::info!(quic = %quic, "QUIC got no answer; connected over TCP");
                    PREFER_TCP.store(true, Ordering::Relaxed);
                    Ok(d)
                }
                Err(ConnectError::Unreachable { tried, reason }) => Err(ConnectError::Unreachable {
                    tried: format!("{} (QUIC) and {tried} (TCP)", access.addresses.join(", ")),
                    reason: format!("QUIC: {quic}; TCP: {reason}"),
                }),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
    }
}

/// A connection and what must live as long as it (the QUIC client endpoint).
pub struct Dialed {
    pub conn: Conn,
    endpoint: Option<quinn::Endpoint>,
}

impl Dialed {
    /// Give a close just made a moment to leave before the process exits.
    pub async fn linger(&self, within: Duration) {
        if let Some(e) = &self.endpoint {
            let _ = tokio::time::timeout(within, e.wait_idle()).await;
        }
    }
}

/// This process's host as the Unix link sees it: the kernel's boot and the network
/// namespace. Processes that share both reach each other's Unix sockets; the netns
/// testbed's "hosts" (namespaces of one kernel) do not count as one host.
pub fn host_id() -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let net = std::fs::read_link("/proc/self/ns/net").ok()?;
    Some(format!("{}/{}", boot.trim(), net.display()))
}

/// The server's Unix socket, when the access file lists one for this host. Any
/// failure falls back to the network (and is only logged: a server on another host
/// with the same folder, a socket left by a server that is gone).
async fn connect_unix(access: &Access) -> Option<Dialed> {
    let (path, host) = (access.unix.as_deref()?, access.unix_host.as_deref()?);
    if host_id().as_deref() != Some(host) {
        return None;
    }
    let dial = async {
        let stream = tokio::time::timeout(Duration::from_secs(5), UnixStream::connect(path))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer within 5 s"))??;
        Conn::unix(stream, path)
    };
    match dial.await {
        Ok(conn) => Some(Dialed { conn, endpoint: None }),
        Err(e) => {
            tracing::debug!(path, error = %e, "the server's Unix socket did not answer; dialling over the network");
            None
        }
    }
}

async fn resolve(a: &str) -> Result<Vec<SocketAddr>, String> {
    match tokio::net::lookup_host(a).await {
        Ok(it) => Ok(it.collect()),
        Err(e) => Err(format!("{a}: {e}")),
    }
}

fn cert(access: &Access) -> Result<rustls::pki_types::CertificateDer<'static>, ConnectError> {
    Ok(access.cert_der().map_err(|reason| TransportError::BadAccess {
        path: "access file".into(),
        reason,
    })?)
}

/// Dial each address of `list` in turn (every address a name resolves to) until one
/// answers within `connect_timeout`. `dial` fails for good with a `ConnectError` (no
/// socket), or for this address with a message; a certificate other than the pinned
/// one (`mismatch`) ends the search at once.
async fn dial_each<F, Fut>(
    list: &[String],
    none: &str,
    connect_timeout: Duration,
    mismatch: &AtomicBool,
    mut dial: F,
) -> Result<Dialed, ConnectError>
where
    F: FnMut(SocketAddr) -> Fut,
    Fut: std::future::Future<Output = Result<Result<Dialed, String>, ConnectError>>,
{
    let mut last = none.to_string();
    for a in list {
        let addrs = match resolve(a).await {
            Ok(v) => v,
            Err(e) => {
                last = e;
                continue;
            }
        };
        if addrs.is_empty() {
            return Err(ConnectError::BadAddress(a.clone()));
        }
        for addr in addrs {
            match tokio::time::timeout(connect_timeout, dial(addr)).await {
                Ok(r) => match r? {
                    Ok(d) => return Ok(d),
                    Err(e) => {
                        if mismatch.load(Ordering::SeqCst) {
                            return Err(ConnectError::CertificateMismatch { addr: addr.to_string() });
                        }
                        last = format!("{addr}: {e}");
                    }
                },
                Err(_) => last = format!("{addr}: no answer within {}s", connect_timeout.as_secs_f64()),
            }
        }
    }
    Err(ConnectError::Unreachable {
        tried: list.join(", "),
        reason: last,
    })
}

async fn connect_quic(access: &Access, connect_timeout: Duration, idle: Duration) -> Result<Dialed, ConnectError> {
    let (config, mismatch) = super::client_config(cert(access)?, idle)?;
    dial_each(&access.addresses, "no addresses listed", connect_timeout, &mismatch, |addr| {
        let mut config = config.clone();
        async move {
            let bind: SocketAddr = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("addr");
            let endpoint = super::endpoint(None, bind).map_err(|source| TransportError::Bind { addr: bind, source })?;
            super::tune_client(&mut config, idle, addr);
            let connecting = match endpoint.connect_with(config, addr, SERVER_NAME) {
                Ok(c) => c,
                Err(e) => return Ok(Err(e.to_string())),
            };
            Ok(match connecting.await {
                Ok(conn) => Ok(Dialed {
                    conn: conn.into(),
                    endpoint: Some(endpoint),
                }),
                Err(e) => Err(e.to_string()),
            })
        }
    })
    .await
}

async fn connect_tcp(access: &Access, connect_timeout: Duration, idle: Duration) -> Result<Dialed, ConnectError> {
    let (tls, mismatch) = tls_client(cert(access)?)?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let name = rustls::pki_types::ServerName::try_from(SERVER_NAME).expect("a valid server name");
    let none = "the access file lists no TCP address (a server older than TCP support?)";
    dial_each(&access.tcp_addresses, none, connect_timeout, &mismatch, |addr| {
        let (connector, name) = (connector.clone(), name.clone());
        async move {
            let tls = async {
                let tcp = TcpStream::connect(addr).await?;
                connector.connect(name, tcp).await
            };
            Ok(match tls.await {
                Ok(tls) => Conn::tcp(TlsStream::Client(tls), addr, idle)
                    .map(|conn| Dialed { conn, endpoint: None })
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            })
        }
    })
    .await
}
