//! ClusterNode: this node's actor in the cluster. Keeps its entry and its users alive in Redis,
//! knows the live nodes, publishes what this node stores to the nodes that need it (one publish per
//! node, in id order, from one task), and hands what comes on its channel to the core.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;

use super::{Keys, Member, Shared};
use crate::core::{Outbound, Presence, RemoteDelivery, Scope};
use crate::domain::message::Message;
use crate::metrics::METRICS;

/// Stored messages waiting to be published; past this they are dropped (counted): the store has
/// them, and the users get them at their next login.
const PUBLISH_QUEUE: usize = 10_000;
/// Wait before connecting the channel again after it dropped.
const RESUBSCRIBE_AFTER: Duration = Duration::from_millis(500);

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
pub(super) struct Inbound(pub Recipient<RemoteDelivery>);
impl actix::Message for Inbound {
    type Result = ();
}

/// Leave the cluster now (shutdown).
pub(super) struct Leave;
impl actix::Message for Leave {
    type Result = ();
}

/// This node's users are missing from Redis (it restarted, or lost them): add them all again.
struct AddUsersAgain;
impl actix::Message for AddUsersAgain {
    type Result = ();
}

/// What travels between nodes.
#[derive(serde::Serialize)]
struct EnvelopeOut<'a> {
    scope: Scope,
    msg: &'a Message,
}

#[derive(serde::Deserialize)]
struct EnvelopeIn {
    scope: Scope,
    msg: Message,
}

pub(super) struct ClusterNode {
    s: NodeSettings,
    /// Users online here ("<app>\n<user>").
    users: HashSet<String>,
    publish: Option<mpsc::Sender<Outbound>>,
}

fn user_entry(app: &str, user: &str) -> String {
    format!("{app}\n{user}")
}

impl ClusterNode {
    pub fn new(s: NodeSettings) -> ClusterNode {
        ClusterNode { s, users: HashSet::new(), publish: None }
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
                me.do_send(AddUsersAgain);
            }
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
                    Some((_, url)) => live.push(Member { id: i, url: url.to_string() }),
                    None => gone.push(i),
                }
            }
            if !gone.is_empty() {
                let _: redis::RedisResult<()> =
                    redis::cmd("SREM").arg(keys.nodes()).arg(&gone).query_async(&mut con).await;
            }
            if let Ok(mut m) = shared.members.write() {
                *m = live;
            }
            Self::set_healthy(&shared, true);
        });
    }

    /// Subscribes to this node's channel and hands what comes to the core; connects again when the
    /// channel drops.
    fn listen(&self, inbound: Recipient<RemoteDelivery>) {
        let (client, channel, shared) =
            (self.s.client.clone(), self.s.keys.inbox(self.s.node_id), self.s.shared.clone());
        actix_rt::spawn(async move {
            loop {
                let pubsub = async {
                    let mut p = client.get_async_pubsub().await?;
                    p.subscribe(&channel).await?;
                    Ok::<_, redis::RedisError>(p)
                };
                match pubsub.await {
                    Ok(p) => {
                        log::info!("cluster: listening on {channel}");
                        let mut stream = p.into_on_message();
                        while let Some(m) = stream.next().await {
                            match serde_json::from_slice::<EnvelopeIn>(m.get_payload_bytes()) {
                                Ok(e) => {
                                    METRICS.cluster_received.inc();
                                    inbound.do_send(RemoteDelivery { msg: Arc::new(e.msg), scope: e.scope });
                                }
                                Err(err) => log::warn!("cluster: bad message on {channel}: {err}"),
                            }
                        }
                        log::warn!("cluster: the channel {channel} dropped");
                    }
                    Err(e) => log::debug!("cluster: subscribing to {channel}: {e}"),
                }
                Self::set_healthy(&shared, false);
                if !inbound.connected() {
                    return;
                }
                tokio::time::sleep(RESUBSCRIBE_AFTER).await;
            }
        });
    }

    /// Publishes stored messages, one at a time in the order they were stored.
    fn start_publisher(&mut self) {
        let (tx, mut rx) = mpsc::channel::<Outbound>(PUBLISH_QUEUE);
        self.publish = Some(tx);
        let (mut con, keys, shared, me) =
            (self.s.con.clone(), self.s.keys.clone(), self.s.shared.clone(), self.s.node_id);
        actix_rt::spawn(async move {
            while let Some(out) = rx.recv().await {
                let others: Vec<u16> = shared
                    .members
                    .read()
                    .map(|m| m.iter().map(|m| m.id).filter(|&i| i != me).collect())
                    .unwrap_or_default();
                if others.is_empty() {
                    continue;
                }
                let targets = match out.scope {
                    Scope::Direct => {
                        let m = &out.msg;
                        let mut users = vec![user_entry(&m.app, &m.recipient)];
                        if m.sender != m.recipient {
                            users.push(user_entry(&m.app, &m.sender));
                        }
                        let mut pipe = redis::pipe();
                        for &n in &others {
                            for u in &users {
                                pipe.cmd("SISMEMBER").arg(keys.users(n)).arg(u);
                            }
                        }
                        match pipe.query_async::<Vec<bool>>(&mut con).await {
                            Ok(hits) => others
                                .iter()
                                .enumerate()
                                .filter(|(i, _)| {
                                    hits[i * users.len()..(i + 1) * users.len()].iter().any(|h| *h)
                                })
                                .map(|(_, &n)| n)
                                .collect(),
                            Err(e) => {
                                log::warn!("cluster: presence lookup: {e}");
                                METRICS.cluster_dropped.inc();
                                continue;
                            }
                        }
                    }
                    Scope::Group | Scope::Room => others,
                };
                if targets.is_empty() {
                    continue;
                }
                let Ok(payload) = serde_json::to_vec(&EnvelopeOut { scope: out.scope, msg: &out.msg }) else {
                    continue;
                };
                let mut pipe = redis::pipe();
                for n in &targets {
                    pipe.cmd("PUBLISH").arg(keys.inbox(*n)).arg(&payload).ignore();
                }
                match pipe.query_async::<()>(&mut con).await {
                    Ok(()) => {
                        METRICS.cluster_published.inc_by(targets.len() as u64);
                    }
                    Err(e) => {
                        log::warn!("cluster: publishing: {e}");
                        METRICS.cluster_dropped.inc();
                    }
                }
            }
        });
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

    fn handle(&mut self, msg: Inbound, _: &mut Context<Self>) {
        self.listen(msg.0);
    }
}

