//! A hostile crowd for the hardening tests (issue 16): N QUIC connections to a server
//! that never authenticate, garbage datagrams at its port, and peers that show the
//! right token and then send a frame no server should accept. From one process, one
//! UDP socket for the connections.
//!
//! Kinds of connection: three fifths (0) the TLS handshake, then silence; the rest in
//! turn (1) a `Hello` with a wrong token, (2) a first frame claiming a 1 GiB payload,
//! (3) random bytes on the stream. With `--bad-peers K`, K more connections present the access file's
//! token as a client and then send a frame header claiming a 64 GiB payload.
//!
//!   flood --access SRV/access.toml --connections 2000 [--garbage-mib 100] [--bad-peers 4]
//!
//! Prints one JSON line when every connection has ended: how many completed the
//! handshake, were refused (after a retry) or lost otherwise, the most open at once,
//! how many were closed by the server (and the longest wait for that) or ended by the
//! idle timeout, and whether each bad peer was disconnected.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use drover::proto::{self, Hello, PROTOCOL_VERSION, PeerMsg, Role};
use drover::transport::{self, Access};
use tokio::sync::Semaphore;

#[derive(Default)]
struct Counts {
    handshakes: AtomicU64,
    /// Turned away by the server (`CONNECTION_REFUSED`, after a stateless retry).
    refused: AtomicU64,
    /// Handshakes that failed otherwise (datagrams lost on a flooded socket, the
    /// server's handshake timeout): the server may have held a place for them.
    lost: AtomicU64,
    /// Strangers past the handshake and not yet closed, and the most at once.
    open: AtomicU64,
    open_peak: AtomicU64,
    closed_by_server: AtomicU64,
    /// Ended by the idle timeout: the server's close was lost (or never sent).
    timed_out: AtomicU64,
    longest_ms: AtomicU64,
    bad_peers_closed: AtomicU64,
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    getrandom::fill(&mut v).expect("random bytes");
    v
}

