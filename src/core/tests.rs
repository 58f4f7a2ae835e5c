use super::*;

const S: Duration = Duration::from_secs(1);
const G: GraphId = GraphId(1);

fn k(t: TaskId) -> TaskKey {
    TaskKey::new(G, t)
}

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
            Action::Assign { worker, tasks } => Some((*worker, tasks.iter().map(|t| t.task).collect())),
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
    core.submit(G, independent(2), GraphSpec::default()).unwrap();
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
    core.submit(G, independent(10), GraphSpec::default()).unwrap();
    let got = assigned(&drain(&mut core));
    assert_eq!(got, vec![(a, vec![0, 1, 2, 3])]);
    assert_eq!(core.task_done(S, a, k(0)), Accept::Accepted);
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
    core.submit(G, b.build(), GraphSpec::default()).unwrap();
    assert_eq!(assigned(&drain(&mut core)), vec![(w, vec![t0, t1])]);
    assert_eq!(core.task_done(S, w, k(t0)), Accept::Accepted);
    assert!(drain(&mut core).is_empty(), "fin must wait for t1");
    assert_eq!(core.task_done(S, w, k(t1)), Accept::Accepted);
    assert_eq!(drain(&mut core), vec![Action::RunLocal(k(fin))]);
    assert_eq!(core.local_done(k(fin)), Accept::Accepted);
    assert_eq!(assigned(&drain(&mut core)), vec![(w, vec![t3])]);
    assert_eq!(core.task_done(S, w, k(t3)), Accept::Accepted);
    assert_eq!(drain(&mut core), vec![Action::GraphDone(G)]);
    assert!(!core.has_graph(G));
}

#[test]
fn empty_graph_is_done_at_once() {
    let mut core = Core::new(CoreConfig::default());
    core.submit(G, GraphBuilder::new().build(), GraphSpec::default()).unwrap();
    assert_eq!(drain(&mut core), vec![Action::GraphDone(G)]);
}

#[test]
fn second_submit_while_running_is_refused() {
    let mut core = Core::new(CoreConfig::default());
    core.submit(G, independent(1), GraphSpec::default()).unwrap();
    assert_eq!(core.submit(G, independent(1), GraphSpec::default()), Err(CoreError::Busy(G)));
}

#[test]
fn results_from_wrong_or_lost_workers_are_stale() {
    let mut core = Core::new(CoreConfig::default());
    let a = core.worker_joined(Duration::ZERO, 1);
    let b = core.worker_joined(Duration::ZERO, 1);
    core.submit(G, independent(2), GraphSpec::default()).unwrap();
    drain(&mut core);
    // b does not hold task 0.
    assert_eq!(core.task_done(S, b, k(0)), Accept::Stale);
    core.worker_left(S, a);
    let again = assigned(&drain(&mut core));
    assert_eq!(again, vec![(b, vec![0])], "a's task goes to b");
    // a's late result is discarded.
    assert_eq!(core.task_done(S, a, k(0)), Accept::Stale);
    assert_eq!(core.task_done(S, b, k(0)), Accept::Accepted);
    assert_eq!(core.task_done(S, b, k(0)), Accept::Stale, "no double counting");
    assert_eq!(core.task_done(S, b, k(1)), Accept::Accepted);
    assert_eq!(drain(&mut core), vec![Action::GraphDone(G)]);
    assert_eq!(core.graph_counters(G).tasks_retried, 1);
    assert_eq!(core.graph_counters(G).tasks_done, 2);
    assert_eq!(core.graph_counters(G).workers_lost, 1);
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
    core.submit(G, independent(2), GraphSpec::default()).unwrap();
    drain(&mut core);
    core.heartbeat(8 * S, b);
    core.tick(9 * S);
    assert!(drain(&mut core).is_empty());
    core.tick(11 * S);
    let acts = drain(&mut core);
    assert_eq!(
        acts[0],
        Action::WorkerLost {
            worker: a,
            tasks: vec![TaskKey::new(G, 0)]
        }
    );
    assert_eq!(core.worker_count(), 1);
}

#[test]
fn poison_task_fails_after_retry_limit_naming_workers() {
    let mut core = Core::new(CoreConfig {
        max_retries: 2,
        ..Default::default()
    });
    core.submit(G, independent(1), GraphSpec::default()).unwrap();
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
        vec![Action::GraphFailed(G, Failure::RetriesExhausted { task: 0, workers: dead })]
    );
    assert!(!core.has_graph(G));
}

