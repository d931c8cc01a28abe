//! Socket.IO packets (inside Engine.IO messages), as socket.io 2.x and 4.x encode them. Pure.
//!
//! `<type>[<namespace>,][<ack id>][<JSON>]` — 0 CONNECT, 1 DISCONNECT, 2 EVENT, 3 ACK, 4 CONNECT_ERROR
//! (ERROR in 2.x), 5 BINARY_EVENT, 6 BINARY_ACK. The namespace is written only when it is not `/`.
//! Binary packets are refused (Gru is text only).

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum Packet {
    Connect {
        ns: String,
        data: Option<Value>,
    },
    Disconnect {
        ns: String,
    },
    /// `data[0]` is the event name.
    Event {
        ns: String,
        id: Option<u64>,
        data: Vec<Value>,
    },
    Ack {
        ns: String,
        id: u64,
        data: Vec<Value>,
    },
    ConnectError {
        ns: String,
        data: Value,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SioError {
    #[error("empty packet")]
    Empty,
    #[error("unknown packet type")]
    UnknownType,
    #[error("binary packets are not supported")]
    Binary,
    #[error("malformed packet")]
    Malformed,
}

fn ns_prefix(ns: &str) -> String {
    if ns.is_empty() || ns == "/" {
        String::new()
    } else {
        format!("{ns},")
    }
}

pub fn encode(p: &Packet) -> String {
    match p {
        Packet::Connect { ns, data } => {
            format!("0{}{}", ns_prefix(ns), data.as_ref().map(Value::to_string).unwrap_or_default())
        }
        Packet::Disconnect { ns } => format!("1{}", ns_prefix(ns)),
        Packet::Event { ns, id, data } => format!(
            "2{}{}{}",
            ns_prefix(ns),
            id.map(|i| i.to_string()).unwrap_or_default(),
            Value::Array(data.clone())
        ),
        Packet::Ack { ns, id, data } => format!("3{}{id}{}", ns_prefix(ns), Value::Array(data.clone())),
        Packet::ConnectError { ns, data } => format!("4{}{data}", ns_prefix(ns)),
    }
}

pub fn decode(s: &str) -> Result<Packet, SioError> {
    let mut chars = s.chars();
    let t = chars.next().ok_or(SioError::Empty)?;
    let mut rest = chars.as_str();
    if matches!(t, '5' | '6') {
        return Err(SioError::Binary);
    }
    let mut ns = "/".to_string();
    if rest.starts_with('/') {
        match rest.find(',') {
            Some(i) => {
                ns = rest[..i].to_string();
                rest = &rest[i + 1..];
            }
            None => {
                ns = rest.to_string();
                rest = "";
            }
        }
    }
    let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    let id =
        if digits > 0 { Some(rest[..digits].parse::<u64>().map_err(|_| SioError::Malformed)?) } else { None };
    let json = &rest[digits..];
    let parse = |j: &str| serde_json::from_str::<Value>(j).map_err(|_| SioError::Malformed);
    let array = |j: &str| match parse(j)? {
        Value::Array(a) => Ok(a),
        _ => Err(SioError::Malformed),
    };
    Ok(match t {
        '0' => Packet::Connect { ns, data: if json.is_empty() { None } else { Some(parse(json)?) } },
        '1' => Packet::Disconnect { ns },
        '2' => {
            let data = array(json)?;
            if !data.first().is_some_and(Value::is_string) {
                return Err(SioError::Malformed);
            }
            Packet::Event { ns, id, data }
        }
        '3' => Packet::Ack { ns, id: id.ok_or(SioError::Malformed)?, data: array(json)? },
        '4' => Packet::ConnectError { ns, data: if json.is_empty() { Value::Null } else { parse(json)? } },
        _ => return Err(SioError::UnknownType),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(ns: &str, id: Option<u64>, data: Value) -> Packet {
        Packet::Event { ns: ns.into(), id, data: data.as_array().cloned().unwrap_or_default() }
    }

    #[test]
    fn decodes_what_the_clients_send() {
        let cases = [
            ("0", Packet::Connect { ns: "/".into(), data: None }),
            ("0/admin,", Packet::Connect { ns: "/admin".into(), data: None }),
            ("0{\"token\":\"x\"}", Packet::Connect { ns: "/".into(), data: Some(json!({"token": "x"})) }),
            ("1", Packet::Disconnect { ns: "/".into() }),
            ("2[\"auth\",\"{\\\"id\\\":123}\"]", event("/", None, json!(["auth", "{\"id\":123}"]))),
            (
                "21[\"auth\",{\"id\":123,\"name\":\"张三\"}]",
                event("/", Some(1), json!(["auth", {"id": 123, "name": "张三"}])),
            ),
            ("2/chat,7[\"online\",\"10\"]", event("/chat", Some(7), json!(["online", "10"]))),
            (
                "35[{\"success\":true}]",
                Packet::Ack { ns: "/".into(), id: 5, data: vec![json!({"success": true})] },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(decode(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn encodes_what_the_clients_expect() {
        assert_eq!(encode(&Packet::Connect { ns: "/".into(), data: None }), "0");
        assert_eq!(
            encode(&Packet::Connect { ns: "/".into(), data: Some(json!({"sid": "s1"})) }),
            "0{\"sid\":\"s1\"}"
        );
        assert_eq!(
            encode(&event("/", None, json!(["auth_result", {"success": true}]))),
            "2[\"auth_result\",{\"success\":true}]"
        );
        assert_eq!(encode(&Packet::Ack { ns: "/".into(), id: 3, data: vec![json!(1)] }), "33[1]");
        assert_eq!(encode(&event("/chat", Some(2), json!(["x"]))), "2/chat,2[\"x\"]");
        assert_eq!(encode(&Packet::Disconnect { ns: "/".into() }), "1");
        assert_eq!(
            encode(&Packet::ConnectError { ns: "/".into(), data: json!({"message": "no"}) }),
            "4{\"message\":\"no\"}"
        );
    }

    #[test]
    fn refuses_bad_packets() {
        for (text, err) in [
            ("", SioError::Empty),
            ("9", SioError::UnknownType),
            ("51-[\"x\",{\"_placeholder\":true,\"num\":0}]", SioError::Binary),
            ("2", SioError::Malformed),
            ("2{\"a\":1}", SioError::Malformed),
            ("2[1,2]", SioError::Malformed),
            ("2[\"x\"", SioError::Malformed),
            ("3[1]", SioError::Malformed),
            ("299999999999999999999999[\"x\"]", SioError::Malformed),
        ] {
            assert_eq!(decode(text), Err(err), "{text}");
        }
    }

    #[test]
    fn arbitrary_input_never_panics() {
        // Random strings over the characters the grammar cares about (plus multi-byte ones).
        let alphabet: Vec<char> = "0123456789[]{}\",:/-ab \u{1e}é😀".chars().collect();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 24) as usize;
            let text: String =
                (0..len).map(|k| alphabet[((x >> (k % 48)) as usize + k * 7) % alphabet.len()]).collect();
            let _ = decode(&text);
            let _ = crate::proto::gru::engineio::decode(&text);
            for v in [crate::proto::gru::engineio::Eio::V3, crate::proto::gru::engineio::Eio::V4] {
                let _ = crate::proto::gru::engineio::decode_payload(v, &text);
            }
            // The same characters as bytes, with the binary payload's markers mixed in.
            let mut bytes: Vec<u8> = text.bytes().collect();
            for (k, b) in bytes.iter_mut().enumerate() {
                match (x >> (k % 60)) % 5 {
                    0 => *b = 0,
                    1 => *b = 0xff,
                    2 => *b %= 10,
                    _ => {}
                }
            }
            let _ = crate::proto::gru::engineio::decode_binary_payload(&bytes);
        }
    }
}
