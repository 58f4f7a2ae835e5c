//! The login-node process: a QUIC endpoint whose connections feed one actor task that
//! owns the scheduler [`Core`](crate::core::Core), the running job's reductions and its
//! output writer.
//!
//! - [`conn`]: per-connection tasks (authentication, framing in and out).
//! - [`actor`]: the event loop driving the core; the only owner of scheduling state.
//! - [`writer`]: the output writer thread.
//! - [`client`]: the client side of submit/status/stop, used by the CLI.

pub mod actor;
pub mod client;
mod conn;
pub mod jobs;
pub mod journal;
mod lane;
pub mod observe;
pub mod writer;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::batch::runner::Runner;
use crate::config::site::Site;
use crate::core::CoreConfig;
use crate::proto::PROTOCOL_VERSION;
pub use crate::transport::listen::Listen;
use crate::transport::listen::{self, ListenError};
use crate::transport::{self, Access, Token, TransportError};

/// How to start a server.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Folder for access.toml (created 0700).
    pub dir: PathBuf,
    /// Where to listen: the announced addresses, or one chosen address.
    pub listen: Listen,
    /// Host names or addresses workers should dial, in order (the port is appended).
    pub advertise: Vec<String>,
    pub core: CoreConfig,
    /// Get workers through this site's batch system.
    pub site: Option<Site>,
    /// Workers to hold from the start (with a site).
    pub workers: u32,
    /// With a site: fail the running job after this many consecutive failed
    /// submissions while no worker is connected (for one-shot runs).
    pub give_up_after: Option<u32>,
    /// Serve the dashboard on this address (`None`: no dashboard).
    pub dashboard: Option<SocketAddr>,
    /// How long an array task may run before its worker is taken for stuck.
    pub task_timeout: actor::hung::TaskTimeout,
}

/// A running server.
pub struct ServerHandle {
    pub access_path: PathBuf,
    /// The QUIC addresses listened on (the TCP listeners are on the same addresses).
    pub addrs: Vec<SocketAddr>,
    /// The dashboard's URL (with its key), when it runs.
    pub dashboard: Option<String>,
    observed: crate::dashboard::Observed,
    events: mpsc::UnboundedSender<actor::Event>,
    task: JoinHandle<()>,
}

impl ServerHandle {
    /// Ask the server to stop (workers are told to exit) and wait for it.
    pub async fn stop(self) {
        let _ = self.events.send(actor::Event::Stop);
        let _ = self.task.await;
    }

    /// Wait until the server stops by itself (a client asked it to).
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    pub fn stop_signal(&self) -> mpsc::UnboundedSender<actor::Event> {
        self.events.clone()
    }

    /// Workers connected at the last snapshot (published once a second).
    pub fn workers_connected(&self) -> usize {
        self.observed.snapshots.borrow().workers.len()
    }

    /// The report of the whole run so far (a snapshot made now, the whole task stream).
    pub async fn report(&self, workload: Option<&str>, summary: Option<&serde_json::Value>) -> String {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = self.events.send(actor::Event::Publish(tx));
        let _ = rx.await;
        self.observed.report(None, workload, summary)
    }
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error(transparent)]
    Batch(#[from] crate::batch::BatchError),
    #[error("cannot locate the drover executable for workers: {0}; set DROVER_WORKER_EXE")]
    Exe(std::io::Error),
    #[error("--dashboard {addr}: cannot listen there ({source}); choose another address, or --no-dashboard")]
    Dashboard { addr: SocketAddr, source: std::io::Error },
}

/// Path of the access file in a server folder.
pub fn access_path(dir: &Path) -> PathBuf {
    dir.join("access.toml")
}

