//! The client side of a differential case: one raw TLS connection, and a reader that turns
//! what the gateway sent into comparable transcript lines (status line, normalised headers,
//! body by its framing, trailers, and how the exchange ended).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::support::scripted::{Chunked, decode_chunked, head_lines, normalised_headers, show};

/// How long a response head may take to start arriving (the routes' timeout is shorter).
pub const HEAD_WAIT: Duration = Duration::from_secs(4);
/// How long a body may pause before the reader stops waiting for the rest.
const BODY_IDLE: Duration = Duration::from_millis(1200);

/// Response headers whose values differ per instance or per request.
const MASKED: &[&str] = &["date", "x-request-id"];

pub struct Wire {
    tls: TlsStream<TcpStream>,
    buf: Vec<u8>,
    eof: bool,
}

enum Fill {
    Data,
    Eof,
    Timeout,
}

impl Wire {
    pub async fn open(addr: SocketAddr, connector: &tokio_rustls::TlsConnector) -> Self {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        Self { tls, buf: Vec::new(), eof: false }
    }

    /// Writes `bytes`; a failure (the gateway closed) is not an outcome of its own: what the
    /// client then reads is.
    pub async fn send(&mut self, bytes: &[u8]) {
        let _ = self.tls.write_all(bytes).await;
        let _ = self.tls.flush().await;
    }

    /// Ends the client's sending side (TLS close_notify and FIN); reading continues.
    pub async fn shutdown(&mut self) {
        let _ = self.tls.shutdown().await;
    }

    async fn fill(&mut self, wait: Duration) -> Fill {
        if self.eof {
            return Fill::Eof;
        }
        let mut chunk = vec![0u8; 32 * 1024];
        match tokio::time::timeout(wait, self.tls.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                self.buf.extend_from_slice(&chunk[..n]);
                Fill::Data
            }
            Ok(_) => {
                self.eof = true;
                Fill::Eof
            }
            Err(_) => Fill::Timeout,
        }
    }

    /// Reads one response and describes it; interim (1xx) responses are described and read
    /// past unless `interim_only`. `head_request`: the request was HEAD (no body follows).
    pub async fn response(&mut self, head_request: bool, interim_only: bool, wait: Duration) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let end = loop {
                if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                match self.fill(wait).await {
                    Fill::Data => {}
                    Fill::Eof => {
                        out.push(format!("no response: closed after {}", show(&self.take_all())));
                        return out;
                    }
                    Fill::Timeout => {
                        out.push(format!("no response within {wait:?}; got {}", show(&self.take_all())));
                        return out;
                    }
                }
            };
            let head: Vec<u8> = self.buf.drain(..end).collect();
            let lines = head_lines(&head);
            let status_line = lines.first().cloned().unwrap_or_default();
            let code: u16 = status_line.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
            let headers = normalised_headers(&head, MASKED, "up-", &[]);
            let interim = (100..200).contains(&code) && code != 101;
            out.push(format!("{}{status_line}", if interim { "interim: " } else { "status: " }));
            out.extend(headers.iter().map(|h| format!("  {h}")));
            if interim && !interim_only {
                continue;
            }
            if !interim {
                let body = self.body(code, head_request, &headers).await;
                out.extend(body);
            }
            return out;
        }
    }

    fn take_all(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// The body as RFC 9112 §6.3 frames it for this client.
    async fn body(&mut self, code: u16, head_request: bool, headers: &[String]) -> Vec<String> {
        let value = |name: &str| {
            headers
                .iter()
                .filter_map(|h| h.strip_prefix(name)?.strip_prefix(": "))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let te = value("transfer-encoding").to_ascii_lowercase();
        let cl = value("content-length");
        if head_request || code == 204 || code == 304 || (100..200).contains(&code) {
            return vec!["body: none (by status or method)".into()];
        }
        if te.split(',').next_back().is_some_and(|c| c.trim() == "chunked") {
            return self.chunked().await;
        }
        if !te.is_empty() {
            return self.until_close("transfer-encoding without chunked, read to close").await;
        }
        if !cl.is_empty() {
            // A list of one repeated value reads as that value (RFC 9110 §8.6).
            let mut values = cl.split(',').map(|v| v.trim().parse::<usize>());
            let first = values.next();
            let Some(Ok(n)) = first.clone().filter(|f| values.all(|v| v.as_ref().ok() == f.as_ref().ok()))
            else {
                return vec![format!("body: unreadable content-length {cl:?}")];
            };
            while self.buf.len() < n {
                match self.fill(BODY_IDLE).await {
                    Fill::Data => {}
                    end => {
                        let how = if matches!(end, Fill::Eof) { "closed" } else { "stalled" };
                        let got = self.take_all();
                        return vec![format!("body: {how} after {} of {n} bytes: {}", got.len(), show(&got))];
                    }
                }
            }
            let body: Vec<u8> = self.buf.drain(..n).collect();
            return vec![format!("body (length): {}", show(&body))];
        }
        self.until_close("no length, read to close").await
    }

    async fn chunked(&mut self) -> Vec<String> {
        loop {
            match decode_chunked(&self.buf) {
                Chunked::Whole { body, trailers, used } => {
                    self.buf.drain(..used);
                    let mut out = vec![format!("body (chunked): {}", show(&body))];
                    out.extend(trailers.iter().map(|t| format!("  trailer: {}", t.to_ascii_lowercase())));
                    return out;
                }
                Chunked::Bad => {
                    return vec![format!("body: bad chunked framing: {}", show(&self.take_all()))];
                }
                Chunked::Partial(_) => {}
            }
            match self.fill(BODY_IDLE).await {
                Fill::Data => {}
                end => {
                    let how = if matches!(end, Fill::Eof) { "closed" } else { "stalled" };
                    return vec![format!("body: chunked {how} before its end: {}", show(&self.take_all()))];
                }
            }
        }
    }

    async fn until_close(&mut self, what: &str) -> Vec<String> {
        loop {
            match self.fill(BODY_IDLE).await {
                Fill::Data => {}
                Fill::Eof => return vec![format!("body ({what}): {} then close", show(&self.take_all()))],
                Fill::Timeout => {
                    return vec![format!(
                        "body ({what}): {} then stalled, still open",
                        show(&self.take_all())
                    )];
                }
            }
        }
    }
}
