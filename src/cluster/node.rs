//! ClusterNode: this node's actor in the cluster. Keeps its entry and its users alive in Redis,
//! knows the live nodes, publishes what this node stores to the nodes that need it (one publish per
//! node, in id order, from one task), and hands what comes on its channel to the core.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;

use super::publisher::{room_app_entry, room_entry, room_user_entry, Publication, Publisher};
use super::{Keys, Member, Shared};
use crate::core::{
    CatchUp, ClusterEvent, ClusterInbound, GroupsOnline, Outbound, Presence, RemoteDelivery, RemoteEvent,
    RoomPresence, RoomUsersElsewhere, Scope, UsersOnlineElsewhere,
};
use crate::domain::message::Message;
use crate::metrics::METRICS;

/// Stored messages waiting to be published; past this they are dropped (counted): the store has
/// them, and the users get them at their next login.
const PUBLISH_QUEUE: usize = 10_000;
/// Wait before connecting the channel again after it dropped.
const RESUBSCRIBE_AFTER: Duration = Duration::from_millis(500);
/// How long a session's login waits for its presence to reach Redis (past this it goes on: Redis is
/// down, and the catch-up after it returns covers what was missed).
const PRESENCE_WAIT: Duration = Duration::from_secs(1);
/// Gaps seen within this window are caught up once, after it.
const CATCH_UP_DELAY: Duration = Duration::from_millis(200);
/// A catch-up reads from this long before the moment messages may have started to go missing:
/// a message's id is taken from its node's clock when it is stored, and it is published after the
/// commit, behind what is queued.
const CATCH_UP_MARGIN_MS: u64 = 15_000;

/// The longest a Redis command may take before it counts as failed (the connection's own timeouts
/// do not cover every state of a reconnect).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);

/// A Redis command, failed after [`COMMAND_TIMEOUT`].
pub(super) async fn bounded<T>(
    cmd: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    match tokio::time::timeout(COMMAND_TIMEOUT, cmd).await {
        Ok(r) => r,
        Err(_) => {
            Err(redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, "redis timed out")))
        }
    }
}

pub(super) struct NodeSettings {
    pub client: redis::Client,
    pub con: ConnectionManager,
    pub keys: Keys,
    pub node_id: u16,
    pub token: String,
    pub public_url: String,
    pub ttl: Duration,
    pub shared: Arc<Shared>,
}

/// Where messages from the other nodes go (the core's registry); starts the channel.
pub(super) struct Inbound(pub ClusterInbound);
impl actix::Message for Inbound {
    type Result = ();
}

/// Leave the cluster now (shutdown).
pub(super) struct Leave;
impl actix::Message for Leave {
    type Result = ();
}

/// This node's entry or users are missing from Redis (Redis restarted, or the node was cut off past
/// its TTL; what was published meanwhile did not come here): add them all again, then catch up on
/// what was stored from `since_ms` on.
struct Rejoin {
    since_ms: u64,
}
impl actix::Message for Rejoin {
    type Result = ();
}

