//! The core's books on workers: their slots, the tasks they hold, the slots those take
//! (their load), and an index of the workers that can take a task, ordered by load.
//!
//! Invariant: a worker is in `free` exactly when it is not draining and its load is
//! below its slots, and in `room` exactly when it is not draining and its load is below
//! its slots times the prefetch depth; both keyed by (load, id). Every change of load
//! or draining goes through this module, so the index is never stale, and placing a
//! task costs O(log W) whatever the number of workers W (the scheduler used to rank
//! every worker for every freed slot).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::time::Duration;

use super::{GraphId, TaskId, TaskKey, WorkerId};

#[derive(Debug)]
pub(super) struct WorkerState {
    pub slots: u32,
    pub last_seen: Duration,
    pub assigned: HashSet<TaskKey>,
    /// Slots the assigned tasks take (their graphs' cores).
    load: u32,
    draining: bool,
    /// When the worker's walltime ends.
    pub deadline: Option<Duration>,
}

/// Which of the two indexes: workers with a free slot, or with room in their queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Open {
    Slot,
    Queue,
}

#[derive(Debug)]
pub(super) struct Workers {
    map: HashMap<WorkerId, WorkerState>,
    free: BTreeSet<(u32, WorkerId)>,
    room: BTreeSet<(u32, WorkerId)>,
    /// Tasks kept per slot (1 = no prefetch).
    depth: u32,
}

impl Workers {
    pub fn new(depth: u32) -> Self {
        Self {
            map: HashMap::new(),
            free: BTreeSet::new(),
            room: BTreeSet::new(),
            depth: depth.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn get(&self, id: &WorkerId) -> Option<&WorkerState> {
        self.map.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&WorkerId, &WorkerState)> {
        self.map.iter()
    }

    pub fn ids(&self) -> impl Iterator<Item = WorkerId> + '_ {
        self.map.keys().copied()
    }

    fn unindex(&mut self, id: WorkerId) {
        if let Some(w) = self.map.get(&id) {
            self.free.remove(&(w.load, id));
            self.room.remove(&(w.load, id));
        }
    }

    fn index(&mut self, id: WorkerId) {
        let Some(w) = self.map.get(&id) else { return };
        if w.draining {
            return;
        }
        if w.load < w.slots {
            self.free.insert((w.load, id));
        }
        if w.load < w.slots.saturating_mul(self.depth) {
            self.room.insert((w.load, id));
        }
    }

    /// Change the prefetch depth (rebuilds the queue index).
    pub fn set_depth(&mut self, depth: u32) {
        self.depth = depth.max(1);
        let ids: Vec<WorkerId> = self.map.keys().copied().collect();
        self.room.clear();
        for id in ids {
            self.index(id);
        }
    }

    pub fn depth(&self) -> u32 {
        self.depth
    }

    pub fn join(&mut self, id: WorkerId, slots: u32, now: Duration) {
        let w = WorkerState {
            slots: slots.max(1),
            last_seen: now,
            assigned: HashSet::new(),
            load: 0,
            draining: false,
            deadline: None,
        };
        self.unindex(id);
        self.map.insert(id, w);
        self.index(id);
    }

    pub fn remove(&mut self, id: WorkerId) -> Option<WorkerState> {
        self.unindex(id);
        self.map.remove(&id)
    }

    /// Whether the worker is known.
    pub fn seen(&mut self, id: WorkerId, now: Duration) -> bool {
        self.map.get_mut(&id).map(|w| w.last_seen = now).is_some()
    }

    pub fn set_deadline(&mut self, id: WorkerId, deadline: Option<Duration>) -> bool {
        self.map.get_mut(&id).map(|w| w.deadline = deadline).is_some()
    }

    /// Stop indexing the worker: it gets no new task. Whether it is known.
    pub fn drain(&mut self, id: WorkerId) -> bool {
        self.unindex(id);
        let Some(w) = self.map.get_mut(&id) else { return false };
        w.draining = true;
        true
    }

    pub fn assign(&mut self, id: WorkerId, task: TaskKey, cores: u32) {
        self.unindex(id);
        let w = self.map.get_mut(&id).expect("assign to a known worker");
        w.assigned.insert(task);
        w.load += cores;
        self.index(id);
    }

    /// Take `task` off the worker's books; whether it held it.
    pub fn unassign(&mut self, id: WorkerId, task: TaskKey, cores: u32) -> bool {
        if !self.map.get(&id).is_some_and(|w| w.assigned.contains(&task)) {
            return false;
        }
        self.unindex(id);
        let w = self.map.get_mut(&id).expect("checked");
        w.assigned.remove(&task);
        w.load = w.load.saturating_sub(cores);
        self.index(id);
        true
    }

    /// Every worker forgets the tasks of graph `g` (`cores` says what each took).
    pub fn forget_graph(&mut self, g: GraphId, cores: impl Fn(TaskId) -> u32) {
        let ids: Vec<WorkerId> = self.map.keys().copied().collect();
        for id in ids {
            let w = &self.map[&id];
            if !w.assigned.iter().any(|t| t.graph == g) {
                continue;
            }
            self.unindex(id);
            let w = self.map.get_mut(&id).expect("listed");
            let mut freed = 0;
            w.assigned.retain(|t| {
                let gone = t.graph == g;
                if gone {
                    freed += cores(t.task);
                }
                !gone
            });
            w.load = w.load.saturating_sub(freed);
            self.index(id);
        }
    }

    /// The first indexed worker after `after` (exclusive), by (load, id).
    pub fn next_open(&self, which: Open, after: Option<(u32, WorkerId)>) -> Option<(u32, WorkerId)> {
        let set = match which {
            Open::Slot => &self.free,
            Open::Queue => &self.room,
        };
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        set.range((lower, Bound::Unbounded)).next().copied()
    }

    /// Check the index against the books (tests).
    #[cfg(test)]
    pub fn check(&self) {
        for (id, w) in &self.map {
            let key = (w.load, *id);
            assert_eq!(self.free.contains(&key), !w.draining && w.load < w.slots, "{id}");
            assert_eq!(self.room.contains(&key), !w.draining && w.load < w.slots * self.depth, "{id}");
        }
        assert!(self.free.iter().all(|(l, id)| self.map.get(id).is_some_and(|w| w.load == *l)));
        assert!(self.room.iter().all(|(l, id)| self.map.get(id).is_some_and(|w| w.load == *l)));
    }
}
