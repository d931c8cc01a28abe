//! [`Core`]: the handle front-ends use. Starts the core actors and offers the operations front-ends
//! need (log in, send, group management, queries), keeping storage and delivery consistent: a
//! membership change is stored and then applied to live routing at once.

use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::registry::{Attach, FlushSessions, LinkCluster, MembershipChanged, Registry, Submit, WhoIsOnline};
use super::rooms::{
    JoinRooms, LeaveRooms, LinkRoomPresence, Publish, PublishAcked, Repoint, RoomMember, RoomUsers, Rooms,
};
use super::session::UserSession;
use super::writer::{Flush, GetStats, SetCluster, StoreWriter, WriterStats};
use super::{ConnHandle, CoreError, Origin};
use crate::domain::group::Group;
use crate::domain::ids::{now_us, IdGen};
use crate::domain::message::HistoryEnd;
use crate::domain::message::{ConnId, ConvKey, Draft, GroupKey, Message, SharedMessage, UserKey};
use crate::domain::user::Profile;
use crate::store::groups::{self, NewGroup};
use crate::store::{messages, users, Store, StoreError};

/// Settings the core needs.
#[derive(Debug, Clone)]
pub struct CoreSettings {
    pub node_id: u16,
    pub max_batch: usize,
    /// Least time between the starts of two store transactions (see `[store] commit_gap_us`).
    pub commit_gap: std::time::Duration,
}

/// What a new group starts with.
#[derive(Debug, Clone, Default)]
pub struct GroupSpec {
    /// `None`: the next decimal id.
    pub id: Option<String>,
    pub conv_type: i32,
    pub creator: String,
    pub name: String,
    pub notice: String,
    /// Members besides the creator (who is always the first member).
    pub members: Vec<String>,
    pub snap: String,
}

/// A cheap, cloneable handle on the running core: one pointer (every connection holds one).
#[derive(Clone)]
pub struct Core(Arc<CoreParts>);

/// What a [`Core`] handle reaches.
pub struct CoreParts {
    pub store: Store,
    registry: Addr<Registry>,
    writer: Addr<StoreWriter>,
    rooms: Addr<Rooms>,
    /// The cluster's view of live rooms on the other nodes, once linked.
    rooms_elsewhere: std::sync::Arc<std::sync::OnceLock<Recipient<super::RoomUsersElsewhere>>>,
    /// The cluster's view of users online on the other nodes, once linked.
    online_elsewhere: std::sync::Arc<std::sync::OnceLock<Recipient<super::UsersOnlineElsewhere>>>,
    ids: Arc<IdGen>,
}

impl std::ops::Deref for Core {
    type Target = CoreParts;

    fn deref(&self) -> &CoreParts {
        &self.0
    }
}

impl From<StoreError> for CoreError {
    fn from(e: StoreError) -> Self {
        log::error!("storage: {e}");
        CoreError::Storage
    }
}

/// The acknowledgement of a message, waited for at most `timeout` (the store's call timeout): while
/// the database hangs the sender is told (`Storage`) instead of hanging with it. The message stays
/// queued and is stored (and delivered) if the database comes back; its sender may then see it twice
/// if it sends it again.
async fn bounded_ack(
    rx: oneshot::Receiver<Result<SharedMessage, CoreError>>,
    timeout: std::time::Duration,
) -> Result<SharedMessage, CoreError> {
    match tokio::time::timeout(timeout, rx).await {
        Ok(ack) => ack.map_err(|_| CoreError::Busy)?,
        Err(_) => {
            log::warn!("a message was not acknowledged within {timeout:?}: the database does not answer");
            Err(CoreError::Storage)
        }
    }
}

