//! One Gru socket: the Socket.IO namespace `/` of an Engine.IO session and the Gru events on it,
//! whatever transport carries it. The transports ([`super::polling::GruPoll`], [`super::ws::GruWs`])
//! hold a [`GruSocket`], implement [`GruTransport`] and hand every Engine.IO packet they receive to
//! [`on_packet`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::dev::ToEnvelope;
use actix::prelude::*;
use bytestring::ByteString;
use serde_json::{json, Value};

use super::engineio::{self, Eio, Packet};
use super::events::{self, code, Refusal};
use super::socketio::{self, Packet as SioPacket};
use super::ticket::{Presented, Token2Refusal};
use super::GruState;
use crate::core::rooms::{Audience, Publish, RoomMember};
use crate::core::Deliver;
use crate::domain::message::{ConnId, Message};

/// The core app Gru rooms and messages live in (not a name a longweb app can have).
pub const GRU_APP: &str = "#gru";

/// Most groups one socket may be in.
const MAX_GROUPS: usize = 100;

/// The authenticated user of a socket.
#[derive(Debug, Clone)]
pub struct GruUser {
    pub id: String,
    pub name: String,
    pub user_type: String,
    /// The group given at `auth`, where type 1 messages without a target go.
    pub group: Option<String>,
}

/// The state of one socket, moved along when the session upgrades its transport.
#[derive(Debug)]
pub struct GruSocket {
    pub eio: Eio,
    /// The Engine.IO session id.
    pub sid: String,
    pub conn: ConnId,
    /// Whether the client is connected to the namespace `/`.
    pub connected: bool,
    pub user: Option<GruUser>,
    pub groups: Vec<String>,
    pub last_heard: Instant,
    /// The `msg` rate limit (`[limits] messages_per_conn_per_sec`).
    pub rate: crate::transport::ratelimit::ConnRate,
}

impl GruSocket {
    pub fn new(eio: Eio, conn: ConnId, rate: crate::transport::ratelimit::ConnRate) -> GruSocket {
        GruSocket {
            eio,
            sid: uuid::Uuid::new_v4().simple().to_string(),
            conn,
            connected: false,
            user: None,
            groups: Vec::new(),
            last_heard: Instant::now(),
            rate,
        }
    }
}

/// The Engine.IO open packet; `upgrades`: whether the session may move to WebSocket.
pub fn open_packet(state: &GruState, sock: &GruSocket, upgrades: bool) -> String {
    let mut open = json!({
        "sid": sock.sid,
        "upgrades": if upgrades { json!(["websocket"]) } else { json!([]) },
        "pingInterval": state.ping_interval.as_millis() as u64,
        "pingTimeout": state.ping_timeout.as_millis() as u64,
    });
    if sock.eio == Eio::V4 {
        open["maxPayload"] = json!(state.max_payload);
    }
    engineio::encode(&Packet::Open(open.to_string()))
}

/// What a new session sends first: the open packet and, for Engine.IO v3 (socket.io 1.x/2.x, which
/// do not ask for the default namespace), the connection to `/`.
pub fn greeting(state: &GruState, sock: &mut GruSocket, upgrades: bool) -> Vec<String> {
    let mut out = vec![open_packet(state, sock, upgrades)];
    if sock.eio == Eio::V3 {
        sock.connected = true;
        out.push(sio_packet(&SioPacket::Connect { ns: "/".into(), data: None }));
    }
    out
}

/// A Socket.IO packet as the Engine.IO message packet carrying it.
pub fn sio_packet(p: &SioPacket) -> String {
    format!("4{}", socketio::encode(p))
}

/// The Engine.IO packet delivering `m` as a `msg` event. The same for every receiver, so a room
/// broadcast renders it once (see [`crate::core::FrameSlot`]).
pub fn msg_packet(m: &Message) -> ByteString {
    let p = SioPacket::Event { ns: "/".into(), id: None, data: vec![json!("msg"), events::delivered(m)] };
    ByteString::from(sio_packet(&p))
}

/// A transport actor carrying a Gru socket.
pub trait GruTransport: Actor + Handler<Deliver>
where
    Self::Context: AsyncContext<Self> + ToEnvelope<Self, Deliver>,
{
    fn gru(&self) -> &Arc<GruState>;
    /// Whether this transport carries the socket now (not after it handed it over, nor before it
    /// took it over).
    fn serving(&self) -> bool;
    fn socket(&mut self) -> &mut GruSocket;
    /// Sends one encoded Engine.IO packet.
    fn send_packet(&mut self, ctx: &mut Self::Context, packet: String);
    /// Ends the session once what is queued has gone out.
    fn end(&mut self, ctx: &mut Self::Context);
    /// A message of `size` bytes from the client is on its way to the store (flow control: a
    /// transport that can stop reading does so past its window).
    fn inflow_add(&mut self, _size: u64) {}
    /// A message counted by [`GruTransport::inflow_add`] is stored or refused.
    fn inflow_done(&mut self, _ctx: &mut Self::Context, _size: u64) {}
}

