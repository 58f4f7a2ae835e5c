//! The scheduler core at machine scale (issue 15): 100,000 workers of one slot and
//! 10,000,000 independent tasks, with 10% of the workers lost at once halfway (their
//! tasks go back to the queue and run elsewhere), driven without IO or clocks as in
//! the deterministic simulation. Reports heap bytes per worker (workers joined, no
//! graph), peak heap bytes per task while the graph runs, and the cost of the core's
//! work per task (its calls timed together: submit, assignments, completions, the
//! mass failure).
//!
//! Run: cargo run --release --example core_scale [-- TASKS WORKERS]
//! Targets: under 300 bytes per task and 2 KiB per worker. Reported, never asserted.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use drover::core::{Action, Core, CoreConfig, GraphBuilder, GraphId, GraphSpec, TaskKey, TaskKind, WorkerId};

#[path = "support/counting.rs"]
mod counting;
use counting::{LIVE, PEAK};

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10_000_000);
    let w: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(100_000);

    let base = LIVE.load(Ordering::Relaxed);
    let mut core = Core::new(CoreConfig::default());
    let mut now = Duration::ZERO;
    let mut core_time = Duration::ZERO;
    let t = Instant::now();
    let mut workers: Vec<WorkerId> = (0..w).map(|_| core.worker_joined(now, 1)).collect();
    core_time += t.elapsed();
    let per_worker = (LIVE.load(Ordering::Relaxed) - base) as f64 / w as f64;

    // The harness's own memory (the driver's queues) is counted apart.
    let mut held: Vec<Vec<TaskKey>> = vec![Vec::new(); w];
    let mut alive: Vec<bool> = vec![true; w];

    // Everything the tasks cost from here: the graph and the core's state for it.
    let before_tasks = LIVE.load(Ordering::Relaxed);
    PEAK.store(before_tasks, Ordering::Relaxed);
    let t = Instant::now();
    let mut b = GraphBuilder::with_capacity(n as usize, 0);
    for _ in 0..n {
        b.add(TaskKind::Remote, &[]);
    }
    let graph = b.build();
    core.submit(GraphId(1), graph, GraphSpec::default()).expect("submit");
    core_time += t.elapsed();

    let (mut done, mut completed, mut requeued, mut lost_at) = (false, 0u64, 0usize, None);
    let index = |id: WorkerId| id.0 as usize;
    let mut harness_peak = 0usize;
    while !done {
        let t = Instant::now();
        while let Some(a) = core.poll_action() {
            match a {
                Action::Assign { worker, tasks } => held[index(worker)].extend(tasks),
                Action::WorkerLost { tasks, .. } => requeued += tasks.len(),
                Action::GraphDone(_) => done = true,
                Action::RunLocal(t) => {
                    core.local_done(t);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        core_time += t.elapsed();
        harness_peak = harness_peak.max(held.iter().map(|q| q.capacity() * size_of::<TaskKey>()).sum());
        now += Duration::from_millis(10);
        // Halfway, 10% of the workers vanish at once.
        if lost_at.is_none() && completed >= u64::from(n) / 2 {
            let t = Instant::now();
            for i in (0..w).step_by(10) {
                core.worker_left(now, workers[i]);
                alive[i] = false;
                held[i].clear();
            }
            core_time += t.elapsed();
            lost_at = Some(completed);
        }
        let t = Instant::now();
        for (i, q) in held.iter_mut().enumerate() {
            if alive[i] {
                for k in q.drain(..) {
                    core.task_done(now, workers[i], k);
                    completed += 1;
                }
            }
        }
        core_time += t.elapsed();
    }
    workers.clear();
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(before_tasks);
    let per_task = peak.saturating_sub(harness_peak) as f64 / f64::from(n);
    println!(
        "workers: {w} (1 slot each); tasks: {n}; lost at once: {} after {} tasks ended ({requeued} tasks named by WorkerLost); every task ended: {}",
        w / 10,
        lost_at.unwrap_or(0),
        completed == u64::from(n)
    );
    println!("heap per worker: {per_worker:.0} bytes (target < 2048)");
    println!("peak heap per task while running: {per_task:.1} bytes (target < 300; the harness's queues excluded)");
    println!(
        "core time: {:.2} s for {completed} task completions = {:.2} us per task",
        core_time.as_secs_f64(),
        core_time.as_secs_f64() * 1e6 / completed as f64
    );
}
