//! Message ids: 64-bit, time-ordered, unique across nodes.
//!
//! Layout (63 bits, always positive as `i64`): milliseconds since 2020-01-01 UTC (41 bits, good until
//! 2089) << 22 | node id (10 bits) << 12 | sequence (12 bits). When more than 4096 ids are asked for in
//! one millisecond the generator borrows the next millisecond, so ids stay unique and increasing.

use std::sync::atomic::{AtomicU64, Ordering};

/// 2020-01-01T00:00:00Z in Unix milliseconds.
pub const EPOCH_MS: u64 = 1_577_836_800_000;
pub const NODE_BITS: u32 = 10;
pub const SEQ_BITS: u32 = 12;
pub const MAX_NODE: u16 = (1 << NODE_BITS) - 1;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;
const TIME_SHIFT: u32 = NODE_BITS + SEQ_BITS;

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

    /// The next id as if the clock read `unix_ms` (the clock may go backwards; ids never do).
    pub fn next_at(&self, unix_ms: u64) -> i64 {
        let now = unix_ms.saturating_sub(EPOCH_MS);
        let mut cur = self.last.load(Ordering::Relaxed);
        loop {
            let last_ms = cur >> TIME_SHIFT;
            let next = if cur == 0 || now > last_ms {
                (now << TIME_SHIFT) | (self.node << SEQ_BITS)
            } else if cur & SEQ_MASK < SEQ_MASK {
                cur + 1
            } else {
                ((last_ms + 1) << TIME_SHIFT) | (self.node << SEQ_BITS)
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
    ((id as u64) >> TIME_SHIFT) + EPOCH_MS
}

/// The node that generated an id.
pub fn node_of(id: i64) -> u16 {
    (((id as u64) >> SEQ_BITS) & u64::from(MAX_NODE)) as u16
}

/// The smallest id any node could generate at `unix_ms`.
pub fn min_id_at(unix_ms: u64) -> i64 {
    (unix_ms.saturating_sub(EPOCH_MS) << TIME_SHIFT) as i64
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
        assert!(a > 0);
        assert!(min_id_at(t) <= a && a < min_id_at(t + 1));
    }

    #[test]
    fn clock_going_back_never_repeats() {
        let g = IdGen::new(1);
        let a = g.next_at(1_700_000_000_500);
        let b = g.next_at(1_700_000_000_000);
        assert!(b > a);
    }

    #[test]
    fn sequence_overflow_borrows_next_millisecond() {
        let g = IdGen::new(3);
        let t = 1_700_000_000_000;
        let ids: Vec<i64> = (0..5000).map(|_| g.next_at(t)).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(unix_ms_of(ids[4095]), t);
        assert_eq!(unix_ms_of(ids[4096]), t + 1);
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
}
