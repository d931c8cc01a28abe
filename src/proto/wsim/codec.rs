//! The wsim signaling codec: text frames in, typed signals out, and back. Pure: no I/O, no actix.
//!
//! Client → server: `login_<uid>`, `logout_<uid>`, `<kind>_<to>_<payload>_<type>_<extension>`,
//! `members_<gid>`, `online_<gid>` and `mute_<gid|uid>_<on|off>` (extensions), `records_<gid|uid>_<timet>`,
//! `heartbeat_<anything>`.
//! Server → client: `ok`, `<kind>_<from>_<payload>_<type>_<fromgroupid>_<timet>_<extension>`,
//! `heartbeat_<unix seconds>`, `members_<gid>_<uid>,<uid>…`, `online_<gid>_<uid>,<uid>…`,
//! `mute_<id>_<on|off>`, `records_<id>_end`, `error_<code>_<reason>`.

use crate::domain::message::valid_id;

/// Message kinds of the wsim protocol.
pub const KINDS: [&str; 5] = ["emotion", "video", "picture", "text", "audio"];

/// Unicast or group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Unicast,
    Group,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Unicast => "unicast",
            Scope::Group => "group",
        }
    }
}

/// A signal from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// What follows `login_`: a user id, or `<userid>_<token>` when the server authenticates.
    Login(String),
    Logout(String),
    Send {
        kind: &'static str,
        to: String,
        payload: String,
        scope: Scope,
        extension: String,
    },
    Members(String),
    /// The members of a group with a live connection (an extension).
    Online(String),
    Records {
        id: String,
        before: i64,
    },
    /// Mute (or unmute) a group or the direct conversation with a user: no offline push for it (an
    /// extension).
    Mute {
        id: String,
        on: bool,
    },
    Heartbeat,
}

/// Why a frame was refused; rendered as `error_<code>_<reason>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecError {
    BadSignal,
    BadUserId,
    BadTarget,
    BadType,
    BadTime,
}

impl CodecError {
    pub fn code(self) -> u16 {
        400
    }

    pub fn reason(self) -> &'static str {
        match self {
            CodecError::BadSignal => "bad signal",
            CodecError::BadUserId => "bad user id",
            CodecError::BadTarget => "bad target",
            CodecError::BadType => "bad type",
            CodecError::BadTime => "bad time",
        }
    }
}

/// Parses one client frame (a trailing `\r\n` is ignored).
pub fn parse(frame: &str) -> Result<Signal, CodecError> {
    let frame = frame.strip_suffix('\n').unwrap_or(frame);
    let frame = frame.strip_suffix('\r').unwrap_or(frame);
    let (head, rest) = frame.split_once('_').ok_or(CodecError::BadSignal)?;
    match head {
        "login" => login_arg(rest).map(Signal::Login),
        "logout" => user_id(rest).map(Signal::Logout),
        "heartbeat" => Ok(Signal::Heartbeat),
        "members" | "online" => {
            if !valid_id(rest) {
                return Err(CodecError::BadTarget);
            }
            Ok(if head == "members" {
                Signal::Members(rest.to_string())
            } else {
                Signal::Online(rest.to_string())
            })
        }
        "mute" => {
            let (id, flag) = rest.rsplit_once('_').ok_or(CodecError::BadSignal)?;
            if !valid_id(id) {
                return Err(CodecError::BadTarget);
            }
            let on = match flag {
                "on" => true,
                "off" => false,
                _ => return Err(CodecError::BadSignal),
            };
            Ok(Signal::Mute { id: id.to_string(), on })
        }
        "records" => {
            let (id, time) = rest.rsplit_once('_').ok_or(CodecError::BadSignal)?;
            if !valid_id(id) {
                return Err(CodecError::BadTarget);
            }
            let before: i64 = time.trim().parse().map_err(|_| CodecError::BadTime)?;
            if before < 0 {
                return Err(CodecError::BadTime);
            }
            Ok(Signal::Records { id: id.to_string(), before })
        }
        _ => match KINDS.iter().find(|k| **k == head) {
            Some(kind) => parse_send(kind, rest),
            None => Err(CodecError::BadSignal),
        },
    }
}

/// Longest token `login_<userid>_<token>` may carry.
pub const MAX_TOKEN_LEN: usize = 512;

/// What follows `login_`: a user id, or (with authentication on) `<userid>_<token>`; which one it is
/// depends on the server's mode, so both shapes pass here and the connection splits.
fn login_arg(s: &str) -> Result<String, CodecError> {
    let with_token = s.rsplit_once('_').is_some_and(|(user, token)| {
        valid_id(user)
            && !token.is_empty()
            && token.len() <= MAX_TOKEN_LEN
            && !token.chars().any(char::is_control)
    });
    if valid_id(s) || with_token {
        Ok(s.to_string())
    } else {
        Err(CodecError::BadUserId)
    }
}