impl Core {
    /// Starts the core actors on one arbiter of their own.
    pub fn start(store: Store, settings: &CoreSettings) -> Core {
        let ids = Arc::new(IdGen::new(settings.node_id));
        let arbiter = Arbiter::new();
        let handle = arbiter.handle();
        let (s, w, gap) = (store.clone(), settings.max_batch, settings.commit_gap);
        let writer_ids = ids.clone();
        let writer = StoreWriter::start_in_arbiter(&handle, move |_| {
            StoreWriter::new(s, writer_ids, w).with_commit_gap(gap)
        });
        let wr = writer.clone();
        let rooms = Rooms::start_in_arbiter(&handle, move |_| Rooms::new(wr.recipient()));
        let (s, wr, r) = (store.clone(), writer.clone(), rooms.clone().recipient());
        let registry = Registry::start_in_arbiter(&handle, move |_| Registry::new(wr, s, r));
        // Small, frequent passive checkpoints beside the commits (SQLite); the writer completes one
        // between its transactions when these cannot keep the log short.
        let s = store.clone();
        handle.spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
            loop {
                tick.tick().await;
                s.checkpoint().await;
            }
        });
        // The arbiter lives as long as the process.
        std::mem::forget(arbiter);
        Core(Arc::new(CoreParts {
            store,
            registry,
            writer,
            rooms,
            rooms_elsewhere: Default::default(),
            online_elsewhere: Default::default(),
            ids,
        }))
    }

    /// Links the core to a cluster: every stored message, users coming and going, and membership and
    /// device changes go to `link`; returns where the other nodes' messages and events come in.
    pub fn attach_cluster(&self, link: super::ClusterOutbound) -> super::ClusterInbound {
        self.writer.do_send(SetCluster(link.messages));
        self.registry.do_send(LinkCluster {
            presence: link.presence,
            groups_online: link.groups_online,
            events: link.events,
        });
        self.rooms.do_send(LinkRoomPresence(link.room_presence));
        let _ = self.rooms_elsewhere.set(link.room_users);
        let _ = self.online_elsewhere.set(link.users_online);
        super::ClusterInbound {
            deliveries: self.registry.clone().recipient(),
            events: self.registry.clone().recipient(),
            catch_up: self.registry.clone().recipient(),
            ids: self.ids.clone(),
        }
    }

    /// Attaches a connection as `key`; the session starts its offline replay to it.
    pub async fn login(&self, key: UserKey, conn: ConnHandle) -> Result<Addr<UserSession>, CoreError> {
        self.registry.send(Attach { key, conn }).await.map_err(|_| CoreError::Busy)
    }

    /// Sends a message; refusals go to `origin`, deliveries skip `origin`'s connection. The future
    /// answers once the message is stored (or refused); the message is queued when this is called, so
    /// messages sent one after the other keep their order whenever the futures are polled.
    pub fn submit(
        &self,
        draft: Draft,
        origin: Origin,
    ) -> impl std::future::Future<Output = Result<SharedMessage, CoreError>> {
        let (tx, rx) = oneshot::channel();
        self.registry.do_send(Submit { draft, origin, ack: Some(tx) });
        bounded_ack(rx, self.store.call_timeout())
    }

    /// Puts a connection into live rooms of an app. The join is queued when this is called; the
    /// future answers once it is in effect on every node (with a cluster: once the other nodes
    /// publish the rooms' messages here, bounded by a second).
    pub fn join_rooms(
        &self,
        app: &str,
        rooms: Vec<String>,
        member: RoomMember,
    ) -> impl std::future::Future<Output = ()> + 'static {
        let joined = self.rooms.send(JoinRooms { app: app.to_string(), rooms, member });
        async move {
            let _ = joined.await;
        }
    }

    /// Takes a connection out of every live room.
    pub fn leave_rooms(&self, conn: ConnId) {
        self.rooms.do_send(LeaveRooms { conn });
    }

    /// Delivers a connection's room messages to `deliver` from now on; returns once in effect.
    pub async fn repoint_rooms(&self, conn: ConnId, deliver: actix::Recipient<super::Deliver>) {
        let _ = self.rooms.send(Repoint { conn, deliver }).await;
    }

    /// The users with a connection in a live room.
    pub async fn room_users(&self, app: &str, room: &str) -> Vec<String> {
        let here = self.rooms.send(RoomUsers { app: app.to_string(), room: room.to_string() });
        let Some(cluster) = self.rooms_elsewhere.get() else { return here.await.unwrap_or_default() };
        let elsewhere =
            cluster.send(super::RoomUsersElsewhere { app: app.to_string(), room: room.to_string() });
        let (here, elsewhere) = futures_util::future::join(here, elsewhere).await;
        let mut users = here.unwrap_or_default();
        users.extend(elsewhere.unwrap_or_default());
        super::rooms::sort_user_ids(&mut users);
        users
    }

    /// Stores a message and delivers it to live rooms; the future answers once stored. The message is
    /// queued when this is called (not when the future is first polled), so publishes made one after
    /// the other are stored and delivered in that order.
    pub fn publish(&self, p: Publish) -> impl std::future::Future<Output = Result<SharedMessage, CoreError>> {
        let (ack, rx) = oneshot::channel();
        self.rooms.do_send(PublishAcked { publish: p, ack });
        bounded_ack(rx, self.store.call_timeout())
    }

    /// Waits until every accepted message and watermark is written (graceful shutdown).
    pub async fn flush(&self) {
        let _ = self.registry.send(FlushSessions).await;
        let _ = self.writer.send(Flush).await;
    }

    /// What the store writer has committed so far.
    pub async fn writer_stats(&self) -> WriterStats {
        self.writer.send(GetStats).await.unwrap_or_default()
    }

    /// Feeds every stored direct and group message to offline push from now on (`feed` is bounded:
    /// what does not fit is not pushed).
    pub fn attach_push(&self, feed: tokio::sync::mpsc::Sender<SharedMessage>) {
        self.writer.do_send(super::writer::SetPush(feed));
    }

    /// Mutes (or unmutes) `conv` for `user`: no offline push for it.
    pub async fn set_mute(&self, user: &UserKey, conv: &ConvKey, on: bool) -> Result<(), CoreError> {
        let (app, user, conv) = (conv.app.clone(), user.user.clone(), conv.conv.clone());
        Ok(self.store.run(move |c| crate::store::push::set_mute(c, &app, &user, &conv, on)).await?)
    }

    /// Which of `users` have a live session, on this node or (with a cluster) another; in the order
    /// given.
    pub async fn online_among(&self, app: &str, users: Vec<String>) -> Vec<String> {
        let here = self.registry.send(WhoIsOnline { app: app.to_string(), users: users.clone() });
        let Some(cluster) = self.online_elsewhere.get() else { return here.await.unwrap_or_default() };
        let elsewhere =
            cluster.send(super::UsersOnlineElsewhere { app: app.to_string(), users: users.clone() });
        let (here, elsewhere) = futures_util::future::join(here, elsewhere).await;
        let online: std::collections::HashSet<String> =
            here.unwrap_or_default().into_iter().chain(elsewhere.unwrap_or_default()).collect();
        users.into_iter().filter(|u| online.contains(u)).collect()
    }

    /// Creates a group (a conversation, in gateway terms).
    pub async fn create_group(&self, app: &str, spec: GroupSpec) -> Result<Group, CoreError> {
        let app = app.to_string();
        let group: Group = self
            .store
            .run(move |c| {
                groups::create_group(
                    c,
                    &NewGroup {
                        app: &app,
                        id: spec.id.as_deref(),
                        conv_type: spec.conv_type,
                        creator: &spec.creator,
                        name: &spec.name,
                        notice: &spec.notice,
                        members: &spec.members,
                        snap: &spec.snap,
                    },
                )
            })
            .await?;
        // Its members are new members: live routing (and a cluster's nodes) follow at once.
        self.registry.do_send(MembershipChanged {
            key: GroupKey::new(group.app.clone(), group.id.clone()),
            added: group.members.clone(),
            removed: Vec::new(),
        });
        Ok(group)
    }

    /// Sets or clears the archived flag; returns how many of the conversations exist.
    pub async fn set_archived(
        &self,
        app: &str,
        ids: Vec<String>,
        archived: bool,
    ) -> Result<usize, CoreError> {
        let app = app.to_string();
        Ok(self.store.run(move |c| groups::set_archived(c, &app, &ids, archived)).await?)
    }

    /// Up to `limit` messages of a conversation with ids in `lo..=hi`, taken from the `end` of the
    /// range, oldest first.
    pub async fn history_range(
        &self,
        key: &ConvKey,
        lo: Option<i64>,
        hi: Option<i64>,
        end: HistoryEnd,
        limit: i64,
    ) -> Result<Vec<Message>, CoreError> {
        let k = key.clone();
        Ok(self.store.run(move |c| messages::history_range(c, &k.app, &k.conv, lo, hi, end, limit)).await?)
    }

    /// One stored message by id.
    pub async fn message(&self, app: &str, id: i64) -> Result<Option<Message>, CoreError> {
        let app = app.to_string();
        Ok(self.store.run(move |c| messages::message_by_id(c, &app, id)).await?)
    }

    /// The newest message of a conversation.
    pub async fn last_message(&self, key: &ConvKey) -> Result<Option<Message>, CoreError> {
        let k = key.clone();
        Ok(self.store.run(move |c| messages::last_message(c, &k.app, &k.conv)).await?)
    }

    pub async fn group(&self, key: &GroupKey) -> Result<Option<Group>, CoreError> {
        let k = key.clone();
        Ok(self.store.run(move |c| groups::group(c, &k.app, &k.group)).await?)
    }

    /// The groups `key`'s user is a member of.
    pub async fn groups_of(&self, key: &UserKey) -> Result<Vec<Group>, CoreError> {
        let k = key.clone();
        Ok(self.store.run(move |c| groups::groups_of(c, &k.app, &k.user)).await?)
    }

    /// Adds members; returns those that were new. Live routing follows at once.
    pub async fn add_members(&self, key: &GroupKey, users: Vec<String>) -> Result<Vec<String>, CoreError> {
        let k = key.clone();
        let added = self.store.run(move |c| groups::add_members(c, &k.app, &k.group, &users)).await?;
        self.registry.do_send(MembershipChanged {
            key: key.clone(),
            added: added.clone(),
            removed: Vec::new(),
        });
        Ok(added)
    }

    /// Removes members; returns those that were members. Live routing follows at once.
    pub async fn remove_members(&self, key: &GroupKey, users: Vec<String>) -> Result<Vec<String>, CoreError> {
        let k = key.clone();
        let removed = self.store.run(move |c| groups::remove_members(c, &k.app, &k.group, &users)).await?;
        self.registry.do_send(MembershipChanged {
            key: key.clone(),
            added: Vec::new(),
            removed: removed.clone(),
        });
        Ok(removed)
    }

    pub async fn edit_group(
        &self,
        key: &GroupKey,
        name: Option<String>,
        notice: Option<String>,
    ) -> Result<(), CoreError> {
        let k = key.clone();
        Ok(self
            .store
            .run(move |c| groups::edit_group(c, &k.app, &k.group, name.as_deref(), notice.as_deref()))
            .await?)
    }

    pub async fn set_group_snap(&self, key: &GroupKey, snap: &str) -> Result<(), CoreError> {
        let (k, snap) = (key.clone(), snap.to_string());
        Ok(self.store.run(move |c| groups::set_snap(c, &k.app, &k.group, &snap)).await?)
    }

    pub async fn set_profile(
        &self,
        key: UserKey,
        nickname: Option<String>,
        avatar: Option<String>,
        default_avatar: &str,
    ) -> Result<Profile, CoreError> {
        let default_avatar = default_avatar.to_string();
        Ok(self
            .store
            .run(move |c| {
                users::set_profile(
                    c,
                    &key.app,
                    &key.user,
                    nickname.as_deref(),
                    avatar.as_deref(),
                    &default_avatar,
                )
            })
            .await?)
    }

    pub async fn profiles(
        &self,
        app: &str,
        ids: Vec<String>,
    ) -> Result<std::collections::HashMap<String, Profile>, CoreError> {
        let app = app.to_string();
        Ok(self.store.run(move |c| users::profiles(c, &app, &ids)).await?)
    }

    /// Up to `limit` messages of a conversation sent before `before_us`, oldest first.
    pub async fn history_before(
        &self,
        key: &ConvKey,
        before_us: i64,
        limit: i64,
    ) -> Result<Vec<Message>, CoreError> {
        let k = key.clone();
        Ok(self.store.run(move |c| messages::history_before(c, &k.app, &k.conv, before_us, limit)).await?)
    }

    pub fn now_us() -> i64 {
        now_us()
    }
}
