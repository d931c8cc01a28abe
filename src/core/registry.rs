//! Registry: the directory of online user sessions and active groups. Starts them on demand, routes
//! direct messages, and answers presence. Its handlers are small and never wait on the database.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::group::{Group, GroupLinks, GroupSubmit, MemberOnline, MembersChanged};
use super::session::{
    AttachConn, CatchUpSession, DropDevice, FlushWatermarks, SessionDeliver, SessionLinks, UserSession,
};
use super::writer::{Persist, Persisted, StoreWriter};
use super::{
    CatchUp, ClusterEvent, ConnHandle, CoreError, GroupsOnline, Origin, Presence, RemoteDelivery,
    RemoteEvent, Scope,
};
use crate::domain::message::{Draft, GroupKey, SharedMessage, Target, UserKey};
use crate::store::Store;

/// Log a connection in as `key`; answers with the user's session.
pub struct Attach {
    pub key: UserKey,
    pub conn: ConnHandle,
}
impl actix::Message for Attach {
    type Result = Addr<UserSession>;
}

/// Send a message (direct or to a group).
pub struct Submit {
    pub draft: Draft,
    pub origin: Origin,
    pub ack: Option<oneshot::Sender<Result<SharedMessage, CoreError>>>,
}
impl actix::Message for Submit {
    type Result = ();
}

/// A session has no connection left; answers true when the registry forgot it (no attach is on its way).
pub struct SessionIdle {
    pub key: UserKey,
    pub attaches_seen: u64,
}
impl actix::Message for SessionIdle {
    type Result = bool;
}

/// A session came online; tell the active groups among `groups`.
pub struct AnnounceOnline {
    pub key: UserKey,
    pub session: Recipient<SessionDeliver>,
    pub groups: Vec<String>,
}
impl actix::Message for AnnounceOnline {
    type Result = ();
}

/// The online sessions among `users`.
pub struct OnlineSessions {
    pub app: String,
    pub users: Vec<String>,
}
impl actix::Message for OnlineSessions {
    type Result = Vec<(String, Recipient<SessionDeliver>)>;
}

/// Which of `users` are online.
pub struct WhoIsOnline {
    pub app: String,
    pub users: Vec<String>,
}
impl actix::Message for WhoIsOnline {
    type Result = Vec<String>;
}

/// Group membership changed in the store.
pub struct MembershipChanged {
    pub key: GroupKey,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}
impl actix::Message for MembershipChanged {
    type Result = ();
}

/// A group actor found its group missing, or is idle; forget it if it is still the registered one.
pub struct GroupGone {
    pub key: GroupKey,
    pub addr: Addr<Group>,
}
impl actix::Message for GroupGone {
    type Result = ();
}

/// Ask every session to store its watermarks (shutdown).
pub struct FlushSessions;
impl actix::Message for FlushSessions {
    type Result = ();
}

struct SessionEntry {
    addr: Addr<UserSession>,
    attaches: u64,
}

pub struct Registry {
    writer: Addr<StoreWriter>,
    store: Store,
    users: HashMap<UserKey, SessionEntry>,
    groups: HashMap<GroupKey, Addr<Group>>,
    /// The live rooms, for room messages stored on other nodes.
    rooms: Recipient<Persisted>,
    /// A cluster's presence, told when users come and go on this node.
    presence: Option<Recipient<Presence>>,
    /// A cluster's events: membership and device changes made on this node.
    events: Option<Recipient<ClusterEvent>>,
    /// A cluster's record of the groups with members online on this node.
    groups_online: Option<Recipient<GroupsOnline>>,
    /// What every session started from now on is linked to (built once, shared: each address clone
    /// costs a few allocations per session otherwise); rebuilt after the cluster links.
    session_links: Option<Arc<SessionLinks>>,
}

impl Registry {
    pub fn new(writer: Addr<StoreWriter>, store: Store, rooms: Recipient<Persisted>) -> Self {
        Registry {
            writer,
            store,
            users: HashMap::new(),
            groups: HashMap::new(),
            rooms,
            presence: None,
            session_links: None,
            events: None,
            groups_online: None,
        }
    }

    fn session_links(&mut self, ctx: &mut Context<Self>) -> Arc<SessionLinks> {
        let (writer, presence, groups_online) = (&self.writer, &self.presence, &self.groups_online);
        self.session_links
            .get_or_insert_with(|| {
                let me = ctx.address();
                Arc::new(SessionLinks {
                    announce: me.clone().recipient(),
                    idle: me.recipient(),
                    watermarks: writer.clone().recipient(),
                    presence: presence.clone(),
                    groups_online: groups_online.clone(),
                })
            })
            .clone()
    }

    fn tell_presence(&self, key: &UserKey, online: bool) {
        if let Some(p) = &self.presence {
            p.do_send(Presence { key: key.clone(), online });
        }
    }