/// What travels between nodes, after the envelope (`{"from":…,"token":…,"seq":…,"body":…}`).
#[derive(serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum BodyOut<'a> {
    Message {
        scope: Scope,
        msg: &'a Message,
    },
    Event(&'a ClusterEvent),
    /// The sender has just started publishing to this node (it joined, or came back after Redis lost
    /// it): what it stored before (since it stopped publishing here, if it did) may not have come.
    Sync {
        since_ms: Option<u64>,
    },
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum BodyIn {
    Message { scope: Scope, msg: Message },
    Event(ClusterEvent),
    Sync { since_ms: Option<u64> },
}

#[derive(serde::Deserialize)]
struct EnvelopeIn {
    from: u16,
    token: String,
    seq: u64,
    body: BodyIn,
}

/// The heartbeat refreshed the nodes to publish to.
struct TargetsRefreshed;
impl actix::Message for TargetsRefreshed {
    type Result = ();
}

/// Sends [`CatchUp`] to the core once per burst of reasons, from the earliest moment they name.
///
/// From the first reason until the catch-up is on its way, other nodes' direct and group messages
/// are not delivered live: they are in the store, and the catch-up hands them over. (A session
/// leaves out what it was handed by the highest id per conversation and node, so a message that
/// came live past one that went missing would hide it.)
#[derive(Clone)]
struct CatchUpTrigger {
    core: Recipient<CatchUp>,
    armed: Arc<AtomicBool>,
    since_ms: Arc<AtomicU64>,
}

impl CatchUpTrigger {
    fn new(core: Recipient<CatchUp>) -> CatchUpTrigger {
        CatchUpTrigger { core, armed: Default::default(), since_ms: Arc::new(AtomicU64::new(u64::MAX)) }
    }

    /// Messages stored from `since_ms` on may be missing here.
    fn fire(&self, since_ms: u64) {
        self.since_ms.fetch_min(since_ms.saturating_sub(CATCH_UP_MARGIN_MS), Ordering::AcqRel);
        if self.armed.swap(true, Ordering::AcqRel) {
            return;
        }
        let (core, armed, since) = (self.core.clone(), self.armed.clone(), self.since_ms.clone());
        actix_rt::spawn(async move {
            tokio::time::sleep(CATCH_UP_DELAY).await;
            let since_ms = since.swap(u64::MAX, Ordering::AcqRel);
            METRICS.cluster_catch_ups.inc();
            core.do_send(CatchUp { since_ms });
            // Live messages sent to the core from now on reach it after the catch-up.
            armed.store(false, Ordering::Release);
        });
    }

    /// Whether a catch-up is on its way (live direct and group messages wait for it).
    fn pending(&self) -> bool {
        self.armed.load(Ordering::Acquire)
    }
}

/// Per sending node: its instance, the last sequence number seen and when it came.
#[derive(Default)]
struct Sequences {
    last: HashMap<u16, (String, u64, u64)>,
}

impl Sequences {
    /// Records an envelope that came at `now_ms`; when something from its sender went missing
    /// before it, the time since which it may have: when the last one in order came.
    fn in_order(&mut self, from: u16, token: &str, seq: u64, now_ms: u64) -> Option<u64> {
        match self.last.get_mut(&from) {
            Some((t, last, at)) if t == token => {
                let missing = (seq != *last + 1).then_some(*at);
                *last = seq;
                *at = now_ms;
                missing
            }
            _ => {
                // A node seen for the first time (or restarted): its sequence starts here.
                self.last.insert(from, (token.to_string(), seq, now_ms));
                None
            }
        }
    }
}

pub(super) struct ClusterNode {
    s: NodeSettings,
    /// When each node was last seen live.
    last_seen: Arc<std::sync::Mutex<HashMap<u16, std::time::Instant>>>,
    /// When a heartbeat last went through (Unix milliseconds).
    last_heartbeat_ms: Arc<AtomicU64>,
    /// When a write of this node's users or groups first failed since the last heartbeat (Unix
    /// milliseconds; 0: none): the heartbeat writes them all again and catches up from then.
    presence_failed_at: Arc<AtomicU64>,
    /// Users online here ("<app>\n<user>").
    users: HashSet<String>,
    /// This node's entries in live rooms: room key -> entries.
    rooms: HashMap<String, HashSet<String>>,
    /// This node's room interest (`<p>:rooms:<id>`): entry -> how many users here it stands for.
    room_interest: HashMap<String, usize>,
    /// The groups of each user online here ("<app>\n<user>" -> "<app>\n<group>"), and how many
    /// users online here each group has: those with any are in `<p>:groups:<id>`.
    user_groups: HashMap<String, HashSet<String>>,
    group_counts: HashMap<String, usize>,
    publish: Option<mpsc::Sender<Publication>>,
    /// A publication was dropped before it got a sequence number: the publisher skips one for every
    /// node, so that they see the gap.
    lost: Arc<AtomicBool>,
    catch_up: Option<CatchUpTrigger>,
}

pub(super) fn user_entry(app: &str, user: &str) -> String {
    format!("{app}\n{user}")
}

/// Adds `members` to (`SADD`) or removes them from (`SREM`) the set `key` and renews its TTL, on a task
/// of its own (it completes even when nobody waits any more); the future answers when it is done or
/// after [`PRESENCE_WAIT`]. A failure is logged and, with `failed_at`, remembered for the heartbeat.
fn write_set(
    mut con: ConnectionManager,
    cmd: &'static str,
    key: String,
    members: Vec<String>,
    ttl: u64,
    failed_at: Option<Arc<AtomicU64>>,
) -> impl std::future::Future<Output = ()> + 'static {
    let done = (!members.is_empty()).then(|| {
        actix_rt::spawn(async move {
            let mut pipe = redis::pipe();
            pipe.cmd(cmd).arg(&key).arg(&members).ignore();
            pipe.cmd("EXPIRE").arg(&key).arg(ttl).ignore();
            if let Err(e) = pipe.query_async::<()>(&mut con).await {
                log::debug!("cluster: {cmd} {key}: {e}");
                if let Some(f) = &failed_at {
                    note_failure(f);
                }
            }
        })
    });
    async move {
        if let Some(done) = done {
            let _ = tokio::time::timeout(PRESENCE_WAIT, done).await;
        }
    }
}

