//! The chunked decoder hyper's path hands an HTTP/2 client the data with, against the scanner
//! the fast path relays chunks with: the same bytes are accepted, refused and ended at the same
//! place whatever the pieces they come in, and the data decoded is what the chunk sizes say.
#![no_main]

use bo_gateway::framing::{ChunkedScan, Decoded, Scanned};
use libfuzzer_sys::fuzz_target;

/// Decodes `body` given `step` bytes at a time: the data and where the body ended, or `None`
/// when the framing is refused.
fn decode(body: &[u8], step: usize) -> Option<(Vec<u8>, Option<usize>)> {
    let mut d = ChunkedScan::new();
    let (mut data, mut pending, mut used) = (Vec::new(), Vec::new(), 0);
    for piece in body.chunks(step) {
        pending.extend_from_slice(piece);
        loop {
            match d.decode(&pending) {
                Decoded::Data(0) | Decoded::Framing(0) => break,
                Decoded::Data(n) => {
                    data.extend(pending.drain(..n));
                    used += n;
                }
                Decoded::Framing(n) => {
                    pending.drain(..n);
                    used += n;
                }
                Decoded::End(n) => return Some((data, Some(used + n))),
                Decoded::Invalid => return None,
            }
        }
    }
    Some((data, None))
}

fuzz_target!(|input: &[u8]| {
    let Some((&step, body)) = input.split_first() else { return };
    let scanned = ChunkedScan::new().scan(body);
    let whole = decode(body, body.len().max(1));
    let pieces = decode(body, usize::from(step.max(1)));
    assert_eq!(whole, pieces, "pieces of {step}");
    match (scanned, &whole) {
        (Scanned::Invalid, None) => {}
        (Scanned::End(n), Some((_, Some(end)))) => assert_eq!(n, *end),
        (Scanned::More, Some((_, None))) => {}
        other => panic!("scan and decode disagree: {other:?}"),
    }
    if let Some((data, _)) = whole {
        assert!(data.len() <= body.len());
    }
});
