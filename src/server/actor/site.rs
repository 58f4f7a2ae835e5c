//! The actor's batch pool: polling the batch system, carrying out the pool's
//! submissions and cancellations, retiring idle jobs, losing the workers of ended jobs,
//! and `drover scale` / `drover adapt`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Actor, Event, Tx, send};
use crate::batch::runner::Runner;
use crate::batch::{JobId, JobState};
use crate::core::WorkerId;
use crate::pool::{Backlog, Pool, PoolAction};
use crate::proto::ServerMsg;

/// A server's batch pool: the pure pool and the runner of its commands.
pub struct SitePool {
    pub pool: Pool,
    pub runner: Arc<Runner>,
    pub(super) polling: bool,
    pub(super) last_poll: Option<Instant>,
    /// Fail the running job after this many consecutive failed submissions while no
    /// worker is connected (one-shot runs; a long-lived server keeps retrying).
    pub give_up_after: Option<u32>,
}

impl SitePool {
    pub fn new(runner: Runner) -> Self {
        let pool = Pool::new(runner.site().workers_per_job());
        Self {
            pool,
            runner: Arc::new(runner),
            polling: false,
            last_poll: None,
            give_up_after: None,
        }
    }
}

/// How often the batch system is asked for job states.
const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// How long a batch job whose worker stopped answering may stay without any worker
/// connected before it is cancelled: time for a worker told to exit to end its job, or
/// for one cut off by a network blip to dial again.
pub(super) const UNRESPONSIVE_GRACE: Duration = Duration::from_secs(15);

/// A worker not heard from for this long had gone quiet (workers send their load every
/// 5 s): if its connection then ends, it timed out rather than closed.
pub(super) const SILENT: Duration = Duration::from_secs(8);

impl Actor {
    /// Workers whose batch job the batch system no longer runs are gone, though their
    /// connections have not timed out yet (a node that died or hung, a worker killed
    /// outright): their tasks run elsewhere now, not after the idle timeout.
    pub(super) fn workers_of_ended_jobs(&mut self, now: Duration) {
        let Some(s) = &self.site else { return };
        let ended: HashSet<String> = s
            .pool
            .jobs(now)
            .into_iter()
            .filter(|j| j.state == JobState::Gone)
            .map(|j| j.id.0)
            .collect();
        let gone: Vec<(WorkerId, String)> = self
            .workers
            .iter()
            .filter_map(|(id, w)| Some((*id, w.info.batch_job.clone().filter(|j| ended.contains(j))?)))
            .collect();
        for (id, job) in gone {
            if let Some(w) = self.workers.get(&id) {
                send(
                    &w.tx,
                    ServerMsg::Shutdown {
                        reason: format!("batch job {job} ended"),
                    },
                );
            }
            self.worker_gone(now, id, format!("its batch job {job} ended (the batch system no longer runs it)"));
        }
    }

    /// A worker stopped answering (no heartbeats, or its connection timed out after it
    /// went quiet) or is stuck in a task: remember its
    /// batch job, which [`Self::cancel_unresponsive_jobs`] cancels if none of its workers
    /// is back by then. A hung node must not hold a place of the pool until its
    /// walltime, and a frozen process cannot obey an order to exit.
    pub(super) fn unresponsive(&mut self, now: Duration, info: &crate::proto::WorkerInfo) {
        if self.site.is_some()
            && let Some(job) = &info.batch_job
        {
            self.unresponsive.entry(JobId(job.clone())).or_insert(now);
        }
    }

    /// Cancel (through the batch system) and replace the batch jobs of unresponsive
    /// workers once [`UNRESPONSIVE_GRACE`] has passed without a worker of theirs
    /// connected; a job with a worker connected is trusted again.
    fn cancel_unresponsive_jobs(&mut self, now: Duration) {
        let Some(s) = &mut self.site else { return };
        let workers = &self.workers;
        let connected = |job: &JobId| workers.values().any(|w| w.info.batch_job.as_deref() == Some(job.0.as_str()));
        self.unresponsive.retain(|job, _| !connected(job));
        let due: Vec<JobId> = self
            .unresponsive
            .iter()
            .filter(|(_, since)| now.saturating_sub(**since) >= UNRESPONSIVE_GRACE)
            .map(|(job, _)| job.clone())
            .collect();
        for job in due {
            self.unresponsive.remove(&job);
            if s.pool.abandon(now, &job) {
                tracing::warn!(job = %job, "cancelling batch job: its workers stopped answering; a new job replaces it");
            }
        }
    }

