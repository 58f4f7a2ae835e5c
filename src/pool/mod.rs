//! The worker pool: how many batch jobs to hold so that a target number of workers
//! runs, sans-IO like the scheduler core.
//!
//! It counts capacity by job (pending jobs count: they are on the way), submits what is
//! missing (one array job for all of it with `array = true`), and scales down pending
//! jobs first, then running jobs whose workers are idle (their workers are drained, and
//! the job cancelled once they hold no task). Failed submissions back off exponentially.
//! The runner ([`crate::batch::runner`]) executes its actions and reports back.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::batch::{JobId, JobState};

/// What the pool asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum PoolAction {
    /// Submit this many jobs (or one array of this many elements).
    Submit { jobs: u32 },
    /// Drain the workers of these jobs, then cancel them (`Cancel` follows when idle).
    Retire(Vec<JobId>),
    /// Cancel these jobs now.
    Cancel(Vec<JobId>),
}

#[derive(Clone, Debug, Serialize)]
pub struct JobInfo {
    pub id: JobId,
    pub state: JobState,
    /// Being drained for a scale-down.
    pub retiring: bool,
    /// Near its walltime: a replacement is on the way.
    pub expiring: bool,
    /// Cancelled by drover: its workers stopped answering (hung node, frozen process).
    pub abandoned: bool,
    /// Seconds since submission.
    pub age: f64,
}

#[derive(Clone, Debug)]
struct PoolJob {
    state: JobState,
    retiring: bool,
    expiring: bool,
    abandoned: bool,
    submitted_at: Duration,
    /// When its first worker connected.
    started_at: Option<Duration>,
    walltime: Option<Duration>,
}

impl PoolJob {
    fn new(now: Duration, walltime: Option<Duration>) -> Self {
        Self {
            state: JobState::Pending,
            retiring: false,
            expiring: false,
            abandoned: false,
            submitted_at: now,
            started_at: None,
            walltime,
        }
    }

    /// Counts toward the target.
    fn is_capacity(&self) -> bool {
        self.state != JobState::Gone && !self.retiring && !self.expiring
    }
}

/// How long before a job's end its workers drain (they use at least this much).
pub fn drain_margin(walltime: Duration) -> Duration {
    (walltime / 10)
        .clamp(Duration::from_secs(10), Duration::from_secs(300))
        .min(walltime / 2)
}

/// A submission failure, kept for `drover status`.
#[derive(Clone, Debug, Serialize)]
pub struct SubmitFailure {
    pub message: String,
    pub attempts: u32,
    pub retry_in: f64,
}

/// Adaptive sizing bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Adapt {
    pub min: u32,
    pub max: u32,
}

/// What the scheduler knows of the work left, for adaptive sizing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Backlog {
    /// Tasks not finished yet (queued or running) in the running job.
    pub tasks_left: u64,
    /// Smoothed run time of one task.
    pub mean_task: Option<Duration>,
}

/// The backlog should clear within this time with the pool's workers.
const ADAPT_HORIZON: Duration = Duration::from_secs(20);
/// Demand must stay lower for this long before the pool shrinks.
const ADAPT_COOLDOWN: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Pool {
    workers_per_job: u32,
    target: u32,
    jobs: BTreeMap<JobId, PoolJob>,
    submitting: bool,
    failures: u32,
    retry_at: Duration,
    last_failure: Option<String>,
    stopping: bool,
    actions: Vec<PoolAction>,
    /// Smoothed time from submission to the first worker.
    start_latency: Option<Duration>,
    adapt: Option<Adapt>,
    threads_per_worker: u32,
    /// Recent adaptive demands, for the cooldown window.
    demand: std::collections::VecDeque<(Duration, u32)>,
}

const MAX_BACKOFF: Duration = Duration::from_secs(60);

