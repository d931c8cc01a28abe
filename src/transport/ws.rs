//! WebSocket plumbing with a bounded outbound queue.
//!
//! actix-web-actors queues outgoing frames without a bound and tells the actor nothing about the
//! socket. Worse, its context runs the actor only while the HTTP dispatcher polls the response body,
//! and the dispatcher stops polling the body while the socket does not take what it already has: an
//! actor whose peer stopped reading would freeze with every message for it piling up, unseen, in its
//! mailbox. So [`start`] runs the actor's context on a task of its own ([`drive`]), which moves the
//! encoded frames into a queue the response body ([`OutboundBody`]) takes from; the body counts the
//! bytes the dispatcher took ([`Outflow`]). The actor counts what it queued ([`OutboundMeter`]); the
//! difference is what sits unsent, and the actor stops writing, or drops the connection, by that
//! measure — it keeps running whatever the socket does. The same counts tell which messages have
//! really been written out, so delivery watermarks only move for those.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use actix::{Actor, Addr, StreamHandler};
use actix_web::{web, Error, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

/// Largest accepted frame from a client (bigger ones close the connection with 1009).
pub const MAX_FRAME: usize = 64 * 1024;

/// Most bytes the response body hands the dispatcher at once (the dispatcher copies what it takes
/// into its write buffer, and keeps it there while the socket is full).
const BODY_PIECE: usize = 16 * 1024;

/// What a connection actor and its response body share: how many bytes the socket took, and whether
/// the actor gave up on the peer (then the body throws away what waits instead of sending it).
#[derive(Debug, Default)]
pub struct Outflow {
    pulled: AtomicU64,
    aborted: AtomicBool,
}

impl Outflow {
    /// Bytes the HTTP dispatcher has taken from the body.
    pub fn pulled(&self) -> u64 {
        self.pulled.load(Ordering::Acquire)
    }

    fn took(&self, n: usize) {
        self.pulled.fetch_add(n as u64, Ordering::Release);
    }

    /// The actor dropped the peer for not reading: what still waits is not sent.
    pub fn abort(&self) {
        self.aborted.store(true, Ordering::Release);
    }

    pub fn aborted(&self) -> bool {
        self.aborted.load(Ordering::Acquire)
    }
}

/// Lets a connection actor stop reading its socket for a while (flow control): while the gate is
/// closed, the actor gets no frames, the HTTP dispatcher's read buffer fills and it stops reading the
/// socket, so TCP slows the peer down instead of the server queueing what it sends.
#[derive(Clone, Default)]
pub struct ReadGate(Rc<RefCell<GateState>>);

#[derive(Default)]
struct GateState {
    closed: bool,
    waker: Option<Waker>,
}

impl ReadGate {
    pub fn close(&self) {
        self.0.borrow_mut().closed = true;
    }

    pub fn open(&self) {
        let mut g = self.0.borrow_mut();
        g.closed = false;
        if let Some(w) = g.waker.take() {
            w.wake();
        }
    }

    pub fn is_closed(&self) -> bool {
        self.0.borrow().closed
    }
}

/// The request body as the actor's context reads it: nothing while the gate is closed.
struct GatedPayload<S> {
    inner: S,
    gate: ReadGate,
}

impl<S: Stream + Unpin> Stream for GatedPayload<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        {
            let mut g = self.gate.0.borrow_mut();
            if g.closed {
                g.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
        self.inner.poll_next_unpin(cx)
    }
}

/// What a connection actor shares with the plumbing [`start`] builds around it: the count of bytes
/// the socket took (and the abort switch), and the gate on what it reads.
#[derive(Clone)]
pub struct Plumbing {
    pub outflow: Arc<Outflow>,
    pub gate: ReadGate,
}

/// Body stream adapter counting the bytes handed to the socket (for bodies that are not WebSockets,
/// such as Server-Sent Events).
pub struct CountingStream<S> {
    inner: S,
    outflow: Arc<Outflow>,
}

impl<S> CountingStream<S> {
    /// Counts into `outflow` what the HTTP dispatcher takes from `inner`.
    pub fn new(inner: S, outflow: Arc<Outflow>) -> Self {
        CountingStream { inner, outflow }
    }
}

impl<S> Stream for CountingStream<S>
where
    S: Stream<Item = Result<Bytes, Error>> + Unpin,
{
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.outflow.aborted() {
            // The response ends here; the client sees the stream end and may come back.
            return Poll::Ready(None);
        }
        let poll = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &poll {
            self.outflow.took(chunk.len());
        }
        poll
    }
}

