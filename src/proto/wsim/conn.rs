//! EntryConn: one actor per `/entry` WebSocket. Owns the socket, the heartbeat, the bounded outbound
//! queue and the protocol state (logged in or not); turns signals into core calls and core deliveries
//! into receive frames.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web_actors::ws::{self, CloseCode, CloseReason, ProtocolError};
use bytes::BytesMut;

use super::codec::{self, Scope, Signal};
use super::render::{error_frame, incoming_frame};
use crate::core::message::{ConnId, Draft, SharedMessage, Target, UserKey};
use crate::core::session::{Delivered, DetachConn, ReplayNext, UserSession};
use crate::core::{next_conn_id, ConnEvent, ConnHandle, Core, CoreError, Deliver, Origin};
use crate::metrics::{FrontendMetrics, METRICS};
use crate::transport::ws::{OutboundMeter, MAX_FRAME};

/// How often a connection checks that its peer is alive: a quarter of the client timeout, between 1 s
/// and the heartbeat interval (writes are driven by deliveries, pongs and short retries, so an idle
/// connection wakes up only this often).
fn liveness_tick(s: &ConnSettings) -> Duration {
    (s.client_timeout / 4).clamp(Duration::from_secs(1), s.heartbeat_interval.max(Duration::from_secs(1)))
}
/// How soon a connection with queued messages looks again whether the socket took its backlog.
const PUMP_RETRY: Duration = Duration::from_millis(5);
/// Least time between two confirmation pings on one connection.
const ACK_PING_GAP: Duration = Duration::from_millis(250);
/// Messages returned by `records_`.
pub const RECORDS_LIMIT: i64 = 50;

/// The highest message id per conversation among `msgs`.
fn highest_per_conv(msgs: &[SharedMessage]) -> Vec<(String, i64)> {
    let mut out: Vec<(String, i64)> = Vec::new();
    for m in msgs {
        match out.iter_mut().find(|(c, _)| *c == m.conv) {
            Some(e) => e.1 = e.1.max(m.id),
            None => out.push((m.conv.clone(), m.id)),
        }
    }
    out
}

/// Bytes a message takes in the outbox (payload, extension and the frame's other fields).
fn approx_size(m: &SharedMessage) -> u64 {
    (m.payload.len() + m.extension.len() + m.sender.len() + m.conv.len() + 48) as u64
}

/// What a connection needs from the configuration.
#[derive(Debug, Clone)]
pub struct ConnSettings {
    pub app: String,
    pub heartbeat_interval: Duration,
    pub client_timeout: Duration,
    pub outbound_queue_bytes: u64,
}

pub struct EntryConn {
    id: ConnId,
    core: Core,
    settings: Arc<ConnSettings>,
    user: Option<String>,
    session: Option<Addr<UserSession>>,
    last_heard: Instant,
    meter: OutboundMeter<SharedMessage>,
    /// When the last confirmation ping went out, and whether a later one is scheduled.
    last_ack_ping: Instant,
    ack_ping_scheduled: bool,
    pump_scheduled: bool,
    replay_paused: bool,
    /// Messages waiting for room in the socket's backlog (flagged when part of a replay page), and
    /// the approximate size of the live ones.
    outbox: VecDeque<(SharedMessage, bool)>,
    outbox_bytes: u64,
    fragments: Option<BytesMut>,
    /// Deliveries confirmed by a clean close, reported when detaching.
    confirmed_at_close: Vec<(String, i64)>,
    metrics: FrontendMetrics,
}

impl EntryConn {
    pub fn new(core: Core, settings: Arc<ConnSettings>) -> Self {
        let meter = OutboundMeter::new();
        EntryConn {
            id: next_conn_id(),
            core,
            settings,
            user: None,
            session: None,
            last_heard: Instant::now(),
            meter,
            last_ack_ping: Instant::now(),
            ack_ping_scheduled: false,
            pump_scheduled: false,
            replay_paused: false,
            outbox: VecDeque::new(),
            outbox_bytes: 0,
            fragments: None,
            confirmed_at_close: Vec::new(),
            metrics: METRICS.frontend("wsim"),
        }
    }

    /// The byte counter to hand to `transport::ws::start`.
    pub fn counter(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.meter.counter()
    }

