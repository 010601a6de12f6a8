//! Differential test of the two HTTP/1.1 transports (issue 13): the same raw requests, over
//! raw TLS, to one gateway with `fast_path = false` (hyper's path) and one with `fast_path =
//! true`, both in front of ONE scripted upstream that records what it receives and answers with
//! raw bytes chosen by the path. Per case it compares what the client received (status line,
//! normalised headers, body by its framing, trailers, then a second request on the same
//! connection: answered, or closed) and what the upstream received (heads with the per-instance
//! values masked, bodies, how many times). Every differing case is collected and reported at
//! once (also written to the file `DIFF_REPORT` names, if set); a seeded generator adds random
//! combinations (seed: `DIFF_SEED`, count: `DIFF_CASES`). `DIFF_SHOW_ALL=1` reports agreeing
//! cases too.
//!
//! Cases run in lanes: each lane has its own pair of routes (so its own upstream connection
//! pool), and runs its cases one after the other on both gateways at once, so the state of the
//! pools (a reused connection or not) is the same on both sides.

mod support;

#[path = "differential/answers.rs"]
mod answers;
#[path = "differential/cases.rs"]
mod cases;
#[path = "differential/generated.rs"]
mod generated;
#[path = "differential/wire.rs"]
mod wire;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use support::scripted::{Received, Scripted, normalised_headers, show};
use support::{Gateway, Setup, TRADER, refused_addr, tls_connector};
use wire::Wire;

/// Lanes run at the same time; each has a public (`/lN`) and a Bearer (`/aN`) route.
const LANES: usize = 8;
const DEFAULT_SEED: u64 = 0x5eed_0013;
const DEFAULT_GENERATED: usize = 300;
/// Upstream request headers whose values differ per instance or request.
const UPSTREAM_MASKED: &[&str] = &["x-request-id", "x-auth-session"];

pub enum Step {
    /// Write these bytes (after filling in `{P}`, `{A}`, `{TOKEN}`, `{TAG}`).
    Send(Vec<u8>),
    Pause(u64),
    /// End the client's sending side.
    Shutdown,
    /// Read a response (interim ones included).
    Read,
    /// Read the response to a HEAD request.
    ReadHead,
    /// Read one response head only, waiting briefly (an interim one may or may not come).
    ReadInterim,
}

pub struct Case {
    pub name: String,
    pub steps: Vec<Step>,
    /// Afterwards, send a plain GET on the same connection and report its fate.
    pub followup: bool,
}

/// One gateway under test.
struct Side {
    gw: Gateway,
    token: String,
    connector: tokio_rustls::TlsConnector,
}

fn routes(label: &str, upstream: &str) -> String {
    let mut out = String::new();
    let table = |name: &str, upstreams: &str, auth: &str| {
        format!(
            "[[routes]]\nname = \"{name}\"\nprefix = \"/{name}\"\nupstreams = [{upstreams}]\n{auth}\
             timeout = \"2s\"\nupstream_headers = {{ x-diff-gw = \"{label}\" }}\n\n"
        )
    };
    for lane in 0..LANES {
        out += &table(&format!("l{lane}"), &format!("\"{upstream}\""), "auth = \"public\"\n");
        out += &table(&format!("a{lane}"), &format!("\"{upstream}\""), "");
    }
    for name in ["rput", "rget", "rpost", "rdel"] {
        let both = format!("\"http://{}\", \"{upstream}\"", refused_addr());
        out += &table(name, &both, "auth = \"public\"\n");
    }
    out
}

async fn side(label: &'static str, fast_path: bool, upstream: &str) -> Side {
    let setup = Setup {
        server: format!("fast_path = {fast_path}"),
        routes: routes(label, upstream),
        cors: format!("allowed_origins = [\"{}\"]\nallow_credentials = true", cases::ORIGIN),
        ..Default::default()
    };
    let gw = Gateway::start(setup).await;
    let token = gw.access_token(TRADER).await;
    let connector = tls_connector(&gw.cert_pem);
    Side { gw, token, connector }
}

fn fill(template: &[u8], vars: &[(&str, &str)]) -> Vec<u8> {
    let mut out = template.to_vec();
    for (key, value) in vars {
        let mut next = Vec::with_capacity(out.len());
        let mut rest = &out[..];
        while let Some(i) = rest.windows(key.len()).position(|w| w == key.as_bytes()) {
            next.extend_from_slice(&rest[..i]);
            next.extend_from_slice(value.as_bytes());
            rest = &rest[i + key.len()..];
        }
        next.extend_from_slice(rest);
        out = next;
    }
    out
}