#[test]
fn task_error_fails_graph_and_clears_queues() {
    let mut core = Core::new(CoreConfig::default());
    let w = core.worker_joined(Duration::ZERO, 2);
    core.submit(G, independent(3), GraphSpec::default()).unwrap();
    drain(&mut core);
    core.task_error(S, w, k(1), "boom".into());
    let acts = drain(&mut core);
    assert_eq!(
        acts,
        vec![Action::GraphFailed(
            G,
            Failure::TaskError {
                task: 1,
                worker: w,
                message: "boom".into()
            }
        )]
    );
    assert_eq!(core.workers().map(|(_, _, n)| n).sum::<usize>(), 0);
    // A new graph may start.
    core.submit(G, independent(1), GraphSpec::default()).unwrap();
}

#[test]
fn draining_worker_gets_nothing_new() {
    let mut core = Core::new(CoreConfig::default());
    let a = core.worker_joined(Duration::ZERO, 1);
    core.drain(a).unwrap();
    core.submit(G, independent(1), GraphSpec::default()).unwrap();
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
    core.submit(G, independent(3), GraphSpec::default()).unwrap();
    assert_eq!(assigned(&drain(&mut core)), vec![(a, vec![0, 1, 2])]);
    core.drain(a).unwrap();
    core.release(S, a, &[k(1), k(2), k(7)]);
    assert!(drain(&mut core).is_empty(), "nobody else to take them yet");
    let b = core.worker_joined(S, 2);
    assert_eq!(assigned(&drain(&mut core)), vec![(b, vec![1, 2])]);
    assert_eq!(core.task_done(S, a, k(0)), Accept::Accepted, "a finishes what it runs");
    assert_eq!(core.task_done(S, a, k(1)), Accept::Stale, "released tasks are no longer a's");
    core.task_done(S, b, k(1));
    core.task_done(S, b, k(2));
    assert_eq!(drain(&mut core), vec![Action::GraphDone(G)]);
    assert_eq!(core.graph_counters(G).tasks_retried, 0);
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
    core.submit_resumed(G, b.build(), GraphSpec::default(), &[t0, t1, t3]).unwrap();
    assert_eq!(drain(&mut core), vec![Action::RunLocal(k(fin))]);
    core.local_done(k(fin));
    assert_eq!(assigned(&drain(&mut core)), vec![(w, vec![t4])], "t3 is not run again");
    core.task_done(S, w, k(t4));
    assert_eq!(drain(&mut core), vec![Action::GraphDone(G)]);
}

#[test]
fn fully_resumed_graph_is_done_at_once() {
    let mut core = Core::new(CoreConfig::default());
    core.submit_resumed(G, independent(3), GraphSpec::default(), &[0, 1, 2]).unwrap();
    assert_eq!(drain(&mut core), vec![Action::GraphDone(G)]);
}

// ---- several graphs (issue 13: task jobs beside array workloads)

const H: GraphId = GraphId(2);

fn keys(actions: &[Action]) -> Vec<(WorkerId, Vec<TaskKey>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Assign { worker, tasks } => Some((*worker, tasks.clone())),
            _ => None,
        })
        .collect()
}

fn task_job(retries: u8) -> GraphSpec {
    GraphSpec {
        on_error: OnError::FailTask { retries },
        ..Default::default()
    }
}

fn per_graph(actions: &[Action]) -> (usize, usize) {
    let all: Vec<TaskKey> = keys(actions).into_iter().flat_map(|(_, t)| t).collect();
    (
        all.iter().filter(|k| k.graph == G).count(),
        all.iter().filter(|k| k.graph == H).count(),
    )
}

#[test]
fn graphs_of_equal_priority_share_the_slots_first_come_first() {
    let mut core = Core::new(CoreConfig {
        queue_per_slot: 1,
        ..Default::default()
    });
    core.submit(G, independent(10), GraphSpec::default()).unwrap();
    core.submit(H, independent(10), task_job(0)).unwrap();
    let w = core.worker_joined(Duration::ZERO, 4);
    let got = keys(&drain(&mut core));
    assert_eq!(
        got,
        vec![(
            w,
            vec![TaskKey::new(G, 0), TaskKey::new(H, 0), TaskKey::new(G, 1), TaskKey::new(H, 1)]
        )]
    );
    // A slot freed by either goes to the one with fewer in flight, the first on a tie.
    core.task_done(S, w, TaskKey::new(H, 0));
    assert_eq!(keys(&drain(&mut core)), vec![(w, vec![TaskKey::new(H, 2)])]);
}

