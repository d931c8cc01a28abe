//! EntryConn: one actor per `/entry` WebSocket. Owns the socket, the heartbeat, the bounded outbound
//! queue and the protocol state (logged in or not); turns signals into core calls and core deliveries
//! into receive frames.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web_actors::ws::{self, CloseCode, CloseReason, ProtocolError};
use bytes::BytesMut;

use super::auth::AuthError;
use super::codec::{self, Scope, Signal};
use super::render::{error_frame, incoming_frame};
use crate::core::{next_conn_id, ConnEvent, ConnHandle, Core, CoreError, Deliver, Origin};
use crate::domain::message::{valid_id, ConvKey, Draft, GroupKey, Message, Target, UserKey};
use crate::metrics::METRICS;
use crate::transport::delivery::{self, WsDelivery, WsFrontend};
use crate::transport::ratelimit::ConnRate;
use crate::transport::ws::MAX_FRAME;

/// What a query counts for in the connection's inflow: a peer that asks faster than the answers come
/// waits (its socket is not read) instead of queueing store reads. A `records_` answer may be 50
/// messages of up to 64 KiB, so only a few are in flight at once.
const MEMBERS_COST: u64 = 4096;
/// The error frame of a query the store could not answer.
const INTERNAL: (u16, &str) = (500, "internal error");

/// The conversation `records_<id>` and `mute_<id>` name for `user`: the group `id` when the user is
/// a member of one, else the direct conversation with the user `id`.
async fn conversation_named(core: &Core, app: &str, user: &str, id: &str) -> Result<ConvKey, CoreError> {
    let group = GroupKey::new(app, id);
    Ok(match core.group(&group).await? {
        Some(g) if g.members.iter().any(|m| m == user) => ConvKey::group(&group),
        _ => ConvKey::direct(&UserKey::new(app, user), id),
    })
}
const RECORDS_COST: u64 = 64 * 1024;
/// Messages returned by `records_`.
pub const RECORDS_LIMIT: i64 = 50;

/// What a connection needs from the configuration.
#[derive(Debug, Clone)]
pub struct ConnSettings {
    /// Who users are (`[wsim] auth`).
    pub auth: Arc<super::auth::WsimAuth>,
    pub app: String,
    pub heartbeat_interval: Duration,
    pub client_timeout: Duration,
    pub outbound_queue_bytes: u64,
}

pub struct EntryConn {
    core: Core,
    settings: Arc<ConnSettings>,
    user: Option<String>,
    delivery: WsDelivery,
    fragments: Option<BytesMut>,
    /// What the client may still send (`[limits] messages_per_conn_per_sec`).
    rate: ConnRate,
}

impl EntryConn {
    /// A connection whose client may send at `rate` (`[limits] messages_per_conn_per_sec`).
    pub fn new(core: Core, settings: Arc<ConnSettings>, rate: ConnRate) -> Self {
        let delivery =
            WsDelivery::new(next_conn_id(), settings.outbound_queue_bytes, METRICS.frontend("wsim"), "wsim");
        EntryConn { core, settings, user: None, delivery, fragments: None, rate }
    }

    /// The byte counter to hand to `transport::ws::start`.
    pub fn plumbing(&self) -> crate::transport::ws::Plumbing {
        self.delivery.plumbing()
    }

    fn send_text(&mut self, ctx: &mut ws::WebsocketContext<Self>, text: String) {
        delivery::text(self, ctx, text);
    }

    fn send_error(&mut self, ctx: &mut ws::WebsocketContext<Self>, code: u16, reason: &str) {
        self.send_text(ctx, codec::render_error(code, reason));
    }

    fn conn_handle(&self, ctx: &mut ws::WebsocketContext<Self>) -> ConnHandle {
        let addr = ctx.address();
        ConnHandle {
            id: self.delivery.id,
            deliver: addr.clone().recipient(),
            events: addr.recipient(),
            device: None,
            resume: None,
            held_limit: self.settings.outbound_queue_bytes / 2,
        }
    }

    fn detach(&mut self) {
        self.delivery.detach();
        self.user = None;
    }

    /// A signal from the peer: handled now, or kept while too much of what it sent is in flight.
    fn on_frame(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        if !self.delivery.hold(text) {
            self.on_text(text, ctx);
        }
    }