/// Frames encoded by the actor's context, waiting for the response body to take them.
#[derive(Default)]
struct Queue {
    chunks: VecDeque<Bytes>,
    /// The context ended: after the last chunk, the body ends.
    done: bool,
    /// The body was dropped (the connection is gone): the driver stops the actor.
    body_gone: bool,
    body_waker: Option<Waker>,
    driver_waker: Option<Waker>,
}

type SharedQueue = Rc<RefCell<Queue>>;

/// The response body of a WebSocket: takes encoded frames from the queue, at most [`BODY_PIECE`]
/// bytes at a time, and counts them.
pub struct OutboundBody {
    queue: SharedQueue,
    outflow: Arc<Outflow>,
}

impl Stream for OutboundBody {
    type Item = Result<Bytes, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut q = self.queue.borrow_mut();
        if self.outflow.aborted() {
            // What waits is thrown away and the response ends: the connection closes once the socket
            // takes what the dispatcher already holds.
            q.chunks.clear();
            return Poll::Ready(None);
        }
        let Some(front) = q.chunks.front_mut() else {
            if q.done {
                return Poll::Ready(None);
            }
            q.body_waker = Some(cx.waker().clone());
            return Poll::Pending;
        };
        let piece = if front.len() > BODY_PIECE {
            front.split_to(BODY_PIECE)
        } else {
            q.chunks.pop_front().unwrap_or_default()
        };
        self.outflow.took(piece.len());
        Poll::Ready(Some(Ok(piece)))
    }
}

impl Drop for OutboundBody {
    fn drop(&mut self) {
        let mut q = self.queue.borrow_mut();
        q.body_gone = true;
        q.chunks.clear();
        if let Some(w) = q.driver_waker.take() {
            w.wake();
        }
    }
}

/// Runs the actor's context (the stream of its encoded frames) until it ends or the body is dropped,
/// moving the frames to the queue. Dropping the context stops the actor.
async fn drive<S>(mut frames: S, queue: SharedQueue, outflow: Arc<Outflow>)
where
    S: Stream<Item = Result<Bytes, Error>> + Unpin,
{
    futures_util::future::poll_fn(|cx| loop {
        if queue.borrow().body_gone {
            return Poll::Ready(());
        }
        match frames.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let mut q = queue.borrow_mut();
                if !outflow.aborted() {
                    q.chunks.push_back(chunk);
                }
                if let Some(w) = q.body_waker.take() {
                    w.wake();
                }
            }
            Poll::Ready(Some(Err(_)) | None) => {
                let mut q = queue.borrow_mut();
                q.done = true;
                if let Some(w) = q.body_waker.take() {
                    w.wake();
                }
                return Poll::Ready(());
            }
            Poll::Pending => {
                queue.borrow_mut().driver_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
    })
    .await;
}

/// Performs the handshake and starts `actor` on the socket; `plumbing` is shared with the actor (its
/// [`OutboundMeter`]'s outflow and its read gate). The actor runs on a task of its own, whatever the
/// socket does.
pub fn start<A>(
    actor: A,
    req: &HttpRequest,
    payload: web::Payload,
    plumbing: Plumbing,
) -> Result<(Addr<A>, HttpResponse), Error>
where
    A: Actor<Context = ws::WebsocketContext<A>> + StreamHandler<Result<ws::Message, ws::ProtocolError>>,
{
    let Plumbing { outflow, gate } = plumbing;
    let mut res = ws::handshake(req)?;
    let payload = GatedPayload { inner: payload, gate };
    let (addr, frames) = ws::WebsocketContext::create_with_addr(actor, payload);
    let queue = SharedQueue::default();
    actix_rt::spawn(drive(Box::pin(frames), queue.clone(), outflow.clone()));
    Ok((addr, res.streaming(OutboundBody { queue, outflow })))
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
    outflow: Arc<Outflow>,
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
            outflow: Arc::new(Outflow::default()),
            queued: 0,
            in_flight: VecDeque::new(),
            ping: None,
            next_ping: 1,
        }
    }

    /// What to give [`start`] (or a [`CountingStream`]).
    pub fn outflow(&self) -> Arc<Outflow> {
        self.outflow.clone()
    }

    /// The peer is dropped for not reading: what waits for it is thrown away, not sent.
    pub fn abort(&self) {
        self.outflow.abort();
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
        self.queued.saturating_sub(self.outflow.pulled())
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
        let pulled = self.outflow.pulled();
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
        m.outflow().took(12);
        assert_eq!(m.backlog(), 12);
        assert_eq!(m.closed_cleanly(), vec![1]);
        m.outflow().took(12);
        assert_eq!(m.backlog(), 0);
        assert_eq!(m.closed_cleanly(), vec![2]);
    }
}
