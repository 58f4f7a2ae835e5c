//! What a task job knows of each of its tasks, for `drover tasks`, `drover jobs`,
//! `--json` and the journal: state, exit code or signal, worker, start and duration,
//! requeues after lost workers, and its entry (`--each-line`). Column vectors, about
//! 20 bytes a task plus its entry text, so that a job of a million tasks stays far
//! below 300 bytes a task.

pub use crate::proto::jobs::{End, TaskState, TaskView};

const NONE: u32 = u32::MAX;
/// `code` column: no exit code (never ran, timed out, cancelled).
const NO_CODE: i32 = i32::MIN;

/// The tasks of one job. Task `i` has the user's index `ids[i]` (`--array` values).
#[derive(Debug, Default)]
pub struct TaskTable {
    ids: Vec<u64>,
    state: Vec<TaskState>,
    /// Exit code, or minus the signal, or [`NO_CODE`].
    code: Vec<i32>,
    worker: Vec<u32>,
    /// Milliseconds after the job started.
    started_ms: Vec<u32>,
    millis: Vec<u32>,
    requeues: Vec<u8>,
    /// Entries (lines of `--each-line`), one text with the offsets of each end.
    entries: String,
    entry_ends: Vec<u64>,
    counts: [u64; 6],
}

impl TaskTable {
    /// Tasks with these user indices; `entries`, when given, one per task.
    pub fn new(ids: Vec<u64>, entries: Option<Vec<String>>) -> Self {
        let n = ids.len();
        let mut t = TaskTable {
            ids,
            state: vec![TaskState::Waiting; n],
            code: vec![NO_CODE; n],
            worker: vec![NONE; n],
            started_ms: vec![NONE; n],
            millis: vec![NONE; n],
            requeues: vec![0; n],
            ..Default::default()
        };
        t.counts[TaskState::Waiting as usize] = n as u64;
        if let Some(e) = entries {
            assert_eq!(e.len(), n, "one entry per task");
            for line in e {
                t.entries.push_str(&line);
                t.entry_ends.push(t.entries.len() as u64);
            }
        }
        t.entries.shrink_to_fit();
        t
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    fn set(&mut self, i: usize, s: TaskState) {
        self.counts[self.state[i] as usize] -= 1;
        self.counts[s as usize] += 1;
        self.state[i] = s;
    }

    /// Tasks in each state, in [`TaskState::ALL`]'s order.
    pub fn counts(&self) -> [u64; 6] {
        self.counts
    }

    pub fn all_ended(&self) -> bool {
        self.counts[0] + self.counts[1] == 0
    }

    /// Whether every task succeeded (`drover wait` exits 0).
    pub fn all_succeeded(&self) -> bool {
        self.counts[TaskState::Succeeded as usize] == self.len() as u64
    }

    pub fn state(&self, i: usize) -> TaskState {
        self.state[i]
    }

    /// The user's id of task `i`.
    pub fn id(&self, i: usize) -> u64 {
        self.ids[i]
    }

    /// Task number of the user's id `id` (ids are sorted).
    pub fn index_of(&self, id: u64) -> Option<usize> {
        self.ids.binary_search(&id).ok()
    }

    pub fn entry(&self, i: usize) -> Option<&str> {
        if self.entry_ends.is_empty() {
            return None;
        }
        let start = if i == 0 { 0 } else { self.entry_ends[i - 1] as usize };
        Some(&self.entries[start..self.entry_ends[i] as usize])
    }

    /// Task `i` started on `worker`, `at_ms` after the job started.
    pub fn started(&mut self, i: usize, worker: u32, at_ms: u32) {
        self.set(i, TaskState::Running);
        self.worker[i] = worker;
        self.started_ms[i] = at_ms;
    }

    /// Task `i` went back to the queue (its worker was lost, or handed it back):
    /// `lost` counts it as a requeue.
    pub fn requeued(&mut self, i: usize, lost: bool) {
        if self.state[i] == TaskState::Running {
            self.set(i, TaskState::Waiting);
        }
        if lost {
            self.requeues[i] = self.requeues[i].saturating_add(1);
        }
    }

    /// Task `i` ended, `at_ms` after the job started.
    pub fn ended(&mut self, i: usize, end: End, at_ms: u32) {
        let (state, code) = match end {
            End::Exited(0) => (TaskState::Succeeded, 0),
            End::Exited(c) => (TaskState::Failed, c),
            End::Signalled(s) => (TaskState::Failed, -s),
            End::TimedOut => (TaskState::Timeout, NO_CODE),
            End::Cancelled => (TaskState::Cancelled, NO_CODE),
        };
        self.set(i, state);
        self.code[i] = code;
        if self.started_ms[i] != NONE {
            self.millis[i] = at_ms.saturating_sub(self.started_ms[i]);
        }
    }

    /// Duration in milliseconds (0 when it did not run) and requeues of task `i`.
    pub fn timing(&self, i: usize) -> (u32, u8) {
        let ms = if self.millis[i] == NONE { 0 } else { self.millis[i] };
        (ms, self.requeues[i])
    }

    /// Task `i` as a journal recorded it: ended (`None`: cancelled before it ran).
    pub fn restore(&mut self, i: usize, end: Option<End>, millis: u32, requeues: u8) {
        match end {
            None => self.cancelled(i),
            Some(e) => {
                self.ended(i, e, 0);
                self.millis[i] = millis;
            }
        }
        self.requeues[i] = requeues;
    }

    /// Task `i` will not run (cancelled before it started, or a dependency failed).
    pub fn cancelled(&mut self, i: usize) {
        self.set(i, TaskState::Cancelled);
    }

    /// Task `i` as shown to users; `host` names a worker's host.
    pub fn view(&self, i: usize, host: impl Fn(u32) -> Option<String>) -> TaskView {
        let some = |v: u32| (v != NONE).then_some(v);
        let code = self.code[i];
        TaskView {
            id: self.ids[i],
            state: self.state[i],
            exit_code: (code != NO_CODE && code >= 0).then_some(code),
            signal: (code != NO_CODE && code < 0).then_some(-code),
            worker: some(self.worker[i]),
            host: some(self.worker[i]).and_then(host),
            started: some(self.started_ms[i]).map(|ms| f64::from(ms) / 1e3),
            seconds: some(self.millis[i]).map(|ms| f64::from(ms) / 1e3),
            requeues: u32::from(self.requeues[i]),
            name: None,
            entry: self.entry(i).map(str::to_string),
        }
    }

    /// Indices of the tasks in `state` (all with `None`).
    pub fn select(&self, state: Option<TaskState>) -> impl Iterator<Item = usize> + '_ {
        (0..self.len()).filter(move |&i| state.is_none_or(|s| self.state[i] == s))
    }