    fn send_text(&mut self, ctx: &mut ws::WebsocketContext<Self>, text: String) {
        self.meter.frame(text.len());
        ctx.text(text);
    }

    fn send_error(&mut self, ctx: &mut ws::WebsocketContext<Self>, code: u16, reason: &str) {
        self.send_text(ctx, codec::render_error(code, reason));
    }

    fn conn_handle(&self, ctx: &mut ws::WebsocketContext<Self>) -> ConnHandle {
        let addr = ctx.address();
        ConnHandle { id: self.id, deliver: addr.clone().recipient(), events: addr.recipient() }
    }

    fn detach(&mut self) {
        if let Some(session) = self.session.take() {
            let delivered = std::mem::take(&mut self.confirmed_at_close);
            session.do_send(DetachConn { conn: self.id, delivered });
        }
        self.meter.forget_in_flight();
        self.outbox.clear();
        self.outbox_bytes = 0;
        self.user = None;
        self.replay_paused = false;
    }

    fn on_text(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        let signal = match codec::parse(text) {
            Ok(s) => s,
            Err(e) => return self.send_error(ctx, e.code(), e.reason()),
        };
        match signal {
            Signal::Heartbeat => {}
            Signal::Login(uid) => self.login(uid, ctx),
            Signal::Logout(_) => {
                self.confirmed_at_close = highest_per_conv(&self.meter.closed_cleanly());
                self.detach();
                ctx.close(Some(CloseReason { code: CloseCode::Normal, description: Some("logout".into()) }));
                ctx.stop();
            }
            Signal::Send { kind, to, payload, scope, extension } => {
                let Some(user) = self.user.clone() else {
                    return self.send_error(ctx, 401, "login first");
                };
                let target = match scope {
                    Scope::Unicast => Target::User(to),
                    Scope::Group => Target::Group(to),
                };
                let draft = Draft {
                    app: self.settings.app.clone(),
                    sender: user,
                    target,
                    kind: kind.to_string(),
                    payload,
                    extension,
                    status: 0,
                };
                self.metrics.received.inc();
                let origin = Origin::of(&self.conn_handle(ctx));
                self.core.submit(draft, origin);
            }
            Signal::Members(group) => {
                let Some(user) = self.user.clone() else {
                    return self.send_error(ctx, 401, "login first");
                };
                let core = self.core.clone();
                let app = self.settings.app.clone();
                let fut = async move { core.group(&app, &group).await.map(|g| (group, g)) };
                ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| match res {
                    Ok((_, None)) => act.send_error(ctx, 404, "no such group"),
                    Ok((group, Some(g))) => {
                        if g.members.contains(&user) {
                            act.send_text(ctx, codec::render_members(&group, &g.members));
                        } else {
                            act.send_error(ctx, 403, "not a member");
                        }
                    }
                    Err(_) => act.send_error(ctx, 500, "internal error"),
                }));
            }
            Signal::Records { id, before } => {
                let Some(user) = self.user.clone() else {
                    return self.send_error(ctx, 401, "login first");
                };
                let core = self.core.clone();
                let app = self.settings.app.clone();
                let before_us =
                    if before == 0 { Core::now_us() + 1 } else { before.saturating_mul(1_000_000) };
                let viewer = user.clone();
                let fut = async move {
                    let group = core.group(&app, &id).await?;
                    let msgs = match group {
                        Some(g) if g.members.contains(&user) => {
                            core.group_history(&app, &id, before_us, RECORDS_LIMIT).await?
                        }
                        _ => core.direct_history(&app, &user, &id, before_us, RECORDS_LIMIT).await?,
                    };
                    Ok::<_, CoreError>((id, msgs))
                };
                ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| match res {
                    Ok((id, msgs)) => {
                        for m in &msgs {
                            act.send_text(ctx, incoming_frame(m, &viewer));
                        }
                        act.send_text(ctx, codec::render_records_end(&id));
                    }
                    Err(_) => act.send_error(ctx, 500, "internal error"),
                }));
            }
        }
    }

    fn login(&mut self, uid: String, ctx: &mut ws::WebsocketContext<Self>) {
        if self.user.as_deref() == Some(uid.as_str()) {
            return self.send_text(ctx, codec::OK.to_string());
        }
        self.detach();
        // `ok` first: the offline replay follows it.
        self.send_text(ctx, codec::OK.to_string());
        self.user = Some(uid.clone());
        let key = UserKey::new(self.settings.app.clone(), uid);
        let handle = self.conn_handle(ctx);
        let core = self.core.clone();
        let fut = async move { core.login(key, handle).await };
        // Nothing else is handled until the session has the connection.
        ctx.wait(fut.into_actor(self).map(|res, act, ctx| match res {
            Ok(session) => act.session = Some(session),
            Err(_) => {
                act.user = None;
                act.send_error(ctx, 503, "server busy");
            }
        }));
    }

    /// Queues a confirmation ping behind the messages sent so far, if one is due: at most one
    /// outstanding, and at most one per ACK_PING_GAP (a busy connection confirms in batches).
    fn ping_for_acks(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        let since = self.last_ack_ping.elapsed();
        if since < ACK_PING_GAP {
            if !self.ack_ping_scheduled {
                self.ack_ping_scheduled = true;
                ctx.run_later(ACK_PING_GAP - since, |act, ctx| {
                    act.ack_ping_scheduled = false;
                    act.ping_for_acks(ctx);
                });
            }
            return;
        }
        if let Some(payload) = self.meter.ack_ping() {
            self.last_ack_ping = Instant::now();
            ctx.ping(&payload);
        }
    }

    /// Reports confirmed messages to the session: the highest id per conversation.
    fn report_delivered(&mut self, confirmed: Vec<SharedMessage>) {
        let Some(session) = &self.session else { return };
        if confirmed.is_empty() {
            return;
        }
        session.do_send(Delivered { conn: self.id, delivered: highest_per_conv(&confirmed) });
    }

    fn tick(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        if self.last_heard.elapsed() > self.settings.client_timeout {
            log::info!("wsim conn {}: peer silent, dropping", self.id);
            ctx.stop();
            return;
        }
        self.pump(ctx);
    }

    /// Writes queued messages while the socket keeps up (backlog under half the limit); drops the
    /// connection when the live messages waiting behind the backlog pass the limit (the peer is not
    /// reading). Asks for the next replay page once the queue is empty.
    fn pump(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        let half = self.settings.outbound_queue_bytes / 2;
        while self.meter.backlog() < half {
            let Some((msg, replay)) = self.outbox.pop_front() else { break };
            if !replay {
                self.outbox_bytes = self.outbox_bytes.saturating_sub(approx_size(&msg));
            }
            let Some(user) = self.user.as_deref() else { break };
            let frame = incoming_frame(&msg, user);
            self.meter.message(frame.len(), msg);
            ctx.text(frame);
            self.metrics.delivered.inc();
        }
        if self.outbox_bytes > self.settings.outbound_queue_bytes {
            log::info!(
                "wsim conn {}: peer not reading ({} bytes waiting), dropping",
                self.id,
                self.meter.backlog() + self.outbox_bytes
            );
            self.metrics.slow_dropped.inc();
            ctx.stop();
            return;
        }
        self.ping_for_acks(ctx);
        // The socket does not say when it drains: while messages wait, look again shortly.
        if !self.outbox.is_empty() && !self.pump_scheduled {
            self.pump_scheduled = true;
            ctx.run_later(PUMP_RETRY, |act, ctx| {
                act.pump_scheduled = false;
                act.pump(ctx);
            });
        }
        if self.replay_paused && self.outbox.is_empty() {
            if let Some(session) = &self.session {
                self.replay_paused = false;
                session.do_send(ReplayNext { conn: self.id });
            }
        }
    }
}