/// Remembers the first failure since the flag was last taken.
fn note_failure(failed_at: &AtomicU64) {
    let _ = failed_at.compare_exchange(0, crate::domain::ids::now_ms(), Ordering::AcqRel, Ordering::Acquire);
}

pub(super) fn group_entry(app: &str, group: &str) -> String {
    format!("{app}\n{group}")
}

impl ClusterNode {
    pub fn new(s: NodeSettings) -> ClusterNode {
        ClusterNode {
            s,
            last_seen: Default::default(),
            last_heartbeat_ms: Arc::new(AtomicU64::new(crate::domain::ids::now_ms())),
            presence_failed_at: Arc::new(AtomicU64::new(0)),
            users: HashSet::new(),
            rooms: HashMap::new(),
            room_interest: HashMap::new(),
            user_groups: HashMap::new(),
            group_counts: HashMap::new(),
            publish: None,
            lost: Arc::new(AtomicBool::new(false)),
            catch_up: None,
        }
    }

    fn set_healthy(shared: &Shared, ok: bool) {
        if shared.healthy.swap(ok, Ordering::Relaxed) != ok {
            if ok {
                log::info!("cluster: redis answers again");
            } else {
                log::warn!("cluster: redis does not answer");
            }
        }
    }

    /// Refreshes this node's entry and users, and reads the live nodes.
    fn heartbeat(&self, ctx: &mut Context<Self>) {
        let (mut con, keys, shared) = (self.s.con.clone(), self.s.keys.clone(), self.s.shared.clone());
        let (id, ttl) = (self.s.node_id, self.s.ttl.as_secs());
        let entry = format!("{} {}", self.s.token, self.s.public_url);
        let have_users = !self.users.is_empty();
        let me = ctx.address();
        let last_seen = self.last_seen.clone();
        let grace = self.s.ttl;
        let last_ok = self.last_heartbeat_ms.clone();
        let failed_at = self.presence_failed_at.swap(0, Ordering::AcqRel);
        if failed_at != 0 {
            log::warn!("cluster: writing this node's users and groups to Redis again (a write failed)");
            ctx.address().do_send(Rejoin { since_ms: failed_at });
        }
        actix_rt::spawn(async move {
            let refreshed: redis::RedisResult<((), (), i64, Vec<u16>)> = redis::pipe()
                .cmd("SET")
                .arg(keys.node(id))
                .arg(&entry)
                .arg("EX")
                .arg(ttl)
                .cmd("SADD")
                .arg(keys.nodes())
                .arg(id)
                .cmd("EXPIRE")
                .arg(keys.users(id))
                .arg(ttl)
                .cmd("EXPIRE")
                .arg(keys.groups(id))
                .arg(ttl)
                .ignore()
                .cmd("EXPIRE")
                .arg(keys.rooms(id))
                .arg(ttl)
                .ignore()
                .cmd("SMEMBERS")
                .arg(keys.nodes())
                .query_async(&mut con)
                .await;
            let (_, _, users_kept, ids) = match refreshed {
                Ok(r) => r,
                Err(e) => {
                    log::debug!("cluster heartbeat: {e}");
                    Self::set_healthy(&shared, false);
                    return;
                }
            };
            if users_kept == 0 && have_users {
                // Gone since the heartbeat before the last one that kept them, at the latest.
                let since_ms = last_ok.load(Ordering::Acquire).saturating_sub(ttl * 1000);
                me.do_send(Rejoin { since_ms });
            }
            last_ok.store(crate::domain::ids::now_ms(), Ordering::Release);
            let mut ids = ids;
            ids.sort_unstable();
            ids.dedup();
            let node_keys: Vec<String> = ids.iter().map(|&i| keys.node(i)).collect();
            let entries: redis::RedisResult<Vec<Option<String>>> = if node_keys.is_empty() {
                Ok(Vec::new())
            } else {
                redis::cmd("MGET").arg(&node_keys).query_async(&mut con).await
            };
            let Ok(entries) = entries else {
                Self::set_healthy(&shared, false);
                return;
            };
            let mut live = Vec::new();
            let mut gone = Vec::new();
            for (i, e) in ids.into_iter().zip(entries) {
                match e.as_deref().and_then(|e| e.split_once(' ')) {
                    Some((token, url)) => {
                        live.push(Member { id: i, url: url.to_string(), token: token.to_string() })
                    }
                    None => gone.push(i),
                }
            }
            if !gone.is_empty() {
                let _: redis::RedisResult<()> =
                    redis::cmd("SREM").arg(keys.nodes()).arg(&gone).query_async(&mut con).await;
            }
            let now = std::time::Instant::now();
            let mut targets: Vec<u16> = match last_seen.lock() {
                Ok(mut seen) => {
                    for m in &live {
                        seen.insert(m.id, now);
                    }
                    seen.retain(|_, at| now.duration_since(*at) <= grace);
                    seen.keys().copied().filter(|&n| n != id).collect()
                }
                Err(_) => live.iter().map(|m| m.id).filter(|&n| n != id).collect(),
            };
            targets.sort_unstable();
            if let Ok(mut t) = shared.targets.write() {
                *t = targets;
            }
            me.do_send(TargetsRefreshed);
            if let Ok(mut m) = shared.members.write() {
                *m = live;
            }
            Self::set_healthy(&shared, true);
        });
    }