/// One stranger; returns once the connection has ended.
async fn stranger(kind: usize, endpoint: quinn::Endpoint, config: quinn::ClientConfig, addr: SocketAddr, c: Arc<Counts>) {
    let conn = match endpoint.connect_with(config, addr, transport::SERVER_NAME) {
        Ok(connecting) => match connecting.await {
            Ok(conn) => conn,
            Err(quinn::ConnectionError::ConnectionClosed(close)) if close.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED => {
                c.refused.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(_) => {
                c.lost.fetch_add(1, Ordering::Relaxed);
                return;
            }
        },
        Err(_) => {
            c.lost.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    c.handshakes.fetch_add(1, Ordering::Relaxed);
    let open = c.open.fetch_add(1, Ordering::Relaxed) + 1;
    c.open_peak.fetch_max(open, Ordering::Relaxed);
    let t0 = Instant::now();
    let talk = async {
        if kind == 0 {
            return;
        }
        let Ok((mut send, _recv)) = conn.open_bi().await else { return };
        match kind {
            1 => {
                let hello = PeerMsg::Hello(Hello {
                    version: PROTOCOL_VERSION,
                    role: Role::Worker,
                    token: "0".repeat(64),
                    worker: None,
                });
                let _ = proto::write_frame(&mut send, &hello, &[]).await;
            }
            2 => {
                let mut pre = 16u32.to_le_bytes().to_vec();
                pre.extend_from_slice(&(1u64 << 30).to_le_bytes());
                let _ = send.write_all(&pre).await;
            }
            _ => {
                let _ = send.write_all(&random_bytes(4096)).await;
            }
        }
        // Hold the stream open: the server is the one to end this.
        std::future::pending::<()>().await;
    };
    tokio::select! {
        _ = talk => {}
        _ = conn.closed() => {}
    }
    match conn.closed().await {
        quinn::ConnectionError::TimedOut => c.timed_out.fetch_add(1, Ordering::Relaxed),
        _ => {
            c.longest_ms.fetch_max(t0.elapsed().as_millis() as u64, Ordering::Relaxed);
            c.closed_by_server.fetch_add(1, Ordering::Relaxed)
        }
    };
    c.open.fetch_sub(1, Ordering::Relaxed);
}

/// A peer with the right token that then sends a frame claiming 64 GiB. Like a
/// worker, it dials again while the server refuses it (it may, during the flood).
async fn bad_peer(endpoint: quinn::Endpoint, config: quinn::ClientConfig, addr: SocketAddr, token: String, c: Arc<Counts>) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let conn = loop {
        if let Ok(connecting) = endpoint.connect_with(config.clone(), addr, transport::SERVER_NAME)
            && let Ok(conn) = connecting.await
        {
            break conn;
        }
        if Instant::now() > deadline {
            eprintln!("flood: a bad peer never got in");
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (mut send, _recv) = match conn.open_bi().await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("flood: a bad peer could not open its stream: {e}");
            return;
        }
    };
    let hello = PeerMsg::Hello(Hello {
        version: PROTOCOL_VERSION,
        role: Role::Client,
        token,
        worker: None,
    });
    if let Err(e) = proto::write_frame(&mut send, &hello, &[]).await {
        eprintln!("flood: a bad peer could not send its Hello: {e}");
        return;
    }
    let mut pre = 16u32.to_le_bytes().to_vec();
    pre.extend_from_slice(&(64u64 << 30).to_le_bytes());
    let _ = send.write_all(&pre).await;
    match tokio::time::timeout(Duration::from_secs(30), conn.closed()).await {
        // The server's close, or, when that datagram was lost in the flood, the
        // stateless reset its endpoint answers with once it has forgotten the
        // connection: either way the server dropped it.
        Ok(quinn::ConnectionError::ApplicationClosed(_) | quinn::ConnectionError::Reset) => {
            c.bad_peers_closed.fetch_add(1, Ordering::Relaxed);
        }
        other => eprintln!("flood: a bad peer's connection ended otherwise: {other:?}"),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut access, mut n, mut garbage_mib, mut bad) = (None, 0usize, 0usize, 0usize);
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().ok_or(format!("{k} needs a value"));
        match k.as_str() {
            "--access" => access = Some(std::path::PathBuf::from(v()?)),
            "--connections" => n = v()?.parse()?,
            "--garbage-mib" => garbage_mib = v()?.parse()?,
            "--bad-peers" => bad = v()?.parse()?,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let access = Access::load(&access.ok_or("usage: flood --access FILE --connections N [--garbage-mib M] [--bad-peers K]")?)?;
    let config = transport::client_for(&access, Duration::from_secs(60))?;
    let addr: SocketAddr = tokio::net::lookup_host(access.addresses[0].as_str())
        .await?
        .next()
        .ok_or("cannot resolve the server")?;
    let bind: SocketAddr = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse()?;
    let endpoint = transport::endpoint(None, bind)?;
    let c = Arc::new(Counts::default());
    // Every connection at once: more than the server keeps without a token.
    let gate = Arc::new(Semaphore::new(n.max(1)));
    let mut tasks = Vec::new();
    for i in 0..n {
        let (endpoint, config, c, gate) = (endpoint.clone(), config.clone(), c.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let _g = gate.acquire_owned().await;
            // Three fifths stay silent (holding a place each until the server's
            // handshake timeout), so that more than the server keeps are pending at once.
            let kind = if i < n * 3 / 5 { 0 } else { 1 + i % 3 };
            stranger(kind, endpoint, config, addr, c).await;
        }));
    }
    for _ in 0..bad {
        let (endpoint, config, c, token) = (endpoint.clone(), config.clone(), c.clone(), access.token.expose().to_string());
        tasks.push(tokio::spawn(bad_peer(endpoint, config, addr, token, c)));
    }
    // Garbage at the server's port, from a socket of its own.
    let garbage = tokio::spawn(async move {
        let s = tokio::net::UdpSocket::bind(bind).await.expect("bind");
        let mut sent = 0usize;
        let chunk = random_bytes(1200);
        while sent < garbage_mib << 20 {
            let mut d = chunk.clone();
            d[..8].copy_from_slice(&(sent as u64).to_le_bytes());
            let _ = s.send_to(&d, addr).await;
            sent += d.len();
        }
        sent
    });
    let sent = garbage.await?;
    for t in tasks {
        t.await?;
    }
    println!(
        "{{\"connections\": {n}, \"handshakes\": {}, \"refused\": {}, \"lost\": {}, \"open_peak\": {}, \
         \"closed_by_server\": {}, \"timed_out\": {}, \"longest_s\": {:.1}, \"garbage_bytes\": {sent}, \"bad_peers\": {bad}, \"bad_peers_closed\": {}}}",
        c.handshakes.load(Ordering::Relaxed),
        c.refused.load(Ordering::Relaxed),
        c.lost.load(Ordering::Relaxed),
        c.open_peak.load(Ordering::Relaxed),
        c.closed_by_server.load(Ordering::Relaxed),
        c.timed_out.load(Ordering::Relaxed),
        c.longest_ms.load(Ordering::Relaxed) as f64 / 1e3,
        c.bad_peers_closed.load(Ordering::Relaxed),
    );
    Ok(())
}
