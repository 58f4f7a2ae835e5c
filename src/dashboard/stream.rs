//! The task stream's history: one bar per finished task (worker, lane, job, label,
//! start, end), kept for the whole run up to [`MAX_BARS`] (the oldest dropped first),
//! so that the dashboard can scroll back through it and the report can draw it all.
//! The actor appends (short critical sections, never across scheduling); handlers
//! copy out a window.

use std::collections::HashMap;
use std::sync::RwLock;

use serde::Serialize;

/// Bars kept: about 24 MB.
pub const MAX_BARS: usize = 1 << 20;
/// Bars one answer carries at most (a wide window is thinned evenly).
pub const MAX_ANSWER: usize = 20_000;

#[derive(Clone, Copy, Debug)]
struct Bar {
    worker: u32,
    lane: u16,
    ok: bool,
    label: u32,
    job: u64,
    t0: f32,
    t1: f32,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct BarView {
    pub worker: u32,
    pub lane: u16,
    pub job: u64,
    pub label: String,
    pub t0: f32,
    pub t1: f32,
    pub ok: bool,
    /// Tasks this bar stands for (tasks of one lane, job and label, each starting
    /// within a pixel of the previous one's end, drawn as one).
    pub n: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct Window {
    pub now: f64,
    pub bars: Vec<BarView>,
    /// Tasks in the window.
    pub total: usize,
    /// Some were left out (evenly) to keep the answer at most [`MAX_ANSWER`] bars.
    pub thinned: bool,
    /// Tasks pushed so far: ask `from` it for only those that end later.
    pub next: u64,
}

#[derive(Default)]
struct Inner {
    /// In order of their end.
    bars: std::collections::VecDeque<Bar>,
    labels: Vec<String>,
    label_ids: HashMap<String, u32>,
    /// Per worker: when each lane frees.
    lanes: HashMap<u32, Vec<f32>>,
    /// Per worker: its threads (at most that many lanes).
    threads: HashMap<u32, usize>,
    longest: f32,
    /// Bars dropped from the front (the oldest, past [`MAX_BARS`]).
    dropped: u64,
}

#[derive(Default)]
pub struct Stream(RwLock<Inner>);

impl Stream {
    /// A task of `job` ran on `worker` from `t0` to `t1` (seconds since the start).
    pub fn push(&self, worker: u32, job: u64, label: &str, t0: f64, t1: f64, ok: bool) {
        let (t0, t1) = (t0 as f32, t1.max(t0) as f32);
        let mut s = self.0.write().expect("stream lock");
        let label = match s.label_ids.get(label) {
            Some(&l) => l,
            None => {
                let l = s.labels.len() as u32;
                s.labels.push(label.to_string());
                s.label_ids.insert(label.to_string(), l);
                l
            }
        };
        // The first lane of the worker free at t0, else a new one while the worker
        // has threads for it, else the one that freed first (a task's start is its
        // end minus its run time as the worker measured it, so bars of one thread may
        // overlap by the latency of a report).
        let max = s.threads.get(&worker).copied().unwrap_or(usize::MAX).max(1);
        let lanes = s.lanes.entry(worker).or_default();
        let lane = match lanes.iter().position(|&end| end <= t0 + 1e-4) {
            Some(i) => i,
            None if lanes.len() < max => {
                lanes.push(0.0);
                lanes.len() - 1
            }
            None => (0..lanes.len())
                .min_by(|&a, &b| lanes[a].total_cmp(&lanes[b]))
                .expect("a worker with lanes"),
        };
        lanes[lane] = t1;
        s.longest = s.longest.max(t1 - t0);
        if s.bars.len() == MAX_BARS {
            s.bars.pop_front();
            s.dropped += 1;
        }
        s.bars.push_back(Bar {
            worker,
            lane: lane.min(u16::MAX as usize) as u16,
            ok,
            label,
            job,
            t0,
            t1,
        });
    }

    /// A worker joined with `threads` task threads: its tasks take at most that many
    /// lanes.
    pub fn worker_joined(&self, worker: u32, threads: u32) {
        self.0.write().expect("stream lock").threads.insert(worker, threads as usize);
    }

    /// A worker left: its lanes are forgotten (a new worker gets a new id).
    pub fn worker_left(&self, worker: u32) {
        let mut s = self.0.write().expect("stream lock");
        s.lanes.remove(&worker);
        s.threads.remove(&worker);
    }

    pub fn len(&self) -> usize {
        self.0.read().expect("stream lock").bars.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bars that overlap `[since, until]` (of one job, or all), at most
    /// [`MAX_ANSWER`] of them. With `pixel` > 0 (seconds a pixel of the page stands
    /// for), tasks of one lane, job, label and outcome that follow one another within
    /// a pixel come as one bar (a busy lane of tiny tasks is a few bars, not
    /// thousands); with 0 every task is a bar (reports).
    pub fn window(&self, now: f64, since: f64, until: f64, job: Option<u64>, pixel: f64) -> Window {
        let s = self.0.read().expect("stream lock");
        let (since, until) = (since as f32, until as f32);
        // Bars are in order of their end: skip those ending before `since`; stop after
        // those that end later than any bar starting before `until` could.
        let start = s.bars.partition_point(|b| b.t1 < since);
        let bars = s
            .bars
            .range(start..)
            .take_while(|b| b.t1 <= until + s.longest)
            .filter(|b| b.t0 <= until && job.is_none_or(|j| b.job == j));
        s.answer(now, bars, pixel)
    }

    /// The tasks pushed since the answer whose `next` was `from` (a page that follows
    /// the run asks for these each second: its cost is that of the new tasks only).
    pub fn since(&self, now: f64, from: u64, pixel: f64) -> Window {
        let s = self.0.read().expect("stream lock");
        let start = from.saturating_sub(s.dropped).min(s.bars.len() as u64) as usize;
        s.answer(now, s.bars.range(start..), pixel)
    }
}

impl Inner {
    /// `bars` as an answer: merged within `pixel` seconds, thinned to [`MAX_ANSWER`].
    fn answer<'a>(&self, now: f64, bars: impl Iterator<Item = &'a Bar>, pixel: f64) -> Window {
        let pixel = pixel.max(0.0) as f32;
        let mut total = 0;
        let mut merged: Vec<(Bar, u32)> = Vec::new();
        // Per lane: its open bar in `merged`.
        let mut open: HashMap<(u32, u16), usize> = HashMap::new();
        for b in bars {
            total += 1;
            if pixel > 0.0
                && let Some(&i) = open.get(&(b.worker, b.lane))
            {
                let (m, n) = &mut merged[i];
                if m.job == b.job && m.label == b.label && m.ok == b.ok && b.t0 - m.t1 <= pixel {
                    m.t0 = m.t0.min(b.t0);
                    m.t1 = m.t1.max(b.t1);
                    *n += 1;
                    continue;
                }
            }
            open.insert((b.worker, b.lane), merged.len());
            merged.push((*b, 1));
        }
        let step = merged.len().div_ceil(MAX_ANSWER).max(1);
        let bars = merged
            .iter()
            .step_by(step)
            .map(|(b, n)| BarView {
                worker: b.worker,
                lane: b.lane,
                job: b.job,
                label: self.labels[b.label as usize].clone(),
                t0: b.t0,
                t1: b.t1,
                ok: b.ok,
                n: *n,
            })
            .collect();
        Window {
            now,
            bars,
            total,
            thinned: step > 1,
            next: self.dropped + self.bars.len() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_take_free_lanes_and_windows_find_them() {
        let s = Stream::default();
        s.push(1, 7, "stage 0", 0.0, 1.0, true);
        s.push(1, 7, "stage 0", 0.5, 1.5, true); // overlaps: second lane
        s.push(1, 8, "tasks", 1.2, 2.0, false); // lane 0 is free again
        s.push(2, 7, "stage 1", 5.0, 6.0, true);
        let w = s.window(6.0, 0.0, 10.0, None, 0.0);
        let lanes: Vec<(u32, u16)> = w.bars.iter().map(|b| (b.worker, b.lane)).collect();
        assert_eq!(lanes, vec![(1, 0), (1, 1), (1, 0), (2, 0)]);
        assert_eq!(w.bars[2].label, "tasks");
        assert!(!w.bars[2].ok);
        // Only what overlaps the window.
        let w = s.window(6.0, 1.6, 4.0, None, 0.0);
        assert_eq!(w.bars.len(), 1);
        assert_eq!((w.bars[0].job, w.bars[0].t0), (8, 1.2));
        assert_eq!(s.window(6.0, 7.0, 9.0, None, 0.0).bars, vec![]);
        // Of one job.
        let w = s.window(6.0, 0.0, 10.0, Some(8), 0.0);
        assert_eq!((w.bars.len(), w.total, w.bars[0].label.as_str()), (1, 1, "tasks"));
        // A one-thread worker's bars stay on one lane even when reports overlap them.
        s.worker_joined(3, 1);
        s.push(3, 7, "x", 0.0, 1.0, true);
        s.push(3, 7, "x", 0.99, 2.0, true);
        let w = s.window(6.0, 0.0, 3.0, None, 0.0);
        assert!(w.bars.iter().filter(|b| b.worker == 3).all(|b| b.lane == 0));
    }

    #[test]
    fn wide_windows_are_thinned() {
        let s = Stream::default();
        for i in 0..(MAX_ANSWER * 3) {
            s.push(1, 1, "x", i as f64, i as f64 + 0.5, true);
        }
        let w = s.window(0.0, 0.0, 1e9, None, 0.0);
        assert_eq!((w.bars.len(), w.total, w.thinned), (MAX_ANSWER, MAX_ANSWER * 3, true));
    }

    #[test]
    fn tasks_within_a_pixel_come_as_one_bar() {
        let s = Stream::default();
        s.worker_joined(1, 2);
        // Lane 0: 100 tasks back to back; lane 1: two tasks far apart.
        for i in 0..100 {
            s.push(1, 5, "x", i as f64 * 0.01, i as f64 * 0.01 + 0.009, true);
        }
        s.push(1, 5, "x", 0.0, 0.2, true);
        s.push(1, 5, "x", 0.5, 0.6, true);
        s.push(1, 5, "x", 1.1, 1.15, false); // failed: its own bar
        let w = s.window(2.0, 0.0, 2.0, None, 0.005);
        let mut got: Vec<(u16, u32, bool)> = w.bars.iter().map(|b| (b.lane, b.n, b.ok)).collect();
        got.sort();
        assert_eq!(got, vec![(0, 1, false), (0, 100, true), (1, 1, true), (1, 1, true)]);
        assert_eq!(w.total, 103);
        assert!(!w.thinned);
        let long = w.bars.iter().find(|b| b.n == 100).unwrap();
        assert!(long.t0 == 0.0 && (long.t1 - 0.999).abs() < 1e-5, "{long:?}");
        // Without a pixel: every task.
        assert_eq!(s.window(2.0, 0.0, 2.0, None, 0.0).bars.len(), 103);
        // Only the tasks pushed after an answer.
        assert_eq!(w.next, 103);
        s.push(1, 5, "x", 1.9, 2.5, true);
        s.push(1, 5, "x", 2.5, 2.6, true);
        let more = s.since(3.0, w.next, 0.01);
        assert_eq!((more.total, more.bars.len(), more.bars[0].n, more.next), (2, 1, 2, 105));
        assert_eq!(s.since(3.0, more.next, 0.01).total, 0);
    }
}