    /// Subscribes to this node's channel and hands what comes to the core; connects again when the
    /// channel drops.
    fn listen(
        &self,
        deliveries: Recipient<RemoteDelivery>,
        events: Recipient<RemoteEvent>,
        catch_up: CatchUpTrigger,
        ids: Arc<crate::domain::ids::IdGen>,
        me: Addr<Self>,
    ) {
        let (client, channel, shared) =
            (self.s.client.clone(), self.s.keys.inbox(self.s.node_id), self.s.shared.clone());
        actix_rt::spawn(async move {
            let mut seqs = Sequences::default();
            let joined_ms = crate::domain::ids::now_ms();
            // When the channel dropped (Unix milliseconds).
            let mut dropped: Option<u64> = None;
            loop {
                let pubsub = async {
                    let mut p = client.get_async_pubsub().await?;
                    p.subscribe(&channel).await?;
                    Ok::<_, redis::RedisError>(p)
                };
                match pubsub.await {
                    Ok(p) => {
                        log::info!("cluster: listening on {channel}");
                        if let Some(since_ms) = dropped.take() {
                            // Whatever was published to this node meanwhile is gone: show this node
                            // to the others again, then read it from the store.
                            me.do_send(Rejoin { since_ms });
                        }
                        let mut stream = p.into_on_message();
                        while let Some(m) = stream.next().await {
                            let e = match serde_json::from_slice::<EnvelopeIn>(m.get_payload_bytes()) {
                                Ok(e) => e,
                                Err(err) => {
                                    log::warn!("cluster: bad message on {channel}: {err}");
                                    continue;
                                }
                            };
                            let now = crate::domain::ids::now_ms();
                            if let Some(since_ms) = seqs.in_order(e.from, &e.token, e.seq, now) {
                                log::info!(
                                    "cluster: messages from node {} went missing; catching up",
                                    e.from
                                );
                                catch_up.fire(since_ms);
                            }
                            METRICS.cluster_received.inc();
                            log::trace!("cluster: from node {} seq {}", e.from, e.seq);
                            match e.body {
                                BodyIn::Message { scope, msg } => {
                                    ids.observe(msg.id);
                                    if scope != Scope::Room && catch_up.pending() {
                                        log::trace!("cluster: {} left to the catch-up", msg.id);
                                        continue;
                                    }
                                    deliveries.do_send(RemoteDelivery { msg: Arc::new(msg), scope })
                                }
                                BodyIn::Event(ev) => {
                                    me.do_send(ApplyEvent(ev.clone()));
                                    events.do_send(RemoteEvent(ev))
                                }
                                BodyIn::Sync { since_ms } => {
                                    log::info!(
                                        "cluster: node {} publishes here from now on; catching up",
                                        e.from
                                    );
                                    catch_up.fire(since_ms.unwrap_or(joined_ms).max(joined_ms));
                                }
                            }
                        }
                        log::warn!("cluster: the channel {channel} dropped");
                    }
                    Err(e) => log::debug!("cluster: subscribing to {channel}: {e}"),
                }
                Self::set_healthy(&shared, false);
                dropped.get_or_insert_with(crate::domain::ids::now_ms);
                if !deliveries.connected() {
                    return;
                }
                tokio::time::sleep(RESUBSCRIBE_AFTER).await;
            }
        });
    }

