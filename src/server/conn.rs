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

pub(super) async fn accept_loop(endpoint: quinn::Endpoint, token: Arc<Token>, events: mpsc::UnboundedSender<Event>) {
    while let Some(incoming) = endpoint.accept().await {
        let token = token.clone();
        let events = events.clone();
        let remote = incoming.remote_address();
        tokio::spawn(
            async move {
                if let Err(e) = handle(incoming, token, events).await {
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

async fn handle(incoming: quinn::Incoming, token: Arc<Token>, events: mpsc::UnboundedSender<Event>) -> anyhow::Result<()> {
    let conn = tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await??;
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
