//! Rooms: live, unstored groups made of the connections that joined them (longweb and Gru groups). A
//! message published to a room is stored first (for history) and then handed to the room's member
//! connections, filtered by audience (everyone, connections without a verified token, or only verified
//! ones) and optionally narrowed to one user. Publishing to the empty room name with a user reaches
//! every connection of that user in the app; without a user, every room of the app except the one named
//! [`EXCLUDED_FROM_BROADCAST`]. The sending connection never gets its own message back.

use std::collections::{HashMap, HashSet};

use actix::prelude::*;
use tokio::sync::oneshot;

use super::writer::{Persist, Persisted};
use super::{CoreError, Deliver, FrameSlot, Origin, RoomPresence};
use crate::domain::message::{ConnId, Draft, SharedMessage, Target};

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

/// Put a connection into rooms of an app (with no rooms: only reachable as its user).
pub struct JoinRooms {
    pub app: String,
    pub rooms: Vec<String>,
    pub member: RoomMember,
}
/// Answered once the connection is in the rooms and, with a cluster, the other nodes know it.
impl actix::Message for JoinRooms {
    type Result = ();
}

/// The answer to a publish: the stored message, or why it was not stored.
pub type Ack = oneshot::Sender<Result<SharedMessage, CoreError>>;

/// [`Publish`] sent with `do_send` (so publishes keep the order they were made in), answered on `ack`.
pub struct PublishAcked {
    pub publish: Publish,
    pub ack: Ack,
}
impl actix::Message for PublishAcked {
    type Result = ();
}

/// The distinct users with a connection in a room: integer ids in numeric order, then the others.
pub struct RoomUsers {
    pub app: String,
    pub room: String,
}
impl actix::Message for RoomUsers {
    type Result = Vec<String>;
}

/// Deliver a connection's messages to another actor from now on (a transport upgrade); answered once
/// done, so everything sent to the old one is already in its mailbox.
pub struct Repoint {
    pub conn: ConnId,
    pub deliver: Recipient<Deliver>,
}
impl actix::Message for Repoint {
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
    /// The message kind as the front-end names it.
    pub kind: String,
    pub payload: String,
    /// Front-end data kept with the message.
    pub extension: String,
    /// The sending connection, which does not get its own message back.
    pub origin: Option<ConnId>,
}
impl actix::Message for Publish {
    type Result = Result<SharedMessage, CoreError>;
}

/// From now on, tell a cluster when users join and leave rooms here.
pub struct LinkRoomPresence(pub Recipient<RoomPresence>);
impl actix::Message for LinkRoomPresence {
    type Result = ();
}

/// Sorts user ids as `online` lists them: integer ids in numeric order first, then the others;
/// each once.
pub fn sort_user_ids(users: &mut Vec<String>) {
    users.sort_by_cached_key(|u| (u.parse::<i64>().map_err(|_| ()), u.clone()));
    users.dedup();
}

pub struct Rooms {
    writer: Recipient<Persist>,
    /// Members of each (app, room).
    rooms: HashMap<(String, String), HashMap<ConnId, RoomMember>>,
    /// Connections of each user in each (app, room).
    room_users: HashMap<(String, String), HashMap<String, usize>>,
    /// A cluster, told when a user's first connection joins a room and its last leaves.
    presence: Option<Recipient<RoomPresence>>,
    /// Connections of each (app, user), in rooms or not.
    users: HashMap<(String, String), HashMap<ConnId, RoomMember>>,
    /// What each connection joined: its app, user and rooms.
    joined: HashMap<ConnId, (String, String, Vec<String>)>,
}

impl Rooms {
    pub fn new(writer: Recipient<Persist>) -> Self {
        Rooms {
            writer,
            rooms: HashMap::new(),
            room_users: HashMap::new(),
            presence: None,
            users: HashMap::new(),
            joined: HashMap::new(),
        }
    }

