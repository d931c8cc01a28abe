//! Protocol adapters: how a scenario logs in, sends and recognises deliveries on one front-end.
//! Scenario logic never sees a wire format.

/// One front-end's wire format, as the load generator needs it.
pub trait Protocol {
    /// WebSocket path.
    fn path(&self) -> &'static str;
    fn login_frame(&self, user: &str) -> String;
    fn is_login_ok(&self, frame: &str) -> bool;
    fn unicast_frame(&self, to: &str, payload: &str) -> String;
    fn group_frame(&self, group: &str, payload: &str) -> String;
    /// The payload of a delivered message, or `None` for other frames (heartbeats, acks).
    fn delivery_payload<'a>(&self, frame: &'a str) -> Option<&'a str>;
    /// HTTP path and form body creating a group with these members (first is the creator).
    fn create_group_request(&self, members: &[String]) -> (String, String);
    /// The group id from the answer to [`Protocol::create_group_request`].
    fn group_id_from_response(&self, body: &str) -> Option<String>;
}

/// The wsim `/entry` signaling.
pub struct Wsim;

impl Protocol for Wsim {
    fn path(&self) -> &'static str {
        "/entry"
    }

    fn login_frame(&self, user: &str) -> String {
        format!("login_{user}")
    }

    fn is_login_ok(&self, frame: &str) -> bool {
        frame == "ok"
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

    fn create_group_request(&self, members: &[String]) -> (String, String) {
        let creator = members.first().cloned().unwrap_or_default();
        let rest = members.get(1..).unwrap_or(&[]).join(",");
        ("/creategrp".to_string(), format!("creator={creator}&members={rest}&name=bench"))
    }

    fn group_id_from_response(&self, body: &str) -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(body).ok()?;
        v["data"]["groupid"].as_str().map(str::to_string)
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
}
