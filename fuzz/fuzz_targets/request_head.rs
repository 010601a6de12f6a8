//! The fast path's request-head parser against the framing watch, hyper's path's judge of the
//! same bytes: whatever the bytes, both find the same head unreadable for the same reason, or
//! neither does; and the parser never panics or reads past what it was given.
#![no_main]

use bo_gateway::fastpath_fuzzing::{HeadVerdict, request_head};
use bo_gateway::framing::{Finding, FramingWatch};
use libfuzzer_sys::fuzz_target;

const MAX_HEAD: usize = 2048;
const MAX_HEADERS: usize = 24;

fuzz_target!(|data: &[u8]| {
    let fast = request_head(data, MAX_HEAD, MAX_HEADERS);
    let mut watch = FramingWatch::new(MAX_HEAD, MAX_HEADERS);
    let found = watch.feed(data);
    match &fast {
        HeadVerdict::Unreadable(why) => {
            assert_eq!(found, Finding::Unreadable { at: 0, why: *why }, "fast path: {fast:?}");
        }
        HeadVerdict::Complete { len, .. } => {
            assert!(*len <= data.len() && *len <= MAX_HEAD);
            assert!(!matches!(found, Finding::Unreadable { at: 0, .. }), "watch: {found:?}");
        }
        HeadVerdict::Partial | HeadVerdict::Unfit => {
            assert!(!matches!(found, Finding::Unreadable { at: 0, .. }), "fast path: {fast:?}, watch: {found:?}");
        }
    }
});
