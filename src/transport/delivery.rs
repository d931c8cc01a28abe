//! Delivering core messages over a WebSocket, shared by the front-ends that speak WebSocket: the
//! bounded outbox behind the socket's backlog, confirmation pings, replay pacing and reporting to the
//! user's session. A front-end's connection actor holds a [`WsDelivery`], implements
//! [`WsFrontend::render`], and calls the functions here from its handlers.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use actix::{Actor, ActorContext, Addr, AsyncContext};
use actix_web_actors::ws;
use bytestring::ByteString;

use super::ws::{OutboundMeter, Plumbing, ReadGate};
use crate::core::session::{Delivered, DetachConn, ReplayNext, UserSession};
use crate::core::Deliver;
use crate::domain::message::{ConnId, Message, SharedMessage};
use crate::metrics::FrontendMetrics;

/// How soon a connection with queued messages looks again whether the socket took its backlog.
const PUMP_RETRY: Duration = Duration::from_millis(5);
/// Least time between two confirmation pings on one connection.
const ACK_PING_GAP: Duration = Duration::from_millis(250);
/// What a peer may have sent and not yet seen stored (bytes, messages) before its connection stops
/// reading the socket; reading starts again at half of both.
const INFLOW_BYTES: u64 = 256 * 1024;
const INFLOW_MESSAGES: u32 = 64;

/// The highest message id per conversation among `msgs`.
pub fn highest_per_conv(msgs: &[SharedMessage]) -> Vec<(String, i64)> {
    let mut out: Vec<(String, i64)> = Vec::new();
    for m in msgs {
        match out.iter_mut().find(|(c, _)| *c == m.conv) {
            Some(e) => e.1 = e.1.max(m.id),
            None => out.push((m.conv.clone(), m.id)),
        }
    }
    out
}

/// One connection's delivery state.
pub struct WsDelivery {
    pub id: ConnId,
    /// The user's session once logged in.
    pub session: Option<Addr<UserSession>>,
    pub meter: OutboundMeter<SharedMessage>,
    /// Closed while the peer has too much in flight (see [`WsDelivery::inflow_add`]).
    pub gate: ReadGate,
    pub metrics: FrontendMetrics,
    name: &'static str,
    limit: u64,
    /// Whether deliveries are confirmed with pings (for the session's watermarks).
    confirm: bool,
    outbox: VecDeque<Deliver>,
    outbox_bytes: u64,
    last_ack_ping: Instant,
    /// When the peer last sent anything (see [`keep_watch`]).
    last_heard: Instant,
    ack_ping_scheduled: bool,
    pump_scheduled: bool,
    /// Messages from the peer on their way to the store, and their size.
    inflow: (u32, u64),
    /// Frames that were already read when the read gate closed: they wait until it opens again.
    held_frames: VecDeque<String>,
    replay_paused: bool,
    confirmed_at_close: Vec<(String, i64)>,
}

impl WsDelivery {
    /// `limit`: bytes of live messages that may wait behind the socket before the peer counts as not
    /// reading. `name` labels log lines.
    pub fn new(id: ConnId, limit: u64, metrics: FrontendMetrics, name: &'static str) -> Self {
        WsDelivery {
            id,
            session: None,
            meter: OutboundMeter::new(),
            gate: ReadGate::default(),
            metrics,
            name,
            limit,
            confirm: true,
            outbox: VecDeque::new(),
            outbox_bytes: 0,
            // The first message is confirmed at once, not a gap after the connection opened.
            last_ack_ping: Instant::now().checked_sub(ACK_PING_GAP).unwrap_or_else(Instant::now),
            last_heard: Instant::now(),
            ack_ping_scheduled: false,
            pump_scheduled: false,
            inflow: (0, 0),
            held_frames: VecDeque::new(),
            replay_paused: false,
            confirmed_at_close: Vec::new(),
        }
    }

    /// What to give `transport::ws::start`.
    pub fn plumbing(&self) -> Plumbing {
        Plumbing { outflow: self.meter.outflow(), gate: self.gate.clone() }
    }