/// Start a server: endpoint, certificate, token, access file, actor.
pub async fn start(mut opts: ServerOptions) -> Result<ServerHandle, StartError> {
    let listener = match opts.dashboard {
        Some(addr) => Some(
            crate::dashboard::bind(addr)
                .await
                .map_err(|source| StartError::Dashboard { addr, source })?,
        ),
        None => None,
    };
    // Before anything is written: an address this host does not have is refused.
    let (ips, port) = match opts.listen {
        Listen::Announced { port } => (listen::listen_ips(&opts.advertise)?, port),
        Listen::On(addr) => (vec![addr.ip()], addr.port()),
    };
    let (udp, tcp) = listen::sockets(&ips, port)?;
    // Job scripts and workers run elsewhere: every path handed to them is absolute.
    opts.dir = std::path::absolute(&opts.dir).map_err(|source| TransportError::Dir {
        path: opts.dir.clone(),
        source,
    })?;
    transport::make_private_dir(&opts.dir)?;
    let identity = transport::server_identity(&opts.advertise)?;
    let (mut endpoints, mut addrs, mut listeners) = (Vec::new(), Vec::new(), Vec::new());
    for socket in udp {
        let addr = socket.local_addr().map_err(ListenError::Local)?;
        let e = transport::endpoint_on(Some(identity.config.clone()), socket).map_err(|source| ListenError::Udp { addr, source })?;
        endpoints.push(e);
        addrs.push(addr);
    }
    let mut tcp_port = 0;
    for l in tcp {
        tcp_port = l.local_addr().map_err(ListenError::Local)?.port();
        listeners.push(tokio::net::TcpListener::from_std(l).map_err(ListenError::Local)?);
    }
    let quic_port = addrs[0].port();
    let token = Token::generate();
    let announce = |port: u16| -> Vec<String> {
        opts.advertise
            .iter()
            .map(|h| {
                if h.contains(':') && !h.starts_with('[') {
                    format!("[{h}]:{port}")
                } else {
                    format!("{h}:{port}")
                }
            })
            .collect()
    };
    let addresses = announce(quic_port);
    let tcp_addresses = announce(tcp_port);
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let observer = observe::Observer::new(host);
    let observed = observer.observed();
    let dashboard = match (listener, opts.dashboard) {
        (Some(l), Some(addr)) => {
            Some(crate::dashboard::serve(l, observed.clone()).map_err(|source| StartError::Dashboard { addr, source })?)
        }
        _ => None,
    };
    let dashboard_url = dashboard.as_ref().map(|d| d.url());
    let unix = transport::unix_listener(&opts.dir);
    let access = Access {
        version: PROTOCOL_VERSION,
        addresses,
        tcp_addresses,
        unix: unix.as_ref().map(|(_, p)| p.clone()),
        unix_host: unix.as_ref().and_then(|_| transport::host_id()),
        cert: identity.cert_pem,
        token: token.clone(),
        dashboard: dashboard_url.clone(),
        transport: transport::Transport::Auto,
    };
    let access_path = access_path(&opts.dir);
    access.write(&access_path)?;
    let (events, rx) = mpsc::unbounded_channel();
    let token = Arc::new(token);
    let peers = conn::Peers::default();
    let inbound = conn::Inbound::new(actor::DEFAULT_INBOUND);
    let rtt = conn::Rtt::default();
    let accepting = conn::Accepting {
        token,
        events: events.clone(),
        peers: peers.clone(),
        inbound: inbound.clone(),
        pending: Arc::new(tokio::sync::Semaphore::new(conn::MAX_PENDING)),
        rtt: rtt.clone(),
        lanes: lane::Lanes::default(),
        quic: [false, true].map(|bbr| {
            let mut c = identity.config.clone();
            c.transport_config(transport::server_transport(bbr));
            Arc::new(c)
        }),
    };
    let mut accepts: Vec<JoinHandle<()>> = endpoints
        .iter()
        .map(|e| tokio::spawn(conn::accept_loop(e.clone(), accepting.clone())))
        .collect();
    for l in listeners {
        accepts.push(tokio::spawn(conn::accept_tcp_loop(l, identity.tls.clone(), accepting.clone())));
    }
    let socket_path = unix.as_ref().map(|(_, p)| PathBuf::from(p));
    if let Some((l, p)) = unix {
        accepts.push(tokio::spawn(conn::accept_unix_loop(l, p, accepting.clone())));
    }
    let site = match opts.site {
        Some(site) => {
            let log_dir = site.log_dir.clone().unwrap_or_else(|| opts.dir.join("logs"));
            let log_dir = std::path::absolute(&log_dir).map_err(|source| TransportError::Dir {
                path: log_dir.clone(),
                source,
            })?;
            let exe = match std::env::var_os("DROVER_WORKER_EXE") {
                Some(p) => PathBuf::from(p),
                None => std::env::current_exe().map_err(StartError::Exe)?,
            };
            let runner = Runner::new(site, log_dir, exe, access_path.clone())?;
            let mut pool = actor::SitePool::new(runner);
            pool.give_up_after = opts.give_up_after;
            Some(pool)
        }
        None => None,
    };
    let actor = actor::Actor::new(opts.core, events.clone(), site, opts.workers, opts.dir.clone(), observer)
        .with_inbound(inbound)
        .with_rtt(rtt)
        .with_task_timeout(opts.task_timeout);
    let path = access_path.clone();
    let task = tokio::spawn(async move {
        actor.run(rx).await;
        drop(dashboard);
        for a in &accepts {
            a.abort();
        }
        // Peers still connected get a close; a short wait sends it without sitting out
        // the draining period. Connections already closed have nothing left to send.
        let open = peers.any_quic_open();
        for e in &endpoints {
            e.close(quinn::VarInt::from_u32(0), crate::proto::STOPPED_REASON);
        }
        peers.close_streams(crate::proto::STOPPED_REASON);
        if open {
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(20);
            for e in &endpoints {
                let _ = tokio::time::timeout_at(deadline, e.wait_idle()).await;
            }
        }
        let _ = std::fs::remove_file(&path);
        if let Some(p) = &socket_path {
            let _ = std::fs::remove_file(p);
        }
    });
    // `drover server start` says so on stdout; the log has it for debugging only.
    tracing::debug!(?addrs, access = %access_path.display(), "server listening");
    Ok(ServerHandle {
        access_path,
        addrs,
        dashboard: dashboard_url,
        observed,
        events,
        task,
    })
}
