//! The HTTP/1 framing watch: arbitrary client bytes never panic, and how they are split across
//! reads never changes which request it refuses.
#![no_main]

use bo_gateway::framing::{Finding, FramingWatch};
use libfuzzer_sys::fuzz_target;

fn run(parts: &[&[u8]]) -> Finding {
    let mut w = FramingWatch::new(4096, 100);
    for p in parts {
        let f = w.feed(p);
        if f != Finding::Fine {
            return f;
        }
    }
    Finding::Fine
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, stream)) = data.split_first() else { return };
    let whole = run(&[stream]);
    let step = usize::from(step.max(1));
    let pieces: Vec<&[u8]> = stream.chunks(step).collect();
    // Splitting can only differ where the head-size limit cuts a split head short.
    if stream.len() < 4096 {
        assert_eq!(whole, run(&pieces), "split every {step} bytes");
    }
});
