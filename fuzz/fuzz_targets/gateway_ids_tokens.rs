//! Text ids and tokens clients present: gateway MsgIds and JWTs, wsim auth tokens.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use wsim::config::{WsimAuthMode, WsimAuthSettings};
use wsim::proto::gateway::{msgid, token::TokenKeys};
use wsim::proto::wsim::auth::WsimAuth;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(parts) = msgid::decode(text) {
        let _ = msgid::message_id(&parts);
        assert_eq!(msgid::decode(&msgid::encode_parts(&parts)).ok(), Some(parts));
    }
    let keys = TokenKeys::new(b"fuzz", Duration::from_secs(60));
    assert!(keys.verify(text).is_err(), "a token nobody signed");
    let settings = WsimAuthSettings {
        mode: WsimAuthMode::Token,
        secret: String::new(),
        token_ttl: Duration::from_secs(60),
        callback_timeout: Duration::from_secs(1),
        callback_concurrency: 1,
        admin_token: None,
    };
    let auth = WsimAuth::new(&settings, b"fuzz".to_vec());
    assert!(auth.token_owner("default", text, 0).is_err(), "a token nobody signed");
});