#[test]
fn a_higher_priority_gets_a_larger_share_without_starving_the_other() {
    let mut core = Core::new(CoreConfig {
        queue_per_slot: 1,
        ..Default::default()
    });
    core.submit(G, independent(20), GraphSpec::default()).unwrap();
    core.submit(
        H,
        independent(20),
        GraphSpec {
            priority: 1,
            ..Default::default()
        },
    )
    .unwrap();
    core.worker_joined(Duration::ZERO, 6);
    // Shares in proportion to 2^priority: 4 slots to H, 2 to G.
    assert_eq!(per_graph(&drain(&mut core)), (2, 4));
}

#[test]
fn a_task_takes_its_cores_and_waits_for_a_worker_with_room() {
    let mut core = Core::new(CoreConfig {
        queue_per_slot: 1,
        ..Default::default()
    });
    core.submit(
        H,
        independent(3),
        GraphSpec {
            cores: 2,
            on_error: OnError::FailTask { retries: 0 },
            ..Default::default()
        },
    )
    .unwrap();
    let small = core.worker_joined(Duration::ZERO, 1);
    assert!(drain(&mut core).is_empty(), "a 1-slot worker cannot take a 2-core task");
    let big = core.worker_joined(Duration::ZERO, 3);
    assert_eq!(
        keys(&drain(&mut core)),
        vec![(big, vec![TaskKey::new(H, 0)])],
        "one 2-core task on 3 slots"
    );
    // The remaining slot goes to a 1-core array task.
    core.submit(G, independent(2), GraphSpec::default()).unwrap();
    let got = keys(&drain(&mut core));
    assert_eq!(got, vec![(small, vec![TaskKey::new(G, 0)]), (big, vec![TaskKey::new(G, 1)])]);
}

#[test]
fn a_failing_task_is_retried_then_fails_alone_cancelling_its_dependants() {
    let mut b = GraphBuilder::new();
    let a = b.add(TaskKind::Remote, &[]);
    let x = b.add(TaskKind::Remote, &[]);
    let after_a = b.add(TaskKind::Remote, &[a]);
    let after_both = b.add(TaskKind::Remote, &[after_a, x]);
    let mut core = Core::new(CoreConfig::default());
    let w = core.worker_joined(Duration::ZERO, 2);
    core.submit(H, b.build(), task_job(1)).unwrap();
    drain(&mut core);
    let ka = TaskKey::new(H, a);
    assert_eq!(core.task_error(S, w, ka, "exit 1".into()), Accept::Accepted);
    assert_eq!(keys(&drain(&mut core)), vec![(w, vec![ka])], "retried once");
    core.task_error(S, w, ka, "exit 1".into());
    let acts = drain(&mut core);
    assert_eq!(
        acts,
        vec![Action::TaskFailed {
            task: ka,
            failure: Failure::TaskError {
                task: a,
                worker: w,
                message: "exit 1".into()
            },
            cancelled: vec![after_a, after_both],
        }]
    );
    assert!(core.has_graph(H), "the job goes on");
    core.task_done(S, w, TaskKey::new(H, x));
    assert_eq!(drain(&mut core), vec![Action::GraphDone(H)]);
    assert_eq!(core.graph_counters(H).tasks_done, 1);
}

#[test]
fn an_error_in_one_array_graph_leaves_the_other_graphs_running() {
    let mut core = Core::new(CoreConfig::default());
    let w = core.worker_joined(Duration::ZERO, 4);
    core.submit(G, independent(2), GraphSpec::default()).unwrap();
    core.submit(H, independent(2), task_job(0)).unwrap();
    drain(&mut core);
    core.task_error(S, w, k(0), "bad chunk".into());
    let acts = drain(&mut core);
    assert!(matches!(&acts[..], [Action::GraphFailed(g, _)] if *g == G), "{acts:?}");
    assert_eq!(core.task_done(S, w, k(1)), Accept::Stale, "the failed graph's tasks are gone");
    core.task_done(S, w, TaskKey::new(H, 0));
    core.task_done(S, w, TaskKey::new(H, 1));
    assert_eq!(drain(&mut core), vec![Action::GraphDone(H)]);
}

