//! UserSession: one actor per online user. Holds the user's live connections, hands every message
//! to each of them, replays what the user missed, and keeps the user's delivery watermarks.
//!
//! Watermarks move only when a connection reports that a message was written out (`Delivered`), so
//! what sat in the queue of a connection that was dropped is replayed at the next login.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::registry::{AnnounceOnline, SessionIdle};
use super::writer::SaveWatermarks;
use super::{ConnEvent, ConnHandle, Deliver, GroupsOnline, Presence};
use crate::domain::message::{ConnId, ConvKind, SharedMessage, UserKey};
use crate::metrics::METRICS;
use crate::store::messages::{conversations_of, replay_page, Watermark};
use crate::store::Store;

/// Messages per replay page.
pub const REPLAY_PAGE: i64 = 100;
/// How often moved watermarks are written (and when the last connection leaves). A crash loses at most
/// this much progress, which means messages delivered in that time are delivered again.
const WATERMARK_FLUSH_INTERVAL: Duration = Duration::from_secs(2);

/// Attach a logged-in connection (sent by the registry).
pub struct AttachConn {
    pub conn: ConnHandle,
}
impl actix::Message for AttachConn {
    type Result = ();
}

/// A connection has gone; `delivered` is its last report.
pub struct DetachConn {
    pub conn: ConnId,
    pub delivered: Vec<(String, i64)>,
}
impl actix::Message for DetachConn {
    type Result = ();
}

/// A connection wrote these messages out: the highest id per conversation.
pub struct Delivered {
    pub conn: ConnId,
    pub delivered: Vec<(String, i64)>,
}
impl actix::Message for Delivered {
    type Result = ();
}

/// A connection is ready for the next replay page.
pub struct ReplayNext {
    pub conn: ConnId,
}
impl actix::Message for ReplayNext {
    type Result = ();
}

/// A stored message for this user (from a group or the registry).
pub struct SessionDeliver {
    pub msg: SharedMessage,
    /// The sending connection, which does not get its own message back.
    pub origin: Option<ConnId>,
}
impl actix::Message for SessionDeliver {
    type Result = ();
}

/// Connections with this device key logged in on another node of the cluster: they go.
pub struct DropDevice {
    pub device: String,
}
impl actix::Message for DropDevice {
    type Result = ();
}

/// Messages of other nodes stored from id `after` on may have been lost on their way here: every
/// connection reads them from the store, leaving out what it was handed (as a replay, live messages
/// held meanwhile).
pub struct CatchUpSession {
    pub after: i64,
}
impl actix::Message for CatchUpSession {
    type Result = ();
}

/// Write dirty watermarks now; answers when they are stored.
pub struct FlushWatermarks;
impl actix::Message for FlushWatermarks {
    type Result = ();
}

struct Replay {
    /// Per conversation, the highest id handed to the connection (or its watermark).
    positions: HashMap<String, i64>,
    /// Conversations with nothing more to replay.
    exhausted: HashSet<String>,
    /// Live messages that arrived meanwhile, sent after the replay, and their size.
    buffer: Vec<SharedMessage>,
    buffer_bytes: u64,
    /// The buffer passed the connection's limit and the connection was told to go.
    gave_up: bool,
    /// Reads that failed in a row (the database is down or hangs): retried with backoff.
    failures: u32,
}

/// Reads of a replay that fail in a row before the connection is told the database is unavailable
/// (0.5 s doubling to 30 s between them: about 90 s in all).
const REPLAY_RETRIES: u32 = 8;

/// What a failed replay read was.
#[derive(Clone, Copy)]
enum ReplayStep {
    /// The user's conversations (and, at the first replay, announcing the user to its groups).
    Conversations(Option<i64>),
    /// A page of messages.
    Page,
}

struct ConnEntry {
    handle: ConnHandle,
    /// Boxed: a connection is replaying only for a moment of its life.
    replay: Option<Box<Replay>>,
    /// Per conversation and per node that stored them, the highest id handed to the connection
    /// (others' messages, by replay or live). A node's messages of a conversation come in id order,
    /// so anything at or below this is a copy of something handed over already (a live copy of a
    /// replayed message, a replayed copy of a live one during a catch-up).
    handed: HashMap<String, Vec<(u16, i64)>>,
    /// Where the connection's first replay started, per conversation: a catch-up never goes below
    /// (what lies there was for the user's other devices).
    floor: HashMap<String, i64>,
    /// A catch-up was asked for during a replay (from this id on): another replay follows it.
    catch_up_after_replay: Option<i64>,
}