    /// The peer sent a message of `size` bytes, on its way to the store: past the inflow window the
    /// connection stops reading until enough of what is in flight is stored. Returns `size`, to hand
    /// to [`WsDelivery::inflow_done`] once the message is stored or refused.
    pub fn inflow_add(&mut self, size: u64) -> u64 {
        self.inflow.0 += 1;
        self.inflow.1 += size;
        if self.inflow.0 > INFLOW_MESSAGES || self.inflow.1 > INFLOW_BYTES {
            self.gate.close();
        }
        size
    }

    /// A message counted by [`WsDelivery::inflow_add`] is stored (or refused).
    pub fn inflow_done(&mut self, size: u64) {
        self.inflow.0 = self.inflow.0.saturating_sub(1);
        self.inflow.1 = self.inflow.1.saturating_sub(size);
        if self.gate.is_closed() && self.inflow.0 <= INFLOW_MESSAGES / 2 && self.inflow.1 <= INFLOW_BYTES / 2
        {
            self.gate.open();
        }
    }

    /// Keeps `text` for later when the read gate is closed (frames already read go on arriving for a
    /// moment) or others already wait; true when kept.
    pub fn hold(&mut self, text: &str) -> bool {
        if self.gate.is_closed() || !self.held_frames.is_empty() {
            self.held_frames.push_back(text.to_string());
            return true;
        }
        false
    }

    /// The next frame kept by [`WsDelivery::hold`], once the gate is open.
    pub fn next_held(&mut self) -> Option<String> {
        if self.gate.is_closed() {
            return None;
        }
        self.held_frames.pop_front()
    }

    /// The peer sent something: it is alive.
    pub fn heard(&mut self) {
        self.last_heard = Instant::now();
    }

    /// For front-ends without delivery watermarks (live rooms): messages are written, never confirmed.
    pub fn unconfirmed(mut self) -> Self {
        self.confirm = false;
        self
    }

    /// The peer closed cleanly: what the socket took counts as delivered (reported on detach).
    pub fn closed_cleanly(&mut self) {
        self.confirmed_at_close = highest_per_conv(&self.meter.closed_cleanly());
    }

    /// Leaves the session (reporting what was confirmed) and forgets everything queued.
    pub fn detach(&mut self) {
        if let Some(session) = self.session.take() {
            let delivered = std::mem::take(&mut self.confirmed_at_close);
            session.do_send(DetachConn { conn: self.id, delivered });
        }
        self.meter.forget_in_flight();
        self.outbox.clear();
        self.outbox_bytes = 0;
        self.replay_paused = false;
    }

    /// A page of replay is out and more waits: ask for it once the outbox is empty.
    pub fn replay_paused(&mut self) {
        self.replay_paused = true;
    }

    fn report(&self, confirmed: Vec<SharedMessage>) {
        if let (false, Some(session)) = (confirmed.is_empty(), &self.session) {
            session.do_send(Delivered { conn: self.id, delivered: highest_per_conv(&confirmed) });
        }
    }
}

/// A WebSocket connection actor that delivers core messages.
pub trait WsFrontend: Actor<Context = ws::WebsocketContext<Self>> {
    fn delivery(&mut self) -> &mut WsDelivery;
    /// The text frame for `msg`, or `None` when this front-end does not show such messages (they are
    /// left unconfirmed, for the user's other front-ends).
    /// (A `ByteString` so a frame rendered once can go to many sockets without copies.)
    fn render(&self, msg: &Message) -> Option<ByteString>;
    /// Whether [`WsFrontend::render`] gives every receiver the same frame (then a fan-out renders
    /// once).
    const SAME_FRAME_FOR_ALL: bool = false;
}

/// How often a connection checks that its peer is alive: a quarter of the client timeout, between 1 s
/// and the heartbeat interval (writes are driven by deliveries, pongs and short retries, so an idle
/// connection wakes up only this often).
pub fn liveness_tick(client_timeout: Duration, heartbeat_interval: Duration) -> Duration {
    (client_timeout / 4).clamp(Duration::from_secs(1), heartbeat_interval.max(Duration::from_secs(1)))
}

