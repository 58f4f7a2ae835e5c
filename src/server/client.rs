//! The client side: submit a workload, ask for status, stop a server.

use std::time::Duration;

use crate::config::workload::Workload;
use crate::proto::jobs::{JobInfo, TaskJobRequest, TaskState, TaskView};
use crate::proto::{self, FrameError, Hello, PROTOCOL_VERSION, PeerMsg, Role, ServerMsg, Status, Summary};
use crate::transport::{self, Access, ConnectError};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("{0}")]
    Rejected(String),
    #[error("{message}")]
    Failed { input_error: bool, message: String },
    #[error("lost the connection to the server: {0}")]
    Lost(String),
}

impl From<FrameError> for ClientError {
    fn from(e: FrameError) -> Self {
        ClientError::Lost(e.to_string())
    }
}

impl From<transport::LinkError> for ClientError {
    fn from(e: transport::LinkError) -> Self {
        ClientError::Lost(e.to_string())
    }
}

/// An authenticated client session.
pub struct Session {
    dialed: transport::Dialed,
    send: transport::SendHalf,
    recv: transport::RecvHalf,
    /// Wait briefly after closing so the close reaches the server before the process
    /// exits (not needed when the server runs in this process).
    linger: bool,
}

impl Session {
    pub async fn open(access: &Access) -> Result<Self, ClientError> {
        let dialed = transport::connect(access, Duration::from_secs(10), Duration::from_secs(60)).await?;
        let (mut send, recv) = dialed.conn.open_bi().await?;
        let hello = Hello {
            version: PROTOCOL_VERSION,
            role: Role::Client,
            token: access.token.expose().to_string(),
            worker: None,
        };
        proto::write_frame(&mut send, &PeerMsg::Hello(hello), &[]).await?;
        Ok(Self {
            dialed,
            send,
            recv,
            linger: true,
        })
    }

    /// A session with a server running in this process, which outlives the session's
    /// close: closing need not wait for the close to be sent.
    pub fn in_process(mut self) -> Self {
        self.linger = false;
        self
    }

    async fn next(&mut self) -> Result<ServerMsg, ClientError> {
        let (msg, _) = proto::read_frame::<_, ServerMsg>(&mut self.recv).await?;
        if let ServerMsg::Rejected { reason } = msg {
            return Err(ClientError::Rejected(reason));
        }
        Ok(msg)
    }

    /// Run a workload; `progress(done, total)` is called as tasks finish.
    pub async fn run(mut self, workload: Workload, mut progress: impl FnMut(u32, u32)) -> Result<Summary, ClientError> {
        proto::write_frame(&mut self.send, &PeerMsg::Submit { workload }, &[]).await?;
        loop {
            match self.next().await? {
                ServerMsg::Accepted { tasks, .. } => progress(0, tasks),
                ServerMsg::Progress { done, total } => progress(done, total),
                ServerMsg::Finished { summary } => {
                    self.close().await;
                    return Ok(summary);
                }
                ServerMsg::Failed { input_error, message } => {
                    self.close().await;
                    return Err(ClientError::Failed { input_error, message });
                }
                _ => {}
            }
        }
    }

    pub async fn status(mut self) -> Result<Status, ClientError> {
        proto::write_frame(&mut self.send, &PeerMsg::GetStatus, &[]).await?;
        loop {
            if let ServerMsg::Status { status } = self.next().await? {
                self.close().await;
                return Ok(status);
            }
        }
    }

    /// Ask a server with a site to hold `workers` workers.
    pub async fn scale(self, workers: u32) -> Result<(), ClientError> {
        self.pool_request(PeerMsg::Scale { workers }).await
    }

    /// Ask a server with a site to size its pool from the backlog.
    pub async fn adapt(self, min: u32, max: u32) -> Result<(), ClientError> {
        self.pool_request(PeerMsg::Adapt { min, max }).await
    }

    async fn pool_request(mut self, msg: PeerMsg) -> Result<(), ClientError> {
        proto::write_frame(&mut self.send, &msg, &[]).await?;
        loop {
            match self.next().await? {
                ServerMsg::Ok => {
                    self.close().await;
                    return Ok(());
                }
                ServerMsg::Failed { input_error, message } => {
                    self.close().await;
                    return Err(ClientError::Failed { input_error, message });
                }
                _ => {}
            }
        }
    }