impl ConnEntry {
    fn new(handle: ConnHandle) -> ConnEntry {
        ConnEntry {
            handle,
            replay: None,
            handed: HashMap::new(),
            floor: HashMap::new(),
            catch_up_after_replay: None,
        }
    }

    /// Whether `m` goes to the connection (noting it when it does): the user's own messages always
    /// do (they are never replayed); others' unless handed over already.
    fn take(&mut self, m: &crate::domain::message::Message, own: bool) -> bool {
        if own {
            return true;
        }
        // One lookup per delivery: this runs for every live message.
        let node = crate::domain::ids::node_of(m.id);
        let Some(by_node) = self.handed.get_mut(&m.conv) else {
            self.handed.insert(m.conv.clone(), vec![(node, m.id)]);
            return true;
        };
        match by_node.iter_mut().find(|(n, _)| *n == node) {
            Some((_, upto)) if m.id <= *upto => false,
            Some((_, upto)) => {
                *upto = m.id;
                true
            }
            None => {
                by_node.push((node, m.id));
                true
            }
        }
    }
}

/// Where a session sends what it has to say: to the registry (it is online in its groups; it has no
/// connection left), to the store writer (watermarks) and, in a cluster, to the cluster's presence
/// (it is online on this node; answered once the other nodes can see it).
#[derive(Clone)]
pub struct SessionLinks {
    pub announce: Recipient<AnnounceOnline>,
    pub idle: Recipient<SessionIdle>,
    pub watermarks: Recipient<SaveWatermarks>,
    pub presence: Option<Recipient<Presence>>,
    pub groups_online: Option<Recipient<GroupsOnline>>,
}

/// The session's presence in the cluster, registered once; every replay waits for it.
type Registration = futures_util::future::Shared<futures_util::future::BoxFuture<'static, ()>>;

/// A user's connections, usually one or two: a vector searched by id (a hash map of one entry
/// allocates room for four), holding no allocation while there are none.
#[derive(Default)]
struct Conns(Vec<(ConnId, ConnEntry)>);

impl Conns {
    fn get(&self, id: &ConnId) -> Option<&ConnEntry> {
        self.0.iter().find(|(c, _)| c == id).map(|(_, e)| e)
    }

    fn get_mut(&mut self, id: &ConnId) -> Option<&mut ConnEntry> {
        self.0.iter_mut().find(|(c, _)| c == id).map(|(_, e)| e)
    }

    /// Adds (or replaces) the entry of `id`, growing the vector by one place at a time.
    fn insert(&mut self, id: ConnId, entry: ConnEntry) {
        if let Some(e) = self.get_mut(&id) {
            *e = entry;
            return;
        }
        self.0.reserve_exact(1);
        self.0.push((id, entry));
    }

