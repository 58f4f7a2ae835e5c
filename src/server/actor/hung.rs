//! Workers stuck in a task (issue 16): a read from a file server that went away, a
//! kernel that never answers. Such a worker still sends heartbeats (they come from a
//! thread tasks cannot block) and reports how long its oldest array task has been
//! running; past the task time limit its tasks run elsewhere and it is told to exit.
//!
//! The limit (`--task-timeout`) is a multiple of the slowest task finished so far
//! (default 10x, never under 10 minutes) or a fixed duration.

use std::time::Duration;

use super::Actor;
use crate::proto::ServerMsg;

/// The time limit of an array task.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TaskTimeout {
    /// This many times the slowest task finished so far, never less than [`FLOOR`].
    Multiple(u32),
    /// A fixed limit.
    Fixed(Duration),
}

/// The least limit a multiple gives (a first task has nothing to compare with, and a
/// slow page-in or a busy node must not pass for a hung one).
pub const FLOOR: Duration = Duration::from_secs(600);

impl Default for TaskTimeout {
    fn default() -> Self {
        TaskTimeout::Multiple(10)
    }
}

impl TaskTimeout {
    /// `10x` (a multiple of the slowest task), or a duration (`90s`, `5m`, `1h`,
    /// `HH:MM:SS`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if let Some(n) = t.strip_suffix('x') {
            return match n.parse::<u32>() {
                Ok(n) if n >= 2 => Ok(TaskTimeout::Multiple(n)),
                _ => Err(format!(
                    "--task-timeout \"{s}\": a multiple is a whole number of at least 2 followed by x, like 10x"
                )),
            };
        }
        crate::config::taskjob::parse_time_limit(t)
            .map(TaskTimeout::Fixed)
            .map_err(|_| format!("--task-timeout \"{s}\": use a multiple of the slowest task (10x) or a duration (90s, 5m, 1h, HH:MM:SS)"))
    }

    /// The limit, given the slowest task finished so far.
    pub fn limit(&self, slowest: Option<Duration>) -> Duration {
        match *self {
            TaskTimeout::Fixed(d) => d,
            TaskTimeout::Multiple(n) => slowest.map_or(FLOOR, |s| (s * n).max(FLOOR)),
        }
    }

    /// How the limit came about, for messages.
    pub fn describe(&self, slowest: Option<Duration>) -> String {
        match *self {
            TaskTimeout::Fixed(d) => format!("the task time limit of {} s (--task-timeout)", d.as_secs_f64()),
            TaskTimeout::Multiple(n) => format!(
                "the task time limit of {} s ({n}x the slowest task so far, at least {} s; --task-timeout)",
                self.limit(slowest).as_secs_f64(),
                FLOOR.as_secs()
            ),
        }
    }
}

/// What a worker last said of its oldest running task.
#[derive(Clone, Copy, Debug, Default)]
pub struct Running {
    /// How long it had been running when reported.
    pub for_: Duration,
    /// When that was reported.
    pub at: Duration,
}

impl Running {
    /// How long the task has been running at `now` (0 if none runs).
    pub fn at(&self, now: Duration) -> Duration {
        if self.for_.is_zero() {
            Duration::ZERO
        } else {
            self.for_ + now.saturating_sub(self.at)
        }
    }
}

impl Actor {
    /// Workers whose oldest task outran the limit: their tasks go back to the queue (a
    /// retry each, as for a lost worker) and they are told to exit.
    pub(super) fn check_hung(&mut self, now: Duration) {
        self.running.retain(|id, _| self.workers.contains_key(id));
        self.fold_finished();
        let limit = self.task_timeout.limit(self.slowest_task);
        let mut stuck: Vec<_> = self
            .running
            .iter()
            .filter(|(_, r)| r.at(now) > limit)
            .map(|(id, r)| (*id, r.at(now)))
            .collect();
        stuck.sort_unstable();
        for (id, ran) in stuck {
            let tasks = self.core.held(id);
            if tasks.is_empty() {
                continue;
            }
            let reason = format!(
                "a task ran for {:.0} s, over {}; its tasks run elsewhere",
                ran.as_secs_f64(),
                self.task_timeout.describe(self.slowest_task)
            );
            tracing::warn!(worker = %id, tasks = tasks.len(), %reason, "worker stuck in a task; telling it to exit");
            self.running.remove(&id);
            self.core.worker_left(now, id);
            if let Some(w) = self.workers.remove(&id) {
                super::send(&w.tx, ServerMsg::Exit { reason: reason.clone() });
                self.note_lost(id, &w.info, format!("stuck: {reason}"), tasks.len());
                self.unresponsive(now, &w.info);
            }
            self.requeued(&tasks);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_a_multiple_of_the_slowest_task_with_a_floor_or_fixed() {
        let m = TaskTimeout::parse("10x").unwrap();
        assert_eq!(m, TaskTimeout::Multiple(10));
        assert_eq!(m.limit(None), FLOOR);
        assert_eq!(m.limit(Some(Duration::from_secs(5))), FLOOR);
        assert_eq!(m.limit(Some(Duration::from_secs(100))), Duration::from_secs(1000));
        let f = TaskTimeout::parse("3s").unwrap();
        assert_eq!(f.limit(Some(Duration::from_secs(100))), Duration::from_secs(3));
        assert_eq!(
            TaskTimeout::parse("00:05:00").unwrap(),
            TaskTimeout::Fixed(Duration::from_secs(300))
        );
        for bad in ["1x", "x", "tenx", "-3s", "soon", ""] {
            let e = TaskTimeout::parse(bad).unwrap_err();
            assert!(e.contains(&format!("\"{bad}\"")) && e.contains("10x"), "{e}");
        }
    }

    #[test]
    fn a_running_task_ages_from_its_report() {
        let r = Running {
            for_: Duration::from_secs(4),
            at: Duration::from_secs(10),
        };
        assert_eq!(r.at(Duration::from_secs(13)), Duration::from_secs(7));
        assert_eq!(Running::default().at(Duration::from_secs(99)), Duration::ZERO);
    }
}
