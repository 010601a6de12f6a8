//! A watch on the HTTP/1 request framing a client sends, for the ambiguities hyper resolves
//! silently (RFC 9112 §6.3 allows both): it merges identical duplicate `Content-Length` headers,
//! and it frames a request carrying both `Content-Length` and `Transfer-Encoding` as chunked. A
//! gateway in front of other parsers refuses both, as nginx and Envoy do (issue 3). The watch
//! reads the same bytes hyper reads, follows each request's body framing to find the next head,
//! and names the first ambiguous request; the service answers that one with 400 and closes the
//! connection.
//!
//! It also names the first head nobody can read (`Finding::Unreadable`), by the same rule the
//! fast path reads heads with ([`unreadable_head`]), so hyper's path answers it with the SPEC's
//! error body instead of hyper's empty 400 or 431.
//!
//! The fast path parses and frames its own requests by the same rules (it leaves any request
//! with `Transfer-Encoding` or more than one `Content-Length` to hyper's path), so the watch
//! does not read what the fast path reads: it [`resumes`](FramingWatch::resume) at the head the
//! fast path hands on, counting the requests served before it.
//!
//! It fails open: on anything it cannot follow (HTTP/2, an upgrade) it stops watching, so it
//! never refuses what hyper would have framed differently.

use std::mem::MaybeUninit;

/// Header fields parsed per request head, by the watch and the fast path alike: httparse stops
/// at the first error in order, so parsers with arrays of different sizes would refuse one
/// head for different reasons (found by the `request_head` fuzz target). More fields are
/// refused (431) unless `max_headers` allows more (then hyper's path reads the head).
pub const MAX_HEADERS: usize = 256;

/// `b` without leading and trailing spaces and tabs (HTTP's optional whitespace).
pub fn trim_spaces(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

/// A `Content-Length` value: ASCII digits only (no sign, space or list), fitting in a u64.
/// Leading zeros are read as the number they pad, as every HTTP parser does.
pub fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |n, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before (or inside) a request head.
    Head,
    /// Inside a body of known length: bytes left.
    Body(u64),
    Chunked(ChunkedScan),
    /// Not following this connection any more.
    Off,
}

/// Follows a chunked body (sizes, extensions, data, trailers) to its end without decoding it:
/// the watch uses it for request bodies, the fast path for the response bodies it relays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkedScan(Chunk);

/// Where a chunked body stands after the bytes given to [`ChunkedScan::scan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scanned {
    /// All of them belong to the body, which goes on.
    More,
    /// The body ended after this many of them.
    End(usize),
    /// Its last chunk's line ended after this many of them; the trailer section follows
    /// (only from [`ChunkedScan::scan_to_last`]).
    Last(usize),
    /// They are not chunked framing.
    Invalid,
}

/// The end of a chunked body: the last chunk and an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Appends `data` to `out` as one chunk of a chunked body (RFC 9112 §7.1); `data` not empty.
pub fn write_chunk(out: &mut Vec<u8>, data: &[u8]) {
    let mut size = [0u8; 16];
    let mut i = size.len();
    let mut n = data.len();
    loop {
        i -= 1;
        size[i] = b"0123456789abcdef"[n % 16];
        n /= 16;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&size[i..]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// What [`ChunkedScan::decode`] found at the start of the bytes given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// This many of them are chunk data (0: none given).
    Data(usize),
    /// This many of them are framing (sizes, extensions, line ends); data may follow.
    Framing(usize),
    /// The body ended after this many of them (its trailer section read past, not kept).
    End(usize),
    /// They are not chunked framing.
    Invalid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// In a chunk size: the size so far and its digit count.
    Size {
        size: u64,
        digits: u8,
    },
    /// Whitespace after the size: only an extension or the line end may follow.
    SizeBws {
        size: u64,
    },
    /// In a chunk extension, up to the line end.
    Ext {
        size: u64,
    },
    SizeLf {
        size: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line (after the last chunk).
    TrailerStart,
    TrailerLine,
    TrailerLf,
    TrailerEndLf,
}

/// Follows the request framing of one HTTP/1 connection.
#[derive(Debug)]
pub struct FramingWatch {
    state: State,
    /// A head split across reads, kept until it is complete.
    partial: Vec<u8>,
    /// Index (0-based) of the request whose head comes next.
    index: u64,
    max_head: usize,
    max_headers: usize,
    /// Bytes fed so far, and where (in that count) the current head began.
    fed: u64,
    head_start: u64,
}

/// What the watch found in the bytes it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finding {
    /// Nothing to refuse.
    Fine,
    /// The request with this index (0-based, in order of arrival) repeats `Content-Length` or
    /// sends it with `Transfer-Encoding`.
    Ambiguous(u64),
    /// The head that begins at this offset in the connection's bytes cannot be read.
    Unreadable { at: u64, why: Unreadable },
}

/// Why a request head cannot be read: 400 or 431, and the connection closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    Malformed(&'static str),
    TooLarge,
}

