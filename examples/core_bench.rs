//! Scheduler-core benchmark: build and schedule a 1,000,000-task graph (a reduction of
//! a million blocks, then a million dependent blocks) through simulated workers, and
//! report peak heap bytes per task and tasks scheduled per second.
//!
//! Run: cargo run --release --example core_bench [-- TASKS]

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use drover::core::{Action, Core, CoreConfig, GraphBuilder, GraphId, GraphSpec, TaskKey, TaskKind};

#[path = "support/counting.rs"]
mod counting;
use counting::{LIVE, PEAK};

fn main() {
    let n: u32 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let half = n / 2;
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let t0 = Instant::now();
    let mut b = GraphBuilder::with_capacity(n as usize + 1, 2 * n as usize);
    let first: Vec<u32> = (0..half).map(|_| b.add(TaskKind::Remote, &[])).collect();
    let fin = b.add(TaskKind::Local, &first);
    drop(first);
    for _ in 0..(n - half) {
        b.add(TaskKind::Remote, &[fin]);
    }
    let graph = b.build();
    let built = t0.elapsed();
    let total = graph.len();
    let mut core = Core::new(CoreConfig {
        queue_per_slot: 64,
        ..Default::default()
    });
    let workers: Vec<_> = (0..16).map(|_| core.worker_joined(Duration::ZERO, 4)).collect();
    let t1 = Instant::now();
    core.submit(GraphId(1), graph, GraphSpec::default()).unwrap();
    let mut queues: Vec<Vec<TaskKey>> = vec![Vec::new(); workers.len()];
    let mut done = false;
    let mut now = Duration::ZERO;
    while !done {
        while let Some(a) = core.poll_action() {
            match a {
                Action::Assign { worker, tasks } => queues[worker.0 as usize].extend(tasks),
                Action::RunLocal(t) => {
                    core.local_done(t);
                }
                Action::GraphDone(_) => done = true,
                other => panic!("unexpected {other:?}"),
            }
        }
        now += Duration::from_micros(10);
        for (i, q) in queues.iter_mut().enumerate() {
            for t in q.drain(..) {
                core.task_done(now, workers[i], t);
            }
        }
    }
    let scheduled = t1.elapsed();
    let peak = PEAK.load(Ordering::Relaxed) - base;
    println!(
        "tasks: {total}\nbuild: {:.3} s\nschedule + complete: {:.3} s ({:.0} tasks/s)\npeak scheduler heap: {:.1} MiB = {:.1} bytes per task (target < 300)",
        built.as_secs_f64(),
        scheduled.as_secs_f64(),
        f64::from(total) / scheduled.as_secs_f64(),
        peak as f64 / (1 << 20) as f64,
        peak as f64 / f64::from(total)
    );
}
