//! Rendering core values in wsim terms: stored messages as receive frames, core refusals as error
//! frames.

use super::codec::{render_incoming, Incoming, Scope};
use crate::core::{CoreError, Message};

/// The receive frame of `m` as `viewer` sees it. Group: fromgroupid is the group. Direct: fromgroupid
/// is the sender (as documented), except on the sender's own other devices, where it is the
/// recipient so the copy lands in the right conversation.
pub fn incoming_frame(m: &Message, viewer: &str) -> String {
    let (scope, from_group) = match m.group() {
        Some(g) => (Scope::Group, g),
        None if m.sender == viewer => (Scope::Unicast, m.recipient.as_str()),
        None => (Scope::Unicast, m.sender.as_str()),
    };
    // Kinds from other front-ends that wsim clients do not know are shown as text.
    let kind = if super::codec::KINDS.contains(&m.kind.as_str()) { m.kind.as_str() } else { "text" };
    render_incoming(&Incoming {
        kind,
        from: &m.sender,
        payload: &m.payload,
        scope,
        from_group,
        timet: m.sent_us.div_euclid(1_000_000),
        extension: &m.extension,
    })
}

/// Error code and reason for a core refusal.
pub fn error_frame(err: &CoreError) -> (u16, &'static str) {
    match err {
        CoreError::NotMember => (403, "not a member"),
        CoreError::NoSuchGroup => (404, "no such group"),
        CoreError::BadId => (400, "bad id"),
        CoreError::Busy => (503, "server busy"),
        CoreError::Storage => (500, "internal error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(recipient: &str, conv: &str) -> Message {
        Message {
            id: 1,
            app: "default".into(),
            conv: conv.into(),
            sender: "alice".into(),
            recipient: recipient.into(),
            kind: "picture".into(),
            payload: "http://x/a_b.jpg".into(),
            extension: "e30=".into(),
            sent_us: 1_700_000_000_999_999,
            status: 0,
            conv_type: 0,
        }
    }

    #[test]
    fn renders_for_each_viewer() {
        let direct = msg("bob", "alice\nbob");
        assert_eq!(
            incoming_frame(&direct, "bob"),
            "picture_alice_http://x/a_b.jpg_unicast_alice_1700000000_e30="
        );
        assert_eq!(
            incoming_frame(&direct, "alice"),
            "picture_alice_http://x/a_b.jpg_unicast_bob_1700000000_e30="
        );
        let group = msg("", "10");
        assert_eq!(incoming_frame(&group, "bob"), "picture_alice_http://x/a_b.jpg_group_10_1700000000_e30=");
    }

    #[test]
    fn foreign_kinds_render_as_text() {
        let mut m = msg("", "10");
        m.kind = "42".into();
        assert!(incoming_frame(&m, "bob").starts_with("text_alice_"));
    }

    #[test]
    fn every_refusal_has_a_code() {
        for (e, code) in [
            (CoreError::NotMember, 403),
            (CoreError::NoSuchGroup, 404),
            (CoreError::BadId, 400),
            (CoreError::Busy, 503),
            (CoreError::Storage, 500),
        ] {
            let (c, reason) = error_frame(&e);
            assert_eq!(c, code);
            assert!(!reason.contains('_'));
        }
    }
}