    fn group(&mut self, key: &GroupKey, ctx: &mut Context<Self>) -> Addr<Group> {
        if let Some(g) = self.groups.get(key) {
            if g.connected() {
                return g.clone();
            }
        }
        let me = ctx.address();
        let links = GroupLinks {
            gone: me.clone().recipient(),
            online: me.recipient(),
            persist: self.writer.clone().recipient(),
        };
        let g = Group::new(key.clone(), links, self.store.clone()).start();
        self.groups.insert(key.clone(), g.clone());
        g
    }

    fn tell_cluster(&self, event: ClusterEvent) {
        if let Some(e) = &self.events {
            e.do_send(event);
        }
    }

    /// Hands a membership change to the group's actor here, if it runs.
    fn members_changed(&self, key: &GroupKey, added: Vec<String>, removed: Vec<String>) {
        let Some(group) = self.groups.get(key) else { return };
        let added = added
            .into_iter()
            .map(|u| {
                let s = self.session(&key.app, &u).map(|s| s.clone().recipient());
                (u, s)
            })
            .collect();
        group.do_send(MembersChanged { added, removed });
    }

    fn session(&self, app: &str, user: &str) -> Option<&Addr<UserSession>> {
        // Lookups by borrowed parts would need a custom key; ids are short, so build the key.
        self.users.get(&UserKey::new(app, user)).map(|e| &e.addr)
    }
}

impl Actor for Registry {
    type Context = Context<Self>;
}

impl Handler<Attach> for Registry {
    type Result = MessageResult<Attach>;

    fn handle(&mut self, msg: Attach, ctx: &mut Self::Context) -> Self::Result {
        let links = self.session_links(ctx);
        let store = self.store.clone();
        let start = |key: &UserKey| SessionEntry {
            addr: UserSession::new(key.clone(), links.clone(), store.clone()).start(),
            attaches: 0,
        };
        if let Some(device) = &msg.conn.device {
            self.tell_cluster(ClusterEvent::DeviceAttached {
                app: msg.key.app.clone(),
                user: msg.key.user.clone(),
                device: device.clone(),
            });
        }
        let entry = self.users.entry(msg.key.clone()).or_insert_with_key(start);
        if !entry.addr.connected() {
            // The session stopped on its own (it should have said so): start a fresh one.
            *entry = start(&msg.key);
        }
        entry.attaches += 1;
        entry.addr.do_send(AttachConn { conn: msg.conn });
        MessageResult(entry.addr.clone())
    }
}

impl Handler<SessionIdle> for Registry {
    type Result = bool;

    fn handle(&mut self, msg: SessionIdle, _: &mut Self::Context) -> bool {
        match self.users.get(&msg.key) {
            Some(e) if e.attaches > msg.attaches_seen => false,
            Some(_) => {
                self.users.remove(&msg.key);
                self.tell_presence(&msg.key, false);
                true
            }
            None => true,
        }
    }
}

impl Handler<Submit> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Submit, ctx: &mut Self::Context) {
        match &msg.draft.target {
            Target::Group(g) => {
                let key = GroupKey::new(msg.draft.app.clone(), g.clone());
                self.group(&key, ctx).do_send(GroupSubmit {
                    draft: msg.draft,
                    origin: msg.origin,
                    ack: msg.ack,
                });
            }
            Target::Room { .. } => {
                // Live rooms publish through `core::rooms`, not the registry.
                msg.origin.reject(CoreError::BadId);
                if let Some(ack) = msg.ack {
                    let _ = ack.send(Err(CoreError::BadId));
                }
            }
            Target::User(_) => {
                let persist = Persist {
                    scope: super::Scope::Direct,
                    draft: msg.draft,
                    conv_type: 0,
                    origin: msg.origin,
                    notify: ctx.address().recipient(),
                    ack: msg.ack,
                };
                if let Err(e) = self.writer.try_send(persist) {
                    let p = match e {
                        SendError::Full(p) | SendError::Closed(p) => p,
                    };
                    p.origin.reject(CoreError::Busy);
                    if let Some(ack) = p.ack {
                        let _ = ack.send(Err(CoreError::Busy));
                    }
                }
            }
        }
    }
}

impl Handler<Persisted> for Registry {
    type Result = ();

    /// A direct message is stored: deliver it to the recipient's connections and to the sender's
    /// other connections.
    fn handle(&mut self, msg: Persisted, _: &mut Self::Context) {
        let m = &msg.msg;
        if let Some(s) = self.session(&m.app, &m.recipient) {
            let origin = if m.recipient == m.sender { msg.origin } else { None };
            s.do_send(SessionDeliver { msg: msg.msg.clone(), origin });
        }
        if m.recipient != m.sender {
            if let Some(s) = self.session(&m.app, &m.sender) {
                s.do_send(SessionDeliver { msg: msg.msg.clone(), origin: msg.origin });
            }
        }
    }
}

impl Handler<AnnounceOnline> for Registry {
    type Result = ();