    /// Starts the task that publishes what this node stores.
    fn start_publisher(&mut self) {
        let (tx, rx) = mpsc::channel::<Publication>(PUBLISH_QUEUE);
        self.publish = Some(tx);
        let publisher = Publisher::new(
            self.s.con.clone(),
            self.s.keys.clone(),
            self.s.shared.clone(),
            self.s.node_id,
            self.s.token.clone(),
            self.lost.clone(),
        );
        actix_rt::spawn(publisher.run(rx));
    }
}

impl Actor for ClusterNode {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.start_publisher();
        self.heartbeat(ctx);
        let every = (self.s.ttl / 3).max(Duration::from_millis(500));
        ctx.run_interval(every, |act, ctx| act.heartbeat(ctx));
    }
}

impl Handler<Inbound> for ClusterNode {
    type Result = ();

    fn handle(&mut self, msg: Inbound, ctx: &mut Context<Self>) {
        let trigger = CatchUpTrigger::new(msg.0.catch_up);
        self.catch_up = Some(trigger.clone());
        self.listen(msg.0.deliveries, msg.0.events, trigger, msg.0.ids, ctx.address());
    }
}

impl Handler<Outbound> for ClusterNode {
    type Result = ();

    fn handle(&mut self, msg: Outbound, _: &mut Context<Self>) {
        self.queue(Publication::Message(msg));
    }
}

impl Handler<TargetsRefreshed> for ClusterNode {
    type Result = ();

    fn handle(&mut self, _: TargetsRefreshed, _: &mut Context<Self>) {
        self.queue(Publication::Refresh);
    }
}

impl Handler<ClusterEvent> for ClusterNode {
    type Result = ();

    fn handle(&mut self, ev: ClusterEvent, _: &mut Context<Self>) {
        self.apply_membership(&ev);
        self.queue(Publication::Event(ev));
    }
}

impl ClusterNode {
    fn queue(&self, p: Publication) {
        if let Some(tx) = &self.publish {
            if tx.try_send(p).is_err() {
                METRICS.cluster_dropped.inc();
                self.lost.store(true, Ordering::Release);
            }
        }
    }
}

impl Handler<Presence> for ClusterNode {
    type Result = ResponseFuture<()>;

    /// Answers once Redis has it, or after [`PRESENCE_WAIT`].
    fn handle(&mut self, p: Presence, _: &mut Context<Self>) -> Self::Result {
        let entry = user_entry(&p.key.app, &p.key.user);
        let (con, key, ttl) = (self.s.con.clone(), self.s.keys.users(self.s.node_id), self.s.ttl.as_secs());
        let cmd = if p.online {
            self.users.insert(entry.clone());
            "SADD"
        } else {
            self.users.remove(&entry);
            let groups: Vec<String> = self.user_groups.remove(&entry).into_iter().flatten().collect();
            self.drop_interest(groups);
            "SREM"
        };
        // A user missing from Redis is written again by the heartbeat; one left there goes with its TTL.
        let failed_at = p.online.then(|| self.presence_failed_at.clone());
        Box::pin(write_set(con, cmd, key, vec![entry], ttl, failed_at))
    }
}

impl ClusterNode {
    /// Counts `groups` for `user` (online here); answers the groups that had no user here until now.
    fn add_groups(&mut self, user: &str, groups: impl IntoIterator<Item = String>) -> Vec<String> {
        let mine = self.user_groups.entry(user.to_string()).or_default();
        let mut new = Vec::new();
        for g in groups {
            if mine.insert(g.clone()) {
                let n = self.group_counts.entry(g.clone()).or_insert(0);
                *n += 1;
                if *n == 1 {
                    new.push(g);
                }
            }
        }
        new
    }

