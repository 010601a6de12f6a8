//! 100 MB up and 100 MB down through the real binary: the gateway streams, so its peak resident
//! memory stays flat (the figure is printed; run with `--nocapture` to see it).

mod support;

use support::*;

const SIZE: u64 = 100 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_megabytes_each_way_with_flat_memory() {
    let up = upstream::start("bo").await;
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        server: format!("max_body_bytes = {}", SIZE * 2),
        routes: route("pub", "/public", &up.url(), "auth = \"public\""),
        ..Default::default()
    };
    let config = write_config(dir.path(), &setup);
    let gw = Binary::spawn(&config, dir.path());
    let cert = std::fs::read(dir.path().join("gateway.crt")).unwrap();
    let client = client_for(&cert, false);
    let url = |p: &str| format!("https://{}{}", gw.https, p);

    // Warm up (TLS, pools), then take the baseline.
    assert_eq!(client.get(url("/public/x")).send().await.unwrap().status(), 200);
    let baseline = gw.status_kib("VmRSS");

    let mut remaining = SIZE;
    let chunk = bytes::Bytes::from(vec![b'u'; 256 * 1024]);
    let stream = futures_util::stream::poll_fn(move |_| {
        if remaining == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = remaining.min(chunk.len() as u64) as usize;
        remaining -= n as u64;
        std::task::Poll::Ready(Some(Ok::<_, std::io::Error>(chunk.slice(..n))))
    });
    let r = client.post(url("/public/upload")).body(reqwest::Body::wrap_stream(stream)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["body_len"].as_u64().unwrap(), SIZE);

    let mut r = client.get(url(&format!("/public/bytes?n={SIZE}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut got = 0u64;
    while let Some(c) = r.chunk().await.unwrap() {
        got += c.len() as u64;
    }
    assert_eq!(got, SIZE);

    let peak = gw.status_kib("VmHWM");
    println!("gateway RSS baseline {baseline} KiB, peak over 2 x 100 MB {peak} KiB");
    // Buffering either body would add 100 MB; streaming keeps the peak within a few MB of the start.
    assert!(peak < baseline + 32 * 1024, "peak {peak} KiB vs baseline {baseline} KiB");
}
