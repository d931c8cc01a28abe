//! Engine.IO packets and polling payloads, protocol 3 (socket.io 1.x/2.x clients) and 4 (socket.io
//! 3.x/4.x). Pure: strings in, typed packets out, and back. Binary packets are refused (Gru sends
//! text only).
//!
//! Packet: one digit type then data — 0 open, 1 close, 2 ping, 3 pong, 4 message, 5 upgrade, 6 noop.
//! Polling payload, v4: packets joined by the record separator `\x1e`; v3: each packet prefixed with
//! its length in UTF-16 code units and `:` — or, for clients with XHR2 that did not ask for base64
//! (`b64`), the binary payload: per packet a kind byte (`0` text, `1` binary), its length in bytes as
//! decimal digits each stored as a byte of value 0–9, `0xFF`, then the packet's (UTF-8) bytes.

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

/// socket.io 1.x clients (engine.io-parser 1.x) UTF-8-encode each packet of a text payload once more
/// before sending it: the packet's characters are the bytes of its UTF-8 form, and the HTTP body
/// carries those as UTF-8 again. Undoes that when `data` looks so (every character below 256, one at
/// least from 128, and those bytes are UTF-8); `None` when it does not (socket.io 2.x clients send
/// text as it is).
pub fn undo_utf8_encode(data: &str) -> Option<String> {
    if data.is_ascii() || data.chars().any(|c| c as u32 > 0xff) {
        return None;
    }
    let bytes: Vec<u8> = data.chars().map(|c| c as u8).collect();
    String::from_utf8(bytes).ok()
}

/// The other way: a packet as socket.io 1.x clients expect it in a text payload (see
/// [`undo_utf8_encode`]).
pub fn utf8_encode(packet: &str) -> String {
    packet.bytes().map(char::from).collect()
}

/// Joins packets already encoded into an Engine.IO v3 binary payload (every packet a text one).
pub fn encode_binary_payload(encoded: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded.iter().map(|e| e.len() + 8).sum());
    for e in encoded {
        out.push(0);
        out.extend(e.len().to_string().bytes().map(|d| d - b'0'));
        out.push(0xff);
        out.extend_from_slice(e.as_bytes());
    }
    out
}

/// Splits an Engine.IO v3 binary payload into its packets; binary packets are refused.
pub fn decode_binary_payload(body: &[u8]) -> Result<Vec<Packet>, EioError> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some((&kind, tail)) = rest.split_first() {
        let digits = tail.iter().position(|&b| b == 0xff).ok_or(EioError::BadPayload)?;
        // Longer lengths than this cannot be in a body we accept anyway.
        if digits == 0 || digits > 10 {
            return Err(EioError::BadPayload);
        }
        let mut len: usize = 0;
        for &d in &tail[..digits] {
            if d > 9 {
                return Err(EioError::BadPayload);
            }
            len = len * 10 + d as usize;
        }
        let data = &tail[digits + 1..];
        if data.len() < len {
            return Err(EioError::BadPayload);
        }
        match kind {
            0 => {
                let text = std::str::from_utf8(&data[..len]).map_err(|_| EioError::BadPayload)?;
                out.push(decode(text)?);
            }
            1 => return Err(EioError::Binary),
            _ => return Err(EioError::BadPayload),
        }
        rest = &data[len..];
    }
    Ok(out)
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
    }

    #[test]
    fn text_payloads_of_socket_io_1_clients() {
        // "张三" as socket.io 1.x puts it in a text payload: its six UTF-8 bytes, each a character.
        let doubled: String = "张三".bytes().map(char::from).collect();
        assert_eq!(doubled.chars().count(), 6);
        assert_eq!(utf8_encode("42[\"张三\"]"), format!("42[\"{doubled}\"]"));
        assert_eq!(undo_utf8_encode(&doubled).as_deref(), Some("张三"));
        // Its length in the payload counts those characters (the bytes).
        let p = vec![Packet::Message(doubled.clone())];
        assert_eq!(encode_payload(Eio::V3, &p), format!("7:4{doubled}"));
        for plain in ["hello", "张三", "é", "Ã"] {
            assert_eq!(undo_utf8_encode(plain), None, "{plain}");
        }
    }

    #[test]
    fn binary_payloads_of_xhr2_clients() {
        // The 18-byte packet `42["auth","probe"]`: kind 0, the digits 1 and 8, 0xFF, the packet.
        let auth = "42[\"auth\",\"probe\"]".to_string();
        let mut want = vec![0u8, 1, 8, 0xff];
        want.extend_from_slice(auth.as_bytes());
        assert_eq!(encode_binary_payload(std::slice::from_ref(&auth)), want);
        assert_eq!(decode_binary_payload(&want), Ok(vec![Packet::Message(auth[1..].to_string())]));
        // Two packets; lengths count UTF-8 bytes ("4你" is 4 bytes).
        let two = vec!["2".to_string(), "4你".to_string()];
        let bytes = encode_binary_payload(&two);
        assert_eq!(bytes[..5], [0, 1, 0xff, b'2', 0]);
        assert_eq!(bytes[5..8], [4, 0xff, b'4']);
        assert_eq!(
            decode_binary_payload(&bytes),
            Ok(vec![Packet::Ping(String::new()), Packet::Message("你".into())])
        );
        assert_eq!(decode_binary_payload(&[]), Ok(vec![]));
        assert_eq!(decode_binary_payload(&[1, 1, 0xff, 4]), Err(EioError::Binary));
        for bad in [
            &[0u8, 5, 0xff, b'4'][..],
            &[0, 1][..],
            &[0, 0xff, b'4'][..],
            &[0, 12, 0xff, b'4'][..],
            &[2, 1, 0xff, b'4'][..],
            &[0, 1, 0xff, 0xc3][..],
            &[0, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 0xff][..],
        ] {
            assert!(decode_binary_payload(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Eio::from_query("5"), None);
    }
}
