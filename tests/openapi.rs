//! `docs/openapi.yaml` parses, describes exactly the endpoints the gateway serves (the table
//! `gate::endpoints::ENDPOINTS`), and each of them answers on the listeners the table puts it
//! on, checking the caller (admin-only) and then the method as the table says.

mod support;

use std::collections::BTreeSet;

use bo_gateway::gate::endpoints::{ENDPOINTS, On};
use support::*;

fn documented() -> BTreeSet<(String, String)> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml")).unwrap();
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("openapi.yaml does not parse");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut out = BTreeSet::new();
    for (path, ops) in doc["paths"].as_mapping().unwrap() {
        for (method, _) in ops.as_mapping().unwrap() {
            out.insert((path.as_str().unwrap().to_string(), method.as_str().unwrap().to_uppercase()));
        }
    }
    out
}

/// The table's methods as OpenAPI lists them: `HEAD` is `GET` without the body, not an operation.
fn methods(methods: &'static [&'static str]) -> impl Iterator<Item = &'static str> {
    methods.iter().copied().filter(|m| *m != "HEAD")
}

#[test]
fn the_spec_names_every_endpoint_and_nothing_else() {
    let served: BTreeSet<(String, String)> = ENDPOINTS
        .iter()
        .flat_map(|e| methods(e.methods).map(move |m| (e.path.to_string(), m.to_string())))
        .collect();
    assert_eq!(documented(), served);
}

#[tokio::test]
async fn every_endpoint_is_served_on_its_listeners_only() {
    let gw = Gateway::start(Setup::default()).await;
    let admin_client = reqwest::Client::new();
    for e in ENDPOINTS {
        let listeners: &[bool] = match e.on {
            On::Main => &[false],
            On::Admin => &[true],
            On::Both => &[false, true],
        };
        for m in e.methods {
            let method = reqwest::Method::from_bytes(m.as_bytes()).unwrap();
            for &admin in listeners {
                let (client, url) =
                    if admin { (&admin_client, gw.admin_url(e.path)) } else { (&gw.client, gw.url(e.path)) };
                let status = client.request(method.clone(), url).send().await.unwrap().status().as_u16();
                assert!(status != 404 && status != 405, "{m} {} (admin: {admin}) answered {status}", e.path);
            }
            // The admin listener has no routes: what it does not serve is a 404.
            if e.on == On::Main {
                let r = admin_client.request(method.clone(), gw.admin_url(e.path)).send().await.unwrap();
                assert_eq!(r.status().as_u16(), 404, "{m} {} on the admin listener", e.path);
            }
        }
    }
}

both_transports! {
    #[tokio::test]
    async fn a_method_the_table_does_not_list_is_a_405_after_the_admin_check() {
        let gw = Gateway::start(Setup::default()).await;
        let admin = gw.access_token(ADMIN).await;
        let trader = gw.access_token(TRADER).await;
        let admin_client = reqwest::Client::new();
        for e in ENDPOINTS {
            let other = ["PUT", "POST", "DELETE"].into_iter().find(|m| !e.methods.contains(m)).unwrap();
            let method = reqwest::Method::from_bytes(other.as_bytes()).unwrap();
            for admin_listener in [false, true] {
                let on = match e.on {
                    On::Main => !admin_listener,
                    On::Admin => admin_listener,
                    On::Both => true,
                };
                if !on {
                    continue;
                }
                let (client, url) = match admin_listener {
                    true => (&admin_client, gw.admin_url(e.path)),
                    false => (&gw.client, gw.url(e.path)),
                };
                let send = |token: Option<&str>| {
                    let r = client.request(method.clone(), url.clone());
                    match token {
                        Some(t) => r.bearer_auth(t).send(),
                        None => r.send(),
                    }
                };
                let what = format!("{other} {} (admin listener: {admin_listener})", e.path);
                if e.admin_only {
                    assert_eq!(error_code(send(None).await.unwrap()).await, (401, "token.missing".into()), "{what}");
                    let r = send(Some(&trader)).await.unwrap();
                    assert_eq!(error_code(r).await, (403, "forbidden".into()), "{what}");
                }
                let r = send(Some(&admin)).await.unwrap();
                let allow = r.headers().get("allow").map(|v| v.to_str().unwrap().to_string());
                assert_eq!(error_code(r).await, (405, "method.not_allowed".into()), "{what}");
                assert_eq!(allow.as_deref(), Some(e.methods.join(", ").as_str()), "{what}");
            }
        }
    }
}
