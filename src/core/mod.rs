//! The core: protocol-agnostic actors (registry, user sessions, groups, live rooms, the store writer)
//! and [`Core`], the handle front-ends use. Knows nothing of any wire format. May import `domain` and
//! `store`; never a front-end.
//!
//! Front-ends talk to the core through [`Core`] (a cheap, cloneable handle) and register each live
//! connection as a [`ConnHandle`]: the core pushes [`Deliver`] and [`ConnEvent`] to it and the
//! connection renders them in its own format.

pub mod group;
pub mod registry;
pub mod rooms;
pub mod service;
pub mod session;
pub mod writer;

#[cfg(test)]
mod tests;

use actix::prelude::*;

pub use crate::domain::message::{ConnId, ConvKey, Draft, GroupKey, Message, SharedMessage, Target, UserKey};
pub use service::Core;

/// Why the core refused something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    #[error("not a member")]
    NotMember,
    #[error("no such group")]
    NoSuchGroup,
    #[error("bad id")]
    BadId,
    #[error("server busy")]
    Busy,
    #[error("storage failure")]
    Storage,
}

/// A stored message for one connection to render.
#[derive(Clone)]
pub struct Deliver {
    pub msg: SharedMessage,
    /// Part of an offline replay page (paced by the session, not by the live-traffic bound).
    pub replay: bool,
    /// Shared by every delivery of one fan-out: front-ends whose frame is the same for every
    /// receiver render it once into this slot.
    pub frame: Option<FrameSlot>,
}

/// A frame rendered once for a whole fan-out.
pub type FrameSlot = std::sync::Arc<std::sync::OnceLock<bytestring::ByteString>>;

impl Deliver {
    /// A delivery to one connection, rendered for it alone.
    pub fn single(msg: SharedMessage, replay: bool) -> Deliver {
        Deliver { msg, replay, frame: None }
    }
}

impl actix::Message for Deliver {
    type Result = ();
}

/// Who a stored message is for, as the other nodes of a cluster need to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// A direct message: its recipient's and its sender's sessions.
    Direct,
    /// A message of a persistent group: its members' sessions.
    Group,
    /// A message of a live room (longweb, Gru): the rooms' connections.
    Room,
}

/// A message stored on this node, for the other nodes of a cluster (sent by the store writer after
/// the commit, in id order, to the cluster link when there is one).
pub struct Outbound {
    pub msg: SharedMessage,
    pub scope: Scope,
}
impl actix::Message for Outbound {
    type Result = ();
}

/// A message stored on another node of the cluster, to deliver to this node's connections.
pub struct RemoteDelivery {
    pub msg: SharedMessage,
    pub scope: Scope,
}
impl actix::Message for RemoteDelivery {
    type Result = ();
}

/// A user came online on this node (its first connection) or went offline (its last one left).
/// Answered once the cluster has it (or gave up waiting): a session reads its offline replay only
/// after that, so a message stored on another node is either in the replay or published here.
pub struct Presence {
    pub key: UserKey,
    pub online: bool,
}
impl actix::Message for Presence {
    type Result = ();
}

/// A user who came online on this node is a member of these groups: the cluster publishes their
/// messages here from now on (answered once it does, or gave up waiting).
pub struct GroupsOnline {
    pub key: UserKey,
    pub groups: Vec<String>,
}
impl actix::Message for GroupsOnline {
    type Result = ();
}

/// What the nodes of a cluster tell each other besides stored messages.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ClusterEvent {
    /// A persistent group's members changed (on the node that took the call).
    MembersChanged { app: String, group: String, added: Vec<String>, removed: Vec<String> },
    /// A connection with a device key logged in: older connections of the user with that key, on
    /// every node, give it their place.
    DeviceAttached { app: String, user: String, device: String },
}
impl actix::Message for ClusterEvent {
    type Result = ();
}

/// A [`ClusterEvent`] from another node.
pub struct RemoteEvent(pub ClusterEvent);
impl actix::Message for RemoteEvent {
    type Result = ();
}

/// This node may have missed messages of other nodes stored from `since_ms` (Unix milliseconds) on
/// (its channel dropped, a node's messages came with a gap, a node did not know this one): every
/// online session reads them from the store, leaving out what it handed over already.
pub struct CatchUp {
    pub since_ms: u64,
}
impl actix::Message for CatchUp {
    type Result = ();
}

