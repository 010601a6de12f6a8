//! TLS negotiation on the main listener (SPEC §2): the server's cipher-suite order wins, and a
//! client whose ALPN offer has no protocol in common is served HTTP/1.1, not refused.

mod support;

use std::sync::Arc;

use rustls::crypto::aws_lc_rs::cipher_suite as cs;
use rustls::{CipherSuite, SupportedCipherSuite};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A client offering exactly `suites` (in this order) and the ALPN protocols `alpn`.
fn client(gw: &Gateway, suites: &[SupportedCipherSuite], alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&gw.cert_pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if !suites.is_empty() {
        provider.cipher_suites = suites.to_vec();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(gw: &Gateway, c: &tokio_rustls::TlsConnector) -> std::io::Result<Tls> {
    let tcp = tokio::net::TcpStream::connect(gw.https).await.unwrap();
    c.connect(rustls_pki_types::ServerName::try_from("localhost").unwrap(), tcp).await
}

fn suite(t: &Tls) -> CipherSuite {
    t.get_ref().1.negotiated_cipher_suite().unwrap().suite()
}

/// `GET /healthz` over HTTP/1.1 on `t`: the status line.
async fn healthz(mut t: Tls) -> String {
    t.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    let _ = t.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).lines().next().unwrap_or("").to_string()
}

#[tokio::test]
async fn the_servers_cipher_order_wins() {
    let gw = Gateway::start(Setup::default()).await;
    // TLS 1.3: the client puts ChaCha20 first; ours puts AES-256-GCM first.
    let c = client(
        &gw,
        &[cs::TLS13_CHACHA20_POLY1305_SHA256, cs::TLS13_AES_128_GCM_SHA256, cs::TLS13_AES_256_GCM_SHA384],
        &[],
    );
    let t = connect(&gw, &c).await.unwrap();
    assert_eq!(suite(&t), CipherSuite::TLS13_AES_256_GCM_SHA384);
    // TLS 1.2 (the test certificate's key is ECDSA).
    let c = client(
        &gw,
        &[
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ],
        &[],
    );
    let t = connect(&gw, &c).await.unwrap();
    assert_eq!(suite(&t), CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384);
    // A client offering only a suite further down our list still gets it.
    let c = client(&gw, &[cs::TLS13_CHACHA20_POLY1305_SHA256], &[]);
    let t = connect(&gw, &c).await.unwrap();
    assert_eq!(suite(&t), CipherSuite::TLS13_CHACHA20_POLY1305_SHA256);
    assert!(healthz(t).await.contains("200"));
}

#[tokio::test]
async fn alpn_without_a_common_protocol_falls_back_to_http_1_1() {
    let gw = Gateway::start(Setup::default()).await;
    let offers: [&[&[u8]]; 3] = [&[b"http/1.0"], &[b"spdy/3", b"foo"], &[]];
    for offer in offers {
        let t = connect(&gw, &client(&gw, &[], offer)).await.unwrap_or_else(|e| panic!("{offer:?}: {e}"));
        assert_eq!(t.get_ref().1.alpn_protocol(), None, "{offer:?}");
        assert_eq!(healthz(t).await, "HTTP/1.1 200 OK", "{offer:?}");
    }
    // Where there is a protocol in common, it is chosen, ours first.
    let t = connect(&gw, &client(&gw, &[], &[b"spdy/3", b"http/1.1"])).await.unwrap();
    assert_eq!(t.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(healthz(t).await, "HTTP/1.1 200 OK");
    let t = connect(&gw, &client(&gw, &[], &[b"http/1.1", b"h2"])).await.unwrap();
    assert_eq!(t.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // And HTTP/2 still works end to end.
    let r = gw.http2_client().get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.version()), (200, reqwest::Version::HTTP_2));
}

#[tokio::test]
async fn a_client_hello_that_is_not_tls_is_still_refused() {
    let gw = Gateway::start(Setup::default()).await;
    let mut tcp = tokio::net::TcpStream::connect(gw.https).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read_to_end(&mut out)).await;
    assert!(!String::from_utf8_lossy(&out).contains("200"), "plain HTTP served on the TLS port");
    // The listener keeps serving.
    assert_eq!(gw.client.get(gw.url("/healthz")).send().await.unwrap().status(), 200);
}
