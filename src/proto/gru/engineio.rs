//! Engine.IO packets and polling payloads, protocol 3 (socket.io 1.x/2.x clients) and 4 (socket.io
//! 3.x/4.x). Pure: strings in, typed packets out, and back. Binary packets are refused (Gru sends
//! text only).
//!
//! Packet: one digit type then data — 0 open, 1 close, 2 ping, 3 pong, 4 message, 5 upgrade, 6 noop.
//! Polling payload, v4: packets joined by the record separator `\x1e`; v3: each packet prefixed with
//! its length in UTF-16 code units and `:`.

/// Engine.IO protocol revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eio {
    V3,
    V4,
}

impl Eio {
    /// From the `EIO` query parameter.
    pub fn from_query(v: &str) -> Option<Eio> {
        match v {
            "3" => Some(Eio::V3),
            "4" => Some(Eio::V4),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// The handshake JSON.
    Open(String),
    Close,
    Ping(String),
    Pong(String),
    Message(String),
    Upgrade,
    Noop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EioError {
    #[error("empty packet")]
    Empty,
    #[error("unknown packet type")]
    UnknownType,
    #[error("binary packets are not supported")]
    Binary,
    #[error("malformed payload")]
    BadPayload,
}

pub fn encode(p: &Packet) -> String {
    match p {
        Packet::Open(json) => format!("0{json}"),
        Packet::Close => "1".into(),
        Packet::Ping(d) => format!("2{d}"),
        Packet::Pong(d) => format!("3{d}"),
        Packet::Message(d) => format!("4{d}"),
        Packet::Upgrade => "5".into(),
        Packet::Noop => "6".into(),
    }
}

pub fn decode(s: &str) -> Result<Packet, EioError> {
    let mut chars = s.chars();
    let t = chars.next().ok_or(EioError::Empty)?;
    let rest = chars.as_str().to_string();
    Ok(match t {
        '0' => Packet::Open(rest),
        '1' => Packet::Close,
        '2' => Packet::Ping(rest),
        '3' => Packet::Pong(rest),
        '4' => Packet::Message(rest),
        '5' => Packet::Upgrade,
        '6' => Packet::Noop,
        'b' => return Err(EioError::Binary),
        _ => return Err(EioError::UnknownType),
    })
}

/// Joins packets into one polling response body.
pub fn encode_payload(v: Eio, packets: &[Packet]) -> String {
    let encoded: Vec<String> = packets.iter().map(encode).collect();
    frame_payload(v, &encoded)
}

/// A polling payload of packets already encoded (see [`encode_payload`]).
pub fn frame_payload(v: Eio, encoded: &[String]) -> String {
    match v {
        Eio::V4 => encoded.join("\u{1e}"),
        Eio::V3 => encoded.iter().map(|e| format!("{}:{e}", e.encode_utf16().count())).collect(),
    }
}

pub fn decode_payload(v: Eio, body: &str) -> Result<Vec<Packet>, EioError> {
    match v {
        Eio::V4 => body.split('\u{1e}').map(decode).collect(),
        Eio::V3 => {
            let mut out = Vec::new();
            let mut rest = body;
            while !rest.is_empty() {
                let (len, tail) = rest.split_once(':').ok_or(EioError::BadPayload)?;
                let len: usize = len.parse().map_err(|_| EioError::BadPayload)?;
                // The length counts UTF-16 code units: walk the characters to find the end.
                let mut units = 0;
                let mut end = tail.len();
                for (i, c) in tail.char_indices() {
                    if units == len {
                        end = i;
                        break;
                    }
                    units += c.len_utf16();
                }
                if units < len || (end == tail.len() && units != len) {
                    return Err(EioError::BadPayload);
                }
                out.push(decode(&tail[..end])?);
                rest = &tail[end..];
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_round_trip() {
        let cases = [
            ("0{\"sid\":\"abc\"}", Packet::Open("{\"sid\":\"abc\"}".into())),
            ("1", Packet::Close),
            ("2", Packet::Ping(String::new())),
            ("2probe", Packet::Ping("probe".into())),
            ("3probe", Packet::Pong("probe".into())),
            ("42[\"msg\",\"hi\"]", Packet::Message("2[\"msg\",\"hi\"]".into())),
            ("5", Packet::Upgrade),
            ("6", Packet::Noop),
        ];
        for (text, packet) in cases {
            assert_eq!(decode(text), Ok(packet.clone()), "{text}");
            assert_eq!(encode(&packet), text);
        }
        assert_eq!(decode(""), Err(EioError::Empty));
        assert_eq!(decode("9"), Err(EioError::UnknownType));
        assert_eq!(decode("b4AQID"), Err(EioError::Binary));
    }

    #[test]
    fn payloads_of_both_revisions() {
        let packets = vec![Packet::Message("2[\"a\"]".into()), Packet::Ping(String::new())];
        assert_eq!(encode_payload(Eio::V4, &packets), "42[\"a\"]\u{1e}2");
        assert_eq!(encode_payload(Eio::V3, &packets), "7:42[\"a\"]1:2");
        assert_eq!(decode_payload(Eio::V4, "42[\"a\"]\u{1e}2"), Ok(packets.clone()));
        assert_eq!(decode_payload(Eio::V3, "7:42[\"a\"]1:2"), Ok(packets));
        // v3 lengths count UTF-16 code units: "4你😀" is 1 + 1 + 2.
        let p = vec![Packet::Message("你😀".into())];
        assert_eq!(encode_payload(Eio::V3, &p), "4:4你😀");
        assert_eq!(decode_payload(Eio::V3, "4:4你😀"), Ok(p));
        for bad in ["5:42", "x:4", "3", "2:4a3:4"] {
            assert!(decode_payload(Eio::V3, bad).is_err(), "{bad}");
        }
        assert_eq!(Eio::from_query("3"), Some(Eio::V3));
        assert_eq!(Eio::from_query("5"), None);
    }
}
