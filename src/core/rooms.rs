//! Rooms: live, unstored groups made of the connections that joined them (longweb groups). A message
//! published to a room is stored first (for history) and then handed to the room's member connections,
//! filtered by audience (everyone, connections without a verified token, or only verified ones) and
//! optionally narrowed to one user. Publishing to the empty room name reaches every room of the app
//! except the one named [`EXCLUDED_FROM_BROADCAST`].

use std::collections::{HashMap, HashSet};

use actix::prelude::*;
use tokio::sync::oneshot;

use super::message::{ConnId, Draft, SharedMessage, Target};
use super::writer::{Persist, Persisted, StoreWriter};
use super::{CoreError, Deliver, Origin};

/// The room an app-wide broadcast leaves out.
pub const EXCLUDED_FROM_BROADCAST: &str = "online";

/// Who among a room's connections receives a broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    All = 0,
    /// Connections without a verified token.
    Anonymous = 1,
    /// Connections with a verified token.
    Verified = 2,
}

impl Audience {
    fn from_status(s: i32) -> Audience {
        match s {
            1 => Audience::Anonymous,
            2 => Audience::Verified,
            _ => Audience::All,
        }
    }

    fn admits(self, verified: bool) -> bool {
        match self {
            Audience::All => true,
            Audience::Anonymous => !verified,
            Audience::Verified => verified,
        }
    }
}

/// A connection in rooms.
#[derive(Clone)]
pub struct RoomMember {
    pub conn: ConnId,
    pub user: String,
    pub verified: bool,
    pub deliver: Recipient<Deliver>,
}

/// Put a connection into rooms of an app.
pub struct JoinRooms {
    pub app: String,
    pub rooms: Vec<String>,
    pub member: RoomMember,
}
impl actix::Message for JoinRooms {
    type Result = ();
}

/// Take a connection out of every room.
pub struct LeaveRooms {
    pub conn: ConnId,
}
impl actix::Message for LeaveRooms {
    type Result = ();
}

/// Store a message and deliver it to rooms; answered once stored.
pub struct Publish {
    pub app: String,
    pub sender: String,
    /// Empty: every room of the app but the excluded one.
    pub room: String,
    /// Only this user's connections (any audience).
    pub user: Option<String>,
    pub audience: Audience,
    pub payload: String,
}
impl actix::Message for Publish {
    type Result = Result<SharedMessage, CoreError>;
}

pub struct Rooms {
    writer: Addr<StoreWriter>,
    rooms: HashMap<(String, String), HashMap<ConnId, RoomMember>>,
    joined: HashMap<ConnId, Vec<(String, String)>>,
}

impl Rooms {
    pub fn new(writer: Addr<StoreWriter>) -> Self {
        Rooms { writer, rooms: HashMap::new(), joined: HashMap::new() }
    }
}

impl Actor for Rooms {
    type Context = Context<Self>;
}

impl Handler<JoinRooms> for Rooms {
    type Result = ();

    fn handle(&mut self, msg: JoinRooms, _: &mut Self::Context) {
        let conn = msg.member.conn;
        for room in msg.rooms {
            let key = (msg.app.clone(), room);
            self.rooms.entry(key.clone()).or_default().insert(conn, msg.member.clone());
            self.joined.entry(conn).or_default().push(key);
        }
    }
}

impl Handler<LeaveRooms> for Rooms {
    type Result = ();

    fn handle(&mut self, msg: LeaveRooms, _: &mut Self::Context) {
        for key in self.joined.remove(&msg.conn).unwrap_or_default() {
            if let Some(members) = self.rooms.get_mut(&key) {
                members.remove(&msg.conn);
                if members.is_empty() {
                    self.rooms.remove(&key);
                }
            }
        }
    }
}

impl Handler<Publish> for Rooms {
    type Result = ResponseFuture<Result<SharedMessage, CoreError>>;

    fn handle(&mut self, msg: Publish, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let persist = Persist {
            draft: Draft {
                app: msg.app,
                sender: msg.sender,
                target: Target::Room { room: msg.room, user: msg.user },
                kind: "text".into(),
                payload: msg.payload,
                extension: String::new(),
                status: msg.audience as i32,
            },
            conv_type: 0,
            origin: Origin::default(),
            notify: ctx.address().recipient(),
            ack: Some(tx),
        };
        let sent = self.writer.try_send(persist).is_ok();
        Box::pin(async move {
            if !sent {
                return Err(CoreError::Busy);
            }
            rx.await.map_err(|_| CoreError::Busy)?
        })
    }
}

impl Handler<Persisted> for Rooms {
    type Result = ();

    /// Stored: hand it to the rooms' connections, each once.
    fn handle(&mut self, p: Persisted, _: &mut Self::Context) {
        let m = &p.msg;
        let audience = Audience::from_status(m.status);
        let mut seen: HashSet<ConnId> = HashSet::new();
        for ((app, room), members) in &self.rooms {
            let in_scope = *app == m.app
                && if m.conv.is_empty() {
                    room != EXCLUDED_FROM_BROADCAST || !m.recipient.is_empty()
                } else {
                    *room == m.conv
                };
            if !in_scope {
                continue;
            }
            for member in members.values() {
                let wanted = if m.recipient.is_empty() {
                    audience.admits(member.verified)
                } else {
                    member.user == m.recipient
                };
                if wanted && seen.insert(member.conn) {
                    member.deliver.do_send(Deliver { msg: p.msg.clone(), replay: false });
                }
            }
        }
    }
}
