//! What a push notification says, and the request that carries them. Pure: no I/O.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use crate::domain::message::Message;

/// Newest messages of a conversation read to count a recipient's unread ones; more count as this.
pub const UNREAD_WINDOW: i64 = 100;

/// The conversation a notification is about, from the recipient's side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conversation {
    /// `direct` (one to one: `id` is the other user) or `group` (a wsim group or a gateway
    /// conversation: `id` is its id).
    pub kind: &'static str,
    pub id: String,
    /// The gateway's conversation type (0 for wsim groups and direct messages).
    #[serde(rename = "type")]
    pub conv_type: i32,
}

/// One notification: a stored message waits for `recipient`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notification {
    pub app: String,
    pub recipient: String,
    pub sender: String,
    pub conversation: Conversation,
    /// The message kind as its front-end named it (wsim: text, emotion, picture, audio, video).
    pub kind: String,
    /// The text, cut to the configured length (with "…"); for media, its kind in brackets.
    pub preview: String,
    /// The media's URL (media kinds only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The stored message's id (a decimal 64-bit number, as a string).
    pub message_id: String,
    /// Send time, milliseconds since the Unix epoch.
    pub sent_ms: i64,
    /// The recipient's unread messages in the conversation, this one included (at most
    /// [`UNREAD_WINDOW`]).
    pub unread: u32,
}

const MEDIA: [&str; 3] = ["picture", "audio", "video"];

/// The preview of a message and, for media, its URL.
pub fn preview(kind: &str, payload: &str, chars: usize) -> (String, Option<String>) {
    if MEDIA.contains(&kind) {
        let url = Some(payload.to_string()).filter(|u| !u.is_empty());
        return (format!("[{kind}]"), url);
    }
    if payload.chars().count() <= chars {
        return (payload.to_string(), None);
    }
    let cut: String = payload.chars().take(chars).collect();
    (format!("{cut}…"), None)
}

/// `user`'s unread messages among `recent` (id, sender), given its watermark: those above it that
/// others sent.
pub fn unread(recent: &[(i64, String)], watermark: i64, user: &str) -> u32 {
    let n = recent.iter().filter(|(id, sender)| *id > watermark && sender != user).count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The notification of `m` for `recipient`.
pub fn notification(m: &Message, recipient: &str, unread: u32, preview_chars: usize) -> Notification {
    let conversation = if m.recipient.is_empty() {
        Conversation { kind: "group", id: m.conv.clone(), conv_type: m.conv_type }
    } else {
        Conversation { kind: "direct", id: m.sender.clone(), conv_type: m.conv_type }
    };
    let (preview, url) = preview(&m.kind, &m.payload, preview_chars);
    Notification {
        app: m.app.clone(),
        recipient: recipient.to_string(),
        sender: m.sender.clone(),
        conversation,
        kind: m.kind.clone(),
        preview,
        url,
        message_id: m.id.to_string(),
        sent_ms: m.sent_us / 1000,
        unread,
    }
}

/// The request body: `{"notifications":[…]}`.
pub fn body(batch: &[Notification]) -> String {
    #[derive(Serialize)]
    struct Body<'a> {
        notifications: &'a [Notification],
    }
    serde_json::to_string(&Body { notifications: batch }).unwrap_or_else(|_| "{\"notifications\":[]}".into())
}