    /// Something the peer sent is stored or answered: room for more, and for what was kept.
    fn settled(&mut self, size: u64, ctx: &mut ws::WebsocketContext<Self>) {
        self.delivery.inflow_done(size);
        while let Some(text) = self.delivery.next_held() {
            self.on_text(&text, ctx);
        }
    }

    /// Runs a query of the logged-in user off the actor, its answer counted against the inflow bound
    /// while it is prepared: `answer` gets the core, the app and the user, and yields the frames to
    /// send, or the code and reason of an error frame.
    fn query<F, Fut>(&mut self, ctx: &mut ws::WebsocketContext<Self>, cost: u64, answer: F)
    where
        F: FnOnce(Core, String, String) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<String>, (u16, &'static str)>> + 'static,
    {
        let Some(user) = self.user.clone() else {
            return self.send_error(ctx, 401, "login first");
        };
        let slot = self.delivery.inflow_add(cost);
        let fut = answer(self.core.clone(), self.settings.app.clone(), user);
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            act.settled(slot, ctx);
            match res {
                Ok(frames) => delivery::texts(act, ctx, frames),
                Err((code, reason)) => act.send_error(ctx, code, reason),
            }
        }));
    }

    /// Answers `members_<gid>` (every member) or `online_<gid>` (those with a live connection), to
    /// members of the group only.
    fn members(&mut self, group: String, online_only: bool, ctx: &mut ws::WebsocketContext<Self>) {
        self.query(ctx, MEMBERS_COST, move |core, app, user| async move {
            let g = match core.group(&GroupKey::new(&app, &group)).await.map_err(|_| INTERNAL)? {
                Some(g) if g.members.contains(&user) => g,
                Some(_) => return Err((403, "not a member")),
                None => return Err((404, "no such group")),
            };
            if !online_only {
                return Ok(vec![codec::render_members(&group, &g.members)]);
            }
            let online = core.online_among(&app, g.members).await;
            Ok(vec![codec::render_online(&group, &online)])
        });
    }

    fn on_text(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        let signal = match codec::parse(text) {
            Ok(s) => s,
            Err(e) => return self.send_error(ctx, e.code(), e.reason()),
        };
        match signal {
            Signal::Heartbeat => {}
            Signal::Login(arg) => self.authenticate(arg, ctx),
            Signal::Logout(_) => {
                self.delivery.closed_cleanly();
                self.detach();
                ctx.close(Some(CloseReason { code: CloseCode::Normal, description: Some("logout".into()) }));
                ctx.stop();
            }
            Signal::Send { .. }
            | Signal::Members(_)
            | Signal::Online(_)
            | Signal::Records { .. }
            | Signal::Mute { .. }
                if !self.rate.allow() =>
            {
                METRICS.limited("message");
                self.send_error(ctx, 429, "too many messages");
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
                self.delivery.metrics.received.inc();
                let origin = Origin::of(&self.conn_handle(ctx));
                // Refusals come back as `ConnEvent::Rejected`; the answer only settles the inflow.
                let size = self.delivery.inflow_add(draft.approx_size());
                let stored = self.core.submit(draft, origin);
                ctx.spawn(stored.into_actor(self).map(move |_, act, ctx| act.settled(size, ctx)));
            }
            Signal::Members(group) => self.members(group, false, ctx),
            Signal::Online(group) => self.members(group, true, ctx),
            Signal::Mute { id, on } => self.query(ctx, MEMBERS_COST, move |core, app, user| async move {
                let conv = conversation_named(&core, &app, &user, &id).await.map_err(|_| INTERNAL)?;
                core.set_mute(&UserKey::new(&app, &user), &conv, on).await.map_err(|_| INTERNAL)?;
                Ok(vec![codec::render_mute(&id, on)])
            }),
            Signal::Records { id, before } => {
                let before_us =
                    if before == 0 { Core::now_us() + 1 } else { before.saturating_mul(1_000_000) };
                self.query(ctx, RECORDS_COST, move |core, app, user| async move {
                    let conv = conversation_named(&core, &app, &user, &id).await.map_err(|_| INTERNAL)?;
                    let msgs =
                        core.history_before(&conv, before_us, RECORDS_LIMIT).await.map_err(|_| INTERNAL)?;
                    let mut frames: Vec<String> = msgs.iter().map(|m| incoming_frame(m, &user)).collect();
                    frames.push(codec::render_records_end(&id));
                    Ok(frames)
                });
            }
        }
    }

    /// `login_<arg>`: without authentication `arg` is the user id; with it, `<userid>_<token>`, checked
    /// before anything else is handled. A refusal is `error_401_<reason>` and the socket closes: nothing
    /// of the user's is delivered.
    fn authenticate(&mut self, arg: String, ctx: &mut ws::WebsocketContext<Self>) {
        let auth = self.settings.auth.clone();
        if !auth.enabled() {
            if !valid_id(&arg) {
                return self.send_error(ctx, 400, "bad user id");
            }
            return self.login(arg, ctx);
        }
        let (user, token) = match arg.rsplit_once('_') {
            Some((user, token)) if valid_id(user) => (user.to_string(), token.to_string()),
            _ => return self.refuse_login(ctx, &AuthError::Missing),
        };
        let app = self.settings.app.clone();
        let claimed = user.clone();
        let check = async move { auth.actor(&app, Some(&claimed), Some(&token)).await };
        ctx.wait(check.into_actor(self).map(move |res, act, ctx| match res {
            Ok(_) => act.login(user, ctx),
            Err(e) => act.refuse_login(ctx, &e),
        }));
    }

    fn refuse_login(&mut self, ctx: &mut ws::WebsocketContext<Self>, why: &AuthError) {
        log::info!("wsim login refused: {why}");
        self.detach();
        self.user = None;
        self.send_error(ctx, 401, &why.to_string());
        ctx.close(Some(CloseReason { code: CloseCode::Policy, description: Some(why.to_string()) }));
        ctx.stop();
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
            Ok(session) => act.delivery.session = Some(session),
            Err(_) => {
                act.user = None;
                act.send_error(ctx, 503, "server busy");
            }
        }));
    }
}