#[test]
fn cancelled_tasks_name_the_running_ones_and_their_results_are_stale() {
    let mut b = GraphBuilder::new();
    let t0 = b.add(TaskKind::Remote, &[]);
    let t1 = b.add(TaskKind::Remote, &[]);
    let t2 = b.add(TaskKind::Remote, &[t1]);
    let t3 = b.add(TaskKind::Remote, &[]);
    let mut core = Core::new(CoreConfig {
        queue_per_slot: 1,
        ..Default::default()
    });
    let w = core.worker_joined(Duration::ZERO, 2);
    core.submit(H, b.build(), task_job(0)).unwrap();
    assert_eq!(keys(&drain(&mut core)), vec![(w, vec![TaskKey::new(H, t0), TaskKey::new(H, t1)])]);
    let (cancelled, running) = core.cancel_tasks(H, &[t1, t3]);
    assert_eq!(cancelled, vec![t1, t2, t3]);
    assert_eq!(running, vec![(TaskKey::new(H, t1), w)]);
    assert_eq!(core.task_done(S, w, TaskKey::new(H, t1)), Accept::Stale);
    assert!(keys(&drain(&mut core)).is_empty(), "nothing left to hand out");
    core.task_done(S, w, TaskKey::new(H, t0));
    assert_eq!(drain(&mut core), vec![Action::GraphDone(H)]);
}

#[test]
fn a_task_whose_time_limit_outlives_a_worker_goes_to_another() {
    let mut core = Core::new(CoreConfig::default());
    let short = core.worker_joined(Duration::ZERO, 1);
    core.set_deadline(short, Some(100 * S)).unwrap();
    core.submit(
        H,
        independent(1),
        GraphSpec {
            time_limit: Some(200 * S),
            ..task_job(0)
        },
    )
    .unwrap();
    assert!(drain(&mut core).is_empty(), "the worker's walltime ends before the limit");
    let long = core.worker_joined(S, 1);
    assert_eq!(keys(&drain(&mut core)), vec![(long, vec![TaskKey::new(H, 0)])]);
}

#[test]
fn a_task_lost_too_often_fails_alone_in_a_task_job() {
    let mut core = Core::new(CoreConfig {
        max_retries: 1,
        queue_per_slot: 1,
        ..Default::default()
    });
    core.submit(H, independent(2), task_job(0)).unwrap();
    let mut lost = Vec::new();
    for i in 0..2 {
        let w = core.worker_joined(i * S, 1);
        lost.push(w);
        drain(&mut core);
        core.worker_left(i * S, w);
    }
    let acts = drain(&mut core);
    assert!(
        acts.contains(&Action::TaskFailed {
            task: TaskKey::new(H, 0),
            failure: Failure::RetriesExhausted { task: 0, workers: lost },
            cancelled: vec![],
        }),
        "{acts:?}"
    );
    assert!(core.has_graph(H), "task 1 still runs");
}

#[test]
fn tasks_without_prefetch_go_only_to_free_slots_until_allowed() {
    let mut core = Core::new(CoreConfig {
        queue_per_slot: 3,
        ..Default::default()
    });
    let spec = GraphSpec {
        prefetch: false,
        ..task_job(0)
    };
    core.submit(G, independent(10), spec).unwrap();
    let a = core.worker_joined(Duration::ZERO, 2);
    let b = core.worker_joined(Duration::ZERO, 2);
    let first = keys(&drain(&mut core));
    assert_eq!(
        first.iter().map(|(_, t)| t.len()).sum::<usize>(),
        4,
        "one task per slot, none queued"
    );
    // A task ending frees a slot: exactly one more goes out, to that worker.
    let done = first.iter().find(|(w, _)| *w == a).unwrap().1[0];
    assert_eq!(core.task_done(S, a, done), Accept::Accepted);
    assert_eq!(
        keys(&drain(&mut core)).iter().map(|(w, t)| (*w, t.len())).collect::<Vec<_>>(),
        vec![(a, 1)]
    );
    // Short tasks: the queues fill up to 3 per slot.
    core.set_prefetch(G, true);
    let more: usize = keys(&drain(&mut core)).iter().map(|(_, t)| t.len()).sum();
    assert_eq!(more, 5, "the 5 tasks left go to the queues");
    assert_eq!(core.held(b).len() + core.held(a).len(), 9);
}