    fn remove(&mut self, id: &ConnId) -> Option<ConnEntry> {
        let at = self.0.iter().position(|(c, _)| c == id)?;
        let (_, entry) = self.0.swap_remove(at);
        if self.0.is_empty() {
            self.0 = Vec::new();
        }
        Some(entry)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = (&ConnId, &ConnEntry)> {
        self.0.iter().map(|(id, e)| (id, e))
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = (&ConnId, &mut ConnEntry)> {
        self.0.iter_mut().map(|(id, e)| (&*id, e))
    }

    fn keys(&self) -> impl Iterator<Item = &ConnId> {
        self.0.iter().map(|(id, _)| id)
    }
}

pub struct UserSession {
    key: UserKey,
    links: Arc<SessionLinks>,
    store: Store,
    conns: Conns,
    delivered: HashMap<String, i64>,
    dirty: HashSet<String>,
    attaches_seen: u64,
    announced: bool,
    flush_scheduled: bool,
    registration: Option<Registration>,
}

impl UserSession {
    pub fn new(key: UserKey, links: impl Into<Arc<SessionLinks>>, store: Store) -> Self {
        UserSession {
            key,
            links: links.into(),
            store,
            conns: Conns::default(),
            delivered: HashMap::new(),
            dirty: HashSet::new(),
            attaches_seen: 0,
            announced: false,
            flush_scheduled: false,
            registration: None,
        }
    }

    fn note_delivered(&mut self, delivered: Vec<(String, i64)>, ctx: &mut Context<Self>) {
        for (conv, id) in delivered {
            let e = self.delivered.entry(conv.clone()).or_insert(0);
            if id > *e {
                *e = id;
                self.dirty.insert(conv);
            }
        }
        // Watermarks are written at most every WATERMARK_FLUSH_INTERVAL, and only when they moved.
        if !self.dirty.is_empty() && !self.flush_scheduled {
            self.flush_scheduled = true;
            ctx.run_later(WATERMARK_FLUSH_INTERVAL, |act, _| {
                act.flush_scheduled = false;
                if !act.dirty.is_empty() {
                    act.save_watermarks(None);
                }
            });
        }
    }

    fn take_dirty(&mut self) -> Vec<Watermark> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .filter_map(|conv| {
                let upto = *self.delivered.get(&conv)?;
                Some(Watermark { app: self.key.app.clone(), user: self.key.user.clone(), conv, upto })
            })
            .collect()
    }

    fn save_watermarks(&mut self, done: Option<oneshot::Sender<bool>>) {
        let watermarks = self.take_dirty();
        if watermarks.is_empty() {
            if let Some(done) = done {
                let _ = done.send(true);
            }
            return;
        }
        if let Err(e) = self.links.watermarks.try_send(SaveWatermarks { watermarks, done }) {
            // Keep them dirty and try again on the next tick.
            let SaveWatermarks { watermarks, done } = match e {
                SendError::Full(s) | SendError::Closed(s) => s,
            };
            self.dirty.extend(watermarks.into_iter().map(|c| c.conv));
            if let Some(done) = done {
                let _ = done.send(false);
            }
        }
    }

    /// The session's presence in the cluster: registered on the first call, ready at once without a
    /// cluster.
    fn registration(&mut self) -> Registration {
        use futures_util::FutureExt;
        if self.links.presence.is_none() {
            // Nothing to wait for: none kept either.
            return futures_util::future::ready(()).boxed().shared();
        }
        let (links, key) = (&self.links, &self.key);
        self.registration
            .get_or_insert_with(|| {
                let presence = links.presence.clone();
                let key = key.clone();
                async move {
                    if let Some(p) = presence {
                        let _ = p.send(Presence { key, online: true }).await;
                    }
                }
                .boxed()
                .shared()
            })
            .clone()
    }

    /// Starts a replay to `conn`: from its watermarks (a login), or, for a catch-up, from `catch_up`
    /// (an id: what was stored from then on may not have come), leaving out what it was handed.
    fn start_replay(&mut self, conn: ConnId, catch_up: Option<i64>, ctx: &mut Context<Self>) {
        let registered = self.registration();
        let Some(entry) = self.conns.get_mut(&conn) else { return };
        if entry.replay.is_some() {
            return;
        }
        entry.replay = Some(Box::new(Replay {
            positions: HashMap::new(),
            exhausted: HashSet::new(),
            buffer: Vec::new(),
            buffer_bytes: 0,
            gave_up: false,
            failures: 0,
        }));
        self.read_conversations(conn, catch_up, registered, ctx);
    }

    /// The replay's first read: the user's conversations and their watermarks.
    fn read_conversations(
        &mut self,
        conn: ConnId,
        catch_up: Option<i64>,
        registered: Registration,
        ctx: &mut Context<Self>,
    ) {
        let (app, user) = (self.key.app.clone(), self.key.user.clone());
        let store = self.store.clone();
        // The first replay tells the cluster the user's groups (and waits for it) before it reads.
        let groups_link = if self.announced { None } else { self.links.groups_online.clone() };
        let key = self.key.clone();
        let fut = async move {
            registered.await;
            let convs = store.run(move |c| conversations_of(c, &app, &user)).await?;
            if let Some(link) = groups_link {
                let groups =
                    convs.iter().filter(|c| c.kind == ConvKind::Group).map(|c| c.conv.clone()).collect();
                let _ = link.send(GroupsOnline { key, groups }).await;
            }
            Ok::<_, crate::store::StoreError>(convs)
        };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            let convs = match res {
                Ok(convs) => convs,
                Err(e) => {
                    log::error!("replay for {}: {e}", act.key.user);
                    act.replay_failed(conn, ReplayStep::Conversations(catch_up), ctx);
                    return;
                }
            };
            if !act.announced {
                act.announced = true;
                let groups =
                    convs.iter().filter(|c| c.kind == ConvKind::Group).map(|c| c.conv.clone()).collect();
                let session = ctx.address().recipient();
                act.links.announce.do_send(AnnounceOnline { key: act.key.clone(), session, groups });
            }
            let Some(entry) = act.conns.get_mut(&conn) else { return };
            let mut positions = HashMap::new();
            for c in convs {
                let upto = match catch_up {
                    // A conversation joined since this connection's replay: nothing from before the
                    // user joined it.
                    Some(after) => entry
                        .floor
                        .get(&c.conv)
                        .map_or_else(|| after.max(joined_floor(c.joined_us)), |&floor| floor.max(after)),
                    None => {
                        let mem = act.delivered.get(&c.conv).copied().unwrap_or(0);
                        c.delivered_upto.max(mem)
                    }
                };
                positions.insert(c.conv, upto);
            }
            if catch_up.is_none() {
                if let Some((conv, after)) = entry.handle.resume.clone() {
                    if positions.contains_key(&conv) {
                        positions.insert(conv, after);
                    }
                }
                entry.floor = positions.clone();
            }
            if let Some(r) = entry.replay.as_mut() {
                r.positions = positions;
                act.next_page(conn, ctx);
            }
        }));
    }

    fn next_page(&mut self, conn: ConnId, ctx: &mut Context<Self>) {
        let Some(replay) = self.conns.get(&conn).and_then(|e| e.replay.as_ref()) else { return };
        let after: Vec<(String, i64)> = replay
            .positions
            .iter()
            .filter(|(k, _)| !replay.exhausted.contains(*k))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        if after.is_empty() {
            self.finish_replay(conn, ctx);
            return;
        }
        let (app, user) = (self.key.app.clone(), self.key.user.clone());
        let store = self.store.clone();
        let fut = async move { store.run(move |c| replay_page(c, &app, &user, &after, REPLAY_PAGE)).await };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            let Some(entry) = act.conns.get_mut(&conn) else { return };
            let page = match res {
                Ok(page) => page,
                Err(e) => {
                    log::error!("replay page for {}: {e}", act.key.user);
                    act.replay_failed(conn, ReplayStep::Page, ctx);
                    return;
                }
            };
            if let Some(r) = entry.replay.as_mut() {
                r.failures = 0;
            }
            let full = page.messages.len() as i64 >= REPLAY_PAGE;
            METRICS.replayed.inc_by(page.messages.len() as u64);
            if let Some(mut r) = entry.replay.take() {
                r.exhausted.extend(page.exhausted);
                for m in page.messages {
                    r.positions.insert(m.conv.clone(), m.id);
                    if entry.take(&m, false) {
                        entry.handle.deliver.do_send(Deliver::single(std::sync::Arc::new(m), true));
                    }
                }
                entry.replay = Some(r);
            }
            if full {
                entry.handle.events.do_send(ConnEvent::ReplayPaused);
            } else {
                act.finish_replay(conn, ctx);
            }
        }));
    }

    /// A replay read failed: it is read again after a backoff (live messages wait in the replay's
    /// buffer meanwhile, within the connection's limit); after [`REPLAY_RETRIES`] the connection is
    /// told the database is unavailable (it closes, and its client logs in again later).
    fn replay_failed(&mut self, conn: ConnId, step: ReplayStep, ctx: &mut Context<Self>) {
        let Some(entry) = self.conns.get_mut(&conn) else { return };
        let Some(r) = entry.replay.as_mut() else { return };
        r.failures += 1;
        if r.failures > REPLAY_RETRIES {
            log::warn!("replay for {}: the database stays unavailable; the connection goes", self.key.user);
            entry.handle.events.do_send(ConnEvent::Unavailable);
            return;
        }
        let backoff = Duration::from_millis(500u64 << (r.failures - 1).min(6)).min(Duration::from_secs(30));
        ctx.run_later(backoff, move |act, ctx| match step {
            ReplayStep::Conversations(catch_up) => {
                let registered = act.registration();
                act.read_conversations(conn, catch_up, registered, ctx);
            }
            ReplayStep::Page => act.next_page(conn, ctx),
        });
    }

    fn finish_replay(&mut self, conn: ConnId, ctx: &mut Context<Self>) {
        let Some(entry) = self.conns.get_mut(&conn) else { return };
        let Some(replay) = entry.replay.take() else { return };
        let Replay { buffer, .. } = *replay;
        for msg in buffer {
            if entry.take(&msg, msg.sender == self.key.user) {
                entry.handle.deliver.do_send(Deliver::single(msg, false));
            }
        }
        if let Some(after) = entry.catch_up_after_replay.take() {
            self.start_replay(conn, Some(after), ctx);
        }
    }

    /// The last connection left: store the watermarks, then ask the registry to forget this session
    /// unless a new connection is already on its way.
    fn begin_idle(&mut self, ctx: &mut Context<Self>) {
        let (tx, rx) = oneshot::channel();
        self.save_watermarks(Some(tx));
        let idle = self.links.idle.clone();
        let key = self.key.clone();
        let fut = async move {
            let _ = rx.await;
        };
        ctx.wait(fut.into_actor(self).then(move |_, act, _| {
            let msg = SessionIdle { key, attaches_seen: act.attaches_seen };
            let conns_empty = act.conns.is_empty();
            async move {
                if conns_empty {
                    idle.send(msg).await.unwrap_or(true)
                } else {
                    false
                }
            }
            .into_actor(act)
            .map(|forget, act, ctx| {
                if forget && act.conns.is_empty() {
                    ctx.stop();
                }
            })
        }));
    }
}