impl Handler<Outbound> for ClusterNode {
    type Result = ();

    fn handle(&mut self, msg: Outbound, _: &mut Context<Self>) {
        if let Some(tx) = &self.publish {
            if tx.try_send(msg).is_err() {
                METRICS.cluster_dropped.inc();
            }
        }
    }
}

impl Handler<Presence> for ClusterNode {
    type Result = ();

    fn handle(&mut self, p: Presence, _: &mut Context<Self>) {
        let entry = user_entry(&p.key.app, &p.key.user);
        let (mut con, key, ttl) =
            (self.s.con.clone(), self.s.keys.users(self.s.node_id), self.s.ttl.as_secs());
        let cmd = if p.online {
            self.users.insert(entry.clone());
            "SADD"
        } else {
            self.users.remove(&entry);
            "SREM"
        };
        actix_rt::spawn(async move {
            let res: redis::RedisResult<()> = redis::pipe()
                .cmd(cmd)
                .arg(&key)
                .arg(&entry)
                .ignore()
                .cmd("EXPIRE")
                .arg(&key)
                .arg(ttl)
                .ignore()
                .query_async(&mut con)
                .await;
            if let Err(e) = res {
                log::debug!("cluster presence: {e}");
            }
        });
    }
}

impl Handler<AddUsersAgain> for ClusterNode {
    type Result = ();

    fn handle(&mut self, _: AddUsersAgain, _: &mut Context<Self>) {
        if self.users.is_empty() {
            return;
        }
        let users: Vec<String> = self.users.iter().cloned().collect();
        let (mut con, key, ttl) =
            (self.s.con.clone(), self.s.keys.users(self.s.node_id), self.s.ttl.as_secs());
        actix_rt::spawn(async move {
            let res: redis::RedisResult<()> = redis::pipe()
                .cmd("SADD")
                .arg(&key)
                .arg(&users)
                .ignore()
                .cmd("EXPIRE")
                .arg(&key)
                .arg(ttl)
                .ignore()
                .query_async(&mut con)
                .await;
            if let Err(e) = res {
                log::debug!("cluster presence: {e}");
            }
        });
    }
}

impl Handler<Leave> for ClusterNode {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Leave, ctx: &mut Context<Self>) -> Self::Result {
        ctx.stop();
        let (mut con, keys, id) = (self.s.con.clone(), self.s.keys.clone(), self.s.node_id);
        Box::pin(async move {
            let res: redis::RedisResult<()> = redis::pipe()
                .cmd("DEL")
                .arg(keys.node(id))
                .arg(keys.users(id))
                .ignore()
                .cmd("SREM")
                .arg(keys.nodes())
                .arg(id)
                .ignore()
                .query_async(&mut con)
                .await;
            if let Err(e) = res {
                log::warn!("cluster: leaving: {e}");
            }
        })
    }
}
