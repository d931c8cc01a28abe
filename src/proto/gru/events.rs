//! The Gru events as values: parsing what clients emit (`auth`, `msg`, `subscribe`, `online`; each
//! payload may be a JSON string or an object) and building what the server emits (`*_result` and
//! delivered `msg` objects). Pure functions.

use serde_json::{json, Map, Value};

use crate::domain::message::{valid_id, Message};

/// Result codes of the Gru events (beside 0).
pub mod code {
    /// An event that needs `auth` came first.
    pub const NOT_AUTHENTICATED: i64 = -1;
    /// `msg` without a valid type (the seed's code).
    pub const BAD_TYPE: i64 = -2;
    /// `msg` without a usable target (no user for type 0, no group for type 1).
    pub const BAD_TARGET: i64 = -3;
    /// A payload that is not what the event takes.
    pub const BAD_PAYLOAD: i64 = -4;
    /// The message could not be stored.
    pub const NOT_STORED: i64 = -5;
    /// The socket sends more messages than `[limits] messages_per_conn_per_sec` (not stored).
    pub const RATE_LIMITED: i64 = -6;
    /// `auth` without id, name, type or token2, or with unusable values (as `/ticket`).
    pub const AUTH_MISSING: i64 = 710;
    /// `auth` with a token2 that was not issued for these values or has expired.
    pub const AUTH_BAD_TOKEN: i64 = 712;
}

/// An event's answer: `{"success","errorCode","msg"}` plus `data` when there is some.
pub fn result(code: i64, msg: &str, data: Option<Value>) -> Value {
    let mut v = json!({"success": code == 0, "errorCode": code, "msg": msg});
    if let (Some(d), Some(o)) = (data, v.as_object_mut()) {
        o.insert("data".into(), d);
    }
    v
}

/// A refusal: the code and its description.
pub type Refusal = (i64, &'static str);

/// The payload as an object: a JSON string holding one, or the object itself.
fn object(arg: Option<&Value>) -> Option<Map<String, Value>> {
    match arg? {
        Value::Object(o) => Some(o.clone()),
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(o)) => Some(o),
            _ => None,
        },
        _ => None,
    }
}

/// A scalar as text: strings trimmed, integers printed; anything else is absent.
fn scalar(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// An id as clients gave it: a number when it is a plain integer, else a string.
pub fn id_value(id: &str) -> Value {
    match id.parse::<i64>() {
        Ok(n) if n.to_string() == id => json!(n),
        _ => json!(id),
    }
}

/// What `auth` carries. `type` and `groupId` are optional (the original ignored both; the demo app
/// sends neither); which tokens are needed depends on `[gru] token2_check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRequest {
    pub id: String,
    pub name: String,
    pub user_type: Option<String>,
    pub group: Option<String>,
    pub token1: Option<String>,
    pub token2: Option<String>,
}

pub fn parse_auth(arg: Option<&Value>) -> Result<AuthRequest, Refusal> {
    let o = object(arg).ok_or((code::AUTH_MISSING, "auth takes an object"))?;
    let id = scalar(o.get("id")).ok_or((code::AUTH_MISSING, "id is required"))?;
    let name = scalar(o.get("name")).ok_or((code::AUTH_MISSING, "name is required"))?;
    let user_type = scalar(o.get("type"));
    let group = scalar(o.get("groupId"));
    let bad = |v: &Option<String>| v.as_deref().is_some_and(|g| !valid_id(g));
    if !valid_id(&id)
        || bad(&group)
        || bad(&user_type)
        || name.chars().any(char::is_control)
        || name.len() > 255
    {
        return Err((code::AUTH_MISSING, "bad id, name, type or groupId"));
    }
    Ok(AuthRequest {
        id,
        name,
        user_type,
        group,
        token1: scalar(o.get("token1")),
        token2: scalar(o.get("token2")),
    })
}

/// The `userType` of `auth_result`: 0 is a teacher and 1 a student (as in the seed's examples);
/// other types are echoed.
pub fn user_type_name(t: &str) -> String {
    match t {
        "0" => "TEACHER".into(),
        "1" => "STUDENT".into(),
        other => other.into(),
    }
}

/// What `msg` carries.
#[derive(Debug, Clone, PartialEq)]
pub struct MsgRequest {
    /// 1: to a group (broadcast), 0: to one user (unicast).
    pub msg_type: u8,
    pub target_id: Option<String>,
    /// The target as given (`{"id","type"}`), kept with the message.
    pub target: Value,
    pub content: String,
}

