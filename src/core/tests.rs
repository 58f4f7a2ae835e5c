use super::*;

const S: Duration = Duration::from_secs(1);

fn drain(core: &mut Core) -> Vec<Action> {
    std::iter::from_fn(|| core.poll_action()).collect()
}

fn independent(n: u32) -> Graph {
    let mut b = GraphBuilder::new();
    for _ in 0..n {
        b.add(TaskKind::Remote, &[]);
    }
    b.build()
}

fn assigned(actions: &[Action]) -> Vec<(WorkerId, Vec<TaskId>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Assign { worker, tasks } => Some((*worker, tasks.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn few_tasks_spread_over_workers_before_prefetching() {
    let mut core = Core::new(CoreConfig {
        queue_per_slot: 4,
        ..Default::default()
    });
    let a = core.worker_joined(Duration::ZERO, 1);
    let b = core.worker_joined(Duration::ZERO, 1);
    core.submit(independent(2)).unwrap();
    let got = assigned(&drain(&mut core));
    assert_eq!(got, vec![(a, vec![0]), (b, vec![1])]);
}

#[test]
fn queues_fill_to_slots_times_prefetch_then_wait() {
    let mut core = Core::new(CoreConfig {
        queue_per_slot: 2,
        ..Default::default()
    });
    let a = core.worker_joined(Duration::ZERO, 2);
    core.submit(independent(10)).unwrap();
    let got = assigned(&drain(&mut core));
    assert_eq!(got, vec![(a, vec![0, 1, 2, 3])]);
    assert_eq!(core.task_done(S, a, 0), Accept::Accepted);
    assert_eq!(assigned(&drain(&mut core)), vec![(a, vec![4])]);
}

#[test]
fn dependencies_release_in_order_and_local_tasks_run_in_driver() {
    let mut b = GraphBuilder::new();
    let t0 = b.add(TaskKind::Remote, &[]);
    let t1 = b.add(TaskKind::Remote, &[]);
    let fin = b.add(TaskKind::Local, &[t0, t1]);
    let t3 = b.add(TaskKind::Remote, &[fin]);
    let mut core = Core::new(CoreConfig::default());
    let w = core.worker_joined(Duration::ZERO, 4);
    core.submit(b.build()).unwrap();
    assert_eq!(assigned(&drain(&mut core)), vec![(w, vec![t0, t1])]);
    assert_eq!(core.task_done(S, w, t0), Accept::Accepted);
    assert!(drain(&mut core).is_empty(), "fin must wait for t1");
    assert_eq!(core.task_done(S, w, t1), Accept::Accepted);
    assert_eq!(drain(&mut core), vec![Action::RunLocal(fin)]);
    assert_eq!(core.local_done(fin), Accept::Accepted);
    assert_eq!(assigned(&drain(&mut core)), vec![(w, vec![t3])]);
    assert_eq!(core.task_done(S, w, t3), Accept::Accepted);
    assert_eq!(drain(&mut core), vec![Action::GraphDone]);
    assert!(!core.has_graph());
}

#[test]
fn empty_graph_is_done_at_once() {
    let mut core = Core::new(CoreConfig::default());
    core.submit(GraphBuilder::new().build()).unwrap();
    assert_eq!(drain(&mut core), vec![Action::GraphDone]);
}

#[test]
fn second_submit_while_running_is_refused() {
    let mut core = Core::new(CoreConfig::default());
    core.submit(independent(1)).unwrap();
    assert_eq!(core.submit(independent(1)), Err(CoreError::Busy));
}

#[test]
fn results_from_wrong_or_lost_workers_are_stale() {
    let mut core = Core::new(CoreConfig::default());
    let a = core.worker_joined(Duration::ZERO, 1);
    let b = core.worker_joined(Duration::ZERO, 1);
    core.submit(independent(2)).unwrap();
    drain(&mut core);
    // b does not hold task 0.
    assert_eq!(core.task_done(S, b, 0), Accept::Stale);
    core.worker_left(S, a);
    let again = assigned(&drain(&mut core));
    assert_eq!(again, vec![(b, vec![0])], "a's task goes to b");
    // a's late result is discarded.
    assert_eq!(core.task_done(S, a, 0), Accept::Stale);
    assert_eq!(core.task_done(S, b, 0), Accept::Accepted);
    assert_eq!(core.task_done(S, b, 0), Accept::Stale, "no double counting");
    assert_eq!(core.task_done(S, b, 1), Accept::Accepted);
    assert_eq!(drain(&mut core), vec![Action::GraphDone]);
    assert_eq!(core.graph_counters().tasks_retried, 1);
    assert_eq!(core.graph_counters().tasks_done, 2);
    assert_eq!(core.graph_counters().workers_lost, 1);
}

#[test]
fn silent_worker_is_declared_lost_after_timeout() {
    let cfg = CoreConfig {
        heartbeat_timeout: 10 * S,
        ..Default::default()
    };
    let mut core = Core::new(cfg);
    let a = core.worker_joined(Duration::ZERO, 1);
    let b = core.worker_joined(Duration::ZERO, 1);
    core.submit(independent(2)).unwrap();
    drain(&mut core);
    core.heartbeat(8 * S, b);
    core.tick(9 * S);
    assert!(drain(&mut core).is_empty());
    core.tick(11 * S);
    let acts = drain(&mut core);
    assert_eq!(acts[0], Action::WorkerLost { worker: a });
    assert_eq!(core.worker_count(), 1);
}

#[test]
fn poison_task_fails_after_retry_limit_naming_workers() {
    let mut core = Core::new(CoreConfig {
        max_retries: 2,
        ..Default::default()
    });
    core.submit(independent(1)).unwrap();
    let mut dead = Vec::new();
    for i in 0..3 {
        let w = core.worker_joined(i * S, 1);
        dead.push(w);
        assert_eq!(assigned(&drain(&mut core)), vec![(w, vec![0])]);
        core.worker_left(i * S, w);
    }
    let acts = drain(&mut core);
    assert_eq!(
        acts,
        vec![Action::GraphFailed(Failure::RetriesExhausted { task: 0, workers: dead })]
    );
    assert!(!core.has_graph());
}

#[test]
fn task_error_fails_graph_and_clears_queues() {
    let mut core = Core::new(CoreConfig::default());
    let w = core.worker_joined(Duration::ZERO, 2);
    core.submit(independent(3)).unwrap();
    drain(&mut core);
    core.task_error(S, w, 1, "boom".into());
    let acts = drain(&mut core);
    assert_eq!(
        acts,
        vec![Action::GraphFailed(Failure::TaskError {
            task: 1,
            worker: w,
            message: "boom".into()
        })]
    );
    assert_eq!(core.workers().map(|(_, _, n)| n).sum::<usize>(), 0);
    // A new graph may start.
    core.submit(independent(1)).unwrap();
}

#[test]
fn draining_worker_gets_nothing_new() {
    let mut core = Core::new(CoreConfig::default());
    let a = core.worker_joined(Duration::ZERO, 1);
    core.drain(a).unwrap();
    core.submit(independent(1)).unwrap();
    assert!(drain(&mut core).is_empty());
    let b = core.worker_joined(S, 1);
    assert_eq!(assigned(&drain(&mut core)), vec![(b, vec![0])]);
}

#[test]
fn released_tasks_go_elsewhere_without_counting_as_retries() {
    let mut core = Core::new(CoreConfig {
        queue_per_slot: 3,
        ..Default::default()
    });
    let a = core.worker_joined(Duration::ZERO, 1);
    core.submit(independent(3)).unwrap();
    assert_eq!(assigned(&drain(&mut core)), vec![(a, vec![0, 1, 2])]);
    core.drain(a).unwrap();
    core.release(S, a, &[1, 2, 7]);
    assert!(drain(&mut core).is_empty(), "nobody else to take them yet");
    let b = core.worker_joined(S, 2);
    assert_eq!(assigned(&drain(&mut core)), vec![(b, vec![1, 2])]);
    assert_eq!(core.task_done(S, a, 0), Accept::Accepted, "a finishes what it runs");
    assert_eq!(core.task_done(S, a, 1), Accept::Stale, "released tasks are no longer a's");
    core.task_done(S, b, 1);
    core.task_done(S, b, 2);
    assert_eq!(drain(&mut core), vec![Action::GraphDone]);
    assert_eq!(core.graph_counters().tasks_retried, 0);
}

#[test]
fn million_task_graph_is_compact() {
    let n = 1_000_000;
    let mut b = GraphBuilder::with_capacity(n + 1, n);
    let ids: Vec<TaskId> = (0..n).map(|_| b.add(TaskKind::Remote, &[])).collect();
    b.add(TaskKind::Local, &ids);
    let g = b.build();
    let per_task = g.heap_bytes() as f64 / n as f64;
    assert!(per_task < 20.0, "graph uses {per_task} bytes per task");
}

#[test]
fn resumed_graph_runs_only_what_is_left() {
    // Two blocks -> finalize -> two blocks; block 0, block 1 and the later block 3 were
    // recorded; the finalize is not journaled and reruns, then only block 4 runs.
    let mut b = GraphBuilder::new();
    let t0 = b.add(TaskKind::Remote, &[]);
    let t1 = b.add(TaskKind::Remote, &[]);
    let fin = b.add(TaskKind::Local, &[t0, t1]);
    let t3 = b.add(TaskKind::Remote, &[fin]);
    let t4 = b.add(TaskKind::Remote, &[fin]);
    let mut core = Core::new(CoreConfig::default());
    let w = core.worker_joined(Duration::ZERO, 4);
    core.submit_resumed(b.build(), &[t0, t1, t3]).unwrap();
    assert_eq!(drain(&mut core), vec![Action::RunLocal(fin)]);
    core.local_done(fin);
    assert_eq!(assigned(&drain(&mut core)), vec![(w, vec![t4])], "t3 is not run again");
    core.task_done(S, w, t4);
    assert_eq!(drain(&mut core), vec![Action::GraphDone]);
}

#[test]
fn fully_resumed_graph_is_done_at_once() {
    let mut core = Core::new(CoreConfig::default());
    core.submit_resumed(independent(3), &[0, 1, 2]).unwrap();
    assert_eq!(drain(&mut core), vec![Action::GraphDone]);
}
