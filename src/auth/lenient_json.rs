//! The lenient login bodies of SPEC §1: a flat JSON object whose names and string values may be
//! written bare, as the vendor's Gson-style reader accepts and a public Java client sends
//! (`{login:demo,password:secret}`).
//!
//! Used only after `serde_json` has refused a body. It is deliberately small and strict: it reads
//! exactly `{ member (, member)* }` with JSON whitespace, where a name or a value is either a
//! JSON string (decoded by `serde_json` itself) or a bare token. A bare token that is a JSON
//! literal (`null`, `true`, `false`, a number) keeps its JSON meaning, so a body that is valid
//! JSON reads the same here as in `serde_json`; any other bare token is a string. A bare token
//! ends at JSON whitespace, at a JSON delimiter (`{ } [ ] , : "`), at a control character, or at
//! a character Gson treats as one (`\ ' ; = # /`); what follows must then be `,` `}` or `:`.
//! Everything else is refused: nested objects or arrays, a name given twice, an empty bare
//! token, single quotes, comments, `=` or `;` as separators, a trailing comma, anything after the
//! closing `}`, and a body that ends before it (a truncated body is never complete).
//! It reads only the slice it is given, which the caller has already bounded.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// Why a body is not a lenient object; `at` is the byte offset where reading stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at byte {at}")]
pub struct Error {
    pub what: &'static str,
    pub at: usize,
}

/// Reads `bytes` as a lenient object and deserialises it into `T` exactly as `serde_json` would
/// deserialise the equivalent JSON object.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let map = read_object(bytes)?;
    serde_json::from_value(Value::Object(map)).map_err(|_| Error { what: "wrong fields", at: bytes.len() })
}