impl Unreadable {
    pub fn into_error(self) -> crate::error::GatewayError {
        match self {
            Unreadable::Malformed(why) => crate::error::GatewayError::Malformed(why.into()),
            Unreadable::TooLarge => crate::error::GatewayError::HeadTooLarge,
        }
    }
}

/// The one rule for a complete request head that nobody can read, whichever transport meets
/// it: more header fields than `max_headers`, a head over `max_head` bytes, a `Content-Length`
/// that is not one number, a `Transfer-Encoding` other than `chunked`. (A head httparse cannot
/// parse at all is unreadable too: [`malformed_why`].)
pub fn unreadable_head(
    req: &httparse::Request<'_, '_>,
    len: usize,
    max_head: usize,
    max_headers: usize,
) -> Option<Unreadable> {
    if req.headers.len() > max_headers || len > max_head {
        return Some(Unreadable::TooLarge);
    }
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            if parse_length(h.value).is_none() {
                return Some(Unreadable::Malformed("Content-Length is not one number"));
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding")
            && !trim_spaces(h.value).eq_ignore_ascii_case(b"chunked")
        {
            return Some(Unreadable::Malformed("transfer codings other than one chunked"));
        }
    }
    None
}

/// Why httparse could not read a request head; `None` for an HTTP/2 preface (not a head at all:
/// hyper's to read).
pub fn malformed_why(e: httparse::Error, buf: &[u8]) -> Option<Unreadable> {
    Some(match e {
        httparse::Error::Version if buf.starts_with(b"PRI * HTTP/2.0") => return None,
        httparse::Error::TooManyHeaders => Unreadable::TooLarge,
        httparse::Error::HeaderName => Unreadable::Malformed("invalid header name"),
        httparse::Error::HeaderValue => Unreadable::Malformed("invalid header value"),
        httparse::Error::NewLine => Unreadable::Malformed("invalid line ending"),
        httparse::Error::Token => Unreadable::Malformed("invalid request line"),
        _ => Unreadable::Malformed("unparseable request head"),
    })
}

impl FramingWatch {
    pub fn new(max_head: usize, max_headers: usize) -> Self {
        Self {
            state: State::Head,
            partial: Vec::new(),
            index: 0,
            max_head,
            max_headers,
            fed: 0,
            head_start: 0,
        }
    }

    /// Starts watching again at a head boundary: the head of request `index` begins at offset
    /// `fed` of the connection's bytes. The fast path reads and frames its own requests (the
    /// same rules), so the watch takes over only where the fast path hands the connection on.
    pub fn resume(&mut self, fed: u64, index: u64) {
        self.state = State::Head;
        self.partial.clear();
        self.index = index;
        self.fed = fed;
        self.head_start = fed;
    }

    pub fn is_off(&self) -> bool {
        self.state == State::Off
    }

    /// Whether part of a request head has arrived and the rest has not: the time a client takes
    /// to finish it is what the header read timeout bounds.
    pub fn head_pending(&self) -> bool {
        self.state == State::Head && !self.partial.is_empty()
    }