/// Handles one Engine.IO packet from the client. Malformed input ends the session (as the reference
/// server does on a parse error).
pub fn on_packet<A>(act: &mut A, ctx: &mut A::Context, text: &str)
where
    A: GruTransport,
    A::Context: AsyncContext<A> + ToEnvelope<A, Deliver>,
{
    act.socket().last_heard = Instant::now();
    match engineio::decode(text) {
        Ok(Packet::Ping(data)) => act.send_packet(ctx, engineio::encode(&Packet::Pong(data))),
        Ok(Packet::Pong(_) | Packet::Noop | Packet::Upgrade | Packet::Open(_)) => {}
        Ok(Packet::Message(data)) => on_sio(act, ctx, &data),
        Ok(Packet::Close) => act.end(ctx),
        Err(e) => {
            log::info!("gru {}: bad Engine.IO packet ({e}), closing", act.socket().sid);
            act.end(ctx);
        }
    }
}

fn on_sio<A>(act: &mut A, ctx: &mut A::Context, text: &str)
where
    A: GruTransport,
    A::Context: AsyncContext<A> + ToEnvelope<A, Deliver>,
{
    let packet = match socketio::decode(text) {
        Ok(p) => p,
        Err(e) => {
            log::info!("gru {}: bad Socket.IO packet ({e}), closing", act.socket().sid);
            act.end(ctx);
            return;
        }
    };
    match packet {
        SioPacket::Connect { ns, .. } if ns == "/" => {
            let sock = act.socket();
            sock.connected = true;
            let data =
                (sock.eio == Eio::V4).then(|| json!({"sid": uuid::Uuid::new_v4().simple().to_string()}));
            act.send_packet(ctx, sio_packet(&SioPacket::Connect { ns, data }));
        }
        SioPacket::Connect { ns, .. } => {
            let data = match act.socket().eio {
                Eio::V4 => json!({"message": "Invalid namespace"}),
                Eio::V3 => json!("Invalid namespace"),
            };
            act.send_packet(ctx, sio_packet(&SioPacket::ConnectError { ns, data }));
        }
        SioPacket::Disconnect { ns } if ns == "/" => {
            let gru = act.gru().clone();
            let sock = act.socket();
            sock.connected = false;
            leave(&gru, sock);
        }
        SioPacket::Event { ns, id, data } if ns == "/" && act.socket().connected => {
            let name = data.first().and_then(Value::as_str).unwrap_or_default().to_string();
            let arg = data.get(1);
            match name.as_str() {
                "auth" => auth(act, ctx, arg, id),
                "subscribe" => subscribe(act, ctx, arg, id),
                "msg" => msg(act, ctx, arg, id),
                "online" => online(act, ctx, arg, id),
                other => log::debug!("gru {}: event {other:?} has no handler", act.socket().sid),
            }
        }
        SioPacket::Event { .. } | SioPacket::Disconnect { .. } => {
            log::debug!("gru {}: packet for a namespace not joined", act.socket().sid)
        }
        SioPacket::Ack { .. } | SioPacket::ConnectError { .. } => {}
    }
}

/// Emits `event` with `value`, and answers the client's ack with the same value when one was asked.
pub fn reply<A>(act: &mut A, ctx: &mut A::Context, event: &str, value: Value, ack: Option<u64>)
where
    A: GruTransport,
    A::Context: AsyncContext<A> + ToEnvelope<A, Deliver>,
{
    let ev = SioPacket::Event { ns: "/".into(), id: None, data: vec![json!(event), value.clone()] };
    act.send_packet(ctx, sio_packet(&ev));
    if let Some(id) = ack {
        act.send_packet(ctx, sio_packet(&SioPacket::Ack { ns: "/".into(), id, data: vec![value] }));
    }
}

fn refuse<A>(act: &mut A, ctx: &mut A::Context, event: &str, (code, text): Refusal, ack: Option<u64>)
where
    A: GruTransport,
    A::Context: AsyncContext<A> + ToEnvelope<A, Deliver>,
{
    reply(act, ctx, event, events::result(code, text, None), ack);
}