impl Pool {
    pub fn new(workers_per_job: u32) -> Self {
        Self {
            workers_per_job: workers_per_job.max(1),
            target: 0,
            jobs: BTreeMap::new(),
            submitting: false,
            failures: 0,
            retry_at: Duration::ZERO,
            last_failure: None,
            stopping: false,
            actions: Vec::new(),
            start_latency: None,
            adapt: None,
            threads_per_worker: 1,
            demand: std::collections::VecDeque::new(),
        }
    }

    pub fn target(&self) -> u32 {
        self.target
    }

    pub fn adapt(&self) -> Option<Adapt> {
        self.adapt
    }

    /// Size the pool from the backlog between `min` and `max` workers.
    pub fn set_adapt(&mut self, now: Duration, adapt: Adapt, threads_per_worker: u32) {
        self.adapt = Some(adapt);
        self.threads_per_worker = threads_per_worker.max(1);
        self.demand.clear();
        self.target = self.target.clamp(adapt.min, adapt.max.max(adapt.min));
        self.step(now);
    }

    /// Adaptive sizing: workers needed to clear the backlog within the horizon, at
    /// once when more are needed, and only after a cooldown of lower demand when fewer.
    pub fn observe(&mut self, now: Duration, backlog: Backlog) {
        let Some(a) = self.adapt else { return };
        let needed = match backlog.mean_task {
            _ if backlog.tasks_left == 0 => 0,
            None => a.max,
            Some(mean) => {
                let work = mean.as_secs_f64() * backlog.tasks_left as f64;
                let per_worker = ADAPT_HORIZON.as_secs_f64() * f64::from(self.threads_per_worker);
                (work / per_worker).ceil().min(f64::from(u32::MAX)) as u32
            }
        };
        let demand = needed.clamp(a.min, a.max.max(a.min));
        self.demand.push_back((now, demand));
        while self.demand.front().is_some_and(|(t, _)| now.saturating_sub(*t) > ADAPT_COOLDOWN) {
            self.demand.pop_front();
        }
        let held = self.demand.iter().map(|(_, d)| *d).max().unwrap_or(demand);
        let target = if demand >= self.target { demand } else { held.min(self.target) };
        if target != self.target {
            self.target = target;
        }
        self.step(now);
    }

    /// Hold `workers` workers (rounded up to whole jobs); ends adaptive sizing.
    pub fn set_target(&mut self, now: Duration, workers: u32) {
        self.adapt = None;
        self.target = workers;
        self.failures = 0;
        self.retry_at = Duration::ZERO;
        self.step(now);
    }

