//! GruPoll: an Engine.IO session on the polling transport. Packets for the client wait in a bounded
//! queue until a GET takes them (a GET with nothing to take waits); a POST carries the client's
//! packets. During an upgrade the session answers GETs with `noop` and finally hands its socket and
//! queue to the WebSocket transport ([`Handover`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::engineio::{self, Packet};
use super::socket::{self, GruSocket, GruTransport};
use super::GruState;
use crate::core::Deliver;
use crate::transport::longpoll::Parked;

/// How long a session that handed over keeps forwarding what was still on its way to it.
const HANDOVER_GRACE: Duration = Duration::from_secs(10);
/// How long a closing session waits for the GET that takes its last packets.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Why a polling request failed (the Engine.IO error answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PollError {
    #[error("Session ID unknown")]
    UnknownSession,
    #[error("Bad request")]
    BadRequest,
}

/// The body of a GET's answer.
#[derive(Debug)]
pub struct PollBody {
    /// An Engine.IO v3 binary payload (`application/octet-stream`), else text.
    pub binary: bool,
    pub bytes: Vec<u8>,
}

/// How a session's answers are put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadMode {
    Text,
    /// Text, each packet UTF-8-encoded once more (socket.io 1.x, see [`engineio::utf8_encode`]).
    Utf8Text,
    /// An Engine.IO v3 binary payload.
    Binary,
}

impl PollBody {
    /// The answer carrying `packets` (already encoded) for a session of revision `eio`.
    pub fn of(eio: engineio::Eio, mode: PayloadMode, packets: &[String]) -> PollBody {
        let bytes = match mode {
            PayloadMode::Binary => engineio::encode_binary_payload(packets),
            PayloadMode::Text => engineio::frame_payload(eio, packets).into_bytes(),
            PayloadMode::Utf8Text => {
                let encoded: Vec<String> = packets.iter().map(|p| engineio::utf8_encode(p)).collect();
                engineio::frame_payload(eio, &encoded).into_bytes()
            }
        };
        PollBody { binary: mode == PayloadMode::Binary, bytes }
    }
}

/// A GET: answered with the encoded payload of waiting packets (waits while there are none).
pub struct PollGet;
impl Message for PollGet {
    type Result = Result<oneshot::Receiver<PollBody>, PollError>;
}

/// A POST's body, as a text payload or (`binary`) an Engine.IO v3 binary payload.
pub struct PollPost {
    pub body: Vec<u8>,
    pub binary: bool,
}
impl Message for PollPost {
    type Result = Result<(), PollError>;
}

/// `true`: the WebSocket transport got the probe, answer GETs with `noop` from now on; `false`: the
/// probe failed, go on polling.
pub struct Pause(pub bool);
impl Message for Pause {
    type Result = ();
}

/// The client confirmed the upgrade: hand over the socket and the waiting packets; later packets go
/// to `forward`.
pub struct Handover {
    pub forward: Recipient<Forward>,
}
impl Message for Handover {
    type Result = Option<TakenOver>;
}

/// What the WebSocket transport takes over.
pub struct TakenOver {
    pub sock: GruSocket,
    /// Packets still waiting for the client (without the close packet: the WebSocket closes itself).
    pub queued: Vec<String>,
    /// The session was ending (e.g. a refused `auth`): close once the packets are out.
    pub closing: bool,
}

/// A packet for the client that reached the polling session after it handed over.
pub struct Forward(pub String);
impl Message for Forward {
    type Result = ();
}

pub struct GruPoll {
    gru: Arc<GruState>,
    sock: GruSocket,
    queue: VecDeque<String>,
    queued_bytes: usize,
    /// Binary payloads for an Engine.IO v3 client with XHR2 that did not ask for base64; text ones
    /// UTF-8-encoded once more for a socket.io 1.x client that does so itself (learnt from what it
    /// sends).
    mode: PayloadMode,
    waiting: Parked<PollBody>,
    paused: bool,
    forward: Option<Recipient<Forward>>,
    /// Ending: nothing more is queued but the close packet.
    closing: bool,
    /// The close packet is queued: the session stops once a GET took it.
    close_queued: bool,
}

