//! The lenient reader of the auth bodies (src/auth/lenient_json.rs) against `serde_json`, for
//! every auth endpoint's body type: the same result on every body `serde_json` accepts, refusal
//! of valid JSON `serde_json` refuses, no truncation of an accepted body accepted, no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bo_gateway::auth::endpoints::check_lenient_bodies(data);
});