    /// Uncounts `groups` (of a user who left or was removed); those with no user here left go.
    fn drop_interest(&mut self, groups: Vec<String>) {
        let mut gone = Vec::new();
        for g in groups {
            if let Some(n) = self.group_counts.get_mut(&g) {
                *n -= 1;
                if *n == 0 {
                    self.group_counts.remove(&g);
                    gone.push(g);
                }
            }
        }
        if gone.is_empty() {
            return;
        }
        let (mut con, key) = (self.s.con.clone(), self.s.keys.groups(self.s.node_id));
        actix_rt::spawn(async move {
            if let Err(e) = bounded(redis::cmd("SREM").arg(&key).arg(&gone).query_async::<()>(&mut con)).await
            {
                log::debug!("cluster: group interest: {e}");
            }
        });
    }

    /// Writes new interest in `groups` (awaited by logins, bounded by [`PRESENCE_WAIT`]).
    fn write_interest(&self, groups: Vec<String>) -> impl std::future::Future<Output = ()> + 'static {
        let (con, key, ttl) = (self.s.con.clone(), self.s.keys.groups(self.s.node_id), self.s.ttl.as_secs());
        write_set(con, "SADD", key, groups, ttl, Some(self.presence_failed_at.clone()))
    }

    /// Follows a membership change in the interest of this node.
    fn apply_membership(&mut self, event: &ClusterEvent) {
        let ClusterEvent::MembersChanged { app, group, added, removed } = event else { return };
        let entry = group_entry(app, group);
        let mut new = Vec::new();
        for u in added {
            let user = user_entry(app, u);
            if self.users.contains(&user) {
                new.extend(self.add_groups(&user, [entry.clone()]));
            }
        }
        let mut dropped = Vec::new();
        for u in removed {
            if let Some(mine) = self.user_groups.get_mut(&user_entry(app, u)) {
                if mine.remove(&entry) {
                    dropped.push(entry.clone());
                }
            }
        }
        self.drop_interest(dropped);
        actix_rt::spawn(self.write_interest(new));
    }
}

impl Handler<GroupsOnline> for ClusterNode {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, g: GroupsOnline, _: &mut Context<Self>) -> Self::Result {
        let user = user_entry(&g.key.app, &g.key.user);
        let entries: Vec<String> = g.groups.iter().map(|gr| group_entry(&g.key.app, gr)).collect();
        let new = self.add_groups(&user, entries);
        Box::pin(self.write_interest(new))
    }
}

/// A change made on another node, for this node's group interest.
struct ApplyEvent(ClusterEvent);
impl actix::Message for ApplyEvent {
    type Result = ();
}

impl Handler<ApplyEvent> for ClusterNode {
    type Result = ();

    fn handle(&mut self, e: ApplyEvent, _: &mut Context<Self>) {
        self.apply_membership(&e.0);
    }
}

impl Handler<RoomPresence> for ClusterNode {
    type Result = ResponseFuture<()>;

    /// Answers once the node's room interest has it in Redis (or after [`PRESENCE_WAIT`]).
    fn handle(&mut self, p: RoomPresence, _: &mut Context<Self>) -> Self::Result {
        let interest = match &p.room {
            Some(room) => {
                self.room_member(&p.app, room, &p.user, p.present);
                vec![room_entry(&p.app, room), room_app_entry(&p.app)]
            }
            None => vec![room_user_entry(&p.app, &p.user)],
        };
        let (mut new, mut gone) = (Vec::new(), Vec::new());
        for entry in interest {
            if p.present {
                let n = self.room_interest.entry(entry.clone()).or_insert(0);
                *n += 1;
                if *n == 1 {
                    new.push(entry);
                }
            } else if let Some(n) = self.room_interest.get_mut(&entry) {
                *n -= 1;
                if *n == 0 {
                    self.room_interest.remove(&entry);
                    gone.push(entry);
                }
            }
        }
        let (con, key, ttl) = (self.s.con.clone(), self.s.keys.rooms(self.s.node_id), self.s.ttl.as_secs());
        actix_rt::spawn(write_set(con.clone(), "SREM", key.clone(), gone, ttl, None));
        Box::pin(write_set(con, "SADD", key, new, ttl, Some(self.presence_failed_at.clone())))
    }
}