fn user_id(s: &str) -> Result<String, CodecError> {
    if valid_id(s) {
        Ok(s.to_string())
    } else {
        Err(CodecError::BadUserId)
    }
}

/// `<to>_<payload…>_<type>_<extension>`: target from the front, type and extension from the back,
/// the payload is everything between (so it may contain `_`).
fn parse_send(kind: &'static str, rest: &str) -> Result<Signal, CodecError> {
    let (to, rest) = rest.split_once('_').ok_or(CodecError::BadSignal)?;
    let (rest, extension) = rest.rsplit_once('_').ok_or(CodecError::BadSignal)?;
    let (payload, scope) = rest.rsplit_once('_').ok_or(CodecError::BadSignal)?;
    let scope = match scope {
        "unicast" => Scope::Unicast,
        "group" => Scope::Group,
        _ => return Err(CodecError::BadType),
    };
    if !valid_id(to) {
        return Err(CodecError::BadTarget);
    }
    Ok(Signal::Send {
        kind,
        to: to.to_string(),
        payload: payload.to_string(),
        scope,
        extension: extension.to_string(),
    })
}

/// A message as a client receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming<'a> {
    pub kind: &'a str,
    pub from: &'a str,
    pub payload: &'a str,
    pub scope: Scope,
    pub from_group: &'a str,
    pub timet: i64,
    pub extension: &'a str,
}

/// `<kind>_<from>_<payload>_<type>_<fromgroupid>_<timet>_<extension>`.
pub fn render_incoming(m: &Incoming<'_>) -> String {
    let mut s = String::with_capacity(
        m.kind.len() + m.from.len() + m.payload.len() + m.from_group.len() + m.extension.len() + 32,
    );
    for part in [m.kind, m.from, m.payload, m.scope.as_str(), m.from_group] {
        s.push_str(part);
        s.push('_');
    }
    s.push_str(&m.timet.to_string());
    s.push('_');
    s.push_str(m.extension);
    s
}

pub const OK: &str = "ok";

pub fn render_heartbeat(unix_secs: i64) -> String {
    format!("heartbeat_{unix_secs}")
}

pub fn render_members(group: &str, members: &[String]) -> String {
    format!("members_{group}_{}", members.join(","))
}

pub fn render_online(group: &str, online: &[String]) -> String {
    format!("online_{group}_{}", online.join(","))
}

pub fn render_mute(id: &str, on: bool) -> String {
    format!("mute_{id}_{}", if on { "on" } else { "off" })
}

pub fn render_records_end(id: &str) -> String {
    format!("records_{id}_end")
}

