//! `/ticket`: which Gru node a user should connect to, and the token2 it will present at `auth`.
//! Nodes are chosen by consistent hashing of the userId (so a user keeps its node while the node list
//! stays the same, and moves as little as possible when it changes); the other nodes are the backups,
//! in ring order. token2 is, by `[gru] token2_check`, an HMAC-SHA256 over id, name, type and expiry
//! (`hmac`, the default), the original's salted MD5 over id, name and token1 (`md5`), or not checked
//! (`off`).

use std::path::Path;
use std::time::Duration;

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;

use crate::config::{GruNode, Token2Scheme};

/// Virtual points per node on the ring.
const POINTS: u32 = 64;

/// A well-mixed 64-bit position on the ring (the first 8 bytes of an MD5).
fn ring_hash(data: &[u8]) -> u64 {
    let d = Md5::digest(data);
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// The nodes in the order a user should try them: its own first, then the backups.
pub fn nodes_for<'a>(nodes: &'a [GruNode], user: &str) -> Vec<&'a GruNode> {
    if nodes.is_empty() {
        return Vec::new();
    }
    let mut ring: Vec<(u64, usize)> = Vec::with_capacity(nodes.len() * POINTS as usize);
    for (i, n) in nodes.iter().enumerate() {
        for p in 0..POINTS {
            ring.push((ring_hash(format!("{}#{p}", n.name).as_bytes()), i));
        }
    }
    ring.sort_unstable();
    let h = ring_hash(user.as_bytes());
    let start = ring.partition_point(|(point, _)| *point < h);
    let mut order: Vec<usize> = Vec::with_capacity(nodes.len());
    for k in 0..ring.len() {
        let (_, i) = ring[(start + k) % ring.len()];
        if !order.contains(&i) {
            order.push(i);
            if order.len() == nodes.len() {
                break;
            }
        }
    }
    order.into_iter().map(|i| &nodes[i]).collect()
}

/// The original salted-md5 token1: md5("<userId>_<userName>_" + salt), lowercase hex.
pub fn md5_token1(user_id: &str, user_name: &str, salt: &str) -> String {
    md5_hex(&format!("{user_id}_{user_name}_{salt}"))
}

/// The user type of an `auth` that names none: a student (as the original treated everyone).
pub const DEFAULT_USER_TYPE: &str = "1";

/// Why an `auth`'s token2 was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Token2Refusal {
    #[error("token2 is required")]
    Missing,
    #[error("invalid or expired token2")]
    Invalid,
}

/// What an `auth` presents to be checked.
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    pub id: &'a str,
    pub name: &'a str,
    /// The type the client gave, if any.
    pub user_type: Option<&'a str>,
    pub token1: Option<&'a str>,
    pub token2: Option<&'a str>,
}

/// Issues and checks token2.
pub struct Token2 {
    scheme: Token2Scheme,
    secret: Vec<u8>,
    ttl: Duration,
}

impl Token2 {
    pub fn new(scheme: Token2Scheme, secret: &[u8], ttl: Duration) -> Token2 {
        Token2 { scheme, secret: secret.to_vec(), ttl }
    }

    /// The configured secret, or one generated once and kept in `data_dir`.
    pub fn load(
        scheme: Token2Scheme,
        configured: &str,
        data_dir: &Path,
        ttl: Duration,
    ) -> std::io::Result<Token2> {
        let key = crate::transport::secret::load_or_create(configured, data_dir, "gru-token2.key")?;
        Ok(Token2::new(scheme, &key, ttl))
    }

