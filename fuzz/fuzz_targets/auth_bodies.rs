//! The JSON bodies of the auth endpoints (login, refresh, OTT verify, settings PATCH).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = bo_gateway::auth::endpoints::parse_any_body(data);
});
