//! What the actor does for clients: status, pool commands, submissions of array
//! workloads and task jobs, job lists, task lists, waits, cancellations, reports.

use super::{Actor, Event, Tx, send};
use crate::pool::Adapt;
use crate::proto::jobs::TaskJobRequest;
use crate::proto::{PeerMsg, ServerMsg};
use crate::server::jobs::Job;
use crate::server::jobs::tasks::{Capacity, TaskJob};

impl Actor {
    pub(super) fn client_msg(&mut self, msg: PeerMsg, client: Tx) {
        let now = self.now();
        let refuse = |client: &Tx, input_error: bool, message: String| send(client, ServerMsg::Failed { input_error, message });
        let stopping = self.stopping.is_some();
        match msg {
            PeerMsg::Submit { .. } | PeerMsg::SubmitTasks { .. } if stopping => refuse(&client, false, "the server is stopping".into()),
            PeerMsg::Submit { workload } => self.queue.push_back((workload, client)),
            PeerMsg::SubmitTasks { request } => self.submit_tasks(request, &client),
            PeerMsg::GetStatus => send(&client, ServerMsg::Status { status: self.status() }),
            PeerMsg::Stop => self.handle(Event::Stop),
            PeerMsg::Scale { workers } => self.pool_command(&client, |pool, _, now| {
                tracing::info!(workers, "scaling");
                pool.set_target(now, workers);
                Ok(())
            }),
            PeerMsg::Adapt { min, max } => self.pool_command(&client, |pool, threads, now| {
                if min > max || max == 0 {
                    return Err(format!("--min {min} --max {max}: the pool needs min <= max and max >= 1"));
                }
                tracing::info!(min, max, "adaptive sizing");
                pool.set_adapt(now, Adapt { min, max }, threads);
                Ok(())
            }),
            PeerMsg::ListJobs => {
                let jobs = self.jobs.values().map(|j| j.info(&self.core)).collect();
                send(&client, ServerMsg::Jobs { jobs });
            }
            PeerMsg::ListTasks { job, state } => match self.jobs.get(&job) {
                None => refuse(&client, true, self.unknown_job(job)),
                Some(j) => match j.tasks(&cx!(self, now), state) {
                    Ok(tasks) => send(&client, ServerMsg::Tasks { tasks }),
                    Err(m) => refuse(&client, true, m),
                },
            },
            PeerMsg::GetReport { job } => match self.jobs.get(&job) {
                None => refuse(&client, true, self.unknown_job(job)),
                Some(j) => {
                    let (text, summary) = (j.describe(), j.summary_json(&self.core));
                    self.publish(now);
                    // Made off the actor: a page of many tasks takes a while.
                    let observed = self.observer.observed();
                    tokio::task::spawn_blocking(move || {
                        let html = observed.report(Some(job), Some(&text), Some(&summary));
                        send(&client, ServerMsg::Report { html });
                    });
                }
            },
            PeerMsg::Wait { jobs, as_completed } => {
                if let Some(&bad) = jobs.iter().find(|j| !self.jobs.contains_key(j)) {
                    return refuse(&client, true, self.unknown_job(bad));
                }
                for id in jobs {
                    if let Some(j) = self.jobs.get_mut(&id) {
                        j.watch(&self.core, client.clone(), as_completed);
                    }
                }
            }
            PeerMsg::CancelJob { job, tasks } => {
                if !self.jobs.contains_key(&job) {
                    return refuse(&client, true, self.unknown_job(job));
                }
                let mut result = Ok(());
                self.with_job(job, |j, cx| result = j.cancel(cx, tasks.as_deref()));
                match result {
                    Ok(()) => send(&client, ServerMsg::Ok),
                    Err(m) => refuse(&client, true, m),
                }
            }
            other => tracing::debug!(?other, "unexpected client message"),
        }
    }

    pub(super) fn unknown_job(&self, job: u64) -> String {
        let ids: Vec<String> = self.jobs.keys().rev().take(5).map(|k| k.to_string()).collect();
        if ids.is_empty() {
            format!("no job {job} on this server (it has none; `drover submit` starts one)")
        } else {
            format!("no job {job} on this server; `drover jobs` lists them (latest: {})", ids.join(", "))
        }
    }

    pub(super) fn submit_tasks(&mut self, request: TaskJobRequest, client: &Tx) {
        let now = self.now();
        let cap = Capacity {
            largest: self.workers.values().map(|w| w.info.threads).max(),
            may_grow: self.site.as_ref().is_some_and(|s| {
                s.pool.adapt().is_some() || s.pool.live_jobs().len() as u32 * s.runner.site().workers_per_job() > self.workers.len() as u32
            }),
        };
        if let Some(bad) = request.after.iter().find(|a| !self.jobs.contains_key(a)) {
            let message = format!("--after {bad}: {}", self.unknown_job(*bad));
            return send(
                client,
                ServerMsg::Failed {
                    input_error: true,
                    message,
                },
            );
        }
        let id = self.next_job;
        match TaskJob::create(&mut cx!(self, now), id, request, &cap) {
            Ok((job, note)) => {
                self.next_job += 1;
                let tasks = job.info(&self.core).tasks;
                self.jobs.insert(id, Box::new(job));
                self.observer.job_started(now, id);
                send(client, ServerMsg::Submitted { job: id, tasks, note });
            }
            Err((input_error, message)) => send(client, ServerMsg::Failed { input_error, message }),
        }
    }
}
