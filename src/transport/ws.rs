//! WebSocket plumbing with a bounded outbound queue.
//!
//! actix-web-actors queues outgoing frames without a bound and tells the actor nothing about the socket.
//! [`start`] builds the response itself and wraps the body stream in [`CountingStream`], which counts
//! the bytes the HTTP dispatcher has taken. The actor counts what it queued ([`OutboundMeter`]); the
//! difference is what sits unsent, and the actor drops the connection when it passes its limit. The same
//! counts tell which messages have really been written out, so delivery watermarks only move for those.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use actix::{Actor, Addr, StreamHandler};
use actix_web::{web, Error, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use bytes::Bytes;
use futures_util::Stream;

/// Largest accepted frame from a client (bigger ones close the connection with 1009).
pub const MAX_FRAME: usize = 64 * 1024;

/// Body stream adapter counting the bytes handed to the socket.
pub struct CountingStream<S> {
    inner: S,
    pulled: Arc<AtomicU64>,
}

impl<S> CountingStream<S> {
    /// Counts into `pulled` what the HTTP dispatcher takes from `inner`.
    pub fn new(inner: S, pulled: Arc<AtomicU64>) -> Self {
        CountingStream { inner, pulled }
    }
}

impl<S> Stream for CountingStream<S>
where
    S: Stream<Item = Result<Bytes, Error>> + Unpin,
{
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let poll = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &poll {
            self.pulled.fetch_add(chunk.len() as u64, Ordering::Release);
        }
        poll
    }
}

/// Performs the handshake and starts `actor` on the socket; `pulled` is shared with the actor's
/// [`OutboundMeter`].
pub fn start<A>(
    actor: A,
    req: &HttpRequest,
    payload: web::Payload,
    pulled: Arc<AtomicU64>,
) -> Result<(Addr<A>, HttpResponse), Error>
where
    A: Actor<Context = ws::WebsocketContext<A>> + StreamHandler<Result<ws::Message, ws::ProtocolError>>,
{
    let mut res = ws::handshake(req)?;
    let (addr, stream) = ws::WebsocketContext::create_with_addr(actor, payload);
    let counting = CountingStream { inner: Box::pin(stream), pulled };
    Ok((addr, res.streaming(counting)))
}

/// Bytes a server frame with `payload` bytes of payload takes on the wire (server frames are not
/// masked).
pub fn frame_len(payload: usize) -> u64 {
    let header = match payload {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    };
    (header + payload) as u64
}

impl<T> Default for OutboundMeter<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// The connection's side of the outbound accounting.
///
/// A message counts as delivered once the peer has answered a WebSocket ping queued after it: peers
/// answer pings in order, so every frame before the ping has been read. Pings for this are sent
/// one at a time (at most one per round trip) right behind the messages they confirm.
#[derive(Debug)]
pub struct OutboundMeter<T> {
    pulled: Arc<AtomicU64>,
    queued: u64,
    /// Messages not yet confirmed: (byte offset of their end, the message).
    in_flight: VecDeque<(u64, T)>,
    /// The outstanding confirmation ping: (sequence, queued bytes before it).
    ping: Option<(u64, u64)>,
    next_ping: u64,
}

/// Length of the payload of confirmation pings.
pub const ACK_PING_LEN: usize = 8;

impl<T> OutboundMeter<T> {
    pub fn new() -> Self {
        OutboundMeter {
            pulled: Arc::new(AtomicU64::new(0)),
            queued: 0,
            in_flight: VecDeque::new(),
            ping: None,
            next_ping: 1,
        }
    }

    /// The counter to give [`start`].
    pub fn counter(&self) -> Arc<AtomicU64> {
        self.pulled.clone()
    }

    /// A frame with `payload` bytes was queued.
    pub fn frame(&mut self, payload: usize) {
        self.queued += frame_len(payload);
    }