impl Actor for EntryConn {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.metrics.connections.inc();
        ctx.run_interval(liveness_tick(&self.settings), |act, ctx| act.tick(ctx));
        ctx.run_interval(self.settings.heartbeat_interval, |act, ctx| {
            let hb = codec::render_heartbeat(chrono::Utc::now().timestamp());
            act.send_text(ctx, hb);
            act.meter.frame(0);
            ctx.ping(b"");
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.metrics.connections.dec();
        self.detach();
    }
}

impl Handler<Deliver> for EntryConn {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        if self.user.is_none() {
            return;
        }
        if !msg.replay {
            self.outbox_bytes += approx_size(&msg.msg);
        }
        self.outbox.push_back((msg.msg, msg.replay));
        self.pump(ctx);
    }
}

impl Handler<ConnEvent> for EntryConn {
    type Result = ();

    fn handle(&mut self, msg: ConnEvent, ctx: &mut Self::Context) {
        match msg {
            ConnEvent::ReplayPaused => {
                self.replay_paused = true;
                self.pump(ctx);
            }
            ConnEvent::Rejected(err) => {
                let (code, reason) = error_frame(&err);
                self.send_error(ctx, code, reason);
            }
        }
    }
}

impl StreamHandler<Result<ws::Message, ProtocolError>> for EntryConn {
    fn handle(&mut self, item: Result<ws::Message, ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        match item {
            Ok(ws::Message::Text(text)) => self.on_text(&text, ctx),
            Ok(ws::Message::Binary(bin)) => match std::str::from_utf8(&bin) {
                Ok(text) => self.on_text(text, ctx),
                Err(_) => self.send_error(ctx, 400, "bad signal"),
            },
            Ok(ws::Message::Ping(p)) => {
                self.meter.frame(p.len());
                ctx.pong(&p);
            }
            Ok(ws::Message::Pong(p)) => {
                let confirmed = self.meter.pong(&p);
                self.report_delivered(confirmed);
                self.pump(ctx);
            }
            Ok(ws::Message::Nop) => {}
            Ok(ws::Message::Continuation(item)) => self.on_fragment(item, ctx),
            Ok(ws::Message::Close(reason)) => {
                self.confirmed_at_close = highest_per_conv(&self.meter.closed_cleanly());
                ctx.close(reason);
                ctx.stop();
            }
            Err(ProtocolError::Overflow) => {
                ctx.close(Some(CloseReason {
                    code: CloseCode::Size,
                    description: Some("frame too large".into()),
                }));
                ctx.stop();
            }
            Err(e) => {
                log::debug!("wsim conn {}: protocol error: {e}", self.id);
                ctx.close(Some(CloseReason { code: CloseCode::Protocol, description: None }));
                ctx.stop();
            }
        }
    }
}

