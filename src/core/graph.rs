//! Compact task graph: per task one state byte, one attempts byte and a dependency
//! counter; dependents stored once in compressed sparse rows.

use super::TaskId;

/// Where a task runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskKind {
    /// On a worker.
    Remote,
    /// In the driver (finalizing a reduction, evaluating a small result).
    Local,
}

const KIND_LOCAL: u8 = 0b1000_0000;
const STATE_MASK: u8 = 0b0000_0011;
const WAITING: u8 = 0;
const RUNNING_LOCAL: u8 = 1;
const DONE: u8 = 2;
/// Failed for good, or cancelled (a dependency failed, or the driver cancelled it).
const DROPPED: u8 = 3;

/// Builds a [`Graph`]; dependencies must name tasks added before, so it is acyclic by
/// construction.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    flags: Vec<u8>,
    dep_counts: Vec<u32>,
    /// (dependency, dependent) pairs.
    edges: Vec<(u32, u32)>,
}

impl GraphBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(tasks: usize, edges: usize) -> Self {
        Self {
            flags: Vec::with_capacity(tasks),
            dep_counts: Vec::with_capacity(tasks),
            edges: Vec::with_capacity(edges),
        }
    }

    pub fn len(&self) -> u32 {
        self.flags.len() as u32
    }

    pub fn is_empty(&self) -> bool {
        self.flags.is_empty()
    }

    /// Add a task depending on `deps` (each must already exist). Returns its id.
    pub fn add(&mut self, kind: TaskKind, deps: &[TaskId]) -> TaskId {
        let id = self.len();
        assert!(id < u32::MAX, "graph too large");
        for &d in deps {
            assert!(d < id, "dependency {d} of task {id} does not exist yet");
            self.edges.push((d, id));
        }
        self.flags.push(if kind == TaskKind::Local { KIND_LOCAL } else { 0 });
        self.dep_counts.push(deps.len() as u32);
        id
    }

    pub fn build(self) -> Graph {
        let n = self.flags.len();
        let mut offsets = vec![0u32; n + 1];
        for &(d, _) in &self.edges {
            offsets[d as usize + 1] += 1;
        }
        for i in 0..n {
            offsets[i + 1] += offsets[i];
        }
        let mut fill = offsets.clone();
        let mut dependents = vec![0u32; self.edges.len()];
        for &(d, t) in &self.edges {
            let slot = &mut fill[d as usize];
            dependents[*slot as usize] = t;
            *slot += 1;
        }
        Graph {
            flags: self.flags,
            waiting: self.dep_counts,
            attempts: vec![0; n],
            offsets,
            dependents,
            done: 0,
            dropped: 0,
        }
    }
}

/// A task graph being executed.
#[derive(Debug)]
pub struct Graph {
    flags: Vec<u8>,
    waiting: Vec<u32>,
    attempts: Vec<u8>,
    offsets: Vec<u32>,
    dependents: Vec<u32>,
    done: u32,
    /// Tasks failed for good or cancelled.
    dropped: u32,
}

impl Graph {
    pub fn len(&self) -> u32 {
        self.flags.len() as u32
    }

    pub fn is_empty(&self) -> bool {
        self.flags.is_empty()
    }

    pub fn done_count(&self) -> u32 {
        self.done
    }

    pub fn all_done(&self) -> bool {
        self.done == self.len()
    }

    /// Tasks failed for good or cancelled.
    pub fn dropped_count(&self) -> u32 {
        self.dropped
    }

    /// Every task is done, failed or cancelled.
    pub fn all_ended(&self) -> bool {
        self.done + self.dropped == self.len()
    }

    /// Whether `t` is done, failed or cancelled.
    pub fn has_ended(&self, t: TaskId) -> bool {
        matches!(self.state(t), DONE | DROPPED)
    }

    pub fn kind(&self, t: TaskId) -> TaskKind {
        if self.flags[t as usize] & KIND_LOCAL != 0 {
            TaskKind::Local
        } else {
            TaskKind::Remote
        }
    }

    fn state(&self, t: TaskId) -> u8 {
        self.flags[t as usize] & STATE_MASK
    }

    fn set_state(&mut self, t: TaskId, s: u8) {
        let f = &mut self.flags[t as usize];
        *f = (*f & !STATE_MASK) | s;
    }

    pub(super) fn is_ready(&self, t: TaskId) -> bool {
        self.waiting[t as usize] == 0 && self.state(t) == WAITING
    }

    pub(super) fn is_running_local(&self, t: TaskId) -> bool {
        (t as usize) < self.flags.len() && self.kind(t) == TaskKind::Local && self.state(t) == RUNNING_LOCAL
    }

    pub(super) fn mark_running_local(&mut self, t: TaskId) {
        self.set_state(t, RUNNING_LOCAL);
    }

    pub(super) fn bump_attempts(&mut self, t: TaskId) -> u8 {
        let a = &mut self.attempts[t as usize];
        *a = a.saturating_add(1);
        *a
    }

    /// Mark `t` done and push the dependents it released.
    pub(super) fn mark_done(&mut self, t: TaskId, released: &mut Vec<TaskId>) {
        debug_assert_ne!(self.state(t), DONE, "task {t} done twice");
        self.set_state(t, DONE);
        self.done += 1;
        let (a, b) = (self.offsets[t as usize] as usize, self.offsets[t as usize + 1] as usize);
        for i in a..b {
            let d = self.dependents[i];
            let w = &mut self.waiting[d as usize];
            *w -= 1;
            // A dependent already done (resumed from a journal) is not released again.
            if *w == 0 && self.flags[d as usize] & STATE_MASK == WAITING {
                released.push(d);
            }
        }
    }

    /// Drop `t` (failed for good, or cancelled) and every task that depends on it,
    /// directly or not, that has not ended: pushed to `cancelled`. A task already
    /// ended is left as it is.
    pub(super) fn drop_task(&mut self, t: TaskId, cancelled: &mut Vec<TaskId>) {
        if self.has_ended(t) {
            return;
        }
        self.set_state(t, DROPPED);
        self.dropped += 1;
        let mut stack = vec![t];
        while let Some(u) = stack.pop() {
            let (a, b) = (self.offsets[u as usize] as usize, self.offsets[u as usize + 1] as usize);
            for i in a..b {
                let d = self.dependents[i];
                if !self.has_ended(d) {
                    self.set_state(d, DROPPED);
                    self.dropped += 1;
                    cancelled.push(d);
                    stack.push(d);
                }
            }
        }
    }

    /// Mark tasks done before the run starts (results recovered from a journal).
    /// Their dependents' counters drop; nothing is released here.
    pub(super) fn mark_done_before_start(&mut self, done: &[TaskId]) {
        let mut ignored = Vec::new();
        let mut sorted: Vec<TaskId> = done.iter().copied().filter(|&t| (t as usize) < self.flags.len()).collect();
        sorted.sort_unstable();
        sorted.dedup();
        for t in sorted {
            self.mark_done(t, &mut ignored);
        }
    }

    /// Approximate heap bytes held by the graph.
    pub fn heap_bytes(&self) -> usize {
        self.flags.capacity()
            + self.waiting.capacity() * 4
            + self.attempts.capacity()
            + self.offsets.capacity() * 4
            + self.dependents.capacity() * 4
    }
}