    /// Where (in the bytes fed) the head whose end has not arrived yet began, if one has.
    pub fn pending_head_start(&self) -> Option<u64> {
        self.head_pending().then_some(self.head_start)
    }

    /// Feeds the next bytes read from the client.
    pub fn feed(&mut self, mut data: &[u8]) -> Finding {
        let end = self.fed + data.len() as u64;
        while !data.is_empty() {
            let at = end - data.len() as u64;
            self.fed = at;
            match self.state {
                State::Off => break,
                State::Head => {
                    if self.partial.is_empty() {
                        self.head_start = at;
                    }
                    match self.head(data) {
                        Step::Consumed(n) => data = &data[n..],
                        Step::Found(f) => {
                            self.off();
                            return f;
                        }
                    }
                }
                State::Body(left) => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(data.len());
                    data = &data[n..];
                    let left = left - n as u64;
                    self.state = if left == 0 { State::Head } else { State::Body(left) };
                }
                State::Chunked(c) => {
                    let n = self.chunked(c, data);
                    data = &data[n..];
                }
            }
        }
        self.fed = end;
        Finding::Fine
    }

    fn off(&mut self) {
        self.state = State::Off;
        self.partial = Vec::new();
    }

    /// Reads (part of) a head; returns how much of `data` it used.
    fn head(&mut self, data: &[u8]) -> Step {
        if self.partial.is_empty() {
            return match self.parse(data) {
                Parsed::Complete(n) => Step::Consumed(n),
                Parsed::Partial if !self.keep(data, 0) => self.unreadable(Unreadable::TooLarge),
                Parsed::Partial => Step::Consumed(data.len()),
                Parsed::Found(f) => Step::Found(f),
            };
        }
        // Only a line ending can complete a head: skip the re-parse otherwise, so a head sent a
        // byte at a time costs linear, not quadratic, work.
        let had = self.partial.len();
        if !self.keep(data, had) {
            return self.unreadable(Unreadable::TooLarge);
        }
        if !data.contains(&b'\n') {
            return Step::Consumed(data.len());
        }
        let partial = std::mem::take(&mut self.partial);
        match self.parse(&partial) {
            Parsed::Complete(n) => {
                // The head ended inside `data`: what follows it there is body or the next head.
                Step::Consumed(n.saturating_sub(had))
            }
            Parsed::Partial => {
                self.partial = partial;
                Step::Consumed(data.len())
            }
            Parsed::Found(f) => Step::Found(f),
        }
    }

    /// Keeps `data` as part of a split head; false past the head size limit (431, as the fast
    /// path answers a head still incomplete there).
    fn keep(&mut self, data: &[u8], had: usize) -> bool {
        if had + data.len() > self.max_head {
            return false;
        }
        self.partial.extend_from_slice(data);
        true
    }

    fn unreadable(&self, why: Unreadable) -> Step {
        Step::Found(Finding::Unreadable { at: self.head_start, why })
    }

    fn parse(&mut self, buf: &[u8]) -> Parsed {
        let mut headers = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        let len = match req.parse_with_uninit_headers(buf, &mut headers) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Parsed::Partial,
            Err(e) => {
                return match malformed_why(e, buf) {
                    Some(why) => Parsed::Found(Finding::Unreadable { at: self.head_start, why }),
                    None => {
                        self.off();
                        Parsed::Complete(buf.len())
                    }
                };
            }
        };
        if let Some(why) = unreadable_head(&req, len, self.max_head, self.max_headers) {
            return Parsed::Found(Finding::Unreadable { at: self.head_start, why });
        }
        let index = self.index;
        self.index += 1;
        let (mut lengths, mut length, mut chunked, mut upgrade) = (0usize, None, false, false);
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                lengths += 1;
                length = parse_length(h.value);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = true;
            } else if h.name.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            }
        }
        if lengths > 1 || (lengths > 0 && chunked) {
            return Parsed::Found(Finding::Ambiguous(index));
        }
        // After a possible 101 (Upgrade, CONNECT) the bytes are not HTTP any more.
        let next = match (upgrade || req.method == Some("CONNECT"), chunked, lengths, length) {
            (true, ..) => None,
            // A Transfer-Encoding hyper does not frame as chunked is refused by hyper itself.
            (_, true, ..) => Some(State::Chunked(ChunkedScan::new())),
            (_, _, 0, _) | (.., Some(0)) => Some(State::Head),
            (.., Some(n)) => Some(State::Body(n)),
            (.., None) => None,
        };
        match next {
            Some(state) => {
                self.state = state;
                Parsed::Complete(len)
            }
            None => {
                self.off();
                Parsed::Complete(buf.len())
            }
        }
    }

    /// Follows a chunked body; returns how much of `data` it used.
    fn chunked(&mut self, mut scan: ChunkedScan, data: &[u8]) -> usize {
        match scan.scan(data) {
            Scanned::More => {
                self.state = State::Chunked(scan);
                data.len()
            }
            Scanned::End(n) => {
                self.state = State::Head;
                n
            }
            Scanned::Last(n) => {
                self.state = State::Chunked(scan);
                n
            }
            Scanned::Invalid => self.stop(data.len()),
        }
    }

    fn stop(&mut self, n: usize) -> usize {
        self.off();
        n
    }
}