    /// Tells the cluster (if any) that `user` came to or left `room` (`None`: the app's rooms) here;
    /// the answer comes once the cluster knows it.
    fn tell(
        &self,
        app: &str,
        room: Option<&str>,
        user: &str,
        present: bool,
    ) -> Option<impl std::future::Future<Output = ()> + 'static> {
        let p = self.presence.as_ref()?;
        let presence =
            RoomPresence { app: app.into(), room: room.map(Into::into), user: user.into(), present };
        if present {
            let told = p.send(presence);
            Some(async move {
                let _ = told.await;
            })
        } else {
            p.do_send(presence);
            None
        }
    }
}

impl Handler<LinkRoomPresence> for Rooms {
    type Result = ();

    fn handle(&mut self, msg: LinkRoomPresence, _: &mut Self::Context) {
        for ((app, room), users) in &self.room_users {
            for user in users.keys() {
                msg.0.do_send(RoomPresence {
                    app: app.clone(),
                    room: Some(room.clone()),
                    user: user.clone(),
                    present: true,
                });
            }
        }
        for (app, user) in self.users.keys() {
            msg.0.do_send(RoomPresence { app: app.clone(), room: None, user: user.clone(), present: true });
        }
        self.presence = Some(msg.0);
    }
}

impl Actor for Rooms {
    type Context = Context<Self>;
}

impl Handler<JoinRooms> for Rooms {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: JoinRooms, _: &mut Self::Context) -> Self::Result {
        let conn = msg.member.conn;
        let user = msg.member.user.clone();
        let conns = self.users.entry((msg.app.clone(), user.clone())).or_default();
        let first_in_app = conns.is_empty();
        conns.insert(conn, msg.member.clone());
        let entry = self.joined.entry(conn).or_insert_with(|| (msg.app.clone(), user, Vec::new()));
        let mut joined = Vec::new();
        for room in msg.rooms {
            let key = (msg.app.clone(), room.clone());
            let new = self.rooms.entry(key.clone()).or_default().insert(conn, msg.member.clone()).is_none();
            if new {
                let n = self.room_users.entry(key).or_default().entry(msg.member.user.clone()).or_insert(0);
                *n += 1;
                if *n == 1 {
                    joined.push(room.clone());
                }
            }
            if !entry.2.contains(&room) {
                entry.2.push(room);
            }
        }
        let mut told = Vec::new();
        if first_in_app {
            told.extend(self.tell(&msg.app, None, &msg.member.user, true));
        }
        for room in joined {
            told.extend(self.tell(&msg.app, Some(&room), &msg.member.user, true));
        }
        Box::pin(async move {
            futures_util::future::join_all(told).await;
        })
    }
}

impl Handler<LeaveRooms> for Rooms {
    type Result = ();

    fn handle(&mut self, msg: LeaveRooms, _: &mut Self::Context) {
        let Some((app, user, rooms)) = self.joined.remove(&msg.conn) else { return };
        for room in rooms {
            let key = (app.clone(), room);
            let Some(members) = self.rooms.get_mut(&key) else { continue };
            if members.remove(&msg.conn).is_none() {
                continue;
            }
            if members.is_empty() {
                self.rooms.remove(&key);
            }
            let mut left = false;
            if let Some(users) = self.room_users.get_mut(&key) {
                if let Some(n) = users.get_mut(&user) {
                    *n -= 1;
                    if *n == 0 {
                        users.remove(&user);
                        left = true;
                    }
                }
                if users.is_empty() {
                    self.room_users.remove(&key);
                }
            }
            if left {
                self.tell(&key.0, Some(&key.1), &user, false);
            }
        }
        let key = (app, user);
        if let Some(conns) = self.users.get_mut(&key) {
            conns.remove(&msg.conn);
            if conns.is_empty() {
                self.users.remove(&key);
                self.tell(&key.0, None, &key.1, false);
            }
        }
    }
}

impl Handler<Repoint> for Rooms {
    type Result = ();