impl GruPoll {
    /// A new session with its greeting queued; `binary`: answer with binary payloads.
    pub fn new(gru: Arc<GruState>, mut sock: GruSocket, binary: bool) -> GruPoll {
        let greeting = socket::greeting(&gru, &mut sock, true);
        let queued_bytes = greeting.iter().map(String::len).sum();
        let binary = binary && sock.eio == engineio::Eio::V3;
        GruPoll {
            gru,
            sock,
            queue: greeting.into(),
            queued_bytes,
            mode: if binary { PayloadMode::Binary } else { PayloadMode::Text },
            waiting: Parked::default(),
            paused: false,
            forward: None,
            closing: false,
            close_queued: false,
        }
    }

    /// A GET's answer carrying `packets` (already encoded).
    fn body(&self, packets: &[String]) -> PollBody {
        PollBody::of(self.sock.eio, self.mode, packets)
    }

    /// Answers the waiting GET with everything queued.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.queue.is_empty() {
            return;
        }
        if !self.waiting.waiting() {
            return;
        }
        let body = PollBody::of(self.sock.eio, self.mode, self.queue.make_contiguous());
        if self.waiting.answer(body).is_ok() {
            self.queue.clear();
            self.queued_bytes = 0;
            if self.close_queued {
                ctx.stop();
            } else if self.closing {
                // The close packet goes in a payload of its own, after the last packets: clients
                // handle a close at once but Socket.IO packets a tick later.
                self.queue_close();
            }
        }
    }

    fn queue_close(&mut self) {
        self.queue.push_back(engineio::encode(&Packet::Close));
        self.close_queued = true;
    }

    fn answer_noop(&mut self) {
        let noop = self.body(&[engineio::encode(&Packet::Noop)]);
        let _ = self.waiting.answer(noop);
    }
}

impl GruTransport for GruPoll {
    fn gru(&self) -> &Arc<GruState> {
        &self.gru
    }

    fn serving(&self) -> bool {
        self.forward.is_none()
    }

    fn socket(&mut self) -> &mut GruSocket {
        &mut self.sock
    }

    fn send_packet(&mut self, ctx: &mut Context<Self>, packet: String) {
        if let Some(f) = &self.forward {
            f.do_send(Forward(packet));
            return;
        }
        if self.closing {
            return;
        }
        self.queued_bytes += packet.len();
        self.queue.push_back(packet);
        if self.queued_bytes > self.gru.queue_bytes {
            log::info!(
                "gru {}: client not polling ({} bytes waiting), closing",
                self.sock.sid,
                self.queued_bytes
            );
            self.gru.metrics.slow_dropped.inc();
            ctx.stop();
            return;
        }
        if !self.paused {
            self.flush(ctx);
        }
    }

    fn end(&mut self, ctx: &mut Context<Self>) {
        if self.forward.is_some() || self.closing {
            return;
        }
        self.closing = true;
        if self.queue.is_empty() {
            self.queue_close();
        }
        self.flush(ctx);
        ctx.run_later(CLOSE_GRACE, |_, ctx| ctx.stop());
    }
}

