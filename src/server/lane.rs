//! Results lanes: a worker on another host that must send its blocks (it cannot write
//! them into the output itself) opens a second link beside its QUIC connection, TLS
//! over TCP to the server's TCP port, and sends its `Results` there. TCP moves bulk
//! bytes at a fraction of QUIC's CPU per byte (the kernel segments, acknowledges and
//! coalesces them; QUIC pays user-space work per 1452-byte packet on each side), so
//! one worker's blocks arrive 2-3x faster per core (docs/PERFORMANCE.md, "QUIC bulk
//! path"). Everything else (tasks, heartbeats, errors, drains) stays on QUIC.
//!
//! The lane is tied to the worker's QUIC connection by the id the server welcomed it
//! with (the token authenticates it as any peer): it exists only while that
//! connection does. Results may cross either link, in any order (a job takes them in
//! any order). At a clean end (the worker finished its stream) what the lane still
//! carries is read before the worker is reported gone; at any other end the lane is
//! stopped first, so no result of a worker arrives after its end. A lane that breaks
//! while the worker's connection lives takes that connection down too: results lost
//! in it must not leave their tasks held by a worker that will never report them.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::core::WorkerId;
use crate::transport::Conn;

/// How long a clean end waits for the lane's last results.
const DRAIN: Duration = Duration::from_secs(10);

/// The workers whose QUIC connection may take a lane, and their lanes.
#[derive(Clone, Default)]
pub(super) struct Lanes(Arc<Mutex<HashMap<WorkerId, Slot>>>);

struct Slot {
    /// The worker's QUIC connection.
    worker: Conn,
    lane: Option<Lane>,
}

/// The server's hold on a lane being read.
struct Lane {
    conn: Conn,
    /// Stops the lane's reader at its next frame.
    stop: oneshot::Sender<()>,
    /// Resolves when the reader has ended (its sender is dropped).
    done: oneshot::Receiver<()>,
}

/// The lane reader's side of a [`Lane`].
pub(super) struct Attached {
    worker: Conn,
    stop: oneshot::Receiver<()>,
    _done: oneshot::Sender<()>,
}

impl Lanes {
    /// Worker `id`, on QUIC `worker`, may now take a lane.
    pub(super) fn open(&self, id: WorkerId, worker: &Conn) {
        let slot = Slot {
            worker: worker.clone(),
            lane: None,
        };
        self.0.lock().expect("lanes lock").insert(id, slot);
    }

    /// Tie `lane` to worker `id`: none if that worker is not connected over QUIC
    /// here or already has a lane.
    pub(super) fn attach(&self, id: WorkerId, lane: &Conn) -> Option<Attached> {
        let mut all = self.0.lock().expect("lanes lock");
        let slot = all.get_mut(&id).filter(|s| s.lane.is_none())?;
        let (stop_tx, stop) = oneshot::channel();
        let (done_tx, done) = oneshot::channel();
        slot.lane = Some(Lane {
            conn: lane.clone(),
            stop: stop_tx,
            done,
        });
        Some(Attached {
            worker: slot.worker.clone(),
            stop,
            _done: done_tx,
        })
    }

    /// Worker `id`'s connection ended (`clean`: it finished its stream): read what
    /// its lane still carries (clean) or stop it, then close it. Returns once no more
    /// of its results can reach the actor.
    pub(super) async fn close(&self, id: WorkerId, clean: bool) {
        let slot = self.0.lock().expect("lanes lock").remove(&id);
        let Some(Lane { conn, stop, mut done }) = slot.and_then(|s| s.lane) else {
            return;
        };
        let drained = clean && tokio::time::timeout(DRAIN, &mut done).await.is_ok();
        if !drained {
            let _ = stop.send(());
            // The reader stops at its next turn: it never waits long.
            let _ = tokio::time::timeout(Duration::from_secs(5), done).await;
        }
        conn.close(0, b"goodbye");
    }
}