impl ClusterNode {
    /// Follows a user coming to or leaving a live room here in the room's entry (`online` on any node).
    fn room_member(&mut self, app: &str, room: &str, user: &str, present: bool) {
        let key = self.s.keys.room(app, room);
        let entry = format!("{}\n{}\n{}", self.s.node_id, self.s.token, user);
        let cmd = if present {
            self.rooms.entry(key.clone()).or_default().insert(entry.clone());
            "SADD"
        } else {
            if let Some(entries) = self.rooms.get_mut(&key) {
                entries.remove(&entry);
                if entries.is_empty() {
                    self.rooms.remove(&key);
                }
            }
            "SREM"
        };
        let mut con = self.s.con.clone();
        actix_rt::spawn(async move {
            if let Err(e) = bounded(redis::cmd(cmd).arg(&key).arg(&entry).query_async::<()>(&mut con)).await {
                log::debug!("cluster room presence: {e}");
            }
        });
    }
}

impl Handler<RoomUsersElsewhere> for ClusterNode {
    type Result = ResponseFuture<Vec<String>>;

    /// The room's users on the other live nodes. Entries of a node's earlier instance are removed on
    /// the way; those of a node not (yet) seen live are left alone (it may have just joined).
    fn handle(&mut self, q: RoomUsersElsewhere, _: &mut Context<Self>) -> Self::Result {
        let key = self.s.keys.room(&q.app, &q.room);
        let (mut con, shared, me) = (self.s.con.clone(), self.s.shared.clone(), self.s.node_id);
        Box::pin(async move {
            let mut smembers = redis::cmd("SMEMBERS");
            smembers.arg(&key);
            let read = smembers.query_async::<Vec<String>>(&mut con);
            let entries = match tokio::time::timeout(PRESENCE_WAIT, read).await {
                Ok(Ok(e)) => e,
                Ok(Err(e)) => {
                    log::debug!("cluster room users: {e}");
                    return Vec::new();
                }
                Err(_) => return Vec::new(),
            };
            let live: HashMap<u16, String> = shared
                .members
                .read()
                .map(|m| m.iter().map(|m| (m.id, m.token.clone())).collect())
                .unwrap_or_default();
            let mut users = Vec::new();
            let mut stale = Vec::new();
            for e in entries {
                let mut parts = e.splitn(3, '\n');
                let (Some(node), Some(token), Some(user)) = (parts.next(), parts.next(), parts.next()) else {
                    stale.push(e);
                    continue;
                };
                let Ok(node) = node.parse::<u16>() else {
                    stale.push(e);
                    continue;
                };
                if node == me {
                    continue;
                }
                match live.get(&node) {
                    Some(t) if t == token => users.push(user.to_string()),
                    Some(_) => stale.push(e),
                    None => {}
                }
            }
            if !stale.is_empty() {
                let _ = redis::cmd("SREM").arg(&key).arg(&stale).query_async::<()>(&mut con).await;
            }
            users
        })
    }
}

impl Handler<UsersOnlineElsewhere> for ClusterNode {
    type Result = ResponseFuture<Vec<String>>;

    /// Which of the users are in the online sets of the other live nodes (none when Redis does not
    /// answer in time).
    fn handle(&mut self, q: UsersOnlineElsewhere, _: &mut Context<Self>) -> Self::Result {
        let me = self.s.node_id;
        let nodes: Vec<u16> = self
            .s
            .shared
            .members
            .read()
            .map(|m| m.iter().map(|m| m.id).filter(|id| *id != me).collect())
            .unwrap_or_default();
        let keys: Vec<String> = nodes.iter().map(|n| self.s.keys.users(*n)).collect();
        let mut con = self.s.con.clone();
        Box::pin(async move {
            if keys.is_empty() || q.users.is_empty() {
                return Vec::new();
            }
            let entries: Vec<String> = q.users.iter().map(|u| user_entry(&q.app, u)).collect();
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.cmd("SMISMEMBER").arg(key).arg(&entries);
            }
            let read = pipe.query_async::<Vec<Vec<bool>>>(&mut con);
            let hits = match tokio::time::timeout(PRESENCE_WAIT, read).await {
                Ok(Ok(h)) => h,
                Ok(Err(e)) => {
                    log::debug!("cluster users online: {e}");
                    return Vec::new();
                }
                Err(_) => return Vec::new(),
            };
            q.users
                .into_iter()
                .enumerate()
                .filter(|(i, _)| hits.iter().any(|h| h.get(*i).copied().unwrap_or(false)))
                .map(|(_, u)| u)
                .collect()
        })
    }
}

