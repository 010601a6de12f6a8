//! Path normalisation: never panics; whatever it accepts is normal (idempotent, no dot or empty
//! segments, no encoded separators) and starts with `/`.
#![no_main]

use bo_gateway::routes::normalize_path;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else { return };
    let Ok(n) = normalize_path(path) else { return };
    assert!(n.starts_with('/'), "{n:?}");
    assert!(!n.contains("//"), "{n:?}");
    for seg in n.split('/') {
        assert!(seg != "." && seg != "..", "{n:?}");
    }
    let lower = n.to_ascii_lowercase();
    for bad in ["%2f", "%5c", "%00", "\\"] {
        assert!(!lower.contains(bad), "{n:?}");
    }
    let again = normalize_path(&n).expect("a normalised path must normalise");
    assert_eq!(again, n, "not idempotent");
});
