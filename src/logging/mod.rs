//! Logs on stderr, written by two writer threads so that no request waits on the log sink.
//!
//! - Access lines (target `access`, one per request) are formatted by hand and written in
//!   batches by their own thread ([`access`]): a bounded, lossy queue; when a stalled sink (a
//!   full pipe nobody reads) fills it, further lines are dropped and counted
//!   ([`access_lines_dropped`], `bo_gateway_log_lines_dropped_total`), and proxying goes on.
//!   Once the queue has drained again, one warning reports how many were dropped.
//! - Everything else (warnings, errors, login and logout events, start and reload lines) goes
//!   through a lossless queue: those lines are rare and must not be lost, so a long stall fills
//!   that queue and then holds back the thread that logs, rather than dropping a line.
//!
//! Lines never mix: each access batch is whole lines, and each event one `write`; an access
//! line may come out shortly before or after a warning logged earlier or later.

pub mod access;

use std::sync::OnceLock;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Access lines the queue holds while the sink is slow (about 300 bytes each).
pub const DEFAULT_ACCESS_QUEUE_LINES: u32 = 65_536;

/// Lines of the lossless queue before a logging thread waits for the sink.
const EVENT_QUEUE_LINES: usize = 131_072;

/// The target of the access log lines ([`crate::gate::record::log_access`]).
pub const ACCESS_TARGET: &str = "access";

/// The variable holding the filter directives (`info` when unset or invalid).
pub const FILTER_ENV: &str = "BO_GATEWAY_LOG";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The writer threads. Dropping it writes out what is still queued, so keep it until the
/// process exits.
#[must_use = "dropping it stops the log writer threads"]
pub struct Logging {
    // Access first: its final drop report still goes through the event queue.
    _access: access::AccessGuard,
    _events: WorkerGuard,
}

/// The access line writer, once [`init`] has run.
static ACCESS: OnceLock<access::AccessWriter> = OnceLock::new();

/// The access line writer, when [`init`] installed one (otherwise access lines are ordinary
/// `tracing` events, for whatever subscriber the embedding program set).
pub fn access_writer() -> Option<&'static access::AccessWriter> {
    ACCESS.get()
}

/// Access lines dropped so far because the queue was full (0 before [`init`]).
pub fn access_lines_dropped() -> u64 {
    ACCESS.get().map_or(0, access::AccessWriter::dropped)
}

/// Installs the global subscriber: `format`, the `BO_GATEWAY_LOG` filter, the lossless event
/// queue and the access line writer on stderr (`access_queue_lines` for the access lines).
pub fn init(
    format: LogFormat,
    access_queue_lines: u32,
) -> Result<Logging, Box<dyn std::error::Error + Send + Sync>> {
    let filter = EnvFilter::try_from_env(FILTER_ENV).unwrap_or_else(|_| EnvFilter::new("info"));
    let (events, events_guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(EVENT_QUEUE_LINES)
        .thread_name("log-events")
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(events);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).try_init(),
        LogFormat::Json => builder.json().try_init(),
    }?;
    let (writer, access_guard) =
        access::start(std::io::stderr(), access_queue_lines as usize, format, report_dropped)?;
    let _ = ACCESS.set(writer);
    Ok(Logging { _access: access_guard, _events: events_guard })
}

/// Logged on the access writer thread, so it takes the lossless queue like every warning.
fn report_dropped(dropped: u64, total: u64) {
    tracing::warn!(dropped, total, "the log sink was stalled: access log lines dropped");
}
