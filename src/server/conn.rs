//! Per-connection tasks: the handshake (version, token), then frames in and out.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::actor::{Event, Outgoing};
use crate::proto::{self, Hello, PROTOCOL_VERSION, PeerMsg, Role, ServerMsg};
use crate::transport::Token;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The connections accepted so far that may still be open.
#[derive(Clone, Default)]
pub(super) struct Peers(Arc<std::sync::Mutex<Vec<quinn::Connection>>>);

impl Peers {
    fn add(&self, conn: &quinn::Connection) {
        let mut all = self.0.lock().expect("peers lock");
        all.retain(|c| c.close_reason().is_none());
        all.push(conn.clone());
    }

    /// Whether some connection is still open: closing the endpoint must then send it
    /// a close before the process exits.
    pub(super) fn any_open(&self) -> bool {
        self.0.lock().expect("peers lock").iter().any(|c| c.close_reason().is_none())
    }
}

pub(super) async fn accept_loop(endpoint: quinn::Endpoint, token: Arc<Token>, events: mpsc::UnboundedSender<Event>, peers: Peers) {
    while let Some(incoming) = endpoint.accept().await {
        let token = token.clone();
        let events = events.clone();
        let remote = incoming.remote_address();
        let peers = peers.clone();
        tokio::spawn(
            async move {
                if let Err(e) = handle(incoming, token, events, peers).await {
                    tracing::debug!(error = %e, "connection ended");
                }
            }
            .instrument(tracing::debug_span!("conn", %remote)),
        );
    }
}

async fn reject(conn: &quinn::Connection, mut send: quinn::SendStream, reason: String) {
    tracing::warn!(remote = %conn.remote_address(), %reason, "peer rejected");
    let _ = proto::write_frame(&mut send, &ServerMsg::Rejected { reason }, &[]).await;
    let _ = send.finish();
    // Give the peer a moment to read the reason before closing.
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
    conn.close(quinn::VarInt::from_u32(1), b"rejected");
}

async fn handle(incoming: quinn::Incoming, token: Arc<Token>, events: mpsc::UnboundedSender<Event>, peers: Peers) -> anyhow::Result<()> {
    let conn = tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await??;
    peers.add(&conn);
    let (send, mut recv) = tokio::time::timeout(HANDSHAKE_TIMEOUT, conn.accept_bi()).await??;
    let (hello, _): (PeerMsg, _) = tokio::time::timeout(HANDSHAKE_TIMEOUT, proto::read_frame(&mut recv)).await??;
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
    if !token.matches(&presented) {
        let reason = "authentication rejected: the token does not match this server's; use the access file written by the running server"
            .to_string();
        reject(&conn, send, reason).await;
        return Ok(());
    }
    let (tx, rx) = mpsc::unbounded_channel::<Outgoing>();
    let writer = tokio::spawn(write_loop(send, rx, conn.clone()));
    match role {
        Role::Worker => {
            let Some(info) = worker else {
                let _ = tx.send(Outgoing::msg(ServerMsg::Rejected {
                    reason: "worker without worker info".into(),
                }));
                return Ok(());
            };
            let (reply, id) = oneshot::channel();
            events.send(Event::WorkerConnected {
                info,
                tx: tx.clone(),
                reply,
            })?;
            let id = id.await?;
            let span = tracing::info_span!("worker", worker = %id);
            let reason = async {
                loop {
                    match proto::read_frame::<_, PeerMsg>(&mut recv).await {
                        Ok((msg, payload)) => {
                            if events
                                .send(Event::WorkerMsg {
                                    id,
                                    msg,
                                    payload: Bytes::from(payload),
                                })
                                .is_err()
                            {
                                return "server stopping".to_string();
                            }
                        }
                        Err(e) => return e.to_string(),
                    }
                }
            }
            .instrument(span)
            .await;
            // The worker finished its stream (it was asked to stop) or is gone: close
            // from this side, so a leaving worker need not sit out QUIC's draining
            // period to be sure its own close was sent.
            conn.close(quinn::VarInt::from_u32(0), b"goodbye");
            let _ = events.send(Event::WorkerGone { id, reason });
        }
        Role::Client => {
            loop {
                match proto::read_frame::<_, PeerMsg>(&mut recv).await {
                    Ok((PeerMsg::Submit { workload }, _)) => events.send(Event::Submit {
                        workload,
                        client: tx.clone(),
                    })?,
                    Ok((PeerMsg::GetStatus, _)) => events.send(Event::Status { client: tx.clone() })?,
                    Ok((PeerMsg::Stop, _)) => events.send(Event::Stop)?,
                    Ok((PeerMsg::Scale { workers }, _)) => events.send(Event::Scale {
                        workers,
                        client: tx.clone(),
                    })?,
                    Ok((PeerMsg::Adapt { min, max }, _)) => events.send(Event::Adapt {
                        min,
                        max,
                        client: tx.clone(),
                    })?,
                    Ok((other, _)) => tracing::debug!(?other, "unexpected client message"),
                    Err(_) => break,
                }
            }
            // The client went away: a job it submitted is cancelled.
            let _ = events.send(Event::ClientGone { client: tx.clone() });
        }
    }
    drop(tx);
    let _ = writer.await;
    Ok(())
}

async fn write_loop(mut send: quinn::SendStream, mut rx: mpsc::UnboundedReceiver<Outgoing>, conn: quinn::Connection) {
    while let Some(out) = rx.recv().await {
        let shutdown = matches!(out.msg, ServerMsg::Shutdown { .. });
        if let Err(e) = proto::write_frame(&mut send, &out.msg, &out.payload).await {
            tracing::debug!(error = %e, "send failed");
            return;
        }
        if shutdown {
            let _ = send.finish();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
            return;
        }
    }
    let _ = send.finish();
}