/// Read a lane (`frames` forwards its results to the actor) until its end or until
/// its worker's end stops it. A lane that breaks closes its worker's connection.
pub(super) async fn serve(attached: Attached, frames: impl Future<Output = Result<(), String>>) {
    let Attached { worker, mut stop, _done } = attached;
    tracing::debug!("results lane open");
    tokio::select! {
        biased;
        _ = &mut stop => tracing::debug!("results lane stopped with its worker"),
        ended = frames => match ended {
            Ok(()) => tracing::debug!("results lane finished"),
            Err(reason) => {
                tracing::warn!(%reason, "results lane broken; dropping its worker, whose tasks run again elsewhere");
                worker.close(1, b"results lane broken");
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn conn() -> (Conn, Conn) {
        let (a, b) = tokio::net::UnixStream::pair().expect("socket pair");
        (Conn::unix(a, "a").expect("a"), Conn::unix(b, "b").expect("b"))
    }

    /// Worker `id` on its connection, with a lane attached: the registry, the
    /// worker's and the lane's connections (their peers kept open), and the reader's
    /// side of the lane.
    fn attached(id: u32) -> (Lanes, Conn, Conn, [Conn; 2], Attached) {
        let lanes = Lanes::default();
        let ((worker, w), (lane, l)) = (conn(), conn());
        lanes.open(WorkerId(id), &worker);
        let attached = lanes.attach(WorkerId(id), &lane).expect("attached");
        (lanes, worker, lane, [w, l], attached)
    }

    #[tokio::test]
    async fn a_lane_attaches_only_to_a_worker_on_quic_here_and_only_once() {
        let lanes = Lanes::default();
        let ((worker, _w), (lane, _l)) = (conn(), conn());
        assert!(lanes.attach(WorkerId(7), &lane).is_none(), "no such worker");
        lanes.open(WorkerId(7), &worker);
        let first = lanes.attach(WorkerId(7), &lane);
        assert!(first.is_some());
        assert!(lanes.attach(WorkerId(7), &lane).is_none(), "a second lane");
        drop(first); // its reader ended
        lanes.close(WorkerId(7), false).await;
        assert!(lanes.attach(WorkerId(7), &lane).is_none(), "the worker is gone");
        assert!(!lane.is_open(), "its lane was closed");
    }

    #[tokio::test]
    async fn a_clean_end_reads_the_lane_to_its_end_first() {
        let (lanes, worker, _lane, _peers, attached) = attached(1);
        let (last_tx, last_rx) = oneshot::channel::<()>();
        let read_all = Arc::new(AtomicBool::new(false));
        let flag = read_all.clone();
        let reader = tokio::spawn(serve(attached, async move {
            let _ = last_rx.await;
            flag.store(true, Ordering::SeqCst);
            Ok(())
        }));
        let closing = tokio::spawn({
            let lanes = lanes.clone();
            async move { lanes.close(WorkerId(1), true).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!closing.is_finished(), "waits for the lane's last results");
        last_tx.send(()).expect("reader waiting");
        closing.await.expect("close");
        assert!(
            read_all.load(Ordering::SeqCst),
            "the lane was read to its end before the worker's end"
        );
        reader.await.expect("reader");
        assert!(worker.is_open(), "a lane that ended cleanly leaves its worker alone");
    }

    #[tokio::test]
    async fn any_other_end_stops_the_lane_at_once() {
        let (lanes, _worker, lane, _peers, attached) = attached(2);
        let reader = tokio::spawn(serve(attached, std::future::pending()));
        tokio::time::timeout(Duration::from_secs(2), lanes.close(WorkerId(2), false))
            .await
            .expect("stopped without waiting for the lane");
        tokio::time::timeout(Duration::from_secs(2), reader)
            .await
            .expect("reader ended")
            .expect("reader");
        assert!(!lane.is_open());
    }

    #[tokio::test]
    async fn a_broken_lane_takes_its_worker_down() {
        let (_lanes, worker, _lane, _peers, attached) = attached(3);
        serve(attached, async { Err("reset".to_string()) }).await;
        assert!(!worker.is_open(), "results lost in the lane must not stay held by the worker");
    }
}
