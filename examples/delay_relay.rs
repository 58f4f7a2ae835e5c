//! A UDP relay that adds a fixed delay each way: the netns testbed's stand-in for a
//! long network (this machine's kernel has no `netem` qdisc). Peers dial the relay
//! instead of the server (`--server-address RELAY`); every datagram is held DELAY_MS
//! before it is passed on, in both directions, so the round trip grows by twice that.
//! Each peer address gets its own upstream socket, so the server sees one address per
//! peer as it would without the relay. Order is kept (a constant delay is a FIFO).
//!
//! Run: delay_relay LISTEN_ADDR UPSTREAM_ADDR DELAY_MS
//! Prints `listening on ADDR` once bound (LISTEN_ADDR may have port 0), then `peer
//! ADDR via ADDR` for each new peer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Datagrams waiting out their delay, then sent on a socket (to one address, or to
/// the address it is connected to).
#[derive(Clone)]
struct DelayLine {
    tx: mpsc::UnboundedSender<(Instant, Vec<u8>)>,
    delay: Duration,
}

impl DelayLine {
    fn new(delay: Duration, socket: Arc<UdpSocket>, to: Option<SocketAddr>) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
        tokio::spawn(async move {
            while let Some((due, d)) = rx.recv().await {
                // Wait only for a datagram more than a millisecond early, and wake a
                // millisecond before its time: a timer wait rounds up to the timer's
                // millisecond, which would let one datagram through per millisecond.
                let slack = Duration::from_millis(1);
                if due > Instant::now() + slack {
                    tokio::time::sleep_until(due - slack).await;
                }
                let _ = match to {
                    Some(a) => socket.send_to(&d, a).await,
                    None => socket.send(&d).await,
                };
            }
        });
        Self { tx, delay }
    }

    /// Whether the line still runs.
    fn push(&self, d: &[u8]) -> bool {
        self.tx.send((Instant::now() + self.delay, d.to_vec())).is_ok()
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, upstream, delay] = args.as_slice() else {
        return Err("usage: delay_relay LISTEN_ADDR UPSTREAM_ADDR DELAY_MS".into());
    };
    let upstream: SocketAddr = upstream.parse().map_err(|e| format!("upstream \"{upstream}\": {e}"))?;
    let delay = Duration::from_millis(delay.parse().map_err(|e| format!("delay \"{delay}\": {e}"))?);
    // A network's buffers, not the kernel's 208 KiB default (which drops bursts).
    let front = UdpSocket::bind(listen.as_str()).await?;
    drover::transport::enlarge_socket_buffers(&front);
    let front = Arc::new(front);
    println!("listening on {}", front.local_addr()?);
    let mut peers: HashMap<SocketAddr, DelayLine> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from) = front.recv_from(&mut buf).await?;
        let to_server = match peers.get(&from) {
            Some(tx) => tx.clone(),
            None => {
                let bind: SocketAddr = if upstream.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse()?;
                let back = UdpSocket::bind(bind).await?;
                drover::transport::enlarge_socket_buffers(&back);
                let back = Arc::new(back);
                back.connect(upstream).await?;
                // Server -> peer: through the front socket, after the delay.
                let to_peer = DelayLine::new(delay, front.clone(), Some(from));
                let b = back.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    while let Ok(n) = b.recv(&mut buf).await {
                        if !to_peer.push(&buf[..n]) {
                            return;
                        }
                    }
                });
                // Peer -> server: through this peer's own upstream socket.
                println!("peer {from} via {}", back.local_addr()?);
                let tx = DelayLine::new(delay, back, None);
                peers.insert(from, tx.clone());
                tx
            }
        };
        to_server.push(&buf[..n]);
    }
}