/// Keeps watch over the peer: every [`liveness_tick`] it is dropped once it has been silent (no
/// [`WsDelivery::heard`]) for longer than `client_timeout`, and what waits is written; every
/// `heartbeat_interval` `beat` runs (a ping, a heartbeat frame). Both run on one chain of one-shot
/// timers, one alive at a time, at the moments two intervals would: an idle connection holds one
/// timer, not two.
pub fn keep_watch<A: WsFrontend>(
    ctx: &mut ws::WebsocketContext<A>,
    client_timeout: Duration,
    heartbeat_interval: Duration,
    beat: fn(&mut A, &mut ws::WebsocketContext<A>),
) {
    let now = Instant::now();
    let tick = liveness_tick(client_timeout, heartbeat_interval);
    let every = heartbeat_interval.max(Duration::from_millis(100));
    Watch { check_at: now + tick, beat_at: now + every, tick, every, client_timeout, beat }.arm(ctx);
}

/// The next moments of [`keep_watch`]'s two duties.
struct Watch<A: WsFrontend> {
    check_at: Instant,
    beat_at: Instant,
    tick: Duration,
    every: Duration,
    client_timeout: Duration,
    beat: fn(&mut A, &mut ws::WebsocketContext<A>),
}

impl<A: WsFrontend> Watch<A> {
    fn arm(mut self, ctx: &mut ws::WebsocketContext<A>) {
        let next = self.check_at.min(self.beat_at);
        ctx.run_later(next.saturating_duration_since(Instant::now()), move |act, ctx| {
            let now = Instant::now();
            if now >= self.check_at {
                let d = act.delivery();
                if d.last_heard.elapsed() > self.client_timeout {
                    log::info!("{} conn {}: peer silent, dropping", d.name, d.id);
                    d.meter.abort();
                    ctx.stop();
                    return;
                }
                pump(act, ctx);
                self.check_at = next_after(self.check_at, self.tick, now);
            }
            if now >= self.beat_at {
                (self.beat)(act, ctx);
                self.beat_at = next_after(self.beat_at, self.every, now);
            }
            self.arm(ctx);
        });
    }
}

/// The first moment of the schedule `at`, `at + every`, … after `now` (a late timer skips what it
/// missed, as an interval does).
fn next_after(at: Instant, every: Duration, now: Instant) -> Instant {
    let mut next = at + every;
    while next <= now {
        next += every;
    }
    next
}

/// Sends one WebSocket ping.
pub fn ping<A: WsFrontend>(act: &mut A, ctx: &mut ws::WebsocketContext<A>) {
    act.delivery().meter.frame(0);
    ctx.ping(b"");
}

/// Queues a delivered message and writes what the socket has room for.
pub fn deliver<A: WsFrontend>(act: &mut A, msg: Deliver, ctx: &mut ws::WebsocketContext<A>) {
    let d = act.delivery();
    if !msg.replay {
        d.outbox_bytes += msg.msg.approx_size();
    }
    d.outbox.push_back(msg);
    pump(act, ctx);
}

/// A pong arrived: report what it confirms and write more.
pub fn pong<A: WsFrontend>(act: &mut A, payload: &[u8], ctx: &mut ws::WebsocketContext<A>) {
    let d = act.delivery();
    let confirmed = d.meter.pong(payload);
    d.report(confirmed);
    pump(act, ctx);
}

