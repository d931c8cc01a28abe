//! Protocol adapters: how a scenario logs in, sends and recognises deliveries on one front-end.
//! Scenario logic never sees a wire format.

use serde_json::json;

/// One step of logging a connection in.
pub enum LoginStep {
    Send(String),
    /// Read frames until one satisfies this (others are skipped).
    Expect(fn(&str) -> bool),
}

/// One front-end's wire format, as the load generator needs it.
pub trait Protocol {
    /// WebSocket path (with query).
    fn path(&self) -> &'static str;
    /// Whether a connection needs a `/ticket` token first (its `data.token` is passed to login).
    fn needs_ticket(&self) -> bool {
        false
    }
    /// The frames exchanged to log `user` in (`group`: the room to join at login, when rooms are
    /// joined that way).
    fn login_steps(&self, user: &str, group: Option<&str>, token: &str) -> Vec<LoginStep>;
    /// Whether a group message comes back to its sender.
    fn group_echo(&self) -> bool {
        false
    }
    fn unicast_frame(&self, to: &str, payload: &str) -> String;
    fn group_frame(&self, group: &str, payload: &str) -> String;
    /// The payload of a delivered message, or `None` for other frames (heartbeats, acks).
    fn delivery_payload<'a>(&self, frame: &'a str) -> Option<&'a str>;
    /// Whether a connection joins its room at login (the room is passed to
    /// [`Protocol::login_steps`]) instead of rooms being created over HTTP.
    fn joins_rooms_at_login(&self) -> bool {
        false
    }
    /// HTTP path and form body creating a group with these members (first is the creator); `None`
    /// when rooms are joined at login instead.
    fn create_group_request(&self, members: &[String]) -> Option<(String, String)>;
    /// The group id from the answer to [`Protocol::create_group_request`].
    fn group_id_from_response(&self, body: &str) -> Option<String>;
}

/// The wsim `/entry` signaling.
pub struct Wsim;

impl Protocol for Wsim {
    fn path(&self) -> &'static str {
        "/entry"
    }

    fn login_steps(&self, user: &str, _group: Option<&str>, _token: &str) -> Vec<LoginStep> {
        vec![LoginStep::Send(format!("login_{user}")), LoginStep::Expect(|f| f == "ok")]
    }

    fn unicast_frame(&self, to: &str, payload: &str) -> String {
        format!("text_{to}_{payload}_unicast_b")
    }

    fn group_frame(&self, group: &str, payload: &str) -> String {
        format!("text_{group}_{payload}_group_b")
    }

    fn delivery_payload<'a>(&self, frame: &'a str) -> Option<&'a str> {
        // kind_from_payload_type_fromgroupid_timet_extension; our payloads contain no '_'.
        let mut parts = frame.splitn(4, '_');
        let kind = parts.next()?;
        if kind != "text" {
            return None;
        }
        let _from = parts.next()?;
        parts.next()
    }

    fn create_group_request(&self, members: &[String]) -> Option<(String, String)> {
        let creator = members.first().cloned().unwrap_or_default();
        let rest = members.get(1..).unwrap_or(&[]).join(",");
        Some(("/creategrp".to_string(), format!("creator={creator}&members={rest}&name=bench")))
    }

    fn group_id_from_response(&self, body: &str) -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(body).ok()?;
        v["data"]["groupid"].as_str().map(str::to_string)
    }
}

/// Gru over Socket.IO (Engine.IO v4, WebSocket transport): `auth` with the ticket's token2 and the
/// room as `groupId`, `msg` events of type 1 (room, echoed to the sender) and 0 (one user). The
/// generator does not answer Engine.IO pings: run the server with a ping interval longer than the run.
pub struct SocketIo;

impl Protocol for SocketIo {
    fn path(&self) -> &'static str {
        "/socket.io/?EIO=4&transport=websocket"
    }

    fn needs_ticket(&self) -> bool {
        true
    }

    fn login_steps(&self, user: &str, group: Option<&str>, token: &str) -> Vec<LoginStep> {
        let mut auth = json!({"id": user, "name": user, "type": 0, "token1": "bench", "token2": token});
        if let Some(g) = group {
            auth["groupId"] = json!(g);
        }
        vec![
            LoginStep::Expect(|f| f.starts_with("0{")),
            LoginStep::Send("40".into()),
            LoginStep::Expect(|f| f.starts_with("40")),
            LoginStep::Send(format!("42{}", json!(["auth", auth.to_string()]))),
            LoginStep::Expect(|f| f.starts_with("42[\"auth_result\"") && f.contains("\"success\":true")),
        ]
    }

    fn group_echo(&self) -> bool {
        true
    }

    fn joins_rooms_at_login(&self) -> bool {
        true
    }

    fn unicast_frame(&self, to: &str, payload: &str) -> String {
        format!("42{}", json!(["msg", {"type": 0, "target": {"id": to, "type": 0}, "content": payload}]))
    }

    fn group_frame(&self, group: &str, payload: &str) -> String {
        format!("42{}", json!(["msg", {"type": 1, "target": {"id": group, "type": 1}, "content": payload}]))
    }

    fn delivery_payload<'a>(&self, frame: &'a str) -> Option<&'a str> {
        // Our payloads hold no quotes or escapes, so the content is the text up to the next quote.
        let rest = frame.strip_prefix("42[\"msg\",")?;
        let start = rest.find("\"content\":\"")? + "\"content\":\"".len();
        let len = rest[start..].find('"')?;
        Some(&rest[start..start + len])
    }

    fn create_group_request(&self, _members: &[String]) -> Option<(String, String)> {
        None
    }

    fn group_id_from_response(&self, _body: &str) -> Option<String> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wsim_frames() {
        let p = Wsim;
        assert_eq!(p.unicast_frame("u2", "0.1.2.3.xx"), "text_u2_0.1.2.3.xx_unicast_b");
        assert_eq!(p.delivery_payload("text_u1_0.1.2.3.xx_unicast_u1_1700000000_b"), Some("0.1.2.3.xx"));
        assert_eq!(p.delivery_payload("heartbeat_1700000000"), None);
        assert_eq!(p.group_id_from_response(r#"{"code":1,"data":{"groupid":"12"}}"#), Some("12".into()));
    }

    #[test]
    fn socketio_frames() {
        let p = SocketIo;
        assert_eq!(
            p.group_frame("g1", "0.1.2.3.xx"),
            r#"42["msg",{"content":"0.1.2.3.xx","target":{"id":"g1","type":1},"type":1}]"#
        );
        let delivered =
            r#"42["msg",{"id":5,"createTime":1,"content":"0.1.2.3.xx","expireTime":0,"fromId":"u1"}]"#;
        assert_eq!(p.delivery_payload(delivered), Some("0.1.2.3.xx"));
        assert_eq!(p.delivery_payload(r#"42["msg_result",{"success":true}]"#), None);
        let LoginStep::Send(auth) = &p.login_steps("u1", Some("g1"), "tok")[3] else { panic!("send") };
        assert!(auth.starts_with(r#"42["auth",""#) && auth.contains("groupId"), "{auth}");
    }
}
