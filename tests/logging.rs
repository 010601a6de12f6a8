//! The real binary's logs: access lines leave the request path (a stalled log sink drops and
//! counts them but never holds up a request), warnings are never dropped, and the request id
//! is logged as a plain string.

mod support;

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::binary::Launch;
use support::{Binary, Setup, client_for, refused_addr, route, upstream, write_config};

const DROP_REPORT: &str = "the log sink was stalled: access log lines dropped";

fn client(dir: &std::path::Path, http2: bool) -> reqwest::Client {
    client_for(&std::fs::read(dir.join("gateway.crt")).unwrap(), http2)
}

fn parsed(lines: &[String]) -> Vec<Value> {
    lines.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// The value of the unlabelled counter `name` on the admin listener's `/metrics`.
async fn metric(client: &reqwest::Client, admin: SocketAddr, name: &str) -> u64 {
    let r = client.get(format!("http://{admin}/metrics")).send().await.unwrap();
    let text = r.text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// Reads the logs until `done` holds for all lines read so far (at most 20 s).
fn logs_until(bin: &Binary, mut done: impl FnMut(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut logs = Vec::new();
    while !done(&logs) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        logs.extend(bin.take_logs());
    }
    logs
}

fn access_line<'a>(lines: &'a [Value], id: &str) -> Option<&'a Value> {
    lines.iter().find(|v| v["target"] == "access" && v["fields"]["request_id"].as_str() == Some(id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_log_sink_drops_access_lines_but_never_requests_or_warnings() {
    let up = upstream::start("bo").await;
    let dir = tempfile::tempdir().unwrap();
    let down = format!("http://{}", refused_addr());
    let routes = route("bo", "/api", &up.url(), "auth = \"public\"")
        + &route("down", "/down", &down, "auth = \"public\"");
    let config = write_config(dir.path(), &Setup::routes(routes));
    let env = [("BO_GATEWAY_LOG", OsStr::new("info")), ("BO_GATEWAY_LOG_QUEUE_LINES", OsStr::new("64"))];
    // Nobody reads stderr: its pipe (64 KiB) fills after a few hundred lines, the queue after 64.
    let mut bin =
        Binary::launch(&config, dir.path(), Launch { env: &env, unread: true, ..Default::default() });
    let admin = bin.admin.expect("admin listener");
    let client = client(dir.path(), false);
    let https = bin.https;
    let url = |p: &str| format!("https://{https}{p}");

    let mut failed = Vec::new();
    for i in 0..2000 {
        let path = if i % 50 == 0 { "/down/x" } else { "/api/x" };
        let r = tokio::time::timeout(Duration::from_secs(10), client.get(url(path)).send())
            .await
            .unwrap_or_else(|_| panic!("request {i} held up by the stalled log sink"))
            .unwrap();
        let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
        if path == "/down/x" {
            assert!(r.status().is_server_error(), "{}", r.status());
            failed.push(id);
        } else {
            assert_eq!(r.status(), 200);
        }
        let _ = r.bytes().await.unwrap();
    }
    let dropped = metric(&client, admin, "bo_gateway_log_lines_dropped_total").await;
    assert!(dropped > 0, "no access line dropped: was the sink stalled?");

    // The sink recovers: every warning is there, and the drops are reported.
    bin.read_logs();
    let reports = |lines: &[Value]| -> u64 {
        let reports = lines.iter().filter(|v| v["fields"]["message"] == DROP_REPORT);
        reports.map(|v| v["fields"]["dropped"].as_u64().unwrap()).sum()
    };
    let warned = |lines: &[Value], id: &str| {
        lines.iter().any(|v| {
            v["level"] == "WARN"
                && v["fields"]["message"] == "request failed"
                && v["fields"]["request_id"].as_str().is_some_and(|r| r.trim_matches('"') == id)
        })
    };
    let logs = logs_until(&bin, |l| {
        let lines = parsed(l);
        reports(&lines) >= dropped && failed.iter().all(|id| warned(&lines, id))
    });
    let lines = parsed(&logs);
    for id in &failed {
        assert!(warned(&lines, id), "the warning for {id} was lost");
    }
    let total = metric(&client, admin, "bo_gateway_log_lines_dropped_total").await;
    let report = lines.iter().find(|v| v["fields"]["message"] == DROP_REPORT).expect("no drop report");
    assert_eq!(report["level"], "WARN");
    assert!(report["fields"]["total"].as_u64().unwrap() <= total);
    let reported = reports(&lines);
    assert!((dropped..=total).contains(&reported), "reported {reported}, dropped {dropped}..{total}");

    // And access lines flow again.
    let r = client.get(url("/api/after")).send().await.unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let logs = logs_until(&bin, |l| access_line(&parsed(l), &id).is_some());
    assert!(access_line(&parsed(&logs), &id).is_some(), "no access line after the sink recovered");
}

#[tokio::test]
async fn json_access_lines_carry_the_request_id_as_a_plain_string_on_both_transports() {
    let up = upstream::start("bo").await;
    let dir = tempfile::tempdir().unwrap();
    let config =
        write_config(dir.path(), &Setup::routes(route("bo", "/api", &up.url(), "auth = \"public\"")));
    let env = [("BO_GATEWAY_LOG", OsStr::new("info"))];
    let bin = Binary::launch(&config, dir.path(), Launch { env: &env, ..Default::default() });
    let mut ids = Vec::new();
    // HTTP/1.1 takes the fast path, HTTP/2 hyper's: both log through `gate::record::log_access`.
    for http2 in [false, true] {
        let r = client(dir.path(), http2).get(format!("https://{}/api/x", bin.https)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        ids.push(r.headers()["x-request-id"].to_str().unwrap().to_string());
    }
    let logs = logs_until(&bin, |l| ids.iter().all(|id| access_line(&parsed(l), id).is_some()));
    let lines = parsed(&logs);
    for id in &ids {
        assert!(!id.contains('"'));
        let line =
            access_line(&lines, id).unwrap_or_else(|| panic!("no access line with {id:?} in {logs:#?}"));
        assert_eq!(line["fields"]["route"], "bo");
    }
}

#[tokio::test]
async fn text_access_lines_quote_the_request_id_once() {
    let up = upstream::start("bo").await;
    let dir = tempfile::tempdir().unwrap();
    let config =
        write_config(dir.path(), &Setup::routes(route("bo", "/api", &up.url(), "auth = \"public\"")));
    let env = [("BO_GATEWAY_LOG", OsStr::new("info"))];
    let bin = Binary::launch(&config, dir.path(), Launch { format: "text", env: &env, ..Default::default() });
    let r = client(dir.path(), false).get(format!("https://{}/api/x", bin.https)).send().await.unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let field = format!(" request_id=\"{id}\" ");
    let logs = logs_until(&bin, |l| l.iter().any(|l| l.contains(&field)));
    let line = logs.iter().find(|l| l.contains(&field)).unwrap_or_else(|| panic!("no {field} in {logs:#?}"));
    assert!(line.contains(" access: "), "{line}");
    assert!(!line.contains("\\\""), "escaped quotes: {line}");
}

/// Audit events reach the log under target `audit`, one JSON object each, carrying the request
/// id the client was answered with, whichever transport carried the login (HTTP/1.1: the fast
/// path; HTTP/2: hyper's), and never the password.
#[tokio::test]
async fn audit_events_are_logged_under_target_audit_with_the_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &Setup::default());
    let env = [("BO_GATEWAY_LOG", OsStr::new("info"))];
    let bin = Binary::launch(&config, dir.path(), Launch { env: &env, ..Default::default() });
    let mut ids = Vec::new();
    for http2 in [false, true] {
        let r = client(dir.path(), http2)
            .post(format!("https://{}/auth/token", bin.https))
            .json(&serde_json::json!({"login": support::TRADER.0, "password": "not-the-password"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        ids.push(r.headers()["x-request-id"].to_str().unwrap().to_string());
    }
    let audit_of = |lines: &[Value], id: &str| -> Option<Value> {
        lines.iter().filter(|v| v["target"] == "audit").find_map(|v| {
            let ev: Value = serde_json::from_str(v["fields"]["event"].as_str()?).ok()?;
            (ev["requestId"] == id).then_some(ev)
        })
    };
    let logs = logs_until(&bin, |l| ids.iter().all(|id| audit_of(&parsed(l), id).is_some()));
    let lines = parsed(&logs);
    for id in &ids {
        let ev = audit_of(&lines, id).unwrap_or_else(|| panic!("no audit line with {id:?} in {logs:#?}"));
        assert_eq!((ev["type"].as_str(), ev["login"].as_str()), (Some("login.failed"), Some("bob")));
        assert_eq!(ev["details"]["code"], "1.2.0.11");
    }
    assert!(!logs.iter().any(|l| l.contains("not-the-password")));
}
