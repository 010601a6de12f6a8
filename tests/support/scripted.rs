//! A scripted raw upstream: a plain tokio listener (not hyper, so it can answer what no HTTP
//! library would send) that reads one request per exchange, records exactly what it received,
//! and writes the raw bytes its script chooses. Connections stay open between exchanges unless
//! the script says to close, so the gateway's connection reuse is exercised too.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

/// A request head larger than this is recorded and the connection closed.
const MAX_HEAD: usize = 1 << 20;

/// One request as the upstream read it.
#[derive(Clone, Debug)]
pub struct Received {
    /// The head exactly as sent (request line and headers, up to the blank line).
    pub head: Vec<u8>,
    /// The body as decoded so far (chunked: the chunk data, without sizes).
    pub body: Vec<u8>,
    /// Chunked trailer lines, as sent.
    pub trailers: Vec<String>,
    /// How the request said its body is framed: `none`, `length N` or `chunked`.
    pub framing: String,
    /// The whole body arrived (false: the connection ended, or is still waiting, short of it).
    pub complete: bool,
    /// Which accepted connection it came on (0-based), and its place on it.
    pub conn: usize,
    pub nth: usize,
}

impl Received {
    /// The request target of the request line.
    pub fn target(&self) -> String {
        let line = self.head.split(|&b| b == b'\n').next().unwrap_or_default();
        let line = String::from_utf8_lossy(line);
        line.split(' ').nth(1).unwrap_or_default().to_string()
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<String> {
        head_lines(&self.head).into_iter().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// What the script answers to one request.
pub struct Reply {
    pub bytes: Vec<u8>,
    /// Close the connection after writing (without necessarily saying so).
    pub close: bool,
    /// Answer as soon as the head arrived, before reading the body (as a server refusing an
    /// upload early does); the body is read afterwards all the same.
    pub early: bool,
}

type Script = dyn Fn(&Received) -> Reply + Send + Sync;

/// A running scripted upstream; the task ends when this is dropped.
pub struct Scripted {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Scripted {
    pub async fn start(script: impl Fn(&Received) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Script> = Arc::new(script);
        let l2 = log.clone();
        let task = tokio::spawn(async move {
            let mut conn = 0;
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(serve(sock, conn, l2.clone(), script.clone()));
                conn += 1;
            }
        });
        Self { addr, log, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, in order of arrival (bodies as far as they got).
    pub async fn received(&self) -> Vec<Received> {
        self.log.lock().await.clone()
    }
}

async fn serve(mut sock: TcpStream, conn: usize, log: Arc<Mutex<Vec<Received>>>, script: Arc<Script>) {
    let mut buf = Vec::new();
    for nth in 0.. {
        let Some(end) = read_head(&mut sock, &mut buf).await else { return };
        let head = buf[..end].to_vec();
        buf.drain(..end);
        let framing = request_framing(&head);
        let rec = Received {
            head,
            body: Vec::new(),
            trailers: Vec::new(),
            framing: framing.clone(),
            complete: framing == "none",
            conn,
            nth,
        };
        let at = {
            let mut log = log.lock().await;
            log.push(rec.clone());
            log.len() - 1
        };
        if end > MAX_HEAD {
            return;
        }
        let reply = script(&rec);
        if reply.early && sock.write_all(&reply.bytes).await.is_err() {
            return;
        }
        let ok = read_body(&mut sock, &mut buf, &framing, &log, at).await;
        if !ok {
            return;
        }
        if !reply.early && sock.write_all(&reply.bytes).await.is_err() {
            return;
        }
        if reply.close {
            let _ = sock.shutdown().await;
            return;
        }
    }
}

/// Reads until `buf` holds a whole head; its length, or None at the end of the connection. A
/// head over [`MAX_HEAD`] counts as whole, so it is recorded rather than read forever.
async fn read_head(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(i + 4);
        }
        if buf.len() > MAX_HEAD {
            return Some(buf.len());
        }
        if !more(sock, buf).await {
            return None;
        }
    }
}

async fn more(sock: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16384];
    match sock.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// `none`, `length N` or `chunked`, as a server reading the head would decide (the gateway
/// must never send anything ambiguous, so the first framing header found is taken).
fn request_framing(head: &[u8]) -> String {
    for line in head_lines(head).into_iter().skip(1) {
        let Some((n, v)) = line.split_once(':') else { continue };
        let v = v.trim().to_ascii_lowercase();
        if n.eq_ignore_ascii_case("transfer-encoding") && v.ends_with("chunked") {
            return "chunked".into();
        }
        if n.eq_ignore_ascii_case("content-length") {
            return match v.parse::<u64>() {
                Ok(0) => "none".into(),
                Ok(n) => format!("length {n}"),
                Err(_) => format!("unreadable length {v:?}"),
            };
        }
    }
    "none".into()
}

/// Reads the body into the log entry `at` as it arrives; false when the connection ended (or
/// the framing was unreadable) before it was whole.
async fn read_body(
    sock: &mut TcpStream,
    buf: &mut Vec<u8>,
    framing: &str,
    log: &Mutex<Vec<Received>>,
    at: usize,
) -> bool {
    if framing == "none" {
        return true;
    }
    if let Some(n) = framing.strip_prefix("length ").and_then(|n| n.parse::<usize>().ok()) {
        loop {
            let have = buf.len().min(n);
            log.lock().await[at].body = buf[..have].to_vec();
            if have == n {
                buf.drain(..n);
                log.lock().await[at].complete = true;
                return true;
            }
            if !more(sock, buf).await {
                return false;
            }
        }
    }
    if framing != "chunked" {
        return false;
    }
    loop {
        match decode_chunked(buf) {
            Chunked::Whole { body, trailers, used } => {
                buf.drain(..used);
                let mut log = log.lock().await;
                (log[at].body, log[at].trailers, log[at].complete) = (body, trailers, true);
                return true;
            }
            Chunked::Partial(body) => log.lock().await[at].body = body,
            Chunked::Bad => return false,
        }
        if !more(sock, buf).await {
            return false;
        }
    }
}

pub enum Chunked {
    /// The whole chunked body: data, trailer lines, bytes it took.
    Whole {
        body: Vec<u8>,
        trailers: Vec<String>,
        used: usize,
    },
    /// Not all there yet: the data so far.
    Partial(Vec<u8>),
    Bad,
}

/// Decodes a chunked body at the start of `buf` (extensions ignored).
pub fn decode_chunked(buf: &[u8]) -> Chunked {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some(eol) = find_crlf(&buf[at..]) else { return Chunked::Partial(body) };
        let line = String::from_utf8_lossy(&buf[at..at + eol]).into_owned();
        let size = line.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size, 16) else { return Chunked::Bad };
        at += eol + 2;
        if size == 0 {
            let mut trailers = Vec::new();
            loop {
                let Some(eol) = find_crlf(&buf[at..]) else { return Chunked::Partial(body) };
                let line = String::from_utf8_lossy(&buf[at..at + eol]).into_owned();
                at += eol + 2;
                if line.is_empty() {
                    return Chunked::Whole { body, trailers, used: at };
                }
                trailers.push(line);
            }
        }
        let avail = buf.len().saturating_sub(at).min(size);
        body.extend_from_slice(&buf[at..at + avail]);
        if buf.len() < at + size + 2 {
            return Chunked::Partial(body);
        }
        if &buf[at + size..at + size + 2] != b"\r\n" {
            return Chunked::Bad;
        }
        at += size + 2;
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

/// The lines of a head (without the blank line; a bare LF also ends a line).
pub fn head_lines(head: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(head)
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l).to_string())
        .take_while(|l| !l.is_empty())
        .collect()
}

/// Header lines of `head` in a comparable form: names lower-cased, sorted by name (values of
/// one name keep their order), values of the `mask`ed names replaced by `<name>` unless they
/// contain `keep`, and the `drop`ped names left out.
pub fn normalised_headers(head: &[u8], mask: &[&str], keep: &str, drop: &[&str]) -> Vec<String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in head_lines(head).into_iter().skip(1) {
        let (name, value) = match line.split_once(':') {
            Some((n, v)) => (n.to_ascii_lowercase(), v.trim().to_string()),
            None => (format!("<no colon> {line}"), String::new()),
        };
        if drop.contains(&name.as_str()) {
            continue;
        }
        let value =
            if mask.contains(&name.as_str()) && !value.contains(keep) { format!("<{name}>") } else { value };
        out.push((name, value));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.into_iter().map(|(n, v)| format!("{n}: {v}")).collect()
}

/// Bytes for a report: printable ASCII as is, the rest escaped, long runs shortened (with the
/// length and a hash of the whole, so equal-looking renderings of different bytes differ).
pub fn show(bytes: &[u8]) -> String {
    const KEEP: usize = 160;
    let mut s = String::new();
    for &b in bytes.iter().take(KEEP) {
        match b {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    if bytes.len() > KEEP {
        let hash =
            bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100000001b3));
        s.push_str(&format!("… ({} bytes, fnv {hash:016x})", bytes.len()));
    }
    format!("\"{s}\"")
}
