//! The gateway's text message id: 16 symbols of `23456789ABCDEFGHJKLMNPQRSTUVWXYZ` in groups 5-4-4-3,
//! packing the send time in ms, a 12-bit sequence, the 4-bit conversation type and a 22-bit FNV-1 hash
//! of the conversation id. String order equals time order. Pure: no I/O.
//!
//! Layout: h = fnv1_32(conversation id) & (2^22 - 1); high = ms << 22 | seq << 10 | type << 6 | h >> 16;
//! symbols 1–12 are high's top 60 bits, 5 at a time; symbol 13 is its low 4 bits shifted left by one;
//! symbols 14–16 are bits 14..0 of h.

use crate::domain::ids;

const ALPHABET: &[u8; 32] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ";
const HASH_MASK: u32 = (1 << 22) - 1;

/// What a MsgId carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgIdParts {
    pub unix_ms: u64,
    pub seq: u16,
    pub conv_type: u8,
    /// The 22-bit hash of the conversation id; decoding recovers all bits but bit 15, which the
    /// layout does not carry (see [`MsgIdParts::is_for`]).
    pub hash: u32,
}

/// Bits of the conversation hash that a MsgId carries.
const CARRIED_HASH_BITS: u32 = HASH_MASK & !(1 << 15);

impl MsgIdParts {
    /// True when this id can belong to `conversation_id` (its carried hash bits match).
    pub fn is_for(&self, conversation_id: &str) -> bool {
        (self.hash & CARRIED_HASH_BITS) == (conv_hash(conversation_id) & CARRIED_HASH_BITS)
    }
}

/// Why a text id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MsgIdError {
    #[error("malformed message id")]
    Malformed,
}

/// FNV-1 (not 1a), 32 bits.
pub fn fnv1_32(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in data {
        h = h.wrapping_mul(0x0100_0193);
        h ^= u32::from(*b);
    }
    h
}

/// The 22-bit conversation hash used in MsgIds.
pub fn conv_hash(conversation_id: &str) -> u32 {
    fnv1_32(conversation_id.as_bytes()) & HASH_MASK
}

/// Renders a MsgId. `seq` keeps its low 12 bits, `conv_type` its low 4, `unix_ms` its low 42.
pub fn encode(unix_ms: u64, seq: u16, conv_type: u8, conversation_id: &str) -> String {
    encode_parts(&MsgIdParts { unix_ms, seq, conv_type, hash: conv_hash(conversation_id) })
}

pub fn encode_parts(p: &MsgIdParts) -> String {
    let h = u64::from(p.hash & HASH_MASK);
    let high: u64 = ((p.unix_ms & ((1 << 42) - 1)) << 22)
        | (u64::from(p.seq & 0xfff) << 10)
        | (u64::from(p.conv_type & 0xf) << 6)
        | (h >> 16);
    let mut sym = [0u8; 16];
    for (i, s) in sym.iter_mut().take(12).enumerate() {
        *s = ((high >> (59 - 5 * i)) & 0x1f) as u8;
    }
    sym[12] = ((high & 0xf) << 1) as u8;
    for i in 0..3 {
        sym[13 + i] = ((h >> (10 - 5 * i)) & 0x1f) as u8;
    }
    let mut out = String::with_capacity(19);
    for (i, s) in sym.iter().enumerate() {
        if i == 5 || i == 9 || i == 13 {
            out.push('-');
        }
        out.push(char::from(ALPHABET[usize::from(*s)]));
    }
    out
}

/// The MsgId of core message `id` in a conversation: core ids carry exactly the milliseconds and the
/// node-shared 12-bit sequence a MsgId packs, so ids from different nodes never collide.
pub fn of_message(id: i64, conv_type: u8, conversation_id: &str) -> String {
    encode(ids::unix_ms_of(id), ids::seq_of(id), conv_type, conversation_id)
}

/// The core message id a MsgId stands for.
pub fn message_id(parts: &MsgIdParts) -> Option<i64> {
    ids::id_from_parts(parts.unix_ms, parts.seq)
}

