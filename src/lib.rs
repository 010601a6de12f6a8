//! bo-gateway: an authenticating TLS reverse proxy for TraderEvolution BackOffice REST services.
//!
//! A request's path: [`listener`] (accept, TLS) → [`server`] (request id, path, dispatch) →
//! [`auth`] endpoints, or [`routes`] → Bearer check ([`auth::tokens`]) → [`proxy`] → upstream.
//! [`runtime::Runtime`] is the validated config snapshot; [`gateway::Gateway`] the shared state.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod activity;
pub mod admin;
pub mod audit;
pub mod auth;
pub mod body;
pub mod config;
pub mod conn;
pub mod error;
mod fastpath;
pub mod framing;
pub mod gate;
pub mod gateway;
pub mod health;
mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod routes;
pub mod runtime;
pub mod server;
pub mod store;
pub mod tls;

pub use config::ConfigError;
/// The fast path's parsers, for the fuzz targets only.
#[doc(hidden)]
pub use fastpath::fuzzing as fastpath_fuzzing;
pub use gateway::Gateway;
pub use lifecycle::{ReloadError, Running, StartError, start};
pub use runtime::Runtime;