    /// Approximate heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.ids.capacity() * 8
            + self.state.capacity()
            + self.code.capacity() * 4
            + self.worker.capacity() * 4
            + self.started_ms.capacity() * 4
            + self.millis.capacity() * 4
            + self.requeues.capacity()
            + self.entries.capacity()
            + self.entry_ends.capacity() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_exit_codes_signals_and_durations() {
        let mut t = TaskTable::new(vec![1, 2, 3, 4, 5], None);
        assert_eq!(t.counts(), [5, 0, 0, 0, 0, 0]);
        for i in 0..4 {
            t.started(i, 7, 1000);
        }
        t.ended(0, End::Exited(0), 1500);
        t.ended(1, End::Exited(3), 2000);
        t.ended(2, End::Signalled(9), 2000);
        t.ended(3, End::TimedOut, 61_000);
        t.cancelled(4);
        assert_eq!(t.counts(), [0, 0, 1, 2, 1, 1]);
        assert!(t.all_ended() && !t.all_succeeded());
        let host = |w: u32| (w == 7).then(|| "n1".to_string());
        let v = t.view(2, host);
        assert_eq!((v.id, v.state, v.exit_code, v.signal), (3, TaskState::Failed, None, Some(9)));
        assert_eq!(
            (v.worker, v.host.as_deref(), v.started, v.seconds),
            (Some(7), Some("n1"), Some(1.0), Some(1.0))
        );
        let v = t.view(1, host);
        assert_eq!((v.exit_code, v.signal), (Some(3), None));
        let v = t.view(4, host);
        assert_eq!(
            (v.state, v.worker, v.started, v.exit_code),
            (TaskState::Cancelled, None, None, None)
        );
        assert_eq!(t.select(Some(TaskState::Failed)).collect::<Vec<_>>(), vec![1, 2]);
        let json = serde_json::to_value(t.view(3, host)).unwrap();
        assert_eq!(json["state"], "timeout");
        assert_eq!(json["seconds"], 60.0);
    }

    #[test]
    fn requeues_after_lost_workers_are_counted_hand_backs_are_not() {
        let mut t = TaskTable::new(vec![0], Some(vec!["a.nc".into()]));
        t.started(0, 1, 0);
        t.requeued(0, true);
        assert_eq!(t.counts()[0], 1);
        t.started(0, 2, 10);
        t.requeued(0, false);
        t.started(0, 3, 20);
        t.ended(0, End::Exited(0), 30);
        let v = t.view(0, |_| None);
        assert_eq!((v.requeues, v.worker, v.entry.as_deref()), (1, Some(3), Some("a.nc")));
    }

    #[test]
    fn states_are_parsed_with_the_list_in_the_error() {
        assert_eq!(TaskState::parse("failed"), Ok(TaskState::Failed));
        let e = TaskState::parse("done").unwrap_err();
        assert_eq!(
            e,
            "--state \"done\": not a task state; the states are waiting, running, succeeded, failed, timeout, cancelled"
        );
    }

    #[test]
    fn a_million_tasks_with_entries_stay_far_below_300_bytes_each() {
        let n = 1_000_000u64;
        let entries: Vec<String> = (0..n).map(|i| format!("/data/run{i:07}.nc")).collect();
        let t = TaskTable::new((0..n).collect(), Some(entries));
        let per = t.heap_bytes() as f64 / n as f64;
        assert!(per < 100.0, "{per} bytes per task");
        assert_eq!(t.entry(123_456), Some("/data/run0123456.nc"));
    }
}
