//! Throughput, slots and memory over time: one point a second for the last ten
//! minutes (the live charts), and the whole run at a resolution that halves whenever
//! it holds [`RUN_POINTS`] points (the report's charts). The observer appends; the
//! handlers copy out what a page needs, and server-sent events carry only the points
//! a page has not seen.

use std::collections::VecDeque;
use std::sync::RwLock;

use super::snapshot::Point;

/// Points of the live charts (one a second).
pub const RECENT: usize = 600;
/// The whole run's points at most.
pub const RUN_POINTS: usize = 1200;

#[derive(Default)]
struct Inner {
    recent: VecDeque<Point>,
    run: Vec<Point>,
    /// Seconds between the run's points.
    stride: f64,
}

#[derive(Default)]
pub struct History(RwLock<Inner>);

impl History {
    /// A point at `p.t`: kept when a second passed since the last one.
    pub fn push(&self, p: Point) {
        let mut h = self.0.write().expect("history lock");
        if h.recent.back().is_some_and(|last| p.t - last.t < 0.9) {
            return;
        }
        if h.stride == 0.0 {
            h.stride = 1.0;
        }
        if h.run.last().is_none_or(|last| p.t - last.t >= h.stride * 0.9) {
            h.run.push(p.clone());
            if h.run.len() >= RUN_POINTS {
                // Halve the resolution: keep every other point.
                let kept: Vec<Point> = h.run.iter().step_by(2).cloned().collect();
                h.run = kept;
                h.stride *= 2.0;
            }
        }
        h.recent.push_back(p);
        if h.recent.len() > RECENT {
            h.recent.pop_front();
        }
    }

    /// The live charts' points later than `after` (all of them with `None`).
    pub fn recent(&self, after: Option<f64>) -> Vec<Point> {
        let h = self.0.read().expect("history lock");
        let from = after.map_or(0, |t| h.recent.partition_point(|p| p.t <= t));
        h.recent.range(from..).cloned().collect()
    }

    /// The whole run's points.
    pub fn run(&self) -> Vec<Point> {
        self.0.read().expect("history lock").run.clone()
    }

    /// The last point.
    pub fn last(&self) -> Option<Point> {
        self.0.read().expect("history lock").recent.back().cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: f64) -> Point {
        Point { t, ..Default::default() }
    }

    #[test]
    fn recent_points_and_deltas() {
        let h = History::default();
        for i in 0..700 {
            h.push(at(i as f64));
            h.push(at(i as f64 + 0.5)); // within the second: dropped
        }
        let all = h.recent(None);
        assert_eq!(all.len(), RECENT);
        assert_eq!((all[0].t, all[RECENT - 1].t), (100.0, 699.0));
        let after: Vec<f64> = h.recent(Some(697.0)).iter().map(|p| p.t).collect();
        assert_eq!(after, vec![698.0, 699.0]);
        assert!(h.recent(Some(699.0)).is_empty());
    }

    #[test]
    fn the_run_keeps_its_start_at_a_coarser_resolution() {
        let h = History::default();
        let n = 5000;
        for i in 0..n {
            h.push(at(i as f64));
        }
        let run = h.run();
        assert!(run.len() < RUN_POINTS && run.len() > RUN_POINTS / 4, "{}", run.len());
        assert_eq!(run[0].t, 0.0);
        assert!(run.last().unwrap().t > (n - 20) as f64);
        // Evenly spaced.
        let gaps: Vec<f64> = run.windows(2).map(|w| w[1].t - w[0].t).collect();
        assert!(gaps.iter().all(|&g| g == gaps[0]), "{gaps:?}");
    }
}