impl WsFrontend for EntryConn {
    fn delivery(&mut self) -> &mut WsDelivery {
        &mut self.delivery
    }

    fn render(&self, msg: &Message) -> Option<bytestring::ByteString> {
        self.user.as_deref().map(|user| incoming_frame(msg, user).into())
    }
}

impl Actor for EntryConn {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.delivery.metrics.connections.inc();
        delivery::keep_watch(
            ctx,
            self.settings.client_timeout,
            self.settings.heartbeat_interval,
            |act, ctx| {
                let hb = codec::render_heartbeat(chrono::Utc::now().timestamp());
                act.send_text(ctx, hb);
                delivery::ping(act, ctx);
            },
        );
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.delivery.metrics.connections.dec();
        self.detach();
    }
}

impl Handler<Deliver> for EntryConn {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        if self.user.is_some() {
            delivery::deliver(self, msg, ctx);
        }
    }
}

impl Handler<ConnEvent> for EntryConn {
    type Result = ();

    fn handle(&mut self, msg: ConnEvent, ctx: &mut Self::Context) {
        match msg {
            ConnEvent::ReplayPaused => {
                self.delivery.replay_paused();
                delivery::pump(self, ctx);
            }
            ConnEvent::Rejected(err) => {
                let (code, reason) = error_frame(&err);
                self.send_error(ctx, code, reason);
            }
            ConnEvent::Replaced => {}
            ConnEvent::TooSlow => delivery::drop_slow(self, ctx),
            ConnEvent::Unavailable => {
                self.send_error(ctx, 503, "database unavailable");
                ctx.close(Some(CloseReason {
                    code: CloseCode::Again,
                    description: Some("try again later".into()),
                }));
                ctx.stop();
            }
        }
    }
}

impl StreamHandler<Result<ws::Message, ProtocolError>> for EntryConn {
    fn handle(&mut self, item: Result<ws::Message, ProtocolError>, ctx: &mut Self::Context) {
        self.delivery.heard();
        match delivery::control(self, item, ctx) {
            Some(ws::Message::Text(text)) => self.on_frame(&text, ctx),
            Some(ws::Message::Binary(bin)) => match std::str::from_utf8(&bin) {
                Ok(text) => self.on_frame(text, ctx),
                Err(_) => self.send_error(ctx, 400, "bad signal"),
            },
            Some(ws::Message::Continuation(item)) => self.on_fragment(item, ctx),
            _ => {}
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
                        self.on_frame(&text, ctx)
                    }
                    Err(_) => self.send_error(ctx, 400, "bad signal"),
                }
            }
        }
    }
}
