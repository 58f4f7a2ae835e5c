//! `GET /metrics`: the snapshot in Prometheus' text format (names `drover_...`, base
//! units, counters ending in `_total`).

use std::fmt::Write;

use super::snapshot::{JobView, Snapshot};

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            let _ = write!(self.0, "{{{}}}", l.join(","));
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

pub fn render(s: &Snapshot) -> String {
    let mut o = Out(String::new());
    o.one("drover_workers", "gauge", "Workers connected.", s.workers.len() as f64);
    o.one(
        "drover_slots",
        "gauge",
        "Task slots (threads) of the connected workers.",
        s.workers.iter().map(|w| f64::from(w.threads)).sum(),
    );
    o.one(
        "drover_slots_busy",
        "gauge",
        "Slots running a task.",
        s.workers.iter().map(|w| f64::from(w.busy)).sum(),
    );
    o.one(
        "drover_tasks_queued_at_workers",
        "gauge",
        "Tasks waiting in workers' queues.",
        s.workers.iter().map(|w| f64::from(w.queued)).sum(),
    );
    o.one("drover_tasks_done_total", "counter", "Tasks finished.", s.totals.tasks_done as f64);
    o.one(
        "drover_tasks_retried_total",
        "counter",
        "Tasks run again after a lost worker.",
        s.totals.tasks_retried as f64,
    );
    o.one(
        "drover_workers_lost_total",
        "counter",
        "Workers lost while holding tasks.",
        s.totals.workers_lost as f64,
    );
    o.one(
        "drover_read_bytes_total",
        "counter",
        "Bytes of input read by workers.",
        s.totals.bytes_read as f64,
    );
    o.one(
        "drover_written_bytes_total",
        "counter",
        "Bytes of output written.",
        s.totals.bytes_written as f64,
    );
    let waiting: u64 = s.jobs.iter().map(|j| j.info.counts.waiting).sum();
    o.one("drover_queue_depth", "gauge", "Tasks of all jobs waiting to run.", waiting as f64);
    o.family("drover_batch_jobs", "gauge", "Batch jobs of the pool by state.");
    for state in ["pending", "running", "expiring", "gone"] {
        let n = s.pool.jobs.iter().filter(|j| j.state == state).count();
        o.sample("drover_batch_jobs", &[("state", state)], n as f64);
    }
    if let Some(t) = s.pool.target {
        o.one("drover_pool_target_workers", "gauge", "Workers the pool holds.", f64::from(t));
    }
    o.family("drover_job_tasks", "gauge", "Tasks of each job by state.");
    for JobView { info: j, .. } in &s.jobs {
        let id = j.id.to_string();
        let c = &j.counts;
        for (state, n) in [
            ("waiting", c.waiting),
            ("running", c.running),
            ("succeeded", c.succeeded),
            ("failed", c.failed),
            ("timeout", c.timeout),
            ("cancelled", c.cancelled),
        ] {
            o.sample(
                "drover_job_tasks",
                &[("job", &id), ("kind", &j.kind), ("name", &j.name), ("state", state)],
                n as f64,
            );
        }
    }
    o.family("drover_job_progress_ratio", "gauge", "Fraction of each job's tasks that ended.");
    for JobView { info: j, .. } in &s.jobs {
        let ratio = if j.tasks == 0 {
            1.0
        } else {
            j.counts.ended() as f64 / j.tasks as f64
        };
        o.sample("drover_job_progress_ratio", &[("job", &j.id.to_string()), ("kind", &j.kind)], ratio);
    }
    o.family("drover_worker_resident_memory_bytes", "gauge", "Resident memory of each worker.");
    for w in s.workers.iter().filter(|w| w.rss_bytes.is_some()) {
        o.sample(
            "drover_worker_resident_memory_bytes",
            &[("worker", &w.id.to_string()), ("host", &w.host)],
            w.rss_bytes.unwrap_or(0) as f64,
        );
    }
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::snapshot::WorkerView;
    use crate::proto::jobs::JobInfo;

    #[test]
    fn families_have_help_and_type_and_labels_are_escaped() {
        let mut s = Snapshot::default();
        s.workers.push(WorkerView {
            id: 3,
            host: "n\"1".into(),
            threads: 2,
            busy: 1,
            rss_bytes: Some(1000),
            ..Default::default()
        });
        s.jobs.push(JobView {
            info: JobInfo {
                id: 7,
                name: "a\\b".into(),
                kind: "tasks".into(),
                tasks: 4,
                ..Default::default()
            },
            ..Default::default()
        });
        s.jobs[0].info.counts.succeeded = 2;
        let text = render(&s);
        assert!(text.contains("# TYPE drover_tasks_done_total counter\ndrover_tasks_done_total 0\n"));
        assert!(text.contains("drover_slots 2\n"));
        assert!(text.contains(r#"drover_worker_resident_memory_bytes{worker="3",host="n\"1"} 1000"#));
        assert!(text.contains(r#"drover_job_tasks{job="7",kind="tasks",name="a\\b",state="succeeded"} 2"#));
        assert!(text.contains(r#"drover_job_progress_ratio{job="7",kind="tasks"} 0.5"#));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} has no TYPE");
        }
    }
}
