//! An optional cap on the requests one client address may have open at once (`[limits]
//! connections_per_ip`): WebSocket sessions, SSE streams and long-polls count for as long as their
//! response lives, so one address cannot hold thousands of them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use actix_web::body::{BodySize, MessageBody};
use bytes::Bytes;

/// Open requests per address.
pub struct ConnCap {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open request; the count goes down when it is dropped (with the response body).
pub struct Held {
    cap: Arc<ConnCap>,
    ip: IpAddr,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut open = self.cap.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

impl ConnCap {
    /// At most `max` open requests per address; 0: no cap.
    pub fn new(max: usize) -> Arc<ConnCap> {
        Arc::new(ConnCap { max, open: Mutex::new(HashMap::new()) })
    }

    /// A place for one more request from `ip`, or `None` when it has `max` open. Exempt or unknown
    /// addresses and a cap of 0 always get one (not counted).
    pub fn enter(self: &Arc<Self>, ip: Option<IpAddr>, exempt: bool) -> Option<Option<Held>> {
        let ip = match ip {
            Some(ip) if self.max > 0 && !exempt => ip,
            _ => return Some(None),
        };
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Some(Held { cap: self.clone(), ip }))
    }

    /// Open requests of `ip` now.
    pub fn open(&self, ip: IpAddr) -> usize {
        self.open.lock().map(|o| o.get(&ip).copied().unwrap_or(0)).unwrap_or(0)
    }
}

/// A response body that holds its request's place until it is dropped.
pub struct HeldBody<B> {
    body: B,
    _held: Option<Held>,
}

impl<B> HeldBody<B> {
    pub fn new(body: B, held: Option<Held>) -> HeldBody<B> {
        HeldBody { body, _held: held }
    }
}

impl<B: MessageBody + Unpin> MessageBody for HeldBody<B> {
    type Error = B::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.body).poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_holds_at_most_max_and_gets_its_places_back() {
        let cap = ConnCap::new(2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().expect("ip"), "10.0.0.2".parse().expect("ip"));
        let first = cap.enter(Some(a), false).expect("room");
        let second = cap.enter(Some(a), false).expect("room");
        assert!(cap.enter(Some(a), false).is_none(), "a third is refused");
        assert!(cap.enter(Some(b), false).is_some(), "another address has its own");
        assert!(cap.enter(Some(a), true).is_some(), "exempt addresses are not counted");
        drop(first);
        assert_eq!(cap.open(a), 1);
        assert!(cap.enter(Some(a), false).is_some());
        drop(second);
        assert!(ConnCap::new(0).enter(Some(a), false).is_some_and(|h| h.is_none()), "0: no cap");
    }
}
