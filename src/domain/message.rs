//! Domain types shared by the core, the store and the front-ends: users, conversations, messages.
//! No wire format lives here.

use std::sync::Arc;

/// Identifies one live connection, unique for the life of the process.
pub type ConnId = u64;

/// Longest accepted user, group or app id, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// True when `id` is acceptable as a user, group or app id: 1 to 64 bytes of printable characters
/// (no control characters), not starting or ending with whitespace (`"bob "` is not `bob`, and
/// must not pass for him anywhere).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && !id.chars().any(char::is_control)
        && !id.starts_with(char::is_whitespace)
        && !id.ends_with(char::is_whitespace)
}

/// A user, within its app (tenant).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserKey {
    pub app: String,
    pub user: String,
}

impl UserKey {
    pub fn new(app: impl Into<String>, user: impl Into<String>) -> Self {
        UserKey { app: app.into(), user: user.into() }
    }
}

/// A group (conversation), within its app.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupKey {
    pub app: String,
    pub group: String,
}

impl GroupKey {
    pub fn new(app: impl Into<String>, group: impl Into<String>) -> Self {
        GroupKey { app: app.into(), group: group.into() }
    }
}

/// A conversation within its app: a group's, or the direct one between two users (see
/// [`direct_conv_id`]); what history and last-message queries name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConvKey {
    pub app: String,
    pub conv: String,
}

impl ConvKey {
    /// A group's conversation.
    pub fn group(key: &GroupKey) -> Self {
        ConvKey { app: key.app.clone(), conv: key.group.clone() }
    }

    /// The direct conversation between `user` and `peer` (in `user`'s app).
    pub fn direct(user: &UserKey, peer: &str) -> Self {
        ConvKey { app: user.app.clone(), conv: direct_conv_id(&user.user, peer) }
    }
}

/// The kinds of conversation the store knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvKind {
    Group = 0,
    Direct = 1,
}

impl ConvKind {
    pub fn from_i32(v: i32) -> ConvKind {
        if v == 1 {
            ConvKind::Direct
        } else {
            ConvKind::Group
        }
    }
}

/// The conversation id of the direct conversation between two users: both ids, sorted, joined by a
/// newline (which no valid id contains, so it never collides with a group id).
pub fn direct_conv_id(a: &str, b: &str) -> String {
    if a <= b {
        format!("{a}\n{b}")
    } else {
        format!("{b}\n{a}")
    }
}

/// Which end of a range a history query takes its messages from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryEnd {
    Oldest,
    Newest,
}

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    User(String),
    Group(String),
    /// A live room (longweb groups): `room` empty means every room of the app; `user` narrows the
    /// delivery to that user's connections.
    Room {
        room: String,
        user: Option<String>,
    },
}

/// A message as stored and delivered.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    /// Time-ordered, unique across nodes (see `ids`).
    pub id: i64,
    pub app: String,
    /// Conversation id: the group id, or [`direct_conv_id`] for a direct message.
    pub conv: String,
    pub sender: String,
    /// The recipient of a direct message; empty for a group message.
    pub recipient: String,
    /// Message kind as the front-end named it (wsim: text, emotion, picture, audio, video).
    pub kind: String,
    pub payload: String,
    /// Opaque client data relayed byte for byte.
    pub extension: String,
    /// Send time, microseconds since the Unix epoch (UTC).
    pub sent_us: i64,
    /// Client-defined status (the gateway's `Status`; 0 elsewhere).
    pub status: i32,
    /// The type of the conversation (gateway conversation types 0-15; 0 for wsim groups and direct
    /// messages).
    pub conv_type: i32,
}

impl Message {
    /// Bytes the message takes when rendered for a client, roughly (payload, extension and the
    /// other fields): what queues and buffers of messages count.
    pub fn approx_size(&self) -> u64 {
        (self.payload.len() + self.extension.len() + self.sender.len() + self.conv.len() + 48) as u64
    }

    /// The group id when this is a group message.
    pub fn group(&self) -> Option<&str> {
        if self.recipient.is_empty() {
            Some(&self.conv)
        } else {
            None
        }
    }

    /// For a direct message, the participant that is not `user`.
    pub fn peer_of(&self, user: &str) -> &str {
        if self.sender == user {
            &self.recipient
        } else {
            &self.sender
        }
    }
}

/// A stored message shared between every recipient without copying.
pub type SharedMessage = Arc<Message>;

/// A message as submitted by a front-end, before it has an id and a send time.
#[derive(Debug, Clone)]
pub struct Draft {
    pub app: String,
    pub sender: String,
    pub target: Target,
    pub kind: String,
    pub payload: String,
    pub extension: String,
    pub status: i32,
}

impl Draft {
    /// Bytes the message will take, roughly (see [`Message::approx_size`]).
    pub fn approx_size(&self) -> u64 {
        (self.payload.len() + self.extension.len() + self.sender.len() + 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        for (id, ok) in [
            ("", false),
            ("1000001653", true),
            ("张三", true),
            ("a b", true),
            ("bob ", false),
            (" bob", false),
            ("bob\u{3000}", false),
            ("bob\u{a0}", false),
            ("a\nb", false),
            ("tab\there", false),
            (&"x".repeat(64), true),
            (&"x".repeat(65), false),
        ] {
            assert_eq!(valid_id(id), ok, "{id:?}");
        }
    }

    #[test]
    fn direct_conversation_id_is_symmetric() {
        assert_eq!(direct_conv_id("a", "b"), direct_conv_id("b", "a"));
        assert_ne!(direct_conv_id("a", "bc"), direct_conv_id("ab", "c"));
    }
}