/// The member record the rooms keep for this socket.
fn member<A>(act: &mut A, ctx: &mut A::Context, user: &str) -> RoomMember
where
    A: GruTransport,
    A::Context: AsyncContext<A> + ToEnvelope<A, Deliver>,
{
    RoomMember {
        conn: act.socket().conn,
        user: user.to_string(),
        verified: true,
        deliver: ctx.address().recipient(),
    }
}

/// Takes the socket out of its rooms (it stays connected).
pub fn leave(gru: &GruState, sock: &mut GruSocket) {
    if sock.user.take().is_some() {
        gru.core.leave_rooms(sock.conn);
    }
    sock.groups.clear();
}

fn auth<A>(act: &mut A, ctx: &mut A::Context, arg: Option<&Value>, ack: Option<u64>)
where
    A: GruTransport,
    A::Context: AsyncContext<A> + ToEnvelope<A, Deliver>,
{
    let gru = act.gru().clone();
    let now = crate::domain::ids::now_ms() / 1000;
    let checked = events::parse_auth(arg).and_then(|a| {
        let presented = Presented {
            id: &a.id,
            name: &a.name,
            user_type: a.user_type.as_deref(),
            token1: a.token1.as_deref(),
            token2: a.token2.as_deref(),
        };
        match gru.token2.verify(presented, now) {
            Ok(user_type) => Ok((a, user_type)),
            Err(Token2Refusal::Missing) => Err((code::AUTH_MISSING, "token2 is required")),
            Err(Token2Refusal::Invalid) => Err((code::AUTH_BAD_TOKEN, "invalid or expired token2")),
        }
    });
    let (a, user_type) = match checked {
        Ok(v) => v,
        Err((code, why)) => {
            // As the original: no answer, the socket is disconnected (protocols.md: failure →
            // disconnect).
            log::info!("gru {}: auth refused ({code}): {why}", act.socket().sid);
            act.send_packet(ctx, sio_packet(&SioPacket::Disconnect { ns: "/".into() }));
            act.end(ctx);
            return;
        }
    };
    let m = member(act, ctx, &a.id);
    let sock = act.socket();
    leave(&gru, sock);
    sock.groups = a.group.iter().cloned().collect();
    let joined = gru.core.join_rooms(GRU_APP, sock.groups.clone(), m);
    let data = json!({"userType": events::user_type_name(&user_type)});
    sock.user = Some(GruUser { id: a.id, name: a.name, user_type, group: a.group });
    // Answered once the groups' messages find the socket on every node.
    ctx.wait(
        joined
            .into_actor(act)
            .map(move |_, act, ctx| reply(act, ctx, "auth_result", events::result(0, "", Some(data)), ack)),
    );
}

/// The authenticated user, or the `-1` answer to `event`.
fn authed<A>(act: &mut A, ctx: &mut A::Context, event: &str, ack: Option<u64>) -> Option<GruUser>
where
    A: GruTransport,
    A::Context: AsyncContext<A> + ToEnvelope<A, Deliver>,
{
    let user = act.socket().user.clone();
    if user.is_none() {
        refuse(act, ctx, event, (code::NOT_AUTHENTICATED, "auth first"), ack);
    }
    user
}

fn subscribe<A>(act: &mut A, ctx: &mut A::Context, arg: Option<&Value>, ack: Option<u64>)
where
    A: GruTransport,
    A::Context: AsyncContext<A> + ToEnvelope<A, Deliver>,
{
    let Some(user) = authed(act, ctx, "subscribe_result", ack) else { return };
    let groups = match events::parse_groups(arg) {
        Ok(g) => g,
        Err(refusal) => return refuse(act, ctx, "subscribe_result", refusal, ack),
    };
    let gru = act.gru().clone();
    let m = member(act, ctx, &user.id);
    let sock = act.socket();
    let new: Vec<String> = groups.into_iter().filter(|g| !sock.groups.contains(g)).collect();
    if sock.groups.len() + new.len() > MAX_GROUPS {
        return refuse(act, ctx, "subscribe_result", (code::BAD_PAYLOAD, "too many groups"), ack);
    }
    sock.groups.extend(new.iter().cloned());
    let in_effect = gru.core.join_rooms(GRU_APP, new, m);
    let joined: Vec<Value> = sock.groups.iter().map(|g| events::id_value(g)).collect();
    ctx.wait(in_effect.into_actor(act).map(move |_, act, ctx| {
        reply(act, ctx, "subscribe_result", events::result(0, "", Some(json!(joined))), ack)
    }));
}