    /// Raw bytes (not a WebSocket frame) carrying `item` were queued (SSE).
    pub fn message_bytes(&mut self, len: usize, item: T) {
        self.queued += len as u64;
        self.in_flight.push_back((self.queued, item));
    }

    /// Raw bytes carrying no message were queued (SSE comments).
    pub fn raw_bytes(&mut self, len: usize) {
        self.queued += len as u64;
    }

    /// A frame carrying `item` was queued.
    pub fn message(&mut self, payload: usize, item: T) {
        self.frame(payload);
        self.in_flight.push_back((self.queued, item));
    }

    /// Bytes queued but not yet taken by the socket.
    pub fn backlog(&self) -> u64 {
        self.queued.saturating_sub(self.pulled.load(Ordering::Acquire))
    }

    /// The payload of a confirmation ping to send now, if one is needed (messages wait for
    /// confirmation and no ping is outstanding). The caller queues the ping right away.
    pub fn ack_ping(&mut self) -> Option<[u8; ACK_PING_LEN]> {
        if self.ping.is_some() || self.in_flight.is_empty() {
            return None;
        }
        let seq = self.next_ping;
        self.next_ping += 1;
        self.ping = Some((seq, self.queued));
        self.frame(ACK_PING_LEN);
        Some(seq.to_be_bytes())
    }

    /// A pong arrived: the messages it confirms, oldest first.
    pub fn pong(&mut self, payload: &[u8]) -> Vec<T> {
        let Some((seq, offset)) = self.ping else { return Vec::new() };
        if payload != seq.to_be_bytes() {
            return Vec::new();
        }
        self.ping = None;
        self.confirm_upto(offset)
    }

    /// The peer closed cleanly: what the socket took counts as delivered.
    pub fn closed_cleanly(&mut self) -> Vec<T> {
        let pulled = self.pulled.load(Ordering::Acquire);
        self.confirm_upto(pulled)
    }

    /// Stops tracking queued messages (the connection changed user): they will not be reported.
    pub fn forget_in_flight(&mut self) {
        self.in_flight.clear();
        self.ping = None;
    }

    fn confirm_upto(&mut self, offset: u64) -> Vec<T> {
        let mut out = Vec::new();
        while let Some((end, _)) = self.in_flight.front() {
            if *end > offset {
                break;
            }
            if let Some((_, item)) = self.in_flight.pop_front() {
                out.push(item);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_lengths_match_the_wire() {
        assert_eq!(frame_len(0), 2);
        assert_eq!(frame_len(125), 127);
        assert_eq!(frame_len(126), 130);
        assert_eq!(frame_len(65535), 65539);
        assert_eq!(frame_len(65536), 65546);
    }

    #[test]
    fn pongs_confirm_what_was_queued_before_their_ping() {
        let mut m = OutboundMeter::new();
        assert!(m.ack_ping().is_none(), "nothing to confirm");
        m.message(10, 1); // ends at 12
        let p1 = m.ack_ping().expect("ping");
        assert!(m.ack_ping().is_none(), "one outstanding ping at a time");
        m.message(10, 2);
        assert!(m.pong(b"").is_empty(), "heartbeat pongs confirm nothing");
        assert_eq!(m.pong(&p1), vec![1]);
        let p2 = m.ack_ping().expect("ping for message 2");
        assert_eq!(m.pong(&p2), vec![2]);
        assert!(m.pong(&p2).is_empty(), "a pong counts once");
    }

    #[test]
    fn backlog_and_clean_close_follow_the_socket() {
        let mut m = OutboundMeter::new();
        m.message(10, 1); // ends at 12
        m.message(10, 2); // ends at 24
        assert_eq!(m.backlog(), 24);
        m.counter().store(12, Ordering::Release);
        assert_eq!(m.backlog(), 12);
        assert_eq!(m.closed_cleanly(), vec![1]);
        m.counter().store(24, Ordering::Release);
        assert_eq!(m.backlog(), 0);
        assert_eq!(m.closed_cleanly(), vec![2]);
    }
}