    fn handle(&mut self, msg: AnnounceOnline, _: &mut Self::Context) {
        for g in msg.groups {
            if let Some(group) = self.groups.get(&GroupKey::new(msg.key.app.clone(), g)) {
                group.do_send(MemberOnline { user: msg.key.user.clone(), session: msg.session.clone() });
            }
        }
    }
}

impl Handler<OnlineSessions> for Registry {
    type Result = MessageResult<OnlineSessions>;

    fn handle(&mut self, msg: OnlineSessions, _: &mut Self::Context) -> Self::Result {
        let out = msg
            .users
            .into_iter()
            .filter_map(|u| {
                let s = self.session(&msg.app, &u)?.clone().recipient();
                Some((u, s))
            })
            .collect();
        MessageResult(out)
    }
}

impl Handler<WhoIsOnline> for Registry {
    type Result = MessageResult<WhoIsOnline>;

    fn handle(&mut self, msg: WhoIsOnline, _: &mut Self::Context) -> Self::Result {
        let out = msg.users.into_iter().filter(|u| self.session(&msg.app, u).is_some()).collect();
        MessageResult(out)
    }
}

impl Handler<MembershipChanged> for Registry {
    type Result = ();

    fn handle(&mut self, msg: MembershipChanged, _: &mut Self::Context) {
        self.tell_cluster(ClusterEvent::MembersChanged {
            app: msg.key.app.clone(),
            group: msg.key.group.clone(),
            added: msg.added.clone(),
            removed: msg.removed.clone(),
        });
        self.members_changed(&msg.key, msg.added, msg.removed);
    }
}

impl Handler<GroupGone> for Registry {
    type Result = ();

    fn handle(&mut self, msg: GroupGone, _: &mut Self::Context) {
        if self.groups.get(&msg.key).is_some_and(|g| *g == msg.addr) {
            self.groups.remove(&msg.key);
        }
    }
}

impl Handler<FlushSessions> for Registry {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: FlushSessions, _: &mut Self::Context) -> Self::Result {
        let sessions: Vec<Addr<UserSession>> = self.users.values().map(|e| e.addr.clone()).collect();
        Box::pin(async move {
            for s in sessions {
                let _ = s.send(FlushWatermarks).await;
            }
        })
    }
}

/// From now on, tell a cluster when users come and go on this node (`presence`; each session tells
/// it when it starts) and what changes here that the other nodes must know (`events`).
pub struct LinkCluster {
    pub presence: Recipient<Presence>,
    pub groups_online: Recipient<GroupsOnline>,
    pub events: Recipient<ClusterEvent>,
}
impl actix::Message for LinkCluster {
    type Result = ();
}

impl Handler<LinkCluster> for Registry {
    type Result = ();

    fn handle(&mut self, msg: LinkCluster, _: &mut Self::Context) {
        for key in self.users.keys() {
            msg.presence.do_send(Presence { key: key.clone(), online: true });
        }
        self.presence = Some(msg.presence);
        self.groups_online = Some(msg.groups_online);
        self.events = Some(msg.events);
        self.session_links = None;
    }
}

impl Handler<RemoteEvent> for Registry {
    type Result = ();

    /// A change made on another node.
    fn handle(&mut self, msg: RemoteEvent, _: &mut Self::Context) {
        match msg.0 {
            ClusterEvent::MembersChanged { app, group, added, removed } => {
                self.members_changed(&GroupKey::new(app, group), added, removed);
            }
            ClusterEvent::DeviceAttached { app, user, device } => {
                if let Some(s) = self.session(&app, &user) {
                    s.do_send(DropDevice { device });
                }
            }
        }
    }
}

impl Handler<CatchUp> for Registry {
    type Result = ();

    fn handle(&mut self, msg: CatchUp, _: &mut Self::Context) {
        let after = crate::domain::ids::min_id_at(msg.since_ms).saturating_sub(1);
        log::info!("catching {} sessions up on messages stored since {}", self.users.len(), msg.since_ms);
        for e in self.users.values() {
            e.addr.do_send(CatchUpSession { after });
        }
    }
}

impl Handler<RemoteDelivery> for Registry {
    type Result = ();

    /// A message stored on another node: to this node's sessions of its recipient and sender, its
    /// group's online members here, or this node's rooms.
    fn handle(&mut self, msg: RemoteDelivery, ctx: &mut Self::Context) {
        let m = &msg.msg;
        match msg.scope {
            Scope::Direct => {
                for user in [&m.recipient, &m.sender] {
                    if let Some(s) = self.session(&m.app, user) {
                        s.do_send(SessionDeliver { msg: msg.msg.clone(), origin: None });
                    }
                    if m.recipient == m.sender {
                        break;
                    }
                }
            }
            Scope::Group => {
                let key = GroupKey::new(m.app.clone(), m.conv.clone());
                self.group(&key, ctx).do_send(Persisted { msg: msg.msg.clone(), origin: None });
            }
            Scope::Room => self.rooms.do_send(Persisted { msg: msg.msg.clone(), origin: None }),
        }
    }
}
