//! What longweb's clients send: /sendmessage bodies, /ws/onsocket queries, JSONP callback names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsim::domain::message::valid_id;
use wsim::proto::longweb::{params, valid_callback};

fuzz_target!(|data: &[u8]| {
    if let Ok(push) = params::parse_push(data) {
        assert!(!push.content.is_empty());
        assert!(push.group.is_empty() || valid_id(&push.group));
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    let p = params::socket_params(text);
    assert!(p.groups.iter().all(|g| valid_id(g)));
    let _ = valid_callback(text);
});
