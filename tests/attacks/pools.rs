use std::time::Duration;

use serde_json::Value;

use crate::support::*;

fn pool_route(name: &str, prefix: &str, upstreams: &[String], extra: &str) -> String {
    let list = upstreams.iter().map(|u| format!("\"{u}\"")).collect::<Vec<_>>().join(", ");
    format!(
        "[[routes]]\nname = \"{name}\"\nprefix = \"{prefix}\"\nauth = \"public\"\nupstreams = [{list}]\n{extra}\n"
    )
}

fn closed_port() -> String {
    format!("http://{}", refused_addr())
}

async fn route_health(gw: &Gateway, name: &str) -> (u64, u64) {
    let v: Value = reqwest::get(gw.admin_url("/readyz")).await.unwrap().json().await.unwrap();
    let r = v["routes"].as_array().unwrap().iter().find(|r| r["name"] == name).unwrap().clone();
    (r["healthy"].as_u64().unwrap(), r["total"].as_u64().unwrap())
}

both_transports! {
    #[tokio::test]
    async fn active_health_checks_take_an_upstream_out_and_bring_it_back() {
        let a = upstream::start("a").await;
        let b = upstream::start("b").await;
        let routes = pool_route(
            "p",
            "/",
            &[a.url(), b.url()],
            "health_check = { path = \"/health\", interval = \"100ms\" }",
        );
        let gw = Gateway::start(Setup::routes(routes)).await;
        a.set_healthy(false);
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(route_health(&gw, "p").await, (1, 2));
        let before = a.hits();
        for _ in 0..10 {
            let e: Value = gw.client.get(gw.url("/x")).send().await.unwrap().json().await.unwrap();
            assert_eq!(e["upstream"], "b");
        }
        // Only health checks reached `a` meanwhile.
        assert!(a.hits() - before <= 3);
        a.set_healthy(true);
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(route_health(&gw, "p").await, (2, 2));
        let mut seen_a = false;
        for _ in 0..6 {
            let e: Value = gw.client.get(gw.url("/x")).send().await.unwrap().json().await.unwrap();
            seen_a |= e["upstream"] == "a";
        }
        assert!(seen_a, "recovered upstream not back in rotation");
    }
}

both_transports! {
    #[tokio::test]
    async fn connect_failures_retry_idempotent_requests_and_eject_the_upstream() {
        let b = upstream::start("b").await;
        let routes = pool_route("p", "/", &[closed_port(), b.url()], "");
        let gw = Gateway::start(Setup::routes(routes)).await;
        for i in 0..8 {
            let r = gw.client.get(gw.url(&format!("/x?i={i}"))).send().await.unwrap();
            assert_eq!(r.status(), 200, "GET {i} was not retried on the healthy upstream");
            let e: Value = r.json().await.unwrap();
            assert_eq!(e["uri"], format!("/x?i={i}"), "the retry lost the query");
        }
        assert_eq!(route_health(&gw, "p").await, (1, 2), "dead upstream not ejected");
        assert_eq!(b.hits(), 8);
    }
}

both_transports! {
    #[tokio::test]
    async fn a_post_goes_elsewhere_only_when_nothing_of_it_was_sent() {
        // Refused at connect: nothing reached the dead upstream, so the POST goes, whole, to the
        // other one.
        let b = upstream::start("b").await;
        let routes = pool_route("p", "/", &[closed_port(), b.url()], "");
        let gw = Gateway::start(Setup::routes(routes)).await;
        for _ in 0..2 {
            let r = gw.client.post(gw.url("/orders")).body("{\"qty\":1}").send().await.unwrap();
            assert_eq!(r.status(), 200);
        }
        assert_eq!(b.hits(), 2);

        // Taken by an upstream that then failed without an answer: it may have acted on it, so the
        // POST is never sent again, to it or to the other.
        let (dropper, seen, _task) = upstream::raw(Vec::new()).await;
        let c = upstream::start("c").await;
        let routes = pool_route("p", "/", &[format!("http://{dropper}"), c.url()], "");
        let gw = Gateway::start(Setup::routes(routes)).await;
        let mut statuses = Vec::new();
        for _ in 0..2 {
            statuses.push(
                gw.client.post(gw.url("/orders")).body("{\"qty\":1}").send().await.unwrap().status().as_u16(),
            );
        }
        statuses.sort();
        assert_eq!(statuses, vec![200, 502], "one POST reached the failing upstream and must not be replayed");
        assert_eq!((seen.load(std::sync::atomic::Ordering::SeqCst), c.hits()), (1, 1));
    }
}

both_transports! {
    #[tokio::test]
    async fn least_requests_prefers_the_less_busy_upstream() {
        let slow = upstream::start_with_delay("slow", 200).await;
        let fast = upstream::start("fast").await;
        let routes = pool_route("p", "/", &[slow.url(), fast.url()], "balance = \"least_requests\"");
        let gw = Gateway::start(Setup::routes(routes)).await;
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let (c, url) = (gw.client.clone(), gw.url("/x"));
            tasks.spawn(async move {
                for _ in 0..10 {
                    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
                }
            });
        }
        tasks.join_all().await;
        assert_eq!(slow.hits() + fast.hits(), 40);
        // Round robin would split 20/20.
        assert!(fast.hits() >= 2 * slow.hits(), "slow {} fast {}", slow.hits(), fast.hits());
    }
}

both_transports! {
    #[tokio::test]
    async fn readiness_reports_a_route_whose_every_upstream_is_down() {
        let up = upstream::start("up").await;
        let routes = pool_route(
            "dead",
            "/dead",
            &[closed_port(), closed_port()],
            "health_check = { path = \"/health\", interval = \"100ms\" }",
        ) + &pool_route("live", "/live", &[up.url()], "");
        let gw = Gateway::start(Setup::routes(routes)).await;
        tokio::time::sleep(Duration::from_millis(600)).await;
        let r = reqwest::get(gw.admin_url("/readyz")).await.unwrap();
        assert_eq!(r.status(), 200, "a dead route must not make the instance unready");
        assert_eq!(route_health(&gw, "dead").await, (0, 2));
        assert_eq!(route_health(&gw, "live").await, (1, 1));
        let r = gw.client.get(gw.url("/dead/x")).send().await.unwrap();
        assert_eq!(error_code(r).await, (502, "upstream.unavailable".into()));
    }
}
