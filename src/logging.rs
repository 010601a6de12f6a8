//! Logs on stderr, written by two writer threads so that no request waits on the log sink.
//!
//! - Access lines (target `access`, one per request) go through a bounded, lossy queue: when a
//!   stalled sink (a full pipe nobody reads) fills it, further lines are dropped and counted
//!   ([`access_lines_dropped`], `bo_gateway_log_lines_dropped_total`), and proxying goes on.
//!   Once the queue has drained again, one warning reports how many were dropped.
//! - Everything else (warnings, errors, login and logout events, start and reload lines) goes
//!   through a lossless queue: those lines are rare and must not be lost, so a long stall fills
//!   that queue and then holds back the thread that logs, rather than dropping a line.
//!
//! Each line is written whole by one `write`, so lines of the two queues never mix, though an
//! access line may come out shortly before or after a warning logged earlier or later.

use std::io::Write;
use std::sync::{Arc, OnceLock};

use tracing::Metadata;
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::MakeWriterExt;

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

/// The writer threads. Dropping it writes out what is still queued (waiting up to about a
/// second per queue), so keep it until the process exits.
#[must_use = "dropping it stops the log writer threads"]
pub struct Logging {
    // Access first: its final drop report still goes through the event queue.
    _access: WorkerGuard,
    _events: WorkerGuard,
}

/// The access queue's drop counter, once [`init`] has run.
static ACCESS_DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Access lines dropped so far because the queue was full (0 before [`init`]).
pub fn access_lines_dropped() -> u64 {
    ACCESS_DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
}

/// Installs the global subscriber: `format`, the `BO_GATEWAY_LOG` filter, and the two queues
/// on stderr (`access_queue_lines` for the access lines).
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
    let (access, access_guard, dropped) =
        access_queue(std::io::stderr(), access_queue_lines as usize, report_dropped);
    let _ = ACCESS_DROPPED.set(dropped);
    let writer = access.with_filter(is_access).or_else(events);
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).try_init(),
        LogFormat::Json => builder.json().try_init(),
    }?;
    Ok(Logging { _access: access_guard, _events: events_guard })
}

fn is_access(meta: &Metadata<'_>) -> bool {
    meta.target() == ACCESS_TARGET
}

/// Logged on the access writer thread, so it takes the lossless queue like every warning.
fn report_dropped(dropped: usize, total: usize) {
    tracing::warn!(dropped, total, "the log sink was stalled: access log lines dropped");
}

/// A lossy queue of `lines` in front of `sink`, its guard and drop counter. `report` gets the
/// lines dropped since its last call (and the total) each time the queue has drained after
/// dropping some: the sink has caught up again.
fn access_queue<W: Write + Send + 'static>(
    sink: W,
    lines: usize,
    report: impl FnMut(usize, usize) + Send + 'static,
) -> (NonBlocking, WorkerGuard, ErrorCounter) {
    let counter = Arc::new(OnceLock::new());
    let reporter = DropReporter { sink, counter: counter.clone(), reported: 0, report };
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(lines.max(1))
        .thread_name("log-access")
        .finish(reporter);
    let dropped = writer.error_counter();
    let _ = counter.set(dropped.clone());
    (writer, guard, dropped)
}

/// The access writer thread's sink. tracing-appender's worker flushes its sink each time it has
/// emptied the queue, so a flush after drops is the moment the sink has recovered.
struct DropReporter<W, R> {
    sink: W,
    counter: Arc<OnceLock<ErrorCounter>>,
    reported: usize,
    report: R,
}

impl<W: Write, R: FnMut(usize, usize)> Write for DropReporter<W, R> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.sink.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.sink.write_all(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.sink.flush()?;
        let total = self.counter.get().map_or(0, ErrorCounter::dropped_lines);
        if total > self.reported {
            (self.report)(total - self.reported, total);
            self.reported = total;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{Receiver, Sender, channel};
    use std::time::{Duration, Instant};

    use super::*;

    /// A sink whose writes block until the gate opens, like a full pipe nobody reads.
    struct GatedSink {
        gate: Option<Receiver<()>>,
        out: Sender<Vec<u8>>,
    }

    impl Write for GatedSink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Some(gate) = self.gate.take() {
                let _ = gate.recv();
            }
            let _ = self.out.send(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Collects from `rx` until `done` holds for everything collected (at most 10 s).
    fn collect_until<T>(rx: &Receiver<T>, seen: &mut Vec<T>, done: impl Fn(&[T]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(seen) {
            assert!(Instant::now() < deadline, "timed out");
            seen.extend(rx.recv_timeout(Duration::from_millis(10)));
        }
    }

    #[test]
    fn a_stalled_sink_drops_lines_without_blocking_and_reports_them_once_it_recovers() {
        let (open, gate) = channel();
        let (out_tx, out) = channel();
        let (report_tx, reports) = channel();
        let sink = GatedSink { gate: Some(gate), out: out_tx };
        let (mut writer, _guard, dropped) =
            access_queue(sink, 4, move |n, total| report_tx.send((n, total)).unwrap());
        // The writer thread holds at most one line in its blocked write, the queue four.
        for i in 0..50 {
            writer.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        let lost = dropped.dropped_lines();
        assert!((45..=46).contains(&lost), "{lost} dropped");
        assert!(reports.try_recv().is_err(), "reported before the sink recovered");

        open.send(()).unwrap();
        let mut seen = Vec::new();
        collect_until(&reports, &mut seen, |r| !r.is_empty());
        assert_eq!(seen, vec![(lost, lost)]);
        let mut lines = Vec::new();
        collect_until(&out, &mut lines, |l| l.len() == 50 - lost);

        // Caught up, no drops: nothing more to report.
        for i in 0..3 {
            writer.write_all(format!("more {i}\n").as_bytes()).unwrap();
        }
        collect_until(&out, &mut lines, |l| l.len() == 53 - lost);
        assert_eq!(dropped.dropped_lines(), lost);
        assert!(reports.try_recv().is_err(), "a report without drops");
    }
}