impl EntryConn {
    /// Reassembles a fragmented message, within the same 64 KiB bound as single frames.
    fn on_fragment(&mut self, item: actix_http::ws::Item, ctx: &mut ws::WebsocketContext<Self>) {
        let (data, last) = match item {
            actix_http::ws::Item::FirstText(b) | actix_http::ws::Item::FirstBinary(b) => {
                self.fragments = Some(BytesMut::new());
                (b, false)
            }
            actix_http::ws::Item::Continue(b) => (b, false),
            actix_http::ws::Item::Last(b) => (b, true),
        };
        let Some(buf) = self.fragments.as_mut() else {
            return self.send_error(ctx, 400, "bad signal");
        };
        if buf.len() + data.len() > MAX_FRAME {
            self.fragments = None;
            ctx.close(Some(CloseReason {
                code: CloseCode::Size,
                description: Some("frame too large".into()),
            }));
            ctx.stop();
            return;
        }
        buf.extend_from_slice(&data);
        if last {
            if let Some(buf) = self.fragments.take() {
                match std::str::from_utf8(&buf) {
                    Ok(text) => {
                        let text = text.to_string();
                        self.on_text(&text, ctx)
                    }
                    Err(_) => self.send_error(ctx, 400, "bad signal"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(hb: u64, timeout: u64) -> ConnSettings {
        ConnSettings {
            app: "default".into(),
            heartbeat_interval: Duration::from_secs(hb),
            client_timeout: Duration::from_secs(timeout),
            outbound_queue_bytes: 1 << 20,
        }
    }

    #[test]
    fn liveness_tick_follows_the_timeout() {
        for (hb, timeout, want) in [(30, 90, 22_500), (1, 3, 1000), (30, 2, 1000), (10, 400, 10_000)] {
            assert_eq!(liveness_tick(&settings(hb, timeout)), Duration::from_millis(want), "{hb}/{timeout}");
        }
    }

    #[test]
    fn highest_id_per_conversation() {
        let m = |conv: &str, id: i64| {
            Arc::new(crate::core::Message {
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
            })
        };
        let got = highest_per_conv(&[m("g", 1), m("d", 5), m("g", 3)]);
        assert_eq!(got, vec![("g".to_string(), 3), ("d".to_string(), 5)]);
    }
}
