//! What longweb's clients send, parsed without side effects: the business backend's `/sendmessage`
//! JSON and a socket's `/ws/onsocket` query string. Pure functions (fuzzed: fuzz/).

use std::collections::HashMap;

use serde_json::Value;

use super::callbacks::text_of;
use crate::core::rooms::Audience;
use crate::domain::message::valid_id;

/// A `/sendmessage` body, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    pub appid: String,
    /// `ToAppID`: empty or the same as `appid`.
    pub to_app: String,
    /// `ToGroupID`: empty (every room of the app) or a room.
    pub group: String,
    /// `ToUserID`: empty or one user.
    pub user: String,
    pub sender: String,
    pub content: String,
    pub audience: Audience,
}

/// Why a `/sendmessage` body is refused: its `RetCode` and `RetMsg`.
pub type Refusal = (i64, &'static str);

/// Reads a `/sendmessage` body (JSON object; numbers or strings for the ids).
pub fn parse_push(body: &[u8]) -> Result<Push, Refusal> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err((-2, "message is empty"));
    }
    let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body) else {
        return Err((-10001, "message format error"));
    };
    let field = |k: &str| m.get(k).map(text_of).unwrap_or_default();
    let push = Push {
        appid: field("AppID"),
        to_app: field("ToAppID"),
        group: field("ToGroupID"),
        user: field("ToUserID"),
        sender: field("UserID"),
        content: field("Content"),
        audience: match field("MessageLevel").as_str() {
            "1" => Audience::Anonymous,
            "2" => Audience::Verified,
            _ => Audience::All,
        },
    };
    if push.content.is_empty() {
        return Err((-2, "message is empty"));
    }
    if (!push.group.is_empty() && !valid_id(&push.group)) || (!push.user.is_empty() && !valid_id(&push.user))
    {
        return Err((-10001, "message format error"));
    }
    Ok(push)
}

/// A socket's `/ws/onsocket` query, read: its app, rooms (`groupid`, and `groupids={"IDs":[…]}`),
/// user and token. Invalid ids are left out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SocketParams {
    pub appid: String,
    pub groups: Vec<String>,
    pub user: String,
    pub token: Option<String>,
}

pub fn socket_params(query: &str) -> SocketParams {
    let q: HashMap<String, String> =
        serde_urlencoded::from_str::<Vec<(String, String)>>(query).unwrap_or_default().into_iter().collect();
    let get = |k: &str| q.get(k).map(|v| v.trim().to_string()).unwrap_or_default();
    let mut groups: Vec<String> = Vec::new();
    let group = get("groupid");
    if !group.is_empty() {
        groups.push(group);
    }
    if let Ok(v) = serde_json::from_str::<Value>(&get("groupids")) {
        for id in v["IDs"].as_array().into_iter().flatten() {
            let id = text_of(id);
            if !id.is_empty() && !groups.contains(&id) {
                groups.push(id);
            }
        }
    }
    groups.retain(|g| valid_id(g));
    SocketParams {
        appid: get("appid"),
        groups,
        user: Some(get("userid")).filter(|u| valid_id(u)).unwrap_or_default(),
        token: Some(get("token")).filter(|t| !t.is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_are_read_or_refused() {
        let ok =
            parse_push(br#"{"AppID":10000,"ToGroupID":"g","ToUserID":"","Content":"hi","MessageLevel":"2"}"#)
                .expect("a push");
        assert_eq!((ok.appid.as_str(), ok.group.as_str(), ok.audience), ("10000", "g", Audience::Verified));
        let table: [(&[u8], i64); 6] = [
            (b"  ", -2),
            (b"[1,2]", -10001),
            (b"{", -10001),
            (br#"{"AppID":"1"}"#, -2),
            (br#"{"AppID":"1","Content":"x","ToGroupID":"a\u0007b"}"#, -10001),
            (br#"{"AppID":"1","Content":"x","ToUserID":"bob "}"#, -10001),
        ];
        for (body, code) in table {
            assert_eq!(parse_push(body).map_err(|e| e.0), Err(code), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn socket_queries_keep_valid_ids_only() {
        let p = socket_params(
            "appid=900&groupid=g&groupids=%7B%22IDs%22%3A%5B%22h%22%2C7%2C%22g%22%5D%7D&userid=u1&token=t",
        );
        assert_eq!(p.groups, ["g", "h", "7"]);
        assert_eq!((p.appid.as_str(), p.user.as_str(), p.token.as_deref()), ("900", "u1", Some("t")));
        let bad = socket_params("userid=a%07b&groupid=%20g&groupids=nonsense");
        assert_eq!(bad, SocketParams { user: String::new(), groups: vec!["g".into()], ..Default::default() });
    }
}