impl Default for ChunkedScan {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedScan {
    pub fn new() -> Self {
        Self(Chunk::Size { size: 0, digits: 0 })
    }

    /// Follows the next bytes of the body. Lines end in CRLF (a bare LF is not framing here:
    /// parsers differ on it), a size has 1 to 16 hex digits, and only an extension (`;...`),
    /// optionally after whitespace, may follow it.
    pub fn scan(&mut self, data: &[u8]) -> Scanned {
        self.run(data, false)
    }

    /// As [`ChunkedScan::scan`], but stops after the last chunk's line (`Scanned::Last`), so
    /// the caller can leave out the trailer section; scanning on with `scan` follows it.
    pub fn scan_to_last(&mut self, data: &[u8]) -> Scanned {
        self.run(data, true)
    }

    /// Decodes a chunked body by the same rules: where the chunk data at the start of `data`
    /// ends, or how much framing comes before the next data. For a body whose data is taken
    /// out (hyper's path hands an HTTP/2 client the data, not the chunks).
    pub fn decode(&mut self, data: &[u8]) -> Decoded {
        let mut i = 0;
        loop {
            if let Chunk::Data(left) = self.0 {
                if i > 0 {
                    return Decoded::Framing(i);
                }
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(data.len());
                let left = left - n as u64;
                self.0 = if left == 0 { Chunk::DataCr } else { Chunk::Data(left) };
                return Decoded::Data(n);
            }
            if i == data.len() {
                return Decoded::Framing(i);
            }
            // Framing a byte at a time: a few bytes per chunk, the same transitions as `scan`.
            match self.run(&data[i..=i], false) {
                Scanned::More => i += 1,
                Scanned::End(_) => return Decoded::End(i + 1),
                Scanned::Last(_) | Scanned::Invalid => return Decoded::Invalid,
            }
        }
    }

