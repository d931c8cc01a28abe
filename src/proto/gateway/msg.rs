//! Messages in gateway terms: the `Type` ↔ kind mapping and the MsgData JSON. Pure.
//!
//! Gateway `Type` 1–5 are wsim's kinds (1 text, 2 emotion, 3 picture, 4 audio, 5 video), so a message
//! keeps its meaning across front-ends; any other type is stored as its decimal number and passes
//! through unchanged between gateway clients.

use serde_json::{json, Value};

use super::msgid;
use crate::core::Message;

const KINDS: [(i64, &str); 5] = [(1, "text"), (2, "emotion"), (3, "picture"), (4, "audio"), (5, "video")];

/// The core kind for a gateway `Type`.
pub fn kind_of_type(t: i64) -> String {
    KINDS.iter().find(|(n, _)| *n == t).map(|(_, k)| (*k).to_string()).unwrap_or_else(|| t.to_string())
}

/// The gateway `Type` of a core kind (0 for kinds it has no number for).
pub fn type_of_kind(kind: &str) -> i64 {
    KINDS.iter().find(|(_, k)| *k == kind).map(|(n, _)| *n).unwrap_or_else(|| kind.parse().unwrap_or(0))
}

/// The MsgId of a stored message.
pub fn msg_id(m: &Message) -> String {
    msgid::of_message(m.id, m.conv_type as u8, &m.conv)
}

/// The MsgData object of a stored group message.
pub fn msg_data(m: &Message) -> Value {
    json!({
        "MsgId": msg_id(m),
        "ConversationID": m.conv,
        "FromSession": m.sender,
        "SendTime": m.sent_us,
        "Status": m.status,
        "Type": type_of_kind(&m.kind),
        "Content": m.payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_and_kinds_map_both_ways() {
        for (t, k) in
            [(1, "text"), (2, "emotion"), (3, "picture"), (4, "audio"), (5, "video"), (0, "0"), (42, "42")]
        {
            assert_eq!(kind_of_type(t), k);
            assert_eq!(type_of_kind(k), t);
        }
        assert_eq!(type_of_kind("unknown"), 0);
    }

    #[test]
    fn msg_data_has_the_documented_fields() {
        let m = Message {
            id: crate::domain::ids::id_from_parts(1_697_986_744_068, 1).expect("id"),
            app: "default".into(),
            conv: "87ba7679-b682-47e7-8499-0385dda22b66".into(),
            sender: "test-client-session-id".into(),
            recipient: String::new(),
            kind: "text".into(),
            payload: "消息内容".into(),
            extension: String::new(),
            sent_us: 1_698_119_710_632_897,
            status: 0,
            conv_type: 0,
        };
        assert_eq!(
            msg_data(&m),
            json!({
                "MsgId": "EDCZL-SY32-243Y-VWQ",
                "ConversationID": "87ba7679-b682-47e7-8499-0385dda22b66",
                "FromSession": "test-client-session-id",
                "SendTime": 1_698_119_710_632_897i64,
                "Status": 0,
                "Type": 1,
                "Content": "消息内容",
            })
        );
    }
}
