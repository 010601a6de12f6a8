//! `docs/openapi.yaml` parses, describes exactly the endpoints the gateway serves, and each of
//! them answers on the listener it is documented for.

mod support;

use std::collections::BTreeSet;

use bo_gateway::server::OWN_ENDPOINTS;
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

#[test]
fn the_spec_names_every_endpoint_and_nothing_else() {
    let served: BTreeSet<(String, String)> = OWN_ENDPOINTS
        .iter()
        .flat_map(|(p, ms, _)| ms.iter().map(move |m| (p.to_string(), m.to_string())))
        .collect();
    assert_eq!(documented(), served);
}

#[tokio::test]
async fn every_documented_endpoint_is_served() {
    let gw = Gateway::start(Setup::default()).await;
    for (path, methods, admin) in OWN_ENDPOINTS {
        for m in *methods {
            let url = if *admin { gw.admin_url(path) } else { gw.url(path) };
            let method = reqwest::Method::from_bytes(m.as_bytes()).unwrap();
            let client = if *admin { reqwest::Client::new() } else { gw.client.clone() };
            let r = client.request(method, url).send().await.unwrap();
            let status = r.status().as_u16();
            assert!(status != 404 && status != 405, "{m} {path} answered {status}");
        }
    }
}