impl Handler<Rejoin> for ClusterNode {
    type Result = ();

    fn handle(&mut self, rejoin: Rejoin, _: &mut Context<Self>) {
        let users: Vec<String> = self.users.iter().cloned().collect();
        let rooms: Vec<(String, Vec<String>)> =
            self.rooms.iter().map(|(k, v)| (k.clone(), v.iter().cloned().collect())).collect();
        let groups: Vec<String> = self.group_counts.keys().cloned().collect();
        let room_interest: Vec<String> = self.room_interest.keys().cloned().collect();
        let (mut con, keys, id, ttl) =
            (self.s.con.clone(), self.s.keys.clone(), self.s.node_id, self.s.ttl.as_secs());
        let entry = format!("{} {}", self.s.token, self.s.public_url);
        let catch_up = self.catch_up.clone();
        // Live messages wait from now on: one that comes once the users are back must not overtake
        // one that went missing before.
        if let Some(c) = &catch_up {
            c.fire(rejoin.since_ms);
        }
        actix_rt::spawn(async move {
            let mut pipe = redis::pipe();
            pipe.cmd("SET").arg(keys.node(id)).arg(&entry).arg("EX").arg(ttl).ignore();
            pipe.cmd("SADD").arg(keys.nodes()).arg(id).ignore();
            if !users.is_empty() {
                pipe.cmd("SADD").arg(keys.users(id)).arg(&users).ignore();
                pipe.cmd("EXPIRE").arg(keys.users(id)).arg(ttl).ignore();
            }
            if !groups.is_empty() {
                pipe.cmd("SADD").arg(keys.groups(id)).arg(&groups).ignore();
                pipe.cmd("EXPIRE").arg(keys.groups(id)).arg(ttl).ignore();
            }
            if !room_interest.is_empty() {
                pipe.cmd("SADD").arg(keys.rooms(id)).arg(&room_interest).ignore();
                pipe.cmd("EXPIRE").arg(keys.rooms(id)).arg(ttl).ignore();
            }
            for (room, entries) in &rooms {
                pipe.cmd("SADD").arg(room).arg(entries).ignore();
            }
            if let Err(e) = pipe.query_async::<()>(&mut con).await {
                log::debug!("cluster rejoin: {e}");
            }
            // Messages stored from now on are published here; the rest is in the store.
            if let Some(c) = catch_up {
                c.fire(rejoin.since_ms);
            }
        });
    }
}

impl Handler<Leave> for ClusterNode {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Leave, ctx: &mut Context<Self>) -> Self::Result {
        ctx.stop();
        let (mut con, keys, id) = (self.s.con.clone(), self.s.keys.clone(), self.s.node_id);
        let rooms = std::mem::take(&mut self.rooms);
        Box::pin(async move {
            let mut pipe = redis::pipe();
            pipe.cmd("DEL")
                .arg(keys.node(id))
                .arg(keys.users(id))
                .arg(keys.groups(id))
                .arg(keys.rooms(id))
                .ignore();
            pipe.cmd("SREM").arg(keys.nodes()).arg(id).ignore();
            for (room, entries) in &rooms {
                let entries: Vec<&String> = entries.iter().collect();
                pipe.cmd("SREM").arg(room).arg(entries).ignore();
            }
            let res: redis::RedisResult<()> = pipe.query_async(&mut con).await;
            if let Err(e) = res {
                log::warn!("cluster: leaving: {e}");
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Sequences;

    #[test]
    fn sequences_find_gaps_per_sender_and_restart_with_a_new_instance() {
        let mut s = Sequences::default();
        // (from, token, seq, arrival ms, missing since)
        let table = [
            (1, "a", 5, 100, None), // first seen: starts there
            (1, "a", 6, 110, None),
            (2, "b", 1, 120, None),      // another node, its own sequence
            (1, "a", 8, 130, Some(110)), // 7 went missing after the one that came at 110
            (1, "a", 9, 140, None),
            (2, "b", 2, 150, None),
            (1, "c", 1, 160, None), // node 1 restarted: a new instance
            (1, "c", 2, 170, None),
            (1, "c", 2, 180, Some(170)), // not the next one
        ];
        for (i, (from, token, seq, at, want)) in table.into_iter().enumerate() {
            assert_eq!(s.in_order(from, token, seq, at), want, "row {i}");
        }
    }
}
