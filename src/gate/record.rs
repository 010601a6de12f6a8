//! One request's record: its access-log line and its metrics, written the same way by both
//! transports.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderValue, Method};

use crate::auth::Identity;
use crate::gateway::Gateway;
use crate::metrics::RouteStats;
use crate::routes::Route;

/// What one request did, filled in as it goes.
pub struct Record {
    pub started: Instant,
    pub route: Option<Arc<str>>,
    pub stats: Option<Arc<RouteStats>>,
    pub upstream: Option<Arc<str>>,
    pub identity: Option<Arc<Identity>>,
    /// The normalised path, when normalising changed it.
    pub normalised: Option<String>,
    /// The gateway answered before the client's body had all arrived: the connection closes
    /// after the answer, which says so (`Connection: close`), on both transports.
    pub body_unread: bool,
    /// The request's route says `cors = false` (`crate::gate::cors`).
    pub cors_off: bool,
}

impl Record {
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            route: None,
            stats: None,
            upstream: None,
            identity: None,
            normalised: None,
            body_unread: false,
            cors_off: false,
        }
    }

    pub fn set_route(&mut self, route: &Route) {
        self.route = Some(route.name.clone());
        self.stats = route.stats.get().cloned();
        self.cors_off = !route.cors;
    }

    /// Records the finished request: the route's metrics (or the gateway's, without a route;
    /// none for the admin listener) and the access-log line.
    #[allow(clippy::too_many_arguments)] // the request's facts, each from its own owner
    pub fn finish(
        &self,
        gw: &Gateway,
        main_listener: bool,
        request_id: &HeaderValue,
        client: SocketAddr,
        method: &Method,
        raw_path: &str,
        status: u16,
        bytes: Option<u64>,
    ) {
        let took = self.started.elapsed();
        if main_listener {
            self.stats.as_deref().unwrap_or(&gw.metrics.gateway).record(method, status, took);
        }
        log_access(AccessLine {
            request_id,
            client,
            method,
            path: self.normalised.as_deref().unwrap_or(raw_path),
            route: self.route.as_deref(),
            status,
            bytes,
            took,
            upstream: self.upstream.as_deref(),
            login: self.identity.as_deref().map(|i| i.login.as_str()),
        });
    }
}

/// One request's access-log line (never a credential: no token, password or cookie).
pub struct AccessLine<'a> {
    pub request_id: &'a HeaderValue,
    pub client: SocketAddr,
    pub method: &'a Method,
    pub path: &'a str,
    pub route: Option<&'a str>,
    pub status: u16,
    pub bytes: Option<u64>,
    pub took: Duration,
    pub upstream: Option<&'a str>,
    pub login: Option<&'a str>,
}

pub fn log_access(l: AccessLine<'_>) {
    if !tracing::enabled!(target: "access", tracing::Level::INFO) {
        return;
    }
    // The binary's own writer (`crate::logging::access`): formatted by hand, written in batches.
    if let Some(writer) = crate::logging::access_writer() {
        writer.write(&l);
        return;
    }
    tracing::info!(
        target: "access",
        request_id = l.request_id.to_str().unwrap_or("-"),
        client = %l.client,
        method = %l.method,
        path = l.path,
        route = l.route.unwrap_or("-"),
        status = l.status,
        bytes = l.bytes,
        micros = l.took.as_micros() as u64,
        upstream = l.upstream,
        login = l.login,
    );
}

/// Logs a failure the gateway answered: server errors as warnings, refusals at debug.
pub fn log_failure(e: &crate::error::GatewayError, request_id: &HeaderValue) {
    let id = request_id.to_str().unwrap_or("-");
    if e.status().is_server_error() {
        tracing::warn!(request_id = id, error = %e, "request failed");
    } else {
        tracing::debug!(request_id = id, error = %e, "request refused");
    }
}