impl Actor for UserSession {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Self::Context) {
        METRICS.users_online.inc();
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        METRICS.users_online.dec();
        if !self.dirty.is_empty() {
            self.save_watermarks(None);
        }
    }
}

impl Handler<AttachConn> for UserSession {
    type Result = ();

    fn handle(&mut self, msg: AttachConn, ctx: &mut Self::Context) {
        self.attaches_seen += 1;
        if let Some(device) = &msg.conn.device {
            let older: Vec<ConnId> = self
                .conns
                .iter()
                .filter(|(_, e)| e.handle.device.as_ref() == Some(device))
                .map(|(id, _)| *id)
                .collect();
            for id in older {
                if let Some(e) = self.conns.remove(&id) {
                    e.handle.events.do_send(ConnEvent::Replaced);
                }
            }
        }
        let id = msg.conn.id;
        self.conns.insert(id, ConnEntry::new(msg.conn));
        self.start_replay(id, None, ctx);
    }
}

impl Handler<DetachConn> for UserSession {
    type Result = ();

    fn handle(&mut self, msg: DetachConn, ctx: &mut Self::Context) {
        self.note_delivered(msg.delivered, ctx);
        if self.conns.remove(&msg.conn).is_some() && self.conns.is_empty() {
            self.begin_idle(ctx);
        }
    }
}