/// The `X-Wsim-Signature` of a body: `sha256=<hex HMAC-SHA256>`.
pub fn signature(secret: &str, body: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else { return String::new() };
    mac.update(body.as_bytes());
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Who was notified of what conversation when: at most one notification per (app, recipient,
/// conversation) per quiet period.
#[derive(Debug)]
pub struct Quiet {
    period: Duration,
    last: HashMap<(String, String, String), Instant>,
    /// Size at which the expired entries are forgotten next (twice what was left the last time, so
    /// pruning stays linear however many recipients are quiet at once).
    prune_at: usize,
}

/// Past this many remembered notifications, the expired ones are forgotten.
const QUIET_PRUNE_AT: usize = 10_000;

impl Quiet {
    pub fn new(period: Duration) -> Quiet {
        Quiet { period, last: HashMap::new(), prune_at: QUIET_PRUNE_AT }
    }

    /// Whether a notification for `key` may go at `now` (the last one is at least a period old).
    pub fn allows(&self, key: &(String, String, String), now: Instant) -> bool {
        self.last.get(key).is_none_or(|t| now.duration_since(*t) >= self.period)
    }

    /// Records a notification for `key` at `now`.
    pub fn sent(&mut self, key: (String, String, String), now: Instant) {
        if self.last.len() >= self.prune_at {
            let period = self.period;
            self.last.retain(|_, t| now.duration_since(*t) < period);
            self.prune_at = (self.last.len() * 2).max(QUIET_PRUNE_AT);
        }
        self.last.insert(key, now);
    }

    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: &str, payload: &str, recipient: &str) -> Message {
        Message {
            id: 7_000_000_123,
            app: "default".into(),
            conv: if recipient.is_empty() { "10".into() } else { format!("alice\n{recipient}") },
            sender: "alice".into(),
            recipient: recipient.into(),
            kind: kind.into(),
            payload: payload.into(),
            extension: String::new(),
            sent_us: 1_764_000_000_123_456,
            status: 0,
            conv_type: 0,
        }
    }

    #[test]
    fn previews_cut_text_and_name_media() {
        type Case<'a> = (&'a str, &'a str, usize, (&'a str, Option<&'a str>));
        let cases: Vec<Case<'_>> = vec![
            ("text", "hello", 10, ("hello", None)),
            ("text", "hello", 5, ("hello", None)),
            ("text", "hello world", 5, ("hello…", None)),
            ("text", "你好世界🎉!", 5, ("你好世界🎉…", None)),
            ("emotion", "[smile]", 3, ("[sm…", None)),
            ("text", "", 5, ("", None)),
            ("picture", "http://h/emopic/a-1x2.png", 5, ("[picture]", Some("http://h/emopic/a-1x2.png"))),
            ("audio", "http://h/emopic/a-3.mp3", 5, ("[audio]", Some("http://h/emopic/a-3.mp3"))),
            ("video", "http://h/emovideo/v.mp4", 5, ("[video]", Some("http://h/emovideo/v.mp4"))),
            // A media URL too long to keep (see core::writer::push_digest) is left out.
            ("picture", "", 5, ("[picture]", None)),
        ];
        for (kind, payload, chars, (want, url)) in cases {
            assert_eq!(
                preview(kind, payload, chars),
                (want.to_string(), url.map(String::from)),
                "{kind} {payload}"
            );
        }
    }

    #[test]
    fn unread_counts_others_messages_above_the_watermark() {
        let recent: Vec<(i64, String)> =
            vec![(9, "alice".into()), (8, "bob".into()), (7, "alice".into()), (5, "carol".into())];
        assert_eq!(unread(&recent, 0, "bob"), 3);
        assert_eq!(unread(&recent, 7, "bob"), 1);
        assert_eq!(unread(&recent, 9, "bob"), 0);
        assert_eq!(unread(&recent, 0, "alice"), 2);
        assert_eq!(unread(&[], 0, "bob"), 0);
    }

    #[test]
    fn notifications_name_the_conversation_from_the_recipients_side() {
        let direct = notification(&message("text", "hi there", "bob"), "bob", 2, 100);
        assert_eq!(direct.conversation, Conversation { kind: "direct", id: "alice".into(), conv_type: 0 });
        assert_eq!(
            (direct.message_id.as_str(), direct.sent_ms, direct.unread),
            ("7000000123", 1_764_000_000_123, 2)
        );
        let group = notification(&message("picture", "http://x/p.png", ""), "carol", 1, 100);
        assert_eq!(group.conversation, Conversation { kind: "group", id: "10".into(), conv_type: 0 });
        let v: serde_json::Value = serde_json::from_str(&body(&[direct, group])).expect("JSON");
        assert_eq!(v["notifications"][0]["recipient"], "bob");
        assert_eq!(v["notifications"][0]["preview"], "hi there");
        assert!(v["notifications"][0].get("url").is_none());
        assert_eq!(v["notifications"][1]["conversation"]["type"], 0);
        assert_eq!(v["notifications"][1]["url"], "http://x/p.png");
        assert_eq!(v["notifications"][1]["preview"], "[picture]");
    }

    #[test]
    fn signatures_are_hex_hmacs() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", "what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn one_notification_per_conversation_per_quiet_period() {
        let t0 = Instant::now();
        let mut q = Quiet::new(Duration::from_secs(60));
        let key = |u: &str, c: &str| ("default".to_string(), u.to_string(), c.to_string());
        assert!(q.allows(&key("bob", "10"), t0));
        q.sent(key("bob", "10"), t0);
        assert!(!q.allows(&key("bob", "10"), t0 + Duration::from_secs(59)));
        assert!(q.allows(&key("bob", "11"), t0), "another conversation");
        assert!(q.allows(&key("carol", "10"), t0), "another recipient");
        assert!(q.allows(&key("bob", "10"), t0 + Duration::from_secs(60)));
        // Expired entries are forgotten once there are many (here: the map is full when "late" comes).
        for i in 1..QUIET_PRUNE_AT {
            q.sent(key(&format!("u{i}"), "10"), t0);
        }
        assert_eq!(q.len(), QUIET_PRUNE_AT);
        q.sent(key("late", "10"), t0 + Duration::from_secs(61));
        assert_eq!(q.len(), 1);
        // Many recipients quiet at once: pruning waits until the map has doubled.
        for i in 0..(3 * QUIET_PRUNE_AT) {
            q.sent(key(&format!("v{i}"), "10"), t0 + Duration::from_secs(62));
        }
        assert_eq!(q.len(), 3 * QUIET_PRUNE_AT + 1);
        assert!(q.prune_at > q.len(), "next prune at {} for {}", q.prune_at, q.len());
        let zero = Quiet::new(Duration::ZERO);
        assert!(zero.allows(&key("bob", "10"), t0) && zero.is_empty());
    }
}
