//! Socket.IO packets and the Gru events' arguments (auth, msg, subscribe, online).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsim::proto::gru::{events, socketio};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(socketio::Packet::Event { data, .. }) = socketio::decode(text) {
        for arg in data.iter().skip(1) {
            let _ = events::parse_auth(Some(arg));
            let _ = events::parse_msg(Some(arg));
            let _ = events::parse_groups(Some(arg));
            let _ = events::parse_online(Some(arg));
        }
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = events::parse_auth(Some(&v));
        let _ = events::parse_msg(Some(&v));
        let _ = events::parse_groups(Some(&v));
        let _ = events::parse_online(Some(&v));
    }
});