    fn mac(&self, id: &str, name: &str, user_type: &str, exp: u64) -> Option<String> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).ok()?;
        mac.update(format!("{id}\n{name}\n{user_type}\n{exp}").as_bytes());
        Some(mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The token2 `/ticket` hands out for these values at `now` (Unix seconds).
    pub fn issue(&self, id: &str, name: &str, user_type: &str, token1: &str, now: u64) -> String {
        match &self.scheme {
            Token2Scheme::Md5(salt) => md5_hex(&format!("{id}_{name}_{token1}_{salt}")),
            Token2Scheme::Hmac | Token2Scheme::Off => {
                let exp = now + self.ttl.as_secs();
                format!("{exp}.{}.{user_type}", self.mac(id, name, user_type, exp).unwrap_or_default())
            }
        }
    }

    /// Checks an `auth` at `now`; answers the user's type: the one an HMAC token binds, else the one
    /// given, else [`DEFAULT_USER_TYPE`].
    pub fn verify(&self, p: Presented<'_>, now: u64) -> Result<String, Token2Refusal> {
        let given = p.user_type.unwrap_or(DEFAULT_USER_TYPE);
        let token = p.token2.filter(|t| !t.is_empty());
        match &self.scheme {
            Token2Scheme::Off => Ok(given.to_string()),
            Token2Scheme::Md5(salt) => {
                let token = token.ok_or(Token2Refusal::Missing)?;
                let want = md5_hex(&format!("{}_{}_{}_{salt}", p.id, p.name, p.token1.unwrap_or_default()));
                if token.eq_ignore_ascii_case(&want) {
                    Ok(given.to_string())
                } else {
                    Err(Token2Refusal::Invalid)
                }
            }
            Token2Scheme::Hmac => {
                let token = token.ok_or(Token2Refusal::Missing)?;
                let (exp, rest) = token.split_once('.').ok_or(Token2Refusal::Invalid)?;
                // `<exp>.<mac>.<type>`; tokens issued before the type was carried are `<exp>.<mac>`.
                let (mac, bound) = match rest.split_once('.') {
                    Some((mac, bound)) => (mac, Some(bound)),
                    None => (rest, None),
                };
                let user_type = match (bound, p.user_type) {
                    (Some(b), Some(g)) if b != g => return Err(Token2Refusal::Invalid),
                    (Some(b), _) => b,
                    (None, _) => given,
                };
                let exp: u64 = exp.parse().map_err(|_| Token2Refusal::Invalid)?;
                if exp >= now && self.mac(p.id, p.name, user_type, exp).is_some_and(|m| m == mac) {
                    Ok(user_type.to_string())
                } else {
                    Err(Token2Refusal::Invalid)
                }
            }
        }
    }
}

