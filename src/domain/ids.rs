//! Message ids: 64-bit integers (53 bits used, so they survive JSON numbers in JavaScript),
//! time-ordered and unique across nodes.
//!
//! Layout: Unix milliseconds since 2020-01-01 UTC (41 bits, good until 2089) << 12 | sequence (12 bits).
//! The 12-bit sequence space is shared out between nodes: its top [`NODE_BITS`] bits are the node id,
//! the rest a per-millisecond counter. When a node needs more ids in one millisecond than its counter
//! holds, it borrows the next millisecond, so ids stay unique and increasing. The same (milliseconds,
//! sequence) pair is what the gateway's text MsgId packs, so the two convert both ways.

use std::sync::atomic::{AtomicU64, Ordering};

/// 2020-01-01T00:00:00Z in Unix milliseconds.
pub const EPOCH_MS: u64 = 1_577_836_800_000;
pub const SEQ_BITS: u32 = 12;
/// Bits of the sequence that name the node: up to 16 nodes, 256 ids per millisecond each.
pub const NODE_BITS: u32 = 4;
pub const MAX_NODE: u16 = (1 << NODE_BITS) - 1;
const COUNTER_BITS: u32 = SEQ_BITS - NODE_BITS;
const COUNTER_MASK: u64 = (1 << COUNTER_BITS) - 1;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;

/// Generates ids for one node; safe to share between threads.
#[derive(Debug)]
pub struct IdGen {
    node: u64,
    last: AtomicU64,
}

impl IdGen {
    /// `node` must be at most [`MAX_NODE`]; larger values are masked.
    pub fn new(node: u16) -> IdGen {
        IdGen { node: u64::from(node & MAX_NODE), last: AtomicU64::new(0) }
    }

    pub fn next(&self) -> i64 {
        self.next_at(now_ms())
    }

    /// Ids made from now on are greater than `seen` (an id another node made): a message stored
    /// here after one that came from elsewhere sorts after it, whatever the two clocks say.
    pub fn observe(&self, seen: i64) {
        let Ok(seen) = u64::try_from(seen) else { return };
        // This node's last id of `seen`'s millisecond: the next one starts the millisecond after.
        let end_of_ms = (seen & !SEQ_MASK) | (self.node << COUNTER_BITS) | COUNTER_MASK;
        self.last.fetch_max(end_of_ms, Ordering::AcqRel);
    }

    /// The next id as if the clock read `unix_ms` (the clock may go backwards; ids never do).
    pub fn next_at(&self, unix_ms: u64) -> i64 {
        let now = unix_ms.saturating_sub(EPOCH_MS);
        let base = |ms: u64| (ms << SEQ_BITS) | (self.node << COUNTER_BITS);
        let mut cur = self.last.load(Ordering::Relaxed);
        loop {
            let last_ms = cur >> SEQ_BITS;
            let next = if cur == 0 || now > last_ms {
                base(now)
            } else if cur & COUNTER_MASK < COUNTER_MASK {
                cur + 1
            } else {
                base(last_ms + 1)
            };
            match self.last.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return next as i64,
                Err(actual) => cur = actual,
            }
        }
    }
}

/// Unix milliseconds encoded in an id.
pub fn unix_ms_of(id: i64) -> u64 {
    ((id as u64) >> SEQ_BITS) + EPOCH_MS
}

/// The 12-bit sequence of an id (node bits included).
pub fn seq_of(id: i64) -> u16 {
    ((id as u64) & SEQ_MASK) as u16
}

/// The node that generated an id.
pub fn node_of(id: i64) -> u16 {
    (((id as u64) & SEQ_MASK) >> COUNTER_BITS) as u16
}

/// The id made of these milliseconds and sequence (the inverse of [`unix_ms_of`] and [`seq_of`]);
/// `None` before the epoch or past the 41-bit range.
pub fn id_from_parts(unix_ms: u64, seq: u16) -> Option<i64> {
    let ms = unix_ms.checked_sub(EPOCH_MS)?;
    if ms >= 1 << 41 || u64::from(seq) > SEQ_MASK {
        return None;
    }
    Some(((ms << SEQ_BITS) | u64::from(seq)) as i64)
}