impl Actor for GruPoll {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.gru.metrics.connections.inc();
        socket::require_auth_in_time(self, ctx);
        ctx.run_interval(self.gru.ping_interval, |act, ctx| {
            if act.forward.is_none() && !act.closing {
                socket::ping(act, ctx);
            }
        });
        ctx.run_interval(socket::liveness_tick(&self.gru), |act, ctx| {
            if act.forward.is_none() && socket::timed_out(&act.gru, &act.sock) {
                log::debug!("gru {}: polling session timed out", act.sock.sid);
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.gru.metrics.connections.dec();
        if self.forward.is_none() {
            self.gru.forget_session(&self.sock.sid);
            socket::leave(&self.gru, &mut self.sock);
            let close = self.body(&[engineio::encode(&Packet::Close)]);
            let _ = self.waiting.answer(close);
        }
    }
}

impl Handler<PollGet> for GruPoll {
    type Result = Result<oneshot::Receiver<PollBody>, PollError>;

    fn handle(&mut self, _: PollGet, ctx: &mut Context<Self>) -> Self::Result {
        if self.forward.is_some() {
            return Err(PollError::UnknownSession);
        }
        if self.waiting.waiting() {
            // Two GETs at once: the client is confused; the reference server closes the session.
            log::info!("gru {}: overlapping polls, closing", self.sock.sid);
            ctx.stop();
            return Err(PollError::BadRequest);
        }
        self.sock.last_heard = std::time::Instant::now();
        let (tx, rx) = oneshot::channel();
        self.waiting.park(tx);
        if self.paused {
            self.answer_noop();
        } else {
            self.flush(ctx);
        }
        Ok(rx)
    }
}

impl Handler<PollPost> for GruPoll {
    type Result = Result<(), PollError>;

    fn handle(&mut self, post: PollPost, ctx: &mut Context<Self>) -> Self::Result {
        if self.forward.is_some() {
            return Err(PollError::UnknownSession);
        }
        let decoded = match (post.binary, std::str::from_utf8(&post.body)) {
            (true, _) if self.sock.eio == engineio::Eio::V3 => engineio::decode_binary_payload(&post.body),
            (false, Ok(text)) => engineio::decode_payload(self.sock.eio, text),
            _ => Err(engineio::EioError::BadPayload),
        };
        let packets = match decoded {
            Ok(p) => p,
            Err(e) => {
                log::info!("gru {}: bad polling payload ({e}), closing", self.sock.sid);
                ctx.stop();
                return Err(PollError::BadRequest);
            }
        };
        for p in packets {
            let p = match p {
                // Only socket.io 1.x clients send text packets so (Engine.IO v3, text payloads; the
                // browser builds do it too, and take binary answers).
                Packet::Message(data) if !post.binary && self.sock.eio == engineio::Eio::V3 => {
                    match engineio::undo_utf8_encode(&data) {
                        Some(text) => {
                            if self.mode == PayloadMode::Text {
                                self.mode = PayloadMode::Utf8Text;
                            }
                            Packet::Message(text)
                        }
                        None => Packet::Message(data),
                    }
                }
                other => other,
            };
            socket::on_packet(self, ctx, &engineio::encode(&p));
        }
        Ok(())
    }
}

impl Handler<Pause> for GruPoll {
    type Result = ();

    fn handle(&mut self, p: Pause, ctx: &mut Context<Self>) {
        self.paused = p.0;
        if self.paused {
            self.answer_noop();
        } else {
            self.flush(ctx);
        }
    }
}

impl Handler<Handover> for GruPoll {
    type Result = Option<TakenOver>;

    fn handle(&mut self, h: Handover, ctx: &mut Context<Self>) -> Self::Result {
        if self.forward.is_some() {
            return None;
        }
        self.gru.forget_session(&self.sock.sid);
        self.answer_noop();
        self.forward = Some(h.forward);
        let mut sock = GruSocket::new(self.sock.eio, self.sock.conn, self.sock.rate);
        std::mem::swap(&mut sock, &mut self.sock);
        self.queued_bytes = 0;
        ctx.run_later(HANDOVER_GRACE, |_, ctx| ctx.stop());
        let close = engineio::encode(&Packet::Close);
        let queued = self.queue.drain(..).filter(|p| *p != close).collect();
        Some(TakenOver { sock, queued, closing: self.closing })
    }
}

impl Handler<Deliver> for GruPoll {
    type Result = ();

    fn handle(&mut self, d: Deliver, ctx: &mut Context<Self>) {
        self.gru.metrics.delivered.inc();
        let packet = match &d.frame {
            Some(slot) => slot.get_or_init(|| socket::msg_packet(&d.msg)).to_string(),
            None => socket::msg_packet(&d.msg).to_string(),
        };
        self.send_packet(ctx, packet);
    }
}
