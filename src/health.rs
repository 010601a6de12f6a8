//! /healthz (liveness) and /readyz (readiness: not draining, store answering; SPEC §4).

use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};
use serde::Serialize;

use crate::body::{GatewayBody, JSON_CONTENT_TYPE, full};
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::runtime::Runtime;

const STORE_PING_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Serialize)]
struct Readiness<'a> {
    status: &'static str,
    draining: bool,
    store: StoreState,
    routes: Vec<RouteHealth<'a>>,
}

#[derive(Serialize)]
struct StoreState {
    kind: &'static str,
    state: &'static str,
}

#[derive(Serialize)]
struct RouteHealth<'a> {
    name: &'a str,
    healthy: usize,
    total: usize,
}

fn json(status: StatusCode, body: String) -> Response<GatewayBody> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, JSON_CONTENT_TYPE.clone());
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

pub fn healthz() -> Response<GatewayBody> {
    json(StatusCode::OK, r#"{"status":"ok"}"#.into())
}

/// `/readyz` on the main listener (anyone can ask): only `ready` or why not, never route or
/// upstream names (SPEC §4). The details are on the admin listener ([`readyz_detailed`]).
pub async fn readyz(gw: &Gateway) -> Result<Response<GatewayBody>, GatewayError> {
    let (status, store_up) = state(gw).await;
    let body = match (status, store_up) {
        ("ready", _) => r#"{"status":"ready"}"#,
        ("draining", _) => r#"{"status":"draining"}"#,
        _ => r#"{"status":"unready","reason":"store unreachable"}"#,
    };
    Ok(json(code(status), body.into()))
}

/// `/readyz` on the admin listener: the store's state and each route's healthy upstreams.
pub async fn readyz_detailed(gw: &Gateway, rt: &Runtime) -> Result<Response<GatewayBody>, GatewayError> {
    let (status, store_up) = state(gw).await;
    let body = Readiness {
        status,
        draining: status == "draining",
        store: StoreState { kind: gw.store.kind(), state: if store_up { "up" } else { "down" } },
        routes: rt
            .routes
            .iter()
            .map(|r| RouteHealth {
                name: &r.name,
                healthy: r.pool.healthy_count(),
                total: r.pool.upstreams.len(),
            })
            .collect(),
    };
    let text = serde_json::to_string(&body).map_err(|e| GatewayError::Internal(e.to_string()))?;
    Ok(json(code(status), text))
}

/// `ready`, `draining` or `unready`, and whether the store answered.
async fn state(gw: &Gateway) -> (&'static str, bool) {
    let store_up = matches!(tokio::time::timeout(STORE_PING_TIMEOUT, gw.store.ping()).await, Ok(Ok(())));
    let status = if gw.is_draining() {
        "draining"
    } else if store_up {
        "ready"
    } else {
        "unready"
    };
    (status, store_up)
}

fn code(status: &str) -> StatusCode {
    if status == "ready" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }
}

/// `GET /metrics` (admin listener only): Prometheus text format 0.0.4.
pub fn metrics(gw: &Gateway) -> Result<Response<GatewayBody>, GatewayError> {
    let text = crate::metrics::render(&gw.metrics, gw.readings())
        .map_err(|e| GatewayError::Internal(format!("metrics: {e}")))?;
    let mut resp = Response::new(full(text));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    Ok(resp)
}
