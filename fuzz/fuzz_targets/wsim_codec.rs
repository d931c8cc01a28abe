//! `/entry` frames as a client sends them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsim::proto::wsim::codec;

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = std::str::from_utf8(data) else { return };
    if let Ok(codec::Signal::Login(arg)) = codec::parse(frame) {
        // The shapes the connection then splits.
        let _ = arg.rsplit_once('_');
    }
});