/// Reads `bytes` as a lenient object: names and scalar values, each name once.
pub fn read_object(bytes: &[u8]) -> Result<Map<String, Value>, Error> {
    let mut r = Reader { bytes, pos: 0 };
    r.skip_ws();
    r.expect(b'{')?;
    let mut map = Map::new();
    r.skip_ws();
    if r.peek() == Some(b'}') {
        r.pos += 1;
        return r.finish(map);
    }
    loop {
        r.skip_ws();
        let at = r.pos;
        let name = match r.scalar()? {
            Value::String(s) => s,
            // A bare literal is still just text when it is a name (`{1:x}` names "1").
            _ => bare_text(&bytes[at..r.pos], at)?,
        };
        r.skip_ws();
        r.expect(b':')?;
        r.skip_ws();
        let value = r.scalar()?;
        if map.insert(name, value).is_some() {
            return Err(Error { what: "a name given twice", at });
        }
        r.skip_ws();
        match r.next() {
            Some(b',') => continue,
            Some(b'}') => return r.finish(map),
            Some(_) => return Err(Error { what: "expected `,` or `}`", at: r.pos - 1 }),
            None => return Err(Error { what: "body ends inside the object", at: r.pos }),
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(is_json_ws) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, want: u8) -> Result<(), Error> {
        match self.next() {
            Some(b) if b == want => Ok(()),
            Some(_) => Err(Error { what: "unexpected character", at: self.pos - 1 }),
            None => Err(Error { what: "body ends inside the object", at: self.pos }),
        }
    }

    /// After the closing `}`: only whitespace.
    fn finish(mut self, map: Map<String, Value>) -> Result<Map<String, Value>, Error> {
        self.skip_ws();
        match self.peek() {
            None => Ok(map),
            Some(_) => Err(Error { what: "trailing characters", at: self.pos }),
        }
    }

    /// A JSON string, or a bare token (a literal keeps its JSON meaning, anything else is text).
    fn scalar(&mut self) -> Result<Value, Error> {
        let start = self.pos;
        match self.peek() {
            None => Err(Error { what: "body ends inside the object", at: start }),
            Some(b'"') => self.string(),
            Some(b'{' | b'[') => Err(Error { what: "nested value", at: start }),
            Some(_) => {
                while self.peek().is_some_and(|b| !ends_bare(b)) {
                    self.pos += 1;
                }
                let token = &self.bytes[start..self.pos];
                if token.is_empty() {
                    return Err(Error { what: "empty value", at: start });
                }
                if is_literal(token) {
                    // Numbers out of range (`1e400`) are refused here, as by `serde_json`.
                    return serde_json::from_slice(token)
                        .map_err(|_| Error { what: "bad number", at: start });
                }
                bare_text(token, start).map(Value::String)
            }
        }
    }

    /// A quoted string: finds its closing quote, then lets `serde_json` check and decode it
    /// (escapes, surrogates, control characters, UTF-8).
    fn string(&mut self) -> Result<Value, Error> {
        let start = self.pos;
        self.pos += 1;
        loop {
            match self.next() {
                None => return Err(Error { what: "body ends inside a string", at: self.pos }),
                Some(b'\\') => {
                    if self.next().is_none() {
                        return Err(Error { what: "body ends inside a string", at: self.pos });
                    }
                }
                Some(b'"') => break,
                Some(_) => {}
            }
        }
        serde_json::from_slice::<String>(&self.bytes[start..self.pos])
            .map(Value::String)
            .map_err(|_| Error { what: "bad string", at: start })
    }
}

fn bare_text(token: &[u8], at: usize) -> Result<String, Error> {
    std::str::from_utf8(token).map(str::to_owned).map_err(|_| Error { what: "not UTF-8", at })
}

fn is_json_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Whether `b` ends a bare token.
fn ends_bare(b: u8) -> bool {
    is_json_ws(b)
        || b < 0x20
        || b == 0x7f
        || matches!(
            b,
            b'{' | b'}' | b'[' | b']' | b',' | b':' | b'"' | b'\\' | b'\'' | b';' | b'=' | b'#' | b'/'
        )
}

/// `null`, `true`, `false`, or a number in JSON's grammar
/// (`-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`).
fn is_literal(t: &[u8]) -> bool {
    if matches!(t, b"null" | b"true" | b"false") {
        return true;
    }
    let mut i = usize::from(t.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let s = *i;
        while t.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - s
    };
    match t.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return false,
    }
    if t.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if matches!(t.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(t.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == t.len()
}

/// The properties the fuzz target and the property tests check on any input, for one body type:
/// never a panic; on a body `serde_json` reads as `T`, the same `T` (unless the body has a nested
/// value or a repeated name, which this reader refuses); on valid JSON that `serde_json` refuses
/// as `T`, refusal too; and no truncation of an accepted body is accepted.
#[doc(hidden)]
pub fn check_against_serde<T>(bytes: &[u8])
where
    T: DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let strict = serde_json::from_slice::<T>(bytes);
    let lenient = from_slice::<T>(bytes);
    match (&strict, &lenient) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "different readings of {:?}", String::from_utf8_lossy(bytes)),
        // serde_json also reads structs from arrays, and objects with nested values or a name
        // twice; this reader takes none of them.
        (Ok(_), Err(e)) => assert!(
            e.what == "a name given twice" || !is_flat_object(bytes),
            "refused what serde_json reads ({e}): {:?}",
            String::from_utf8_lossy(bytes)
        ),
        (Err(_), Ok(_)) => assert!(
            serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err(),
            "accepted valid JSON that serde_json refuses: {:?}",
            String::from_utf8_lossy(bytes)
        ),
        (Err(_), Err(_)) => {}
    }
    if read_object(bytes).is_ok() && bytes.len() <= 1024 {
        let end = bytes.iter().rposition(|b| !is_json_ws(*b)).map_or(0, |i| i + 1);
        for cut in 0..end {
            assert!(read_object(&bytes[..cut]).is_err(), "accepted a truncation at {cut}");
        }
    }
}

fn is_flat_object(bytes: &[u8]) -> bool {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => m.values().all(|v| !v.is_object() && !v.is_array()),
        _ => false,
    }
}

#[cfg(test)]
#[path = "lenient_json_tests.rs"]
mod tests;
