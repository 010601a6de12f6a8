//! How an exchange with an upstream fails, whose fault that is, and what may be tried again:
//! one type and one policy for both transports, and one mapping to the SPEC §3 error, the log
//! and passive health.

use std::time::Instant;

use http::Method;

use super::Record;
use crate::proxy::Upstream;
pub use crate::proxy::{Blame, Failure};
use crate::routes::Route;

/// A request goes once more, to another upstream, when no connection could be opened to the
/// first: nothing reached it, so any method may, its body whole (neither transport has read
/// any of it yet).
pub fn may_retry_elsewhere(f: &Failure, upstreams: usize) -> bool {
    matches!(f, Failure::Connect(_)) && upstreams > 1
}

/// The upstream a failed request goes to once more, if the rule above allows it: noted in the
/// request's record and the log, the same for both transports.
pub fn elsewhere<'r>(
    f: &Failure,
    route: &'r Route,
    first: &Upstream,
    record: &mut Record,
) -> Option<&'r Upstream> {
    if !may_retry_elsewhere(f, route.pool.upstreams.len()) {
        return None;
    }
    let second = route.pool.pick_other(first);
    tracing::info!(route = %route.name, from = %first.url, to = %second.url, "retrying after connect failure");
    record.upstream = Some(second.url.clone());
    Some(second)
}

/// A request sent on a reused connection that ended before a whole answer (the upstream closed
/// it as it was taken) goes once more on a fresh one when sending it twice is harmless: an
/// idempotent method without a body (RFC 9110 §9.2.2).
pub fn may_resend(f: &Failure, reused: bool, method: &Method, has_body: bool) -> bool {
    matches!(f, Failure::Closed(_)) && reused && repeatable(method, has_body)
}

fn repeatable(method: &Method, has_body: bool) -> bool {
    !has_body && is_idempotent(method)
}

pub fn is_idempotent(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

/// Notes an attempt's outcome: the route's upstream latency, the upstream's passive health
/// (a refused connection counts against it; a client's failure never does), and the log.
pub fn observe(route: &Route, upstream: &Upstream, started: Instant, outcome: Result<(), &Failure>) {
    if let Some(stats) = route.stats.get() {
        stats.upstream_latency.observe(started.elapsed());
    }
    let (name, url) = (&*route.name, &*upstream.url);
    match outcome {
        Ok(()) => upstream.record_connect(true),
        Err(Failure::Connect(e)) => {
            tracing::warn!(route = name, upstream = url, error = %e, "upstream connect failed");
            upstream.record_connect(false);
        }
        Err(Failure::Timeout) => tracing::warn!(route = name, upstream = url, "upstream timed out"),
        Err(Failure::Busy) => {
            tracing::warn!(route = name, upstream = url, "upstream connection limit reached")
        }
        Err(Failure::Closed(e) | Failure::Upstream(e)) => {
            tracing::warn!(route = name, upstream = url, error = %e, "upstream request failed");
        }
        Err(f @ (Failure::Client(_) | Failure::TooLarge)) => {
            tracing::debug!(route = name, upstream = url, failure = ?f, "request body failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_cannot_have_arrived_or_is_idempotent_goes_twice() {
        let connect = Failure::Connect("x".into());
        let closed = Failure::Closed("x".into());
        assert!(may_retry_elsewhere(&connect, 2));
        assert!(!may_retry_elsewhere(&connect, 1));
        assert!(!may_retry_elsewhere(&closed, 2), "something was sent");
        assert!(may_resend(&closed, true, &Method::GET, false));
        assert!(!may_resend(&closed, false, &Method::GET, false), "a fresh connection");
        assert!(!may_resend(&closed, true, &Method::GET, true));
        assert!(!may_resend(&Failure::Upstream("garbage".into()), true, &Method::GET, false));
        assert_eq!(Failure::Client("left".into()).blame(), Blame::Client);
        assert_eq!(Failure::Client("left".into()).into_error().status(), 400);
    }
}