    /// Stop: cancel every job and submit nothing more.
    pub fn stop(&mut self) {
        self.stopping = true;
        self.target = 0;
        let live: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.state != JobState::Gone)
            .map(|(id, _)| id.clone())
            .collect();
        if !live.is_empty() {
            self.actions.push(PoolAction::Cancel(live));
        }
    }

    /// True when stopping and the batch system shows none of our jobs.
    pub fn drained(&self) -> bool {
        self.stopping && !self.submitting && self.jobs.values().all(|j| j.state == JobState::Gone)
    }

    pub fn take_actions(&mut self) -> Vec<PoolAction> {
        std::mem::take(&mut self.actions)
    }

    /// Jobs that may still run (for status polling).
    pub fn live_jobs(&self) -> Vec<JobId> {
        self.jobs
            .iter()
            .filter(|(_, j)| j.state != JobState::Gone)
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub fn jobs(&self, now: Duration) -> Vec<JobInfo> {
        self.jobs
            .iter()
            .map(|(id, j)| JobInfo {
                id: id.clone(),
                state: j.state,
                retiring: j.retiring,
                expiring: j.expiring,
                abandoned: j.abandoned,
                age: now.saturating_sub(j.submitted_at).as_secs_f64(),
            })
            .collect()
    }

    pub fn failure(&self, now: Duration) -> Option<SubmitFailure> {
        self.last_failure.as_ref().map(|m| SubmitFailure {
            message: m.clone(),
            attempts: self.failures,
            retry_in: self.retry_at.saturating_sub(now).as_secs_f64(),
        })
    }

    /// The runner submitted: the jobs (array elements) it created, with their walltimes.
    pub fn submitted(&mut self, now: Duration, result: Result<Vec<(JobId, Option<Duration>)>, String>) {
        self.submitting = false;
        match result {
            Ok(ids) => {
                self.failures = 0;
                self.last_failure = None;
                for (id, walltime) in ids {
                    self.jobs.insert(id, PoolJob::new(now, walltime));
                }
                if self.stopping {
                    self.stop();
                }
            }
            Err(message) => {
                self.failures += 1;
                let backoff = Duration::from_secs(1 << self.failures.min(6)).min(MAX_BACKOFF);
                self.retry_at = now + backoff;
                self.last_failure = Some(message);
            }
        }
        self.step(now);
    }

    /// Fresh states from the batch system.
    pub fn status(&mut self, now: Duration, states: &BTreeMap<JobId, JobState>) {
        let mut stuck = Vec::new();
        for (id, st) in states {
            if let Some(j) = self.jobs.get_mut(id) {
                // A job never comes back from Gone.
                if j.state == JobState::Gone {
                    continue;
                }
                if *st == JobState::Held {
                    // It would never run: cancel it and count it out (replaced below).
                    stuck.push(id.clone());
                    j.state = JobState::Gone;
                } else {
                    j.state = *st;
                }
            }
        }
        if !stuck.is_empty() {
            self.actions.push(PoolAction::Cancel(stuck));
        }
        // Forget finished jobs after a while, keeping recent ones for status.
        self.jobs
            .retain(|_, j| j.state != JobState::Gone || now.saturating_sub(j.submitted_at) < Duration::from_secs(3600));
        self.step(now);
    }

    /// A worker of this job connected: the job runs.
    pub fn worker_seen(&mut self, now: Duration, job: &JobId) {
        if let Some(j) = self.jobs.get_mut(job) {
            if j.state == JobState::Pending {
                j.state = JobState::Running;
            }
            if j.started_at.is_none() {
                j.started_at = Some(now);
                let latency = now.saturating_sub(j.submitted_at);
                self.start_latency = Some(match self.start_latency {
                    Some(l) => (l * 3 + latency) / 4,
                    None => latency,
                });
            }
        }
    }

    /// The job's workers stopped answering (a hung node, a frozen process): cancel it
    /// through the batch system and let the pool replace it, rather than hold its place
    /// until its walltime. `false` when the job is unknown or already gone.
    pub fn abandon(&mut self, now: Duration, job: &JobId) -> bool {
        let Some(j) = self.jobs.get_mut(job) else { return false };
        if j.state == JobState::Gone {
            return false;
        }
        j.state = JobState::Gone;
        j.abandoned = true;
        self.actions.push(PoolAction::Cancel(vec![job.clone()]));
        self.step(now);
        true
    }

    /// The workers of a retiring job hold no task any more: cancel it.
    pub fn retired(&mut self, now: Duration, job: &JobId) {
        if let Some(j) = self.jobs.get_mut(job)
            && j.retiring
            && j.state != JobState::Gone
        {
            j.state = JobState::Gone;
            self.actions.push(PoolAction::Cancel(vec![job.clone()]));
        }
        self.step(now);
    }

    /// Re-evaluate (call on ticks, too, for backoff expiry).
    pub fn step(&mut self, now: Duration) {
        if self.stopping {
            return;
        }
        // Jobs close to their walltime stop counting, so replacements start ahead of
        // time: the workers' drain margin plus twice the usual queue wait.
        let lead_extra = (self.start_latency.unwrap_or(Duration::from_secs(5)) * 2).max(Duration::from_secs(5));
        for j in self.jobs.values_mut() {
            if let (Some(start), Some(wall)) = (j.started_at, j.walltime)
                && j.state != JobState::Gone
                && !j.expiring
                && now + drain_margin(wall) + lead_extra >= start + wall
            {
                j.expiring = true;
            }
        }
        let wpj = self.workers_per_job;
        let active: Vec<(&JobId, &PoolJob)> = self.jobs.iter().filter(|(_, j)| j.is_capacity()).collect();
        let capacity = active.len() as u32 * wpj;
        let jobs_needed = self.target.div_ceil(wpj);
        let have = active.len() as u32;
        if have < jobs_needed {
            if !self.submitting && now >= self.retry_at {
                self.submitting = true;
                self.actions.push(PoolAction::Submit { jobs: jobs_needed - have });
            }
        } else if have > jobs_needed && capacity > self.target {
            let mut excess = have - jobs_needed;
            // Pending jobs first, newest first.
            let mut pending: Vec<(JobId, Duration)> = active
                .iter()
                .filter(|(_, j)| j.state == JobState::Pending)
                .map(|(id, j)| ((*id).clone(), j.submitted_at))
                .collect();
            pending.sort_by(|a, b| (b.1, &b.0).cmp(&(a.1, &a.0)));
            let mut cancel = Vec::new();
            for (id, _) in pending.into_iter().take(excess as usize) {
                cancel.push(id);
                excess -= 1;
            }
            let mut running: Vec<(JobId, Duration)> = active
                .iter()
                .filter(|(_, j)| j.state == JobState::Running)
                .map(|(id, j)| ((*id).clone(), j.submitted_at))
                .collect();
            running.sort_by(|a, b| (b.1, &b.0).cmp(&(a.1, &a.0)));
            let retire: Vec<JobId> = running.into_iter().take(excess as usize).map(|(id, _)| id).collect();
            for id in &cancel {
                if let Some(j) = self.jobs.get_mut(id) {
                    j.state = JobState::Gone;
                }
            }
            for id in &retire {
                if let Some(j) = self.jobs.get_mut(id) {
                    j.retiring = true;
                }
            }
            if !cancel.is_empty() {
                self.actions.push(PoolAction::Cancel(cancel));
            }
            if !retire.is_empty() {
                self.actions.push(PoolAction::Retire(retire));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Duration = Duration::ZERO;

    fn ids(v: &[&str]) -> Vec<JobId> {
        v.iter().map(|s| JobId(s.to_string())).collect()
    }

    #[test]
    fn scales_up_by_whole_jobs_counting_pending_ones() {
        let mut p = Pool::new(4);
        p.set_target(T0, 10);
        assert_eq!(p.take_actions(), vec![PoolAction::Submit { jobs: 3 }]);
        // While submitting, nothing more is asked.
        p.step(T0);
        assert!(p.take_actions().is_empty());
        p.submitted(T0, Ok(ids(&["1", "2", "3"]).into_iter().map(|i| (i, None)).collect()));
        assert!(p.take_actions().is_empty(), "pending jobs count as capacity");
        p.set_target(T0, 12);
        assert!(p.take_actions().is_empty(), "3 jobs of 4 cover 12");
        p.set_target(T0, 13);
        assert_eq!(p.take_actions(), vec![PoolAction::Submit { jobs: 1 }]);
    }

    #[test]
    fn scales_down_pending_first_then_retires_running() {
        let mut p = Pool::new(1);
        p.set_target(T0, 3);
        p.take_actions();
        p.submitted(T0, Ok(ids(&["1", "2", "3"]).into_iter().map(|i| (i, None)).collect()));
        p.worker_seen(T0, &JobId("1".into()));
        p.worker_seen(T0, &JobId("2".into()));
        p.set_target(T0, 1);
        assert_eq!(
            p.take_actions(),
            vec![PoolAction::Cancel(ids(&["3"])), PoolAction::Retire(ids(&["2"]))]
        );
        p.retired(T0, &JobId("2".into()));
        assert_eq!(p.take_actions(), vec![PoolAction::Cancel(ids(&["2"]))]);
        assert_eq!(p.live_jobs(), ids(&["1"]));
    }

    #[test]
    fn lost_jobs_are_replaced() {
        let mut p = Pool::new(1);
        p.set_target(T0, 2);
        p.take_actions();
        p.submitted(T0, Ok(ids(&["1", "2"]).into_iter().map(|i| (i, None)).collect()));
        let states: BTreeMap<JobId, JobState> = [(JobId("1".into()), JobState::Running), (JobId("2".into()), JobState::Gone)].into();
        p.status(Duration::from_secs(5), &states);
        assert_eq!(p.take_actions(), vec![PoolAction::Submit { jobs: 1 }]);
    }

    #[test]
    fn adaptive_pool_grows_with_the_backlog_and_shrinks_only_after_a_cooldown() {
        let s = Duration::from_secs;
        let mut p = Pool::new(2);
        p.set_adapt(T0, Adapt { min: 1, max: 10 }, 1);
        assert_eq!(p.take_actions(), vec![PoolAction::Submit { jobs: 1 }], "min workers at once");
        p.submitted(T0, Ok(vec![(JobId("1".into()), None)]));
        // 100 tasks of 2 s: 200 s of work, 20 s horizon -> 10 workers (5 jobs of 2).
        p.observe(
            s(1),
            Backlog {
                tasks_left: 100,
                mean_task: Some(s(2)),
            },
        );
        assert_eq!(p.target(), 10);
        assert_eq!(p.take_actions(), vec![PoolAction::Submit { jobs: 4 }]);
        p.submitted(s(1), Ok((2..=5).map(|i| (JobId(i.to_string()), None)).collect()));
        for i in 1..=5 {
            p.worker_seen(s(2), &JobId(i.to_string()));
        }
        // Demand drops, but the pool holds for the cooldown: no thrashing.
        p.observe(
            s(5),
            Backlog {
                tasks_left: 10,
                mean_task: Some(s(2)),
            },
        );
        assert_eq!(p.target(), 10);
        assert!(p.take_actions().is_empty());
        p.observe(
            s(20),
            Backlog {
                tasks_left: 0,
                mean_task: Some(s(2)),
            },
        );
        assert_eq!(p.target(), 10, "still within the cooldown of the 10-worker demand");
        p.observe(
            s(40),
            Backlog {
                tasks_left: 0,
                mean_task: Some(s(2)),
            },
        );
        assert_eq!(p.target(), 1);
        let acts = p.take_actions();
        assert!(matches!(&acts[..], [PoolAction::Retire(v)] if v.len() == 4), "{acts:?}");
        // Demand back up: grows again at once (max is the bound).
        p.observe(
            s(41),
            Backlog {
                tasks_left: 1000,
                mean_task: Some(s(2)),
            },
        );
        assert_eq!(p.target(), 10);
        // A fixed target ends adaptive sizing.
        p.set_target(s(42), 3);
        assert_eq!(p.adapt(), None);
    }

    #[test]
    fn abandoned_jobs_are_cancelled_once_and_replaced() {
        let mut p = Pool::new(1);
        p.set_target(T0, 2);
        p.take_actions();
        p.submitted(T0, Ok(ids(&["1", "2"]).into_iter().map(|i| (i, None)).collect()));
        p.worker_seen(T0, &JobId("1".into()));
        assert!(p.abandon(T0, &JobId("1".into())));
        assert_eq!(
            p.take_actions(),
            vec![PoolAction::Cancel(ids(&["1"])), PoolAction::Submit { jobs: 1 }]
        );
        assert!(!p.abandon(T0, &JobId("1".into())), "already gone");
        assert!(!p.abandon(T0, &JobId("9".into())), "not the pool's");
        // The batch system still listing it a moment later does not bring it back.
        p.status(T0, &[(JobId("1".into()), JobState::Running)].into());
        assert!(p.take_actions().is_empty());
        assert_eq!(p.live_jobs(), ids(&["2"]));
    }

    #[test]
    fn held_jobs_are_cancelled_and_replaced() {
        let mut p = Pool::new(1);
        p.set_target(T0, 1);
        p.take_actions();
        p.submitted(T0, Ok(vec![(JobId("5".into()), None)]));
        p.status(T0, &[(JobId("5".into()), JobState::Held)].into());
        assert_eq!(
            p.take_actions(),
            vec![PoolAction::Cancel(ids(&["5"])), PoolAction::Submit { jobs: 1 }]
        );
    }

    #[test]
    fn failed_submissions_back_off_and_are_reported() {
        let mut p = Pool::new(1);
        p.set_target(T0, 1);
        p.take_actions();
        p.submitted(T0, Err("sbatch: error: invalid partition specified: nope".into()));
        assert!(p.take_actions().is_empty(), "backing off");
        let f = p.failure(T0).unwrap();
        assert_eq!(f.attempts, 1);
        assert!(f.message.contains("invalid partition"));
        p.step(Duration::from_secs(1));
        assert!(p.take_actions().is_empty());
        p.step(Duration::from_secs(2));
        assert_eq!(p.take_actions(), vec![PoolAction::Submit { jobs: 1 }]);
        p.submitted(Duration::from_secs(2), Err("again".into()));
        p.step(Duration::from_secs(5));
        assert!(p.take_actions().is_empty(), "4 s backoff after the second failure");
        p.step(Duration::from_secs(6));
        assert_eq!(p.take_actions(), vec![PoolAction::Submit { jobs: 1 }]);
    }

    #[test]
    fn jobs_near_their_walltime_are_replaced_ahead_of_time() {
        let mut p = Pool::new(1);
        p.set_target(T0, 2);
        p.take_actions();
        let wall = Some(Duration::from_secs(600));
        let s = Duration::from_secs;
        p.submitted(T0, Ok(vec![(JobId("1".into()), wall), (JobId("2".into()), Some(s(500)))]));
        p.worker_seen(s(10), &JobId("1".into()));
        p.worker_seen(s(10), &JobId("2".into()));
        p.step(s(400));
        assert!(p.take_actions().is_empty());
        // Job 2 ends at 510; margin 50 s + 2 x 10 s queue wait: replaced from 440 on.
        p.step(s(441));
        assert_eq!(p.take_actions(), vec![PoolAction::Submit { jobs: 1 }]);
        p.submitted(s(441), Ok(vec![(JobId("3".into()), wall)]));
        assert!(p.jobs(s(441)).iter().any(|j| j.id.0 == "2" && j.expiring));
        // Job 1 (ends at 610) is replaced separately, later: the pool never expires at once.
        p.step(s(500));
        assert!(p.take_actions().is_empty());
        p.step(s(541));
        assert_eq!(p.take_actions(), vec![PoolAction::Submit { jobs: 1 }]);
        // The expiring jobs are not cancelled: their workers drain and leave.
        assert!(!p.take_actions().iter().any(|a| matches!(a, PoolAction::Cancel(_))));
    }

    #[test]
    fn stop_cancels_everything_and_waits_for_the_queue() {
        let mut p = Pool::new(1);
        p.set_target(T0, 2);
        p.take_actions();
        p.submitted(T0, Ok(ids(&["1", "2"]).into_iter().map(|i| (i, None)).collect()));
        p.stop();
        assert_eq!(p.take_actions(), vec![PoolAction::Cancel(ids(&["1", "2"]))]);
        assert!(!p.drained());
        let states: BTreeMap<JobId, JobState> = [(JobId("1".into()), JobState::Gone), (JobId("2".into()), JobState::Gone)].into();
        p.status(T0, &states);
        assert!(p.drained());
        assert!(p.take_actions().is_empty());
    }

    #[test]
    fn submission_landing_after_stop_is_cancelled() {
        let mut p = Pool::new(1);
        p.set_target(T0, 1);
        p.take_actions();
        p.stop();
        assert!(!p.drained(), "a submission is in flight");
        p.submitted(T0, Ok(ids(&["9"]).into_iter().map(|i| (i, None)).collect()));
        assert_eq!(p.take_actions(), vec![PoolAction::Cancel(ids(&["9"]))]);
    }
}