/// Writes queued messages while the socket keeps up (backlog under half the limit); drops the
/// connection when the live messages waiting behind the backlog pass the limit (the peer is not
/// reading); asks for the next replay page once the outbox is empty.
pub fn pump<A: WsFrontend>(act: &mut A, ctx: &mut ws::WebsocketContext<A>) {
    loop {
        let d = act.delivery();
        if d.meter.backlog() >= d.limit / 2 {
            break;
        }
        let Some(Deliver { msg, replay, frame }) = d.outbox.pop_front() else { break };
        if !replay {
            d.outbox_bytes = d.outbox_bytes.saturating_sub(msg.approx_size());
        }
        let frame = match frame.filter(|_| A::SAME_FRAME_FOR_ALL) {
            Some(slot) => match slot.get() {
                Some(f) => Some(f.clone()),
                None => act.render(&msg).inspect(|f| {
                    let _ = slot.set(f.clone());
                }),
            },
            None => act.render(&msg),
        };
        let Some(frame) = frame else { continue };
        let d = act.delivery();
        if d.confirm {
            // Tracked until a confirmation ping's pong says the peer read it.
            d.meter.message(frame.len(), msg);
        } else {
            d.meter.frame(frame.len());
        }
        d.metrics.delivered.inc();
        ctx.text(frame);
    }
    if not_reading(act, ctx) {
        return;
    }
    ping_for_acks(act, ctx);
    let d = act.delivery();
    // The socket does not say when it drains: while messages wait, look again shortly.
    if !d.outbox.is_empty() && !d.pump_scheduled {
        d.pump_scheduled = true;
        ctx.run_later(PUMP_RETRY, |act, ctx| {
            act.delivery().pump_scheduled = false;
            pump(act, ctx);
        });
    }
    if d.replay_paused && d.outbox.is_empty() {
        if let Some(session) = &d.session {
            session.do_send(ReplayNext { conn: d.id });
            d.replay_paused = false;
        }
    }
}

/// Drops the connection when more than the limit waits for the peer: live messages in the outbox,
/// or bytes the socket has not taken (the pump stops at half the limit, so only frames the actor
/// writes itself — answers, heartbeats — push the backlog past it). What waits is thrown away; the
/// messages stay in the store for the next login.
fn not_reading<A: WsFrontend>(act: &mut A, ctx: &mut ws::WebsocketContext<A>) -> bool {
    let d = act.delivery();
    let backlog = d.meter.backlog();
    if d.outbox_bytes <= d.limit && backlog <= d.limit {
        return false;
    }
    log::info!(
        "{} conn {}: peer not reading ({} bytes waiting, {backlog} unsent), dropping",
        d.name,
        d.id,
        d.outbox_bytes
    );
    give_up(act, ctx);
    true
}

/// Drops the connection as a slow consumer: counted, and what waits for it thrown away.
fn give_up<A: WsFrontend>(act: &mut A, ctx: &mut ws::WebsocketContext<A>) {
    let d = act.delivery();
    d.metrics.slow_dropped.inc();
    d.meter.abort();
    ctx.stop();
}

/// Drops the connection as a slow consumer (the session found it not keeping up).
pub fn drop_slow<A: WsFrontend>(act: &mut A, ctx: &mut ws::WebsocketContext<A>) {
    let d = act.delivery();
    log::info!("{} conn {}: peer not keeping up with its replay, dropping", d.name, d.id);
    give_up(act, ctx);
}

/// Queues a confirmation ping behind the messages sent so far, if one is due: at most one
/// outstanding, and at most one per ACK_PING_GAP (a busy connection confirms in batches).
fn ping_for_acks<A: WsFrontend>(act: &mut A, ctx: &mut ws::WebsocketContext<A>) {
    let d = act.delivery();
    let since = d.last_ack_ping.elapsed();
    if since < ACK_PING_GAP {
        if !d.ack_ping_scheduled {
            d.ack_ping_scheduled = true;
            ctx.run_later(ACK_PING_GAP - since, |act, ctx| {
                act.delivery().ack_ping_scheduled = false;
                ping_for_acks(act, ctx);
            });
        }
        return;
    }
    if let Some(payload) = d.meter.ack_ping() {
        d.last_ack_ping = Instant::now();
        ctx.ping(&payload);
    }
}