/// A user joined a live room on this node (its first connection there) or left it (its last); with no
/// room, the user's first connection in the app's rooms on this node came (or its last went). Answered
/// once the cluster knows (bounded), so that a join can wait until messages from other nodes find it.
pub struct RoomPresence {
    pub app: String,
    pub room: Option<String>,
    pub user: String,
    pub present: bool,
}
impl actix::Message for RoomPresence {
    type Result = ();
}

/// The users in a live room on the other nodes of the cluster (in no order).
pub struct RoomUsersElsewhere {
    pub app: String,
    pub room: String,
}
impl actix::Message for RoomUsersElsewhere {
    type Result = Vec<String>;
}

/// Which of `users` are online on the other nodes of the cluster (in no order).
pub struct UsersOnlineElsewhere {
    pub app: String,
    pub users: Vec<String>,
}
impl actix::Message for UsersOnlineElsewhere {
    type Result = Vec<String>;
}

/// Where a cluster link reaches this node's core.
pub struct ClusterInbound {
    pub deliveries: Recipient<RemoteDelivery>,
    pub events: Recipient<RemoteEvent>,
    pub catch_up: Recipient<CatchUp>,
    /// This node's id generator: every id that comes from another node is observed, so that what is
    /// stored here later sorts after it (a watermark never hides a message that came after it).
    pub ids: std::sync::Arc<crate::domain::ids::IdGen>,
}

/// Where the core reaches its cluster link.
pub struct ClusterOutbound {
    pub messages: Recipient<Outbound>,
    pub presence: Recipient<Presence>,
    pub groups_online: Recipient<GroupsOnline>,
    pub events: Recipient<ClusterEvent>,
    pub room_presence: Recipient<RoomPresence>,
    pub room_users: Recipient<RoomUsersElsewhere>,
    pub users_online: Recipient<UsersOnlineElsewhere>,
}

/// Control events from the core to a connection.
#[derive(Debug, Clone)]
pub enum ConnEvent {
    /// A page of offline replay has been handed over and more is waiting: ask for it with
    /// `session::ReplayNext` once the page has been written out.
    ReplayPaused,
    /// Something the connection sent was refused.
    Rejected(CoreError),
    /// A newer connection with the same device key took this one's place.
    Replaced,
    /// More live messages than the connection's `held_limit` arrived while its replay waited for the
    /// peer to take a page: the peer is not keeping up. The connection drops itself (as a slow
    /// consumer); everything unconfirmed stays in the store for its next login.
    TooSlow,
    /// The database stayed unavailable through the replay's retries: the connection closes (with its
    /// protocol's "try again later") so that its client logs in again once it is back.
    Unavailable,
}

impl actix::Message for ConnEvent {
    type Result = ();
}

/// What the core keeps of a live connection.
#[derive(Clone)]
pub struct ConnHandle {
    pub id: ConnId,
    pub deliver: Recipient<Deliver>,
    pub events: Recipient<ConnEvent>,
    /// A device key: a new connection of the user with the same key replaces the older one (the
    /// gateway's one notify per session and platform). `None`: no replacing.
    pub device: Option<String>,
    /// Replay this conversation from just after this message id, whatever was delivered before (the
    /// gateway's SSE `Last-Event-ID`).
    pub resume: Option<(String, i64)>,
    /// Bytes of live messages the session may hold for this connection while its offline replay
    /// runs (they are sent after it); past this it sends [`ConnEvent::TooSlow`].
    pub held_limit: u64,
}

/// Who sent something, so refusals reach it and deliveries skip it.
#[derive(Clone, Default)]
pub struct Origin {
    pub conn: Option<ConnId>,
    pub events: Option<Recipient<ConnEvent>>,
}

impl Origin {
    pub fn of(conn: &ConnHandle) -> Origin {
        Origin { conn: Some(conn.id), events: Some(conn.events.clone()) }
    }

    pub fn reject(&self, err: CoreError) {
        if let Some(ev) = &self.events {
            ev.do_send(ConnEvent::Rejected(err));
        }
    }
}

/// Hands out connection ids, unique for the life of the process.
pub fn next_conn_id() -> ConnId {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