/// Parses a MsgId back into its parts.
pub fn decode(text: &str) -> Result<MsgIdParts, MsgIdError> {
    let bytes = text.as_bytes();
    if bytes.len() != 19 || bytes[5] != b'-' || bytes[10] != b'-' || bytes[15] != b'-' {
        return Err(MsgIdError::Malformed);
    }
    let mut sym = [0u64; 16];
    let mut n = 0;
    for &c in bytes {
        if c == b'-' {
            continue;
        }
        let v = ALPHABET.iter().position(|&a| a == c.to_ascii_uppercase()).ok_or(MsgIdError::Malformed)?;
        sym[n] = v as u64;
        n += 1;
    }
    if sym[12] & 1 != 0 {
        return Err(MsgIdError::Malformed);
    }
    let mut high: u64 = 0;
    for s in sym.iter().take(12) {
        high = (high << 5) | s;
    }
    high = (high << 4) | (sym[12] >> 1);
    let low15 = (sym[13] << 10) | (sym[14] << 5) | sym[15];
    let hash = (((high & 0x3f) << 16) | low15) as u32;
    if low15 >> 15 != 0 || (hash & !HASH_MASK) != 0 {
        return Err(MsgIdError::Malformed);
    }
    Ok(MsgIdParts {
        unix_ms: high >> 22,
        seq: ((high >> 10) & 0xfff) as u16,
        conv_type: ((high >> 6) & 0xf) as u8,
        hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONV: &str = "87ba7679-b682-47e7-8499-0385dda22b66";

    #[test]
    fn reproduces_the_documented_vectors() {
        let cases = [
            (1_697_986_744_068, 1, 0, CONV, "EDCZL-SY32-243Y-VWQ"),
            (1_697_986_882_878, 1, 0, CONV, "EDCZM-UUHJ-243Y-VWQ"),
            (1_697_987_356_929, 1, 0, CONV, "EDCZR-GL2A-243Y-VWQ"),
            (1_697_986_744_068, 2, 3, CONV, "EDCZL-SY32-26FY-VWQ"),
            (1_700_000_000_000, 1, 1, "00000000-0000-0000-0000-000000000000", "EDTZL-QJ22-247J-53B"),
        ];
        for (ms, seq, ty, conv, want) in cases {
            assert_eq!(encode(ms, seq, ty, conv), want, "{ms} {seq} {ty} {conv}");
            let p = decode(want).expect("decodes");
            assert_eq!((p.unix_ms, p.seq, p.conv_type), (ms, seq, ty));
            assert!(p.is_for(conv));
            assert!(!p.is_for("some-other-conversation"));
            assert_eq!(encode_parts(&p), want, "round trip");
        }
    }

    #[test]
    fn string_order_is_send_order() {
        let mut ids = Vec::new();
        for ms in [1_697_986_744_068u64, 1_697_986_744_069, 1_700_000_000_000] {
            for seq in [0u16, 1, 2, 4095] {
                ids.push(encode(ms, seq, 5, CONV));
            }
        }
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }

    #[test]
    fn refuses_malformed_ids() {
        for bad in [
            "",
            "EDCZL-SY32-243Y-VW",
            "EDCZL-SY32-243Y-VWQQ",
            "EDCZL_SY32-243Y-VWQ",
            "EDCZ1-SY32-243Y-VWQ",
            "EDCZL-SY32-243Z-VWQ",
        ] {
            assert_eq!(decode(bad), Err(MsgIdError::Malformed), "{bad}");
        }
    }

    #[test]
    fn core_ids_convert_both_ways_and_nodes_never_collide() {
        let t = 1_700_000_000_000;
        let (a, b) = (ids::IdGen::new(1), ids::IdGen::new(2));
        let mut seen = std::collections::HashSet::new();
        for _ in 0..300 {
            for id in [a.next_at(t), b.next_at(t)] {
                let text = of_message(id, 0, CONV);
                assert!(seen.insert(text.clone()), "duplicate {text}");
                assert_eq!(message_id(&decode(&text).expect("decodes")), Some(id));
            }
        }
    }

    #[test]
    fn fnv1_is_not_fnv1a() {
        assert_eq!(fnv1_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1_32(b"a"), 0x050c_5d7e);
    }
}