    /// Apply a client's pool command (scale, adapt) and answer it; `Err` is bad input.
    pub(super) fn pool_command(&mut self, client: &Tx, f: impl FnOnce(&mut Pool, u32, Duration) -> Result<(), String>) {
        let now = self.now();
        let reply = match &mut self.site {
            None => ServerMsg::Failed {
                input_error: true,
                message: "this server has no batch site; start it with `drover server start --site NAME|FILE`".into(),
            },
            Some(_) if self.stopping.is_some() => ServerMsg::Failed {
                input_error: false,
                message: "the server is stopping".into(),
            },
            Some(s) => {
                let threads = s.runner.site().threads_per_worker();
                match f(&mut s.pool, threads, now) {
                    Ok(()) => ServerMsg::Ok,
                    Err(message) => ServerMsg::Failed {
                        input_error: true,
                        message,
                    },
                }
            }
        };
        send(client, reply);
    }

    /// Poll job states, retire drained jobs, let backoffs expire.
    pub(super) fn pool_tick(&mut self, now: Duration) {
        let tasks_left: u64 = self.jobs.values().filter(|j| !j.ended()).map(|j| j.tasks_left(&self.core)).sum();
        let Some(s) = &mut self.site else { return };
        if s.pool.adapt().is_some() {
            s.pool.observe(
                now,
                Backlog {
                    tasks_left,
                    mean_task: self.mean_task,
                },
            );
        }
        s.pool.step(now);
        self.cancel_unresponsive_jobs(now);
        let Some(s) = &mut self.site else { return };
        let live = s.pool.live_jobs();
        if !s.polling && !live.is_empty() && s.last_poll.is_none_or(|t| t.elapsed() >= POLL_INTERVAL) {
            s.polling = true;
            s.last_poll = Some(Instant::now());
            let runner = s.runner.clone();
            let events = self.events.clone();
            tokio::spawn(async move {
                let r = runner.status(&live).await;
                let _ = events.send(Event::PoolStatus(r));
            });
        }
        // Retiring jobs whose workers hold nothing: stop the workers, cancel the job.
        let assigned: HashMap<WorkerId, usize> = self.core.workers().map(|(id, _, n)| (id, n)).collect();
        let retiring: Vec<JobId> = s
            .pool
            .jobs(now)
            .into_iter()
            .filter(|j| j.retiring && j.state != JobState::Gone)
            .map(|j| j.id)
            .collect();
        for job in retiring {
            let mine: Vec<WorkerId> = self
                .workers
                .iter()
                .filter(|(_, w)| w.info.batch_job.as_deref() == Some(job.0.as_str()))
                .map(|(id, _)| *id)
                .collect();
            if mine.iter().all(|w| assigned.get(w).copied().unwrap_or(0) == 0) {
                for w in &mine {
                    if let Some(e) = self.workers.get(w) {
                        send(
                            &e.tx,
                            ServerMsg::Shutdown {
                                reason: "scaled down".into(),
                            },
                        );
                    }
                }
                tracing::info!(job = %job, workers = mine.len(), "retiring idle job");
                s.pool.retired(now, &job);
            }
        }
    }

    /// Carry out the pool's actions.
    pub(super) fn drive_pool(&mut self) {
        let Some(s) = &mut self.site else { return };
        for action in s.pool.take_actions() {
            match action {
                PoolAction::Submit { jobs } => {
                    let runner = s.runner.clone();
                    let events = self.events.clone();
                    tracing::info!(jobs, "submitting");
                    tokio::spawn(async move {
                        let r = runner.submit(jobs).await;
                        let _ = events.send(Event::PoolSubmitted(r));
                    });
                }
                PoolAction::Cancel(ids) => {
                    tracing::info!(jobs = ?ids, "cancelling");
                    let runner = s.runner.clone();
                    tokio::spawn(async move {
                        if let Err(e) = runner.cancel(&ids).await {
                            tracing::warn!(error = %e, "cancel failed");
                        }
                    });
                }
                PoolAction::Retire(ids) => {
                    for (id, w) in &self.workers {
                        if w.info.batch_job.as_ref().is_some_and(|j| ids.iter().any(|r| &r.0 == j)) {
                            let _ = self.core.drain(*id);
                        }
                    }
                }
            }
        }
    }
}