/// Runs `case` against one gateway: the client's transcript.
async fn run_on(side: &Side, case: &Case, lane: usize, tag: &str) -> Vec<String> {
    let (p, a) = (format!("/l{lane}"), format!("/a{lane}"));
    let vars = [("{P}", p.as_str()), ("{A}", a.as_str()), ("{TOKEN}", side.token.as_str()), ("{TAG}", tag)];
    let mut wire = Wire::open(side.gw.https, &side.connector).await;
    let mut out = Vec::new();
    for step in &case.steps {
        match step {
            Step::Send(bytes) => wire.send(&fill(bytes, &vars)).await,
            Step::Pause(ms) => tokio::time::sleep(Duration::from_millis(*ms)).await,
            Step::Shutdown => wire.shutdown().await,
            Step::Read => out.extend(wire.response(false, false, wire::HEAD_WAIT).await),
            Step::ReadHead => out.extend(wire.response(true, false, wire::HEAD_WAIT).await),
            Step::ReadInterim => out.extend(wire.response(false, true, Duration::from_millis(700)).await),
        }
    }
    if case.followup {
        let again = fill(b"GET {P}/case/ok HTTP/1.1\r\nHost: localhost\r\nX-Diff-Tag: {TAG}\r\n\r\n", &vars);
        wire.send(&again).await;
        let then = wire.response(false, false, Duration::from_millis(2500)).await;
        out.extend(then.into_iter().map(|l| format!("then {l}")));
    }
    out
}

/// What the upstream received for `tag` from the gateway labelled `label`.
fn upstream_lines(all: &[Received], label: &str, tag: &str) -> Vec<String> {
    let mut out = Vec::new();
    for r in all {
        if r.header("x-diff-gw").as_deref() != Some(label) || r.header("x-diff-tag").as_deref() != Some(tag) {
            continue;
        }
        let line =
            String::from_utf8_lossy(r.head.split(|&b| b == b'\n').next().unwrap_or_default()).into_owned();
        out.push(format!("upstream got: {}", line.trim_end()));
        let headers = normalised_headers(&r.head, UPSTREAM_MASKED, "spoof", &["x-diff-gw"]);
        out.extend(headers.into_iter().map(|h| format!("  {h}")));
        let whole = if r.complete { "" } else { " [INCOMPLETE]" };
        out.push(format!("  body ({}){whole}: {}", r.framing, show(&r.body)));
        out.extend(r.trailers.iter().map(|t| format!("  trailer: {t}")));
    }
    out
}

/// Requests the upstream got from `label` that carried no tag (a case lost it on the way).
fn untagged(all: &[Received], label: &str) -> Vec<String> {
    all.iter()
        .filter(|r| r.header("x-diff-gw").as_deref() == Some(label) && r.header("x-diff-tag").is_none())
        .map(|r| show(&r.head))
        .collect()
}

struct Outcome {
    name: String,
    tag: String,
    hyper: Vec<String>,
    fast: Vec<String>,
}

/// Runs `cases` spread over the lanes; outcomes in case order.
async fn run_all(sides: &Arc<(Side, Side)>, cases: Vec<Case>, prefix: &str) -> Vec<Outcome> {
    let cases = Arc::new(cases);
    let mut lanes = Vec::new();
    for lane in 0..LANES {
        let (sides, cases, prefix) = (sides.clone(), cases.clone(), prefix.to_string());
        lanes.push(tokio::spawn(async move {
            let mut done = Vec::new();
            for i in (lane..cases.len()).step_by(LANES) {
                let (case, tag) = (&cases[i], format!("{prefix}{i}"));
                let (hyper, fast) =
                    tokio::join!(run_on(&sides.0, case, lane, &tag), run_on(&sides.1, case, lane, &tag));
                done.push((i, Outcome { name: case.name.clone(), tag, hyper, fast }));
            }
            done
        }));
    }
    let mut all = Vec::new();
    for lane in lanes {
        all.extend(lane.await.unwrap());
    }
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, o)| o).collect()
}