    /// Ask the server to stop; returns when the server closed the connection.
    pub async fn stop(mut self) -> Result<(), ClientError> {
        proto::write_frame(&mut self.send, &PeerMsg::Stop, &[]).await?;
        self.send.finish().await;
        let _ = tokio::time::timeout(Duration::from_secs(15), self.recv.until_closed(&self.dialed.conn)).await;
        Ok(())
    }

    /// Send `msg` and return the server's answer (`Failed` as an error).
    async fn ask(&mut self, msg: PeerMsg) -> Result<ServerMsg, ClientError> {
        proto::write_frame(&mut self.send, &msg, &[]).await?;
        match self.next().await? {
            ServerMsg::Failed { input_error, message } => Err(ClientError::Failed { input_error, message }),
            other => Ok(other),
        }
    }

    fn unexpected(what: &str, got: ServerMsg) -> ClientError {
        ClientError::Lost(format!("unexpected answer to {what}: {got:?}"))
    }

    /// Submit a task job: its id, its number of tasks and why it may wait.
    pub async fn submit_tasks(&mut self, request: TaskJobRequest) -> Result<(u64, u64, Option<String>), ClientError> {
        match self.ask(PeerMsg::SubmitTasks { request }).await? {
            ServerMsg::Submitted { job, tasks, note } => Ok((job, tasks, note)),
            other => Err(Self::unexpected("submit", other)),
        }
    }

    pub async fn jobs(&mut self) -> Result<Vec<JobInfo>, ClientError> {
        match self.ask(PeerMsg::ListJobs).await? {
            ServerMsg::Jobs { jobs } => Ok(jobs),
            other => Err(Self::unexpected("jobs", other)),
        }
    }

    pub async fn tasks(&mut self, job: u64, state: Option<TaskState>) -> Result<Vec<TaskView>, ClientError> {
        match self.ask(PeerMsg::ListTasks { job, state }).await? {
            ServerMsg::Tasks { tasks } => Ok(tasks),
            other => Err(Self::unexpected("tasks", other)),
        }
    }

    /// A job's report (HTML).
    pub async fn report(&mut self, job: u64) -> Result<String, ClientError> {
        match self.ask(PeerMsg::GetReport { job }).await? {
            ServerMsg::Report { html } => Ok(html),
            other => Err(Self::unexpected("report", other)),
        }
    }

    /// Cancel a job, or only these tasks (user ids) of it.
    pub async fn cancel(&mut self, job: u64, tasks: Option<Vec<u64>>) -> Result<(), ClientError> {
        match self.ask(PeerMsg::CancelJob { job, tasks }).await? {
            ServerMsg::Ok => Ok(()),
            other => Err(Self::unexpected("cancel", other)),
        }
    }

    /// Wait until every job in `jobs` ended; with `as_completed`, `task` is called as
    /// each of their tasks ends. Returns the jobs as they ended.
    pub async fn wait(
        &mut self,
        jobs: &[u64],
        as_completed: bool,
        mut task: impl FnMut(u64, TaskView),
    ) -> Result<Vec<JobInfo>, ClientError> {
        proto::write_frame(
            &mut self.send,
            &PeerMsg::Wait {
                jobs: jobs.to_vec(),
                as_completed,
            },
            &[],
        )
        .await?;
        let mut ended: Vec<JobInfo> = Vec::new();
        while ended.len() < jobs.len() {
            match self.next().await? {
                ServerMsg::TaskEnded { job, task: t } => task(job, t),
                ServerMsg::JobEnded { job } if !ended.iter().any(|j| j.id == job.id) => ended.push(job),
                ServerMsg::Failed { input_error, message } => return Err(ClientError::Failed { input_error, message }),
                _ => {}
            }
        }
        Ok(ended)
    }

    /// End the session.
    pub async fn done(self) {
        self.close().await;
    }

    async fn close(mut self) {
        self.send.finish().await;
        self.dialed.conn.close(0, b"done");
        // The close goes out at once; a short wait lets the endpoint send it without
        // sitting out the whole draining period (3 x PTO).
        if self.linger {
            self.dialed.linger(Duration::from_millis(10)).await;
        }
    }
}