/// Handles the frames every WebSocket front-end treats alike (ping, pong, close, protocol errors,
/// frames over the size limit) and returns the data frames (text, binary, continuation) for the
/// front-end's own protocol.
pub fn control<A: WsFrontend>(
    act: &mut A,
    item: Result<ws::Message, ws::ProtocolError>,
    ctx: &mut ws::WebsocketContext<A>,
) -> Option<ws::Message> {
    match item {
        Ok(ws::Message::Ping(p)) => {
            if !not_reading(act, ctx) {
                act.delivery().meter.frame(p.len());
                ctx.pong(&p);
            }
            None
        }
        Ok(ws::Message::Pong(p)) => {
            pong(act, &p, ctx);
            None
        }
        Ok(ws::Message::Close(reason)) => {
            act.delivery().closed_cleanly();
            ctx.close(reason);
            ctx.stop();
            None
        }
        Ok(ws::Message::Nop) => None,
        Ok(data) => Some(data),
        Err(ws::ProtocolError::Overflow) => {
            ctx.close(Some(ws::CloseReason {
                code: ws::CloseCode::Size,
                description: Some("frame too large".into()),
            }));
            ctx.stop();
            None
        }
        Err(e) => {
            let d = act.delivery();
            log::debug!("{} conn {}: protocol error: {e}", d.name, d.id);
            ctx.close(Some(ws::CloseReason { code: ws::CloseCode::Protocol, description: None }));
            ctx.stop();
            None
        }
    }
}

/// Writes a frame of the actor's own (an answer, a heartbeat, an error), counted so the backlog stays
/// exact; a peer that lets such frames pile up unread is dropped like one that does not read its
/// messages.
pub fn text<A: WsFrontend>(act: &mut A, ctx: &mut ws::WebsocketContext<A>, frame: String) {
    if not_reading(act, ctx) {
        return;
    }
    act.delivery().meter.frame(frame.len());
    ctx.text(frame);
}

/// Writes the frames of one answer (a page of history): like [`text`], but the backlog is looked at
/// once, before the first, so an answer larger than the limit still goes out whole; asking again
/// before reading it does not.
pub fn texts<A: WsFrontend>(act: &mut A, ctx: &mut ws::WebsocketContext<A>, frames: Vec<String>) {
    if not_reading(act, ctx) {
        return;
    }
    for frame in frames {
        act.delivery().meter.frame(frame.len());
        ctx.text(frame);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_late_watch_keeps_its_schedule() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // (schedule start, period, now) -> the next moment, as an offset from t0
        for (at, every, now, want) in [
            (0, 30, 0, 30),   // on time
            (0, 30, 29, 30),  // early wake: the next is still due
            (0, 30, 30, 60),  // exactly at the next moment: the one after
            (0, 30, 95, 120), // late by three periods: skipped, not bunched
            (30, 22, 31, 52),
        ] {
            let got = next_after(t0 + ms(at), ms(every), t0 + ms(now));
            assert_eq!(got, t0 + ms(want), "{at}+{every} at {now}");
        }
    }

    #[test]
    fn liveness_tick_follows_the_timeout() {
        for (hb, timeout, want) in [(30, 90, 22_500), (1, 3, 1000), (30, 2, 1000), (10, 400, 10_000)] {
            let got = liveness_tick(Duration::from_secs(timeout), Duration::from_secs(hb));
            assert_eq!(got, Duration::from_millis(want), "{hb}/{timeout}");
        }
    }

    #[test]
    fn highest_id_per_conversation() {
        let m = |conv: &str, id: i64| {
            Arc::new(Message {
                id,
                app: "a".into(),
                conv: conv.into(),
                sender: "s".into(),
                recipient: String::new(),
                kind: "text".into(),
                payload: String::new(),
                extension: String::new(),
                sent_us: 0,
                status: 0,
                conv_type: 0,
            })
        };
        let got = highest_per_conv(&[m("g", 1), m("d", 5), m("g", 3)]);
        assert_eq!(got, vec![("g".to_string(), 3), ("d".to_string(), 5)]);
    }
}