/// The report of one differing transcript pair: both sides, lines the other lacks marked `!`.
fn render(out: &mut String, what: &str, hyper: &[String], fast: &[String]) {
    let _ = writeln!(out, "  {what}:");
    for (label, mine, theirs) in
        [("hyper (fast_path = false)", hyper, fast), ("fast  (fast_path = true) ", fast, hyper)]
    {
        let _ = writeln!(out, "    {label}:");
        if mine.is_empty() {
            let _ = writeln!(out, "      (nothing)");
        }
        for line in mine {
            let mark = if theirs.contains(line) { ' ' } else { '!' };
            let _ = writeln!(out, "     {mark} {line}");
        }
    }
}

/// An upstream that breaks off inside a body it announced (`cl-short`): whether the doomed
/// response's head still reaches the client is timing, not a rule (the fast path streams it at
/// once; hyper may drop it with the error before it flushes). Either way the client gets a
/// response cut short, or none, and a closed connection: both read the same here.
fn cut_short(o: &Outcome, lines: &[String]) -> Vec<String> {
    if !o.name.contains("cl-short") {
        return lines.to_vec();
    }
    let broken =
        |l: &String| l.starts_with("no response: closed after \"\"") || l.starts_with("body: closed after");
    match lines.iter().position(|l| l.starts_with("then ")) {
        Some(then) if lines[..then].iter().any(broken) => {
            let mut v = vec!["cut short, then closed".to_string()];
            v.extend_from_slice(&lines[then..]);
            v
        }
        None if lines.iter().any(broken) => vec!["cut short, then closed".to_string()],
        _ => lines.to_vec(),
    }
}

/// Compares every outcome: the report of those that differ, and their tags.
fn compare(outcomes: &[Outcome], received: &[Received]) -> (String, Vec<String>) {
    let mut report = String::new();
    let mut differing = Vec::new();
    for o in outcomes {
        let up_h = upstream_lines(received, "hyper", &o.tag);
        let up_f = upstream_lines(received, "fast", &o.tag);
        let (hyper, fast) = (cut_short(o, &o.hyper), cut_short(o, &o.fast));
        if hyper == fast && up_h == up_f {
            if std::env::var_os("DIFF_SHOW_ALL").is_some() {
                let _ = writeln!(report, "=== [{}] {} (same on both)", o.tag, o.name);
                for line in o.hyper.iter().chain(&up_h) {
                    let _ = writeln!(report, "       {line}");
                }
            }
            continue;
        }
        differing.push(o.tag.clone());
        let _ = writeln!(report, "=== [{}] {}", o.tag, o.name);
        if hyper != fast {
            render(&mut report, "client received", &o.hyper, &o.fast);
        }
        if up_h != up_f {
            render(&mut report, "upstream received", &up_h, &up_f);
        }
    }
    (report, differing)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_transports_agree() {
    let upstream = Scripted::start(answers::reply).await;
    let url = upstream.url();
    let (hyper, fast) = tokio::join!(side("hyper", false, &url), side("fast", true, &url));
    let sides = Arc::new((hyper, fast));
    let seed = std::env::var("DIFF_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_SEED);
    let count = std::env::var("DIFF_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_GENERATED);

    let fixed = cases::all();
    let fixed_count = fixed.len();
    let mut outcomes = run_all(&sides, fixed, "c").await;
    outcomes.extend(run_all(&sides, generated::cases(seed, count), "g").await);
    // Late arrivals (a retry after the client left) still carry their tag.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = upstream.received().await;

    let (mut report, differing) = compare(&outcomes, &received);
    let generated_differing = differing.iter().filter(|t| t.starts_with('g')).count();
    let mut lost: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for label in ["hyper", "fast"] {
        lost.insert(label, untagged(&received, label));
    }
    if lost.values().any(|l| !l.is_empty()) {
        let _ = writeln!(report, "=== requests that reached the upstream without their tag: {lost:#?}");
    }
    if let Ok(path) = std::env::var("DIFF_REPORT") {
        std::fs::write(path, &report).unwrap();
    }
    if !differing.is_empty() || lost.values().any(|l| !l.is_empty()) {
        println!("{report}");
        panic!(
            "{} cases differ between the transports: {} of {fixed_count} fixed, {generated_differing} of \
             {count} generated (seed {seed}; rerun with DIFF_SEED={seed})",
            differing.len(),
            differing.len() - generated_differing
        );
    }
}