    fn run(&mut self, data: &[u8], stop_at_last: bool) -> Scanned {
        let mut c = self.0;
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            i += 1;
            c = match (c, b) {
                (Chunk::Size { size, digits }, _) if b.is_ascii_hexdigit() && digits < 16 => {
                    let d = u64::from((b as char).to_digit(16).unwrap_or(0));
                    Chunk::Size { size: size * 16 + d, digits: digits + 1 }
                }
                (Chunk::Size { digits: 0, .. }, _) => return Scanned::Invalid,
                (Chunk::Size { size, .. } | Chunk::SizeBws { size } | Chunk::Ext { size }, b'\r') => {
                    Chunk::SizeLf { size }
                }
                (Chunk::Size { size, .. } | Chunk::SizeBws { size }, b' ' | b'\t') => Chunk::SizeBws { size },
                (Chunk::Size { size, .. } | Chunk::SizeBws { size }, b';') => Chunk::Ext { size },
                (Chunk::Ext { .. }, b'\n') => return Scanned::Invalid,
                (Chunk::Ext { .. }, _) => c,
                (Chunk::SizeLf { size: 0 }, b'\n') if stop_at_last => {
                    self.0 = Chunk::TrailerStart;
                    return Scanned::Last(i);
                }
                (Chunk::SizeLf { size }, b'\n') => Self::after_size(size),
                (Chunk::Data(left), _) => {
                    let n = usize::try_from(left - 1).unwrap_or(usize::MAX).min(data.len() - i);
                    i += n;
                    let left = left - 1 - n as u64;
                    if left == 0 { Chunk::DataCr } else { Chunk::Data(left) }
                }
                (Chunk::DataCr, b'\r') => Chunk::DataLf,
                (Chunk::DataLf, b'\n') => Chunk::Size { size: 0, digits: 0 },
                (Chunk::TrailerStart, b'\r') => Chunk::TrailerEndLf,
                (Chunk::TrailerStart | Chunk::TrailerLine, b'\n') => return Scanned::Invalid,
                (Chunk::TrailerLine, b'\r') => Chunk::TrailerLf,
                (Chunk::TrailerStart | Chunk::TrailerLine, _) => Chunk::TrailerLine,
                (Chunk::TrailerLf, b'\n') => Chunk::TrailerStart,
                (Chunk::TrailerEndLf, b'\n') => return Scanned::End(i),
                _ => return Scanned::Invalid,
            };
        }
        self.0 = c;
        Scanned::More
    }

    fn after_size(size: u64) -> Chunk {
        if size == 0 { Chunk::TrailerStart } else { Chunk::Data(size) }
    }
}

enum Step {
    Consumed(usize),
    Found(Finding),
}

enum Parsed {
    Complete(usize),
    Partial,
    Found(Finding),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(parts: &[&[u8]]) -> (Finding, FramingWatch) {
        let mut w = FramingWatch::new(65536, 100);
        for p in parts {
            let f = w.feed(p);
            if f != Finding::Fine {
                return (f, w);
            }
        }
        (Finding::Fine, w)
    }

    #[test]
    fn a_resumed_watch_counts_from_where_the_fast_path_handed_on() {
        // The fast path served 3 requests (120 bytes) without the watch, which then resumes
        // in the middle of a body it never saw: it must not take that body for a head.
        let mut w = FramingWatch::new(65536, 100);
        w.feed(b"POST /a HTTP/1.1\r\nContent-Length: 40\r\n\r\nGET /x HTTP/1.1\r\n");
        w.resume(120, 3);
        assert!(!w.head_pending());
        let two = b"POST /b HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx";
        assert_eq!(w.feed(two), Finding::Ambiguous(3));
        let mut w = FramingWatch::new(65536, 100);
        w.resume(120, 3);
        w.feed(b"GET /c HTTP/1.1\r\nHost: a\r\n");
        assert_eq!(w.pending_head_start(), Some(120));
        assert_eq!(
            w.feed(b"Bad Header\r\n\r\n"),
            Finding::Unreadable { at: 120, why: Unreadable::Malformed("invalid header name") }
        );
    }

    #[test]
    fn a_head_is_pending_from_its_first_byte_to_its_end() {
        let mut w = FramingWatch::new(65536, 100);
        assert!(!w.head_pending());
        w.feed(b"POST /a HTTP/1.1\r\nHost: a\r\n");
        assert!(w.head_pending());
        w.feed(b"Content-Length: 4\r\n\r\nab");
        assert!(!w.head_pending(), "inside the body");
        w.feed(b"cdGET /b HTTP/1.1\r\n");
        assert!(w.head_pending(), "the next head started in the same read");
        w.feed(b"\r\n");
        assert!(!w.head_pending());
        w.feed(b"GET /c HTTP/1.1\r\nUpgrade: websocket\r\n\r\nframes");
        assert!(w.is_off() && !w.head_pending(), "after an upgrade nothing is a head");
    }

    const DUP: &[u8] = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\nhello";