impl Handler<Delivered> for UserSession {
    type Result = ();

    fn handle(&mut self, msg: Delivered, ctx: &mut Self::Context) {
        self.note_delivered(msg.delivered, ctx);
    }
}

impl Handler<ReplayNext> for UserSession {
    type Result = ();

    fn handle(&mut self, msg: ReplayNext, ctx: &mut Self::Context) {
        self.next_page(msg.conn, ctx);
    }
}

impl Handler<SessionDeliver> for UserSession {
    type Result = ();

    fn handle(&mut self, msg: SessionDeliver, _: &mut Self::Context) {
        for (id, entry) in self.conns.iter_mut() {
            if Some(*id) == msg.origin {
                continue;
            }
            let m = &msg.msg;
            match entry.replay.as_mut() {
                Some(r) if r.gave_up => {}
                Some(r) => {
                    r.buffer_bytes += m.approx_size();
                    if r.buffer_bytes > entry.handle.held_limit {
                        // The buffer stops growing and the connection goes (it is told once).
                        r.gave_up = true;
                        r.buffer = Vec::new();
                        entry.handle.events.do_send(ConnEvent::TooSlow);
                    } else {
                        r.buffer.push(m.clone());
                    }
                }
                None => {
                    // Replays leave out the user's own messages, so only others' can have come that way.
                    if entry.take(m, m.sender == self.key.user) {
                        entry.handle.deliver.do_send(Deliver::single(m.clone(), false));
                    }
                }
            }
        }
    }
}

impl Handler<DropDevice> for UserSession {
    type Result = ();

    fn handle(&mut self, msg: DropDevice, ctx: &mut Self::Context) {
        let older: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, e)| e.handle.device.as_deref() == Some(msg.device.as_str()))
            .map(|(id, _)| *id)
            .collect();
        for id in older {
            if let Some(e) = self.conns.remove(&id) {
                e.handle.events.do_send(ConnEvent::Replaced);
            }
        }
        if self.conns.is_empty() && self.attaches_seen > 0 {
            self.begin_idle(ctx);
        }
    }
}

/// The highest id a message stored before `joined_us` could have (a catch-up starts after it).
fn joined_floor(joined_us: i64) -> i64 {
    let ms = u64::try_from(joined_us / 1000).unwrap_or(0);
    crate::domain::ids::min_id_at(ms).saturating_sub(1)
}

impl Handler<CatchUpSession> for UserSession {
    type Result = ();

    fn handle(&mut self, msg: CatchUpSession, ctx: &mut Self::Context) {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            let Some(entry) = self.conns.get_mut(&id) else { continue };
            if entry.replay.is_some() {
                let after = entry.catch_up_after_replay.map_or(msg.after, |a| a.min(msg.after));
                entry.catch_up_after_replay = Some(after);
            } else {
                self.start_replay(id, Some(msg.after), ctx);
            }
        }
    }
}

impl Handler<FlushWatermarks> for UserSession {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: FlushWatermarks, _: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.save_watermarks(Some(tx));
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}