fn msg<A>(act: &mut A, ctx: &mut A::Context, arg: Option<&Value>, ack: Option<u64>)
where
    A: GruTransport,
    A::Context: AsyncContext<A> + ToEnvelope<A, Deliver>,
{
    let Some(user) = authed(act, ctx, "msg_result", ack) else { return };
    if !act.socket().rate.allow() {
        crate::metrics::METRICS.limited("message");
        return refuse(act, ctx, "msg_result", (code::RATE_LIMITED, "too many messages"), ack);
    }
    let req = match events::parse_msg(arg) {
        Ok(r) => r,
        Err(refusal) => return refuse(act, ctx, "msg_result", refusal, ack),
    };
    act.gru().metrics.received.inc();
    let conn = act.socket().conn;
    let mut target = req.target;
    let (room, to_user, origin) = if req.msg_type == 1 {
        let Some(group) = req.target_id.or(user.group) else {
            return refuse(act, ctx, "msg_result", (code::BAD_TARGET, "no group to send to"), ack);
        };
        if target.get("id").is_none() {
            target["id"] = events::id_value(&group);
        }
        // A broadcast reaches the sender's sockets too.
        (group, None, None)
    } else {
        let Some(to) = req.target_id else {
            return refuse(act, ctx, "msg_result", (code::BAD_TARGET, "target.id is required"), ack);
        };
        (String::new(), Some(to), Some(conn))
    };
    let publish = Publish {
        app: GRU_APP.into(),
        sender: user.id,
        room,
        user: to_user,
        audience: Audience::All,
        kind: req.msg_type.to_string(),
        payload: req.content,
        extension: target.to_string(),
        origin,
    };
    let size = (publish.payload.len() + publish.extension.len() + 64) as u64;
    act.inflow_add(size);
    // Queued now, so a socket's messages keep their order.
    let stored = act.gru().core.publish(publish);
    ctx.spawn(stored.into_actor(act).map(move |res, act, ctx| {
        act.inflow_done(ctx, size);
        let value = match res {
            Ok(m) => events::result(0, "", Some(json!({"id": m.id, "createTime": m.sent_us / 1000}))),
            Err(e) => {
                log::warn!("gru msg not stored: {e}");
                events::result(code::NOT_STORED, "message not stored", None)
            }
        };
        reply(act, ctx, "msg_result", value, ack);
    }));
}

fn online<A>(act: &mut A, ctx: &mut A::Context, arg: Option<&Value>, ack: Option<u64>)
where
    A: GruTransport,
    A::Context: AsyncContext<A> + ToEnvelope<A, Deliver>,
{
    let Some(user) = authed(act, ctx, "online_result", ack) else { return };
    let Some(group) = events::parse_online(arg).or(user.group) else {
        return refuse(act, ctx, "online_result", (code::BAD_PAYLOAD, "which group?"), ack);
    };
    let core = act.gru().core.clone();
    ctx.spawn(async move { core.room_users(GRU_APP, &group).await }.into_actor(act).map(
        move |users, act, ctx| {
            let ids: Vec<Value> = users.iter().map(|u| events::id_value(u)).collect();
            reply(act, ctx, "online_result", events::result(0, "", Some(json!(ids))), ack);
        },
    ));
}

/// The heartbeat, run every ping interval: Engine.IO v4 servers ping (v3 clients do).
pub fn ping<A>(act: &mut A, ctx: &mut A::Context)
where
    A: GruTransport,
    A::Context: AsyncContext<A> + ToEnvelope<A, Deliver>,
{
    if act.socket().eio == Eio::V4 {
        act.send_packet(ctx, engineio::encode(&Packet::Ping(String::new())));
    }
}

/// Disconnects the socket if it has not authenticated within the auth timeout (the seed: the server
/// drops connections that time out).
pub fn require_auth_in_time<A>(act: &mut A, ctx: &mut A::Context)
where
    A: GruTransport,
    A::Context: AsyncContext<A> + ToEnvelope<A, Deliver>,
{
    let wait = act.gru().auth_timeout;
    ctx.run_later(wait, move |act, ctx| {
        if act.serving() && act.socket().user.is_none() {
            log::info!("gru {}: no auth within {wait:?}, disconnecting", act.socket().sid);
            act.send_packet(ctx, sio_packet(&SioPacket::Disconnect { ns: "/".into() }));
            act.end(ctx);
        }
    });
}

/// Whether the client has been silent past the ping interval plus the ping timeout.
pub fn timed_out(gru: &GruState, sock: &GruSocket) -> bool {
    sock.last_heard.elapsed() > gru.ping_interval + gru.ping_timeout
}

/// How often to look whether a session timed out.
pub fn liveness_tick(gru: &GruState) -> Duration {
    (gru.ping_timeout / 2).max(Duration::from_millis(50))
}