pub fn parse_msg(arg: Option<&Value>) -> Result<MsgRequest, Refusal> {
    const BAD_TYPE: Refusal = (code::BAD_TYPE, "消息类型不正确，请注明类型");
    let o = object(arg).ok_or((code::BAD_PAYLOAD, "msg takes an object"))?;
    let msg_type = match scalar(o.get("type")).as_deref() {
        Some("0") => 0,
        Some("1") => 1,
        _ => return Err(BAD_TYPE),
    };
    let target = match o.get("target") {
        Some(Value::Object(t)) => Value::Object(t.clone()),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => v,
            _ => return Err((code::BAD_TARGET, "target takes an object")),
        },
        None | Some(Value::Null) => json!({}),
        Some(_) => return Err((code::BAD_TARGET, "target takes an object")),
    };
    let target_id = scalar(target.get("id"));
    if target_id.as_deref().is_some_and(|t| !valid_id(t)) {
        return Err((code::BAD_TARGET, "bad target id"));
    }
    let content = match o.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    Ok(MsgRequest { msg_type, target_id, target, content })
}

/// A group named in a list: an id, or an object with one (`{"id": 160, "name": "…"}`).
fn group_id(v: &Value) -> Option<String> {
    match v {
        Value::Object(o) => scalar(o.get("id")),
        other => scalar(Some(other)),
    }
}

/// The groups `subscribe` names: `"10"`, `10`, `["10", 11]`, `{"groupId": 10}`,
/// `{"groupIds": [...]}`, or the demo app's `{"userId": 201, "subscribeGroups": [{"id": 160, "name":
/// "…"}, …]}`; the same inside a JSON string.
pub fn parse_groups(arg: Option<&Value>) -> Result<Vec<String>, Refusal> {
    const BAD: Refusal = (code::BAD_PAYLOAD, "subscribe takes a group id or a list of them");
    let decoded;
    let mut v = arg.ok_or(BAD)?;
    if let Value::String(s) = v {
        if let Ok(inner @ (Value::Array(_) | Value::Object(_))) = serde_json::from_str::<Value>(s) {
            decoded = inner;
            v = &decoded;
        }
    }
    let list: Vec<Option<String>> = match v {
        Value::Array(a) => a.iter().map(group_id).collect(),
        Value::Object(o) => {
            let list = o.get("subscribeGroups").or(o.get("groupIds")).or(o.get("groups"));
            match (o.get("groupId"), list) {
                (Some(g), _) => vec![scalar(Some(g))],
                (None, Some(Value::Array(a))) => a.iter().map(group_id).collect(),
                _ => return Err(BAD),
            }
        }
        other => vec![scalar(Some(other))],
    };
    let groups: Option<Vec<String>> = list.into_iter().map(|g| g.filter(|g| valid_id(g))).collect();
    match groups {
        Some(g) if !g.is_empty() && g.len() <= 100 => Ok(g),
        _ => Err(BAD),
    }
}

/// The group `online` asks about: `"10"`, `10` or `{"groupId": 10}`; absent: the auth group.
pub fn parse_online(arg: Option<&Value>) -> Option<String> {
    match arg {
        None | Some(Value::Null) => None,
        Some(v) => match object(Some(v)) {
            Some(o) => scalar(o.get("groupId")),
            None => scalar(Some(v)),
        },
    }
}

