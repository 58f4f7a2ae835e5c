//! The dashboard (issue 14): an HTTP server on the login node (axum), a read-only
//! dashboard key separate from the worker token, the page (built from `web/`,
//! embedded), a JSON snapshot, live updates by server-sent events, the task stream's
//! history, and Prometheus metrics.
//!
//! - [`snapshot`]: what the actor publishes about once a second (a `watch` channel:
//!   handlers never lock anything the scheduler uses).
//! - [`stream`]: the task bars of the whole run.
//! - [`metrics`]: `/metrics` in Prometheus' text format.
//!
//! Access: the URL carries the key once (`/?key=K`); the answer sets it in an
//! HttpOnly, SameSite=Strict cookie and redirects to `/`. Every other request needs
//! that cookie or `Authorization: Bearer K` (for Prometheus); anything else is 401.

pub mod history;
pub mod metrics;
pub mod report;
pub mod snapshot;
pub mod stream;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::watch;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::WatchStream;

use self::history::History;
use self::snapshot::{Page, Snapshot};
use self::stream::Stream;

const INDEX: &str = include_str!("../../web/dist/index.html");
const APP_JS: &str = include_str!("../../web/dist/app.js");
const APP_CSS: &str = include_str!("../../web/dist/app.css");
const COOKIE: &str = "drover_dashboard";

/// What the dashboard and the reports read: the snapshot the actor published last,
/// the task stream, the charts' points.
#[derive(Clone)]
pub struct Observed {
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    pub stream: Arc<Stream>,
    pub history: Arc<History>,
}

impl Observed {
    /// The report of the whole run, or of one job: its tasks and the time it ran
    /// (`drover report JOB`).
    pub fn report(&self, job: Option<u64>, workload: Option<&str>, summary: Option<&serde_json::Value>) -> String {
        let mut snap = (*self.snapshots.borrow().clone()).clone();
        if let Some(id) = job {
            snap.jobs.retain(|j| j.info.id == id);
        }
        let stream = self.stream.window(snap.now, 0.0, f64::MAX, job, 0.0);
        let mut history = self.history.run();
        if let Some(j) = snap.jobs.first().filter(|_| job.is_some()) {
            // The points of the time the job ran (its first task may have started
            // before the observer first saw it).
            let first = stream.bars.iter().map(|b| f64::from(b.t0)).fold(f64::MAX, f64::min);
            let since = j.started.unwrap_or(0.0).min(first);
            let until = j.ended.unwrap_or(snap.now);
            history.retain(|p| p.t >= since - 1.0 && p.t <= until + 1.0);
        }
        report::html(
            &Page {
                snap: &snap,
                history,
                history_delta: false,
            },
            &stream,
            workload,
            summary,
        )
    }
}

/// What the handlers read.
#[derive(Clone)]
struct Shared {
    key: Arc<String>,
    observed: Observed,
}

/// A new random dashboard key (hex, 128 bits).
pub fn new_key() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the OS random source");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

fn presented(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
        && let Some(k) = v.strip_prefix("Bearer ")
    {
        return Some(k.trim().to_string());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('=').map(str::to_string))
}

async fn auth(State(s): State<Shared>, Query(q): Query<HashMap<String, String>>, req: Request, next: Next) -> Response {
    // The URL's key, once: kept in a cookie, and the key taken out of the address bar.
    if let Some(k) = q.get("key") {
        if !same(k, &s.key) {
            return unauthorized();
        }
        let cookie = format!("{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict", s.key);
        let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, req.uri().path().to_string())]).into_response();
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
        return r;
    }
    match presented(req.headers()) {
        Some(k) if same(&k, &s.key) => next.run(req).await,
        _ => unauthorized(),
    }
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        "drover dashboard: not authorized; open the URL `drover dashboard --dir DIR` prints\n",
    )
        .into_response()
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

async fn snapshot(State(s): State<Shared>) -> Response {
    let snap = s.observed.snapshots.borrow().clone();
    axum::Json(Page {
        snap: &snap,
        history: s.observed.history.recent(None),
        history_delta: false,
    })
    .into_response()
}

/// A snapshot a second; the charts' points only once each (the page keeps them).
async fn events(State(s): State<Shared>) -> Sse<impl tokio_stream::Stream<Item = Result<Event, Infallible>>> {
    let history = s.observed.history.clone();
    let mut sent: Option<f64> = None;
    let stream = WatchStream::new(s.observed.snapshots.clone()).map(move |snap| {
        let points = history.recent(sent);
        let page = Page {
            snap: &snap,
            history_delta: sent.is_some(),
            history: points,
        };
        if let Some(p) = page.history.last() {
            sent = Some(p.t);
        }
        Ok(Event::default().data(serde_json::to_string(&page).unwrap_or_else(|_| "{}".into())))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
}

async fn stream_window(State(s): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let now = s.observed.snapshots.borrow().now;
    let num = |k: &str, d: f64| q.get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(d);
    let until = num("until", now);
    let since = num("since", (until - 120.0).max(0.0));
    let pixel = num("pixel", 0.0);
    let stream = &s.observed.stream;
    match q.get("from").and_then(|v| v.parse::<u64>().ok()) {
        Some(from) => axum::Json(stream.since(now, from, pixel)).into_response(),
        None => axum::Json(stream.window(now, since, until, None, pixel)).into_response(),
    }
}

async fn prometheus(State(s): State<Shared>) -> Response {
    let text = metrics::render(&s.observed.snapshots.borrow());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// The dashboard's router (tests drive it without a socket).
fn router(shared: Shared) -> Router {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX) }))
        .route("/index.html", get(|| async { asset("text/html; charset=utf-8", INDEX) }))
        .route("/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
        .route("/api/snapshot", get(snapshot))
        .route("/api/events", get(events))
        .route("/api/stream", get(stream_window))
        .route("/metrics", get(prometheus))
        .layer(middleware::from_fn_with_state(shared.clone(), auth))
        .with_state(shared)
}

/// A running dashboard.
pub struct Dashboard {
    pub addr: SocketAddr,
    pub key: String,
    task: tokio::task::JoinHandle<()>,
}

impl Dashboard {
    /// The URL that opens it (it carries the key).
    pub fn url(&self) -> String {
        format!("http://{}/?key={}", self.addr, self.key)
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Take the dashboard's address (before anything else of the server is made, so that a
/// taken address leaves nothing behind).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Serve the dashboard on `listener`.
pub fn serve(listener: tokio::net::TcpListener, observed: Observed) -> std::io::Result<Dashboard> {
    let addr = listener.local_addr()?;
    let key = new_key();
    let app = router(Shared {
        key: Arc::new(key.clone()),
        observed,
    });
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the dashboard stopped");
        }
    });
    Ok(Dashboard { addr, key, task })
}
