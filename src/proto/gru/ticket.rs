//! `/ticket`: which Gru node a user should connect to, and the token2 it will present at `auth`.
//! Nodes are chosen by consistent hashing of the userId (so a user keeps its node while the node list
//! stays the same, and moves as little as possible when it changes); the other nodes are the backups,
//! in ring order. token2 is an HMAC-SHA256 over id, name, type and expiry.

use std::path::Path;
use std::time::Duration;

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;

use crate::config::GruNode;

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
    Md5::digest(format!("{user_id}_{user_name}_{salt}").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Issues and checks token2.
pub struct Token2 {
    secret: Vec<u8>,
    ttl: Duration,
}

impl Token2 {
    pub fn new(secret: &[u8], ttl: Duration) -> Token2 {
        Token2 { secret: secret.to_vec(), ttl }
    }

    /// The configured secret, or one generated once and kept in `data_dir`.
    pub fn load(configured: &str, data_dir: &Path, ttl: Duration) -> std::io::Result<Token2> {
        if !configured.is_empty() {
            return Ok(Token2::new(configured.as_bytes(), ttl));
        }
        let path = data_dir.join("gru-token2.key");
        if let Ok(k) = std::fs::read_to_string(&path) {
            if !k.trim().is_empty() {
                return Ok(Token2::new(k.trim().as_bytes(), ttl));
            }
        }
        let key = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        std::fs::create_dir_all(data_dir)?;
        std::fs::write(&path, &key)?;
        Ok(Token2::new(key.as_bytes(), ttl))
    }

    fn mac(&self, id: &str, name: &str, user_type: &str, exp: u64) -> Option<String> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).ok()?;
        mac.update(format!("{id}\n{name}\n{user_type}\n{exp}").as_bytes());
        Some(mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect())
    }

    /// `<expiry unix seconds>.<hex HMAC>`.
    pub fn issue(&self, id: &str, name: &str, user_type: &str, now: u64) -> String {
        let exp = now + self.ttl.as_secs();
        format!("{exp}.{}", self.mac(id, name, user_type, exp).unwrap_or_default())
    }

    /// True when `token` was issued for these values and has not expired at `now`.
    pub fn check(&self, token: &str, id: &str, name: &str, user_type: &str, now: u64) -> bool {
        let Some((exp, mac)) = token.split_once('.') else { return false };
        let Ok(exp) = exp.parse::<u64>() else { return false };
        exp >= now && self.mac(id, name, user_type, exp).is_some_and(|m| m == mac)
    }
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

    #[test]
    fn token2_round_trip_and_refusals() {
        let t = Token2::new(b"secret", Duration::from_secs(60));
        let tok = t.issue("123", "张三", "0", 1_000);
        assert!(t.check(&tok, "123", "张三", "0", 1_030));
        assert!(!t.check(&tok, "123", "张三", "0", 1_061), "expired");
        assert!(!t.check(&tok, "124", "张三", "0", 1_030), "other user");
        assert!(!t.check(&tok, "123", "张三", "1", 1_030), "other type");
        assert!(!t.check("garbage", "123", "张三", "0", 1_030));
        assert!(!Token2::new(b"other", Duration::from_secs(60)).check(&tok, "123", "张三", "0", 1_030));
    }
}