    #[test]
    fn a_repeated_content_length_is_found_in_its_request() {
        assert_eq!(feed_all(&[DUP]).0, Finding::Ambiguous(0));
        let both = b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n";
        assert_eq!(feed_all(&[both]).0, Finding::Ambiguous(0));
    }

    #[test]
    fn the_index_follows_pipelined_bodies_of_every_framing() {
        let mut stream = Vec::new();
        stream.extend_from_slice(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n");
        let inner = b"GET /c HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"; // a body
        stream.extend_from_slice(
            format!("POST /b HTTP/1.1\r\nContent-Length: {}\r\n\r\n", inner.len()).as_bytes(),
        );
        stream.extend_from_slice(inner);
        stream.extend_from_slice(b"POST /d HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        stream.extend_from_slice(b"4;ext=1\r\nab\r\n\r\n0\r\nX-Trailer: Content-Length: 1\r\n\r\n");
        stream.extend_from_slice(b"\r\nGET /e HTTP/1.1\n\n");
        stream.extend_from_slice(DUP);
        // Whole, and one byte at a time: the same finding.
        assert_eq!(feed_all(&[&stream]).0, Finding::Ambiguous(4));
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(feed_all(&bytes).0, Finding::Ambiguous(4));
        let sevens: Vec<&[u8]> = stream.chunks(7).collect();
        assert_eq!(feed_all(&sevens).0, Finding::Ambiguous(4));
    }

    #[test]
    fn it_stops_watching_what_it_cannot_follow() {
        for start in [
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            let (f, w) = feed_all(&[start, DUP]);
            assert_eq!(f, Finding::Fine, "{}", String::from_utf8_lossy(start));
            assert!(w.is_off());
        }
    }

    /// Decodes `body` given in pieces of `piece` bytes: the data, or `Err` for bad framing.
    fn decode_all(body: &[u8], piece: usize) -> Result<Vec<u8>, ()> {
        let mut d = ChunkedScan::new();
        let (mut data, mut pending) = (Vec::new(), Vec::new());
        for part in body.chunks(piece) {
            pending.extend_from_slice(part);
            loop {
                match d.decode(&pending) {
                    Decoded::Data(0) | Decoded::Framing(0) => break,
                    Decoded::Data(n) => data.extend(pending.drain(..n)),
                    Decoded::Framing(n) => drop(pending.drain(..n)),
                    Decoded::End(_) => return Ok(data),
                    Decoded::Invalid => return Err(()),
                }
            }
        }
        Ok(data)
    }

    #[test]
    fn written_chunks_decode_back() {
        let mut body = Vec::new();
        for piece in [&b"x"[..], &[b'y'; 0x1a][..], &[b'z'; 4096][..]] {
            write_chunk(&mut body, piece);
        }
        assert!(body.starts_with(b"1\r\nx\r\n1a\r\n"));
        body.extend_from_slice(LAST_CHUNK);
        assert_eq!(ChunkedScan::new().scan(&body), Scanned::End(body.len()));
        assert_eq!(decode_all(&body, 7).map(|d| d.len()), Ok(1 + 0x1a + 4096));
    }

    #[test]
    fn decoding_takes_the_data_out_of_the_chunks() {
        let body = b"5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n";
        for piece in [1, 2, 5, body.len()] {
            assert_eq!(decode_all(body, piece).as_deref(), Ok(&b"hello 0123456789"[..]), "pieces of {piece}");
        }
        let mut d = ChunkedScan::new();
        assert_eq!(d.decode(b"3\r\nab"), Decoded::Framing(3));
        assert_eq!(d.decode(b"ab"), Decoded::Data(2));
        assert_eq!(d.decode(b"c\r\n0\r\n\r\nNEXT"), Decoded::Data(1));
        assert_eq!(d.decode(b"\r\n0\r\n\r\nNEXT"), Decoded::End(7));
        assert_eq!(ChunkedScan::new().decode(b"3\nabc"), Decoded::Invalid);
    }

    #[test]
    fn the_chunk_scanner_takes_strict_framing_only() {
        let scan = |body: &[u8]| {
            let scanned = ChunkedScan::new().scan(body);
            // Decoding follows the same framing, whatever the pieces it is given.
            for piece in [1, 3, body.len().max(1)] {
                let decoded = decode_all(body, piece);
                match scanned {
                    Scanned::End(n) if n == body.len() => assert!(decoded.is_ok(), "{body:?}"),
                    Scanned::Invalid => assert_eq!(decoded, Err(()), "{body:?}"),
                    _ => {}
                }
            }
            scanned
        };
        let good: &[&[u8]] = &[
            b"5\r\nhello\r\n0\r\n\r\n",
            b"5;ext=1\r\nhello\r\n0 ;last\r\nX-T: 1\r\n\r\n",
            b"A \r\n0123456789\r\n0\r\n\r\n",
        ];
        for body in good {
            assert_eq!(scan(body), Scanned::End(body.len()), "{}", String::from_utf8_lossy(body));
        }
        let mut with_rest = b"0\r\n\r\nHTTP/1.1".to_vec();
        assert_eq!(scan(&with_rest), Scanned::End(5));
        with_rest.truncate(3);
        assert_eq!(scan(&with_rest), Scanned::More);
        for bad in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhello\n0\r\n\r\n",
            b"5 junk\r\nhello\r\n0\r\n\r\n",
            b"\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXY0\r\n\r\n",
            b"0\r\nX-T: 1\n\r\n",
            b"11111111111111111\r\n",
            b"-5\r\n",
        ] {
            assert_eq!(scan(bad), Scanned::Invalid, "{}", String::from_utf8_lossy(bad));
        }
        // Split anywhere, the same end.
        let body = good[1];
        for cut in 1..body.len() {
            let mut s = ChunkedScan::new();
            assert_eq!(s.scan(&body[..cut]), Scanned::More, "cut at {cut}");
            assert_eq!(s.scan(&body[cut..]), Scanned::End(body.len() - cut), "cut at {cut}");
        }
    }

    #[test]
    fn an_endless_head_is_refused_at_the_limit() {
        let mut w = FramingWatch::new(1024, 100);
        w.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n");
        let mut found = Finding::Fine;
        for _ in 0..1000 {
            found = w.feed(b"X-A: b\r\n");
            if found != Finding::Fine {
                break;
            }
        }
        let at = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".len() as u64;
        assert_eq!(found, Finding::Unreadable { at, why: Unreadable::TooLarge }, "the second head's start");
        assert!(w.is_off());
        assert!(w.partial.capacity() == 0);
    }

    #[test]
    fn unreadable_heads_are_found_where_they_begin_by_the_fast_paths_rule() {
        let first = b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc".as_slice();
        for bad in [
            &b"GET /b HTTP/1.1\r\nX Space: a\r\n\r\n"[..],
            b"POST /b HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
            b"POST /b HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\n",
            b"POST /b HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"GET /b HTTP/1.2\r\n\r\n",
        ] {
            let stream = [first, bad].concat();
            for size in [1, 7, stream.len()] {
                let mut w = FramingWatch::new(65536, 100);
                let found = stream.chunks(size).map(|c| w.feed(c)).find(|f| *f != Finding::Fine);
                assert!(
                    matches!(found, Some(Finding::Unreadable { at, why: Unreadable::Malformed(_) }) if at == first.len() as u64),
                    "{:?} in pieces of {size}: {found:?}",
                    String::from_utf8_lossy(bad)
                );
            }
        }
        let many: String = (0..101).map(|i| format!("x-{i}: 1\r\n")).collect();
        let mut w = FramingWatch::new(65536, 100);
        let found = w.feed(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes());
        assert_eq!(found, Finding::Unreadable { at: 0, why: Unreadable::TooLarge });
        let mut w = FramingWatch::new(65536, 100);
        assert_eq!(
            w.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Finding::Fine,
            "an HTTP/2 preface is no head"
        );
        assert!(w.is_off());
    }
}