/// The delivered `msg` object of a stored Gru message (its kind is the type, its extension the
/// target).
pub fn delivered(m: &Message) -> Value {
    let target: Value = serde_json::from_str(&m.extension).unwrap_or_else(|_| json!({}));
    json!({
        "id": m.id,
        "createTime": m.sent_us / 1000,
        "content": m.payload,
        "expireTime": 0,
        "fromId": id_value(&m.sender),
        "msgType": m.kind.parse::<u8>().unwrap_or(1),
        "target": target,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: Value) -> Value {
        Value::String(v.to_string())
    }

    #[test]
    fn auth_from_string_or_object() {
        let obj =
            json!({"id": 123, "name": "张三", "groupId": 10, "token1": "t1", "token2": "9.ab", "type": 0});
        let want = AuthRequest {
            id: "123".into(),
            name: "张三".into(),
            user_type: Some("0".into()),
            group: Some("10".into()),
            token1: Some("t1".into()),
            token2: Some("9.ab".into()),
        };
        assert_eq!(parse_auth(Some(&obj)), Ok(want.clone()));
        assert_eq!(parse_auth(Some(&s(obj))), Ok(want));
        // The demo app's auth: no type, no group.
        let demo = json!({"id": 201, "name": "李四", "token1": "a", "token2": "b"});
        let got = parse_auth(Some(&s(demo))).expect("demo auth");
        assert_eq!((got.user_type, got.group, got.token2.as_deref()), (None, None, Some("b")));
        let bare = json!({"id": "u1", "name": "a"});
        assert_eq!(parse_auth(Some(&bare)).map(|a| (a.token1, a.token2)), Ok((None, None)));
        for bad in [
            json!(null),
            json!("not json"),
            json!(5),
            json!({"name": "a", "token2": "x", "type": 0}),
            json!({"id": 1, "token2": "x", "type": 0}),
            json!({"id": 1.5, "name": "a", "token2": "x", "type": 0}),
            json!({"id": "a\nb", "name": "a", "token2": "x", "type": 0}),
            json!({"id": 1, "name": "a\u{7}", "token2": "x"}),
            json!({"id": 1, "name": "a", "type": "x\ny"}),
        ] {
            assert_eq!(parse_auth(Some(&bad)).map_err(|e| e.0), Err(code::AUTH_MISSING), "{bad}");
        }
        assert_eq!(parse_auth(None).map_err(|e| e.0), Err(code::AUTH_MISSING));
    }

    #[test]
    fn msg_types_targets_and_content() {
        let m = parse_msg(Some(&s(json!({"type": 0, "target": {"id": 10, "type": 1}, "content": "hi"}))));
        assert_eq!(
            m,
            Ok(MsgRequest {
                msg_type: 0,
                target_id: Some("10".into()),
                target: json!({"id": 10, "type": 1}),
                content: "hi".into()
            })
        );
        let b = parse_msg(Some(&json!({"type": "1", "content": {"k": 1}}))).expect("broadcast");
        assert_eq!((b.msg_type, b.target_id, b.content.as_str()), (1, None, "{\"k\":1}"));
        for bad_type in
            [json!({"content": "x"}), json!({"type": 2}), json!({"type": "x"}), json!({"type": -1})]
        {
            assert_eq!(parse_msg(Some(&bad_type)), Err((code::BAD_TYPE, "消息类型不正确，请注明类型")));
        }
        assert_eq!(parse_msg(Some(&json!([1]))).map_err(|e| e.0), Err(code::BAD_PAYLOAD));
        assert_eq!(parse_msg(Some(&json!({"type": 0, "target": 5}))).map_err(|e| e.0), Err(code::BAD_TARGET));
    }

    #[test]
    fn subscribe_and_online_payloads() {
        let cases = [
            (json!("10"), vec!["10"]),
            (json!(10), vec!["10"]),
            (json!(["10", 11]), vec!["10", "11"]),
            (json!("[10,11]"), vec!["10", "11"]),
            (json!({"groupId": 7}), vec!["7"]),
            (s(json!({"groupIds": [7, "8"]})), vec!["7", "8"]),
            (
                s(json!({"userId": 201, "subscribeGroups": [{"id": 160, "name": "一班"}, {"id": "161"}]})),
                vec!["160", "161"],
            ),
            (json!([{"id": 5}]), vec!["5"]),
        ];
        for (arg, want) in cases {
            assert_eq!(parse_groups(Some(&arg)), Ok(want.iter().map(|g| g.to_string()).collect()), "{arg}");
        }
        for bad in [
            json!(null),
            json!([]),
            json!({"x": 1}),
            json!([1.5]),
            json!(true),
            json!({"subscribeGroups": [{"name": "no id"}]}),
            json!({"subscribeGroups": []}),
        ] {
            assert!(parse_groups(Some(&bad)).is_err(), "{bad}");
        }
        assert_eq!(parse_online(Some(&json!("10"))), Some("10".into()));
        assert_eq!(parse_online(Some(&json!(10))), Some("10".into()));
        assert_eq!(parse_online(Some(&s(json!({"groupId": 3})))), Some("3".into()));
        assert_eq!(parse_online(None), None);
    }

    #[test]
    fn results_and_delivered_messages() {
        assert_eq!(result(0, "", None), json!({"success": true, "errorCode": 0, "msg": ""}));
        assert_eq!(
            result(-2, "bad", Some(json!([1]))),
            json!({"success": false, "errorCode": -2, "msg": "bad", "data": [1]})
        );
        assert_eq!(id_value("123"), json!(123));
        assert_eq!(id_value("0123"), json!("0123"));
        assert_eq!(id_value("u1"), json!("u1"));
        let m = Message {
            id: 77,
            app: "#gru".into(),
            conv: "10".into(),
            sender: "123".into(),
            recipient: String::new(),
            kind: "1".into(),
            payload: "hello".into(),
            extension: "{\"id\":10}".into(),
            sent_us: 1_426_232_324_279_123,
            status: 0,
            conv_type: 0,
        };
        assert_eq!(
            delivered(&m),
            json!({"id": 77, "createTime": 1_426_232_324_279_i64, "content": "hello", "expireTime": 0,
                   "fromId": 123, "msgType": 1, "target": {"id": 10}})
        );
        assert_eq!(user_type_name("0"), "TEACHER");
        assert_eq!(user_type_name("1"), "STUDENT");
        assert_eq!(user_type_name("9"), "9");
    }
}