fn md5_hex(text: &str) -> String {
    Md5::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<GruNode> {
        (1..=n)
            .map(|i| GruNode { name: format!("node_{i}"), addr: format!("http://10.0.0.{i}:11111") })
            .collect()
    }

    #[test]
    fn every_node_is_listed_once_and_the_choice_is_stable() {
        let ns = nodes(3);
        let a = nodes_for(&ns, "123");
        assert_eq!(a.len(), 3);
        assert_eq!(a, nodes_for(&ns, "123"), "same user, same order");
        let mut names: Vec<&str> = a.iter().map(|n| n.name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["node_1", "node_2", "node_3"]);
        assert!(nodes_for(&[], "123").is_empty());
    }

    #[test]
    fn users_spread_and_move_little_when_a_node_is_added() {
        let (three, four) = (nodes(3), nodes(4));
        let users: Vec<String> = (0..3000).map(|i| format!("user{i}")).collect();
        let mut per_node = std::collections::HashMap::new();
        let mut moved = 0;
        for u in &users {
            let before = &nodes_for(&three, u)[0].name;
            *per_node.entry(before.clone()).or_insert(0) += 1;
            let after = &nodes_for(&four, u)[0].name;
            if after != before {
                assert_eq!(after, "node_4", "users only move to the new node");
                moved += 1;
            }
        }
        assert!(per_node.values().all(|&n| n > 600), "{per_node:?}");
        assert!(moved < 1200, "{moved} of 3000 moved");
    }

    #[test]
    fn md5_token1_matches_the_original_scheme() {
        assert_eq!(
            md5_token1("123", "student1", "salt"),
            format!("{:x}", Md5::digest(b"123_student1_salt")).as_str()
        );
    }

    fn presented<'a>(id: &'a str, user_type: Option<&'a str>, token2: &'a str) -> Presented<'a> {
        Presented { id, name: "张三", user_type, token1: Some("t1"), token2: Some(token2) }
    }

    #[test]
    fn hmac_token2_round_trip_and_refusals() {
        let t = Token2::new(Token2Scheme::Hmac, b"secret", Duration::from_secs(60));
        let tok = t.issue("123", "张三", "0", "t1", 1_000);
        assert!(tok.ends_with(".0"), "the type rides along: {tok}");
        assert_eq!(t.verify(presented("123", Some("0"), &tok), 1_030), Ok("0".into()));
        // An auth without type gets the type bound into the token.
        assert_eq!(t.verify(presented("123", None, &tok), 1_030), Ok("0".into()));
        for (p, now, why) in [
            (presented("123", Some("0"), &tok), 1_061, "expired"),
            (presented("124", Some("0"), &tok), 1_030, "other user"),
            (presented("123", Some("1"), &tok), 1_030, "other type"),
            (presented("123", Some("0"), "garbage"), 1_030, "garbage"),
            (presented("123", Some("0"), "x.y.0"), 1_030, "no number"),
        ] {
            assert_eq!(t.verify(p, now), Err(Token2Refusal::Invalid), "{why}");
        }
        let other = Token2::new(Token2Scheme::Hmac, b"other", Duration::from_secs(60));
        assert_eq!(other.verify(presented("123", Some("0"), &tok), 1_030), Err(Token2Refusal::Invalid));
        let none = Presented { token2: None, ..presented("123", Some("0"), "") };
        assert_eq!(t.verify(none, 1_030), Err(Token2Refusal::Missing));
        // Tokens of the earlier form (`<exp>.<mac>`) still work when auth names the type.
        let exp = 1_060;
        let old = format!("{exp}.{}", t.mac("123", "张三", "1", exp).expect("mac"));
        assert_eq!(t.verify(presented("123", Some("1"), &old), 1_030), Ok("1".into()));
        assert_eq!(t.verify(presented("123", None, &old), 1_030), Ok("1".into()), "a student by default");
        assert_eq!(t.verify(presented("123", Some("0"), &old), 1_030), Err(Token2Refusal::Invalid));
    }

    #[test]
    fn md5_token2_is_the_originals() {
        // The demo app: token2 = md5("<id>_<name>_<token1>_" + "token_gen_for_spear@sumory.com").
        let salt = "token_gen_for_spear@sumory.com";
        let t = Token2::new(Token2Scheme::Md5(salt.into()), b"unused", Duration::from_secs(60));
        let want = format!("{:x}", Md5::digest(format!("201_张三_t1_{salt}").as_bytes()));
        assert_eq!(t.issue("201", "张三", "1", "t1", 5), want);
        let p =
            Presented { id: "201", name: "张三", user_type: None, token1: Some("t1"), token2: Some(&want) };
        assert_eq!(t.verify(p, 5), Ok("1".into()), "a student when no type is given");
        let upper = want.to_uppercase();
        assert_eq!(
            t.verify(Presented { token2: Some(&upper), user_type: Some("0"), ..p }, 5),
            Ok("0".into())
        );
        assert_eq!(t.verify(Presented { token1: Some("t2"), ..p }, 5), Err(Token2Refusal::Invalid));
        assert_eq!(t.verify(Presented { token2: None, ..p }, 5), Err(Token2Refusal::Missing));
        let off = Token2::new(Token2Scheme::Off, b"k", Duration::from_secs(60));
        assert_eq!(off.verify(Presented { token2: None, ..p }, 5), Ok("1".into()));
    }
}