/// The smallest id any node could generate at `unix_ms`.
pub fn min_id_at(unix_ms: u64) -> i64 {
    (unix_ms.saturating_sub(EPOCH_MS) << SEQ_BITS) as i64
}

pub fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

pub fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Arc;

    #[test]
    fn ids_increase_and_encode_time_and_node() {
        let g = IdGen::new(7);
        let t = 1_700_000_000_000;
        let a = g.next_at(t);
        let b = g.next_at(t);
        let c = g.next_at(t + 1);
        assert!(a < b && b < c);
        assert_eq!(unix_ms_of(a), t);
        assert_eq!(unix_ms_of(c), t + 1);
        assert_eq!(node_of(a), 7);
        assert!(a > 0 && a < 1 << 53, "fits a JavaScript number");
        assert!(min_id_at(t) <= a && a < min_id_at(t + 1));
        assert_eq!(id_from_parts(unix_ms_of(b), seq_of(b)), Some(b));
    }

    #[test]
    fn an_id_seen_from_a_node_with_a_clock_ahead_is_overtaken() {
        // Node 1's clock is 3 s ahead of node 2's.
        let (fast, slow) = (IdGen::new(1), IdGen::new(2));
        let t = 1_700_000_000_000;
        let seen = fast.next_at(t + 3_000);
        assert!(slow.next_at(t) < seen, "without observing, the slow clock sorts before");
        slow.observe(seen);
        let after = [slow.next_at(t), slow.next_at(t + 10), slow.next_at(t + 3_000)];
        assert!(after.iter().all(|&id| id > seen), "{after:?} after {seen}");
        assert!(after.windows(2).all(|w| w[0] < w[1]));
        assert!(after.iter().all(|&id| node_of(id) == 2), "still this node's ids");
        // An older id changes nothing; a later clock takes over again.
        slow.observe(seen - 1_000_000);
        assert_eq!(slow.next_at(t + 5_000), min_id_at(t + 5_000) | (2 << COUNTER_BITS));
    }

    #[test]
    fn clock_going_back_never_repeats() {
        let g = IdGen::new(1);
        let a = g.next_at(1_700_000_000_500);
        let b = g.next_at(1_700_000_000_000);
        assert!(b > a);
    }

    #[test]
    fn counter_overflow_borrows_next_millisecond() {
        let g = IdGen::new(3);
        let t = 1_700_000_000_000;
        let ids: Vec<i64> = (0..1000).map(|_| g.next_at(t)).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(unix_ms_of(ids[255]), t);
        assert_eq!(unix_ms_of(ids[256]), t + 1);
        assert!(ids.iter().all(|&id| node_of(id) == 3));
    }

    #[test]
    fn unique_under_concurrency() {
        let g = Arc::new(IdGen::new(2));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || (0..20_000).map(|_| g.next()).collect::<Vec<_>>())
            })
            .collect();
        let mut all = HashSet::new();
        for h in handles {
            let ids = h.join().expect("thread");
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "per-thread order");
            for id in ids {
                assert!(all.insert(id), "duplicate id {id}");
            }
        }
        assert_eq!(all.len(), 80_000);
    }

    #[test]
    fn nodes_never_collide() {
        let a = IdGen::new(1);
        let b = IdGen::new(2);
        let t = 1_700_000_000_000;
        let xs: HashSet<i64> = (0..1000).map(|_| a.next_at(t)).collect();
        assert!((0..1000).map(|_| b.next_at(t)).all(|id| !xs.contains(&id)));
    }

    #[test]
    fn parts_are_checked() {
        assert_eq!(id_from_parts(EPOCH_MS - 1, 0), None);
        assert_eq!(id_from_parts(EPOCH_MS, 4096), None);
        assert_eq!(id_from_parts(EPOCH_MS, 5), Some(5));
    }
}