    fn handle(&mut self, msg: Repoint, _: &mut Self::Context) {
        let Some((app, user, rooms)) = self.joined.get(&msg.conn) else { return };
        let repoint = |members: Option<&mut HashMap<ConnId, RoomMember>>| {
            if let Some(m) = members.and_then(|ms| ms.get_mut(&msg.conn)) {
                m.deliver = msg.deliver.clone();
            }
        };
        for room in rooms {
            repoint(self.rooms.get_mut(&(app.clone(), room.clone())));
        }
        repoint(self.users.get_mut(&(app.clone(), user.clone())));
    }
}

impl Handler<RoomUsers> for Rooms {
    type Result = Vec<String>;

    fn handle(&mut self, msg: RoomUsers, _: &mut Self::Context) -> Vec<String> {
        let mut users: Vec<String> = self
            .room_users
            .get(&(msg.app, msg.room))
            .map(|users| users.keys().cloned().collect())
            .unwrap_or_default();
        sort_user_ids(&mut users);
        users
    }
}

impl Handler<Publish> for Rooms {
    type Result = ResponseFuture<Result<SharedMessage, CoreError>>;

    fn handle(&mut self, msg: Publish, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.persist(msg, tx, ctx);
        Box::pin(async move { rx.await.map_err(|_| CoreError::Busy)? })
    }
}

impl Handler<PublishAcked> for Rooms {
    type Result = ();

    fn handle(&mut self, msg: PublishAcked, ctx: &mut Self::Context) {
        self.persist(msg.publish, msg.ack, ctx);
    }
}

impl Rooms {
    /// Hands the message to the store writer; `ack` is answered once it is stored (or refused).
    fn persist(&mut self, msg: Publish, ack: Ack, ctx: &mut Context<Self>) {
        let persist = Persist {
            scope: super::Scope::Room,
            draft: Draft {
                app: msg.app,
                sender: msg.sender,
                target: Target::Room { room: msg.room, user: msg.user },
                kind: msg.kind,
                payload: msg.payload,
                extension: msg.extension,
                status: msg.audience as i32,
            },
            conv_type: 0,
            origin: Origin { conn: msg.origin, events: None },
            notify: ctx.address().recipient(),
            ack: Some(ack),
        };
        if let Err(e) = self.writer.try_send(persist) {
            if let Some(ack) = e.into_inner().ack {
                let _ = ack.send(Err(CoreError::Busy));
            }
        }
    }
}

impl Handler<Persisted> for Rooms {
    type Result = ();

    /// Stored: hand it to the rooms' connections, each once, never back to the sending connection.
    fn handle(&mut self, p: Persisted, _: &mut Self::Context) {
        let m = &p.msg;
        let frame: FrameSlot = Default::default();
        let send = |member: &RoomMember| {
            if Some(member.conn) != p.origin {
                member.deliver.do_send(Deliver {
                    msg: p.msg.clone(),
                    replay: false,
                    frame: Some(frame.clone()),
                });
            }
        };
        match (m.conv.is_empty(), m.recipient.is_empty()) {
            // One user, wherever it is.
            (true, false) => {
                if let Some(conns) = self.users.get(&(m.app.clone(), m.recipient.clone())) {
                    conns.values().for_each(send);
                }
            }
            // One room, everyone or one user in it.
            (false, _) => {
                if let Some(members) = self.rooms.get(&(m.app.clone(), m.conv.clone())) {
                    let audience = Audience::from_status(m.status);
                    members
                        .values()
                        .filter(|mb| {
                            if m.recipient.is_empty() {
                                audience.admits(mb.verified)
                            } else {
                                mb.user == m.recipient
                            }
                        })
                        .for_each(send);
                }
            }
            // Every room of the app but the excluded one, each connection once.
            (true, true) => {
                let audience = Audience::from_status(m.status);
                let mut seen: HashSet<ConnId> = HashSet::new();
                for ((app, room), members) in &self.rooms {
                    if *app != m.app || room == EXCLUDED_FROM_BROADCAST {
                        continue;
                    }
                    for member in members.values() {
                        if audience.admits(member.verified) && seen.insert(member.conn) {
                            send(member);
                        }
                    }
                }
            }
        }
    }
}