/// `error_<code>_<reason>`; underscores in the reason become spaces so the frame keeps 3 fields.
pub fn render_error(code: u16, reason: &str) -> String {
    format!("error_{code}_{}", reason.replace('_', " "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(kind: &'static str, to: &str, payload: &str, scope: Scope, ext: &str) -> Signal {
        Signal::Send { kind, to: to.into(), payload: payload.into(), scope, extension: ext.into() }
    }

    #[test]
    fn parses_every_signal() {
        let cases: Vec<(&str, Result<Signal, CodecError>)> = vec![
            ("login_1000001653", Ok(Signal::Login("1000001653".into()))),
            ("login_1000001653\r\n", Ok(Signal::Login("1000001653".into()))),
            ("login_张三", Ok(Signal::Login("张三".into()))),
            // With authentication on, the token follows the last `_` (the connection splits).
            ("login_张三_6a.1700000000.0f0f", Ok(Signal::Login("张三_6a.1700000000.0f0f".into()))),
            ("logout_42", Ok(Signal::Logout("42".into()))),
            ("text_bob_hello_unicast_e30=", Ok(send("text", "bob", "hello", Scope::Unicast, "e30="))),
            ("emotion_10_[smile]_group_x", Ok(send("emotion", "10", "[smile]", Scope::Group, "x"))),
            (
                "picture_7_http://a/b.jpg_unicast_",
                Ok(send("picture", "7", "http://a/b.jpg", Scope::Unicast, "")),
            ),
            (
                "audio_7_http://a/c-3.mp3_group_e",
                Ok(send("audio", "7", "http://a/c-3.mp3", Scope::Group, "e")),
            ),
            ("video_7_u_unicast_e", Ok(send("video", "7", "u", Scope::Unicast, "e"))),
            // Underscores in the payload are kept whole.
            ("text_bob_a_b__c_unicast_ext", Ok(send("text", "bob", "a_b__c", Scope::Unicast, "ext"))),
            ("text_bob_unicast_unicast_e", Ok(send("text", "bob", "unicast", Scope::Unicast, "e"))),
            // Empty payload and extension are allowed.
            ("text_bob__unicast_", Ok(send("text", "bob", "", Scope::Unicast, ""))),
            // Non-ASCII and emoji.
            (
                "text_10_你好😀_group_eyJhIjoiYiJ9",
                Ok(send("text", "10", "你好😀", Scope::Group, "eyJhIjoiYiJ9")),
            ),
            // Extension with base64 punctuation and a newline.
            ("text_b_x_unicast_ab+/=\nc=", Ok(send("text", "b", "x", Scope::Unicast, "ab+/=\nc="))),
            ("members_10", Ok(Signal::Members("10".into()))),
            ("online_10", Ok(Signal::Online("10".into()))),
            ("mute_10_on", Ok(Signal::Mute { id: "10".into(), on: true })),
            ("mute_bob_off", Ok(Signal::Mute { id: "bob".into(), on: false })),
            ("mute_a_b_on", Ok(Signal::Mute { id: "a_b".into(), on: true })),
            ("records_10_0", Ok(Signal::Records { id: "10".into(), before: 0 })),
            ("records_bob_1700000000", Ok(Signal::Records { id: "bob".into(), before: 1_700_000_000 })),
            ("heartbeat_123", Ok(Signal::Heartbeat)),
            ("heartbeat_", Ok(Signal::Heartbeat)),
        ];
        for (frame, want) in cases {
            assert_eq!(parse(frame), want, "frame {frame:?}");
        }
    }

    #[test]
    fn refuses_bad_frames() {
        let cases: Vec<(&str, CodecError)> = vec![
            ("", CodecError::BadSignal),
            ("ok", CodecError::BadSignal),
            ("hello", CodecError::BadSignal),
            ("foo_bar", CodecError::BadSignal),
            ("TEXT_bob_hi_unicast_e", CodecError::BadSignal),
            ("login_", CodecError::BadUserId),
            ("login_a\u{7}b", CodecError::BadUserId),
            ("login_bob ", CodecError::BadUserId),
            ("login_ bob", CodecError::BadUserId),
            ("login_bob\u{3000}", CodecError::BadUserId),
            ("logout_", CodecError::BadUserId),
            ("text_bob_hi_broadcast_e", CodecError::BadType),
            ("text__hi_unicast_e", CodecError::BadTarget),
            ("text_bob _hi_unicast_e", CodecError::BadTarget),
            ("text_bob_hi_unicast", CodecError::BadSignal),
            ("text_bob", CodecError::BadSignal),
            ("text", CodecError::BadSignal),
            ("members_", CodecError::BadTarget),
            ("online_", CodecError::BadTarget),
            ("mute_10", CodecError::BadSignal),
            ("mute_10_yes", CodecError::BadSignal),
            ("mute__on", CodecError::BadTarget),
            ("mute_10 _on", CodecError::BadTarget),
            ("online_10 ", CodecError::BadTarget),
            ("records_10", CodecError::BadSignal),
            ("records_10_abc", CodecError::BadTime),
            ("records_10_-5", CodecError::BadTime),
            ("records__5", CodecError::BadTarget),
        ];
        for (frame, want) in cases {
            assert_eq!(parse(frame), Err(want), "frame {frame:?}");
        }
        let long = format!("login_{}", "x".repeat(65));
        assert_eq!(parse(&long), Err(CodecError::BadUserId));
    }

    #[test]
    fn garbage_never_panics() {
        let samples = ["_", "__", "___", "____", "_____", "text_____", "\u{0}", "records___", "😀_😀_😀"];
        for s in samples {
            let _ = parse(s);
        }
        let mut x: u64 = 12345;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let frame: String = (0..(x % 24))
                .map(|i| ["_", "text", "a", "group", "unicast", "é", "1"][((x >> (i * 2)) % 7) as usize])
                .collect();
            let _ = parse(&frame);
        }
    }

    #[test]
    fn renders_server_frames() {
        let m = Incoming {
            kind: "text",
            from: "alice",
            payload: "a_b",
            scope: Scope::Group,
            from_group: "10",
            timet: 1_700_000_000,
            extension: "eyJ9",
        };
        assert_eq!(render_incoming(&m), "text_alice_a_b_group_10_1700000000_eyJ9");
        let u =
            Incoming { scope: Scope::Unicast, from_group: "alice", payload: "你好", extension: "", ..m };
        assert_eq!(render_incoming(&u), "text_alice_你好_unicast_alice_1700000000_");
        assert_eq!(render_heartbeat(17), "heartbeat_17");
        assert_eq!(render_members("10", &["a".into(), "b".into()]), "members_10_a,b");
        assert_eq!(render_members("10", &[]), "members_10_");
        assert_eq!(render_online("10", &["b".into()]), "online_10_b");
        assert_eq!(render_online("10", &[]), "online_10_");
        assert_eq!(render_mute("10", true), "mute_10_on");
        assert_eq!(render_mute("bob", false), "mute_bob_off");
        assert_eq!(render_records_end("10"), "records_10_end");
        assert_eq!(render_error(401, "login first"), "error_401_login first");
        assert_eq!(render_error(400, "bad_signal"), "error_400_bad signal");
    }
}
