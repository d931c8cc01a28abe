//! Engine.IO packets and polling payloads (text v3/v4, XHR2 binary v3), as clients send them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsim::proto::gru::engineio::{self, Eio};

fuzz_target!(|data: &[u8]| {
    let _ = engineio::decode_binary_payload(data);
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = engineio::decode(text);
    let _ = engineio::undo_utf8_encode(text);
    for v in [Eio::V3, Eio::V4] {
        if let Ok(packets) = engineio::decode_payload(v, text) {
            // What decodes encodes again.
            let again = engineio::encode_payload(v, &packets);
            assert_eq!(engineio::decode_payload(v, &again).ok().as_ref(), Some(&packets));
        }
    }
});