#[test]
fn tasks_of_several_classes_take_their_own_cores_and_small_ones_pass_a_large_one() {
    let mut core = Core::new(CoreConfig {
        queue_per_slot: 1,
        ..Default::default()
    });
    let spec = GraphSpec {
        classes: Some(TaskClasses {
            of_task: vec![1, 0, 0],
            res: vec![(1, None), (3, None)],
        }),
        ..task_job(0)
    };
    core.submit(G, independent(3), spec).unwrap();
    let w = core.worker_joined(Duration::ZERO, 2);
    // Task 0 needs 3 cores: the 2-slot worker takes tasks 1 and 2 past it.
    assert_eq!(assigned(&drain(&mut core)), vec![(w, vec![1, 2])]);
    let big = core.worker_joined(S, 4);
    assert_eq!(assigned(&drain(&mut core)), vec![(big, vec![0])]);
    assert_eq!(core.workers().find(|(id, _, _)| *id == big).map(|(_, _, n)| n), Some(1));
    // Its 3 cores are given back when it ends; the 1-core tasks gave back 1 each.
    assert_eq!(core.task_done(2 * S, big, TaskKey::new(G, 0)), Accept::Accepted);
    assert_eq!(core.task_done(2 * S, w, TaskKey::new(G, 1)), Accept::Accepted);
    assert_eq!(core.task_done(2 * S, w, TaskKey::new(G, 2)), Accept::Accepted);
    assert!(drain(&mut core).contains(&Action::GraphDone(G)));
}

// ---- machine scale (issue 15): the full 100,000 workers x 10,000,000 tasks run is
// examples/core_scale.rs; here a tenth of the workers and a twenty-fifth of the tasks,
// with 10% of the workers falling silent at once and declared lost by the heartbeat
// check.

/// Runs the scenario; returns a fingerprint of every action, in order.
fn scale_run(workers: u32, tasks: u32) -> u64 {
    use std::hash::{Hash, Hasher};
    let cfg = CoreConfig {
        queue_per_slot: 2,
        heartbeat_timeout: 10 * S,
        ..Default::default()
    };
    let mut core = Core::new(cfg);
    let mut now = Duration::ZERO;
    let ids: Vec<WorkerId> = (0..workers).map(|i| core.worker_joined(now, 1 + i % 4)).collect();
    let mut held: HashMap<WorkerId, Vec<TaskKey>> = HashMap::new();
    let mut silent: HashSet<WorkerId> = HashSet::new();
    let mut done = vec![false; tasks as usize];
    let mut fp = std::collections::hash_map::DefaultHasher::new();
    core.submit(G, independent(tasks), GraphSpec::default()).unwrap();
    let (mut ended, mut completed, mut named_lost) = (false, 0u32, 0usize);
    while !ended {
        for a in drain(&mut core) {
            format!("{a:?}").hash(&mut fp);
            match a {
                Action::Assign { worker, tasks } => {
                    assert!(!silent.contains(&worker), "a task went to lost worker {worker}");
                    held.entry(worker).or_default().extend(tasks);
                }
                Action::WorkerLost { worker, tasks } => {
                    assert!(silent.contains(&worker), "healthy worker {worker} declared lost");
                    let mut had = held.remove(&worker).unwrap_or_default();
                    had.sort_unstable();
                    assert_eq!(tasks, had, "WorkerLost names what {worker} held");
                    named_lost += tasks.len();
                }
                Action::GraphDone(_) => ended = true,
                other => panic!("unexpected {other:?}"),
            }
        }
        now += S;
        if silent.is_empty() && completed >= tasks / 2 {
            // 10% fall silent at once: they hold their tasks and never answer again.
            silent.extend(ids.iter().copied().step_by(10));
            core.check_index();
        }
        let mut ws: Vec<WorkerId> = held.keys().copied().filter(|w| !silent.contains(w)).collect();
        ws.sort_unstable();
        for w in ws {
            // Each healthy worker finishes the oldest task of each of its slots.
            let q = held.get_mut(&w).expect("listed");
            let n = q.len().min(core.workers.get(&w).map_or(0, |s| s.slots as usize));
            for t in q.drain(..n).collect::<Vec<_>>() {
                assert_eq!(core.task_done(now, w, t), Accept::Accepted);
                assert!(!std::mem::replace(&mut done[t.task as usize], true), "task {} done twice", t.task);
                completed += 1;
            }
        }
        for &w in &ids {
            if !silent.contains(&w) {
                core.heartbeat(now, w);
            }
        }
        core.tick(now);
    }
    core.check_index();
    assert_eq!(completed, tasks, "every task done exactly once");
    assert!(done.iter().all(|&d| d));
    let c = core.counters();
    assert_eq!(c.workers_lost, u64::from(workers / 10), "exactly the silent workers were lost");
    assert_eq!(c.tasks_retried as usize, named_lost, "every task they held ran again");
    assert!(named_lost > 0);
    fp.finish()
}

#[test]
fn ten_thousand_workers_and_a_mass_failure_are_exact_and_deterministic() {
    let a = scale_run(10_000, 400_000);
    assert_eq!(a, scale_run(10_000, 400_000), "the same events give the same decisions");
}
