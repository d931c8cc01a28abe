//! Several wsim nodes as one service, on Redis. Redis holds who is alive (each node's entry, with a
//! TTL its heartbeat refreshes), who is online where (each node's set of users, with the same TTL),
//! and one pub/sub channel per node. A message stored on one node goes, once, to each other node that
//! has recipients online (direct messages: by the users online there; group messages: by the groups
//! with a member online there; room messages: by the rooms, users and apps with a connection there),
//! which delivers it through its own registry and rooms. The store stays the source of truth: the
//! messages are written before anything is published, so what pub/sub loses is replayed from the
//! store by watermarks.
//!
//! Every envelope on a node's channel carries its sender's id, instance token and a sequence number
//! per receiving node: a receiver that sees a gap (a publish failed, or was dropped) or whose channel
//! dropped catches its online users up from the store.
//!
//! Everything Redis-specific is in this module; the core talks to it through typed messages
//! ([`crate::core::Outbound`], [`crate::core::Presence`], [`crate::core::ClusterEvent`]) and gets
//! the other nodes' messages and events as [`crate::core::RemoteDelivery`] and
//! [`crate::core::RemoteEvent`], and [`crate::core::CatchUp`] when some may have been lost. Imports
//! `core` and `domain`, never a front-end.

mod node;
mod publisher;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix::prelude::*;
use redis::aio::ConnectionManager;

use crate::config::ClusterSettings;
use crate::core::Core;
use node::ClusterNode;

/// Why a node cannot join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(
        "node id {0} is in use by {1} (seen in Redis); give every node its own --node-id (if that node \
         is gone, its claim expires within the node TTL)"
    )]
    NodeIdTaken(u16, String),
}

/// A live node, as `/ticket` hands it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u16,
    pub url: String,
    /// The node's instance (a node restarted with the same id is another instance).
    pub token: String,
}

/// Keys and channels, all under the prefix.
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    /// The set of node ids that joined.
    fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }
    /// A node's entry: "<instance token> <public url>", with the TTL.
    fn node(&self, id: u16) -> String {
        format!("{}:node:{id}", self.prefix)
    }
    /// The users online on a node ("<app>\n<user>"), with the TTL.
    fn users(&self, id: u16) -> String {
        format!("{}:users:{id}", self.prefix)
    }
    /// The groups with members online on a node ("<app>\n<group>"), with the TTL.
    fn groups(&self, id: u16) -> String {
        format!("{}:groups:{id}", self.prefix)
    }
    /// The live rooms with connections on a node, the users with connections in them, and the apps
    /// with any (see `publisher::room_target_entry`), with the TTL.
    fn rooms(&self, id: u16) -> String {
        format!("{}:rooms:{id}", self.prefix)
    }
    /// A node's channel.
    fn inbox(&self, id: u16) -> String {
        format!("{}:inbox:{id}", self.prefix)
    }
    /// Who is in a live room, on every node ("<node id>\n<instance token>\n<user>"); a dead node's
    /// entries are left out when read (and removed then).
    fn room(&self, app: &str, room: &str) -> String {
        format!("{}:room:{app}\n{room}", self.prefix)
    }
}

/// What the handle and the node actor share.
struct Shared {
    /// The live nodes (`/ticket`).
    members: RwLock<Vec<Member>>,
    /// The nodes messages are published to: the live ones and those seen live within the TTL (a node
    /// missing from Redis for a moment, as when Redis restarts, still gets its messages: it catches up
    /// on what it could not take).
    targets: RwLock<Vec<u16>>,
    /// Redis answers (commands and the node's channel).
    healthy: AtomicBool,
}

/// A handle on this node's place in the cluster.
#[derive(Clone)]
pub struct Cluster {
    node: Addr<ClusterNode>,
    shared: Arc<Shared>,
}

impl Cluster {
    /// Connects to Redis, claims `node_id` (refused while another live node holds it), and links
    /// the core to the other nodes.
    pub async fn join(
        settings: &ClusterSettings,
        node_id: u16,
        public_url: &str,
        core: &Core,
    ) -> Result<Cluster, ClusterError> {
        let client = redis::Client::open(settings.redis_url.as_str())?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(2))
            .set_number_of_retries(2);
        let mut con: ConnectionManager = client.get_connection_manager_with_config(config).await?;
        let keys = Keys { prefix: settings.key_prefix.clone() };
        let token = uuid::Uuid::new_v4().simple().to_string();
        let ttl = settings.node_ttl.as_secs().max(2);
        let claimed: Option<String> = redis::cmd("SET")
            .arg(keys.node(node_id))
            .arg(format!("{token} {public_url}"))
            .arg("NX")
            .arg("EX")
            .arg(ttl)
            .query_async(&mut con)
            .await?;
        if claimed.is_none() {
            let holder: Option<String> =
                redis::cmd("GET").arg(keys.node(node_id)).query_async(&mut con).await?;
            let url = holder.as_deref().and_then(|h| h.split_once(' ')).map(|(_, u)| u.to_string());
            return Err(ClusterError::NodeIdTaken(node_id, url.unwrap_or_else(|| "another node".into())));
        }
        let _: () = redis::cmd("SADD").arg(keys.nodes()).arg(node_id).query_async(&mut con).await?;
        let shared = Arc::new(Shared {
            members: RwLock::new(vec![Member {
                id: node_id,
                url: public_url.to_string(),
                token: token.clone(),
            }]),
            targets: RwLock::new(Vec::new()),
            healthy: AtomicBool::new(true),
        });
        let node = ClusterNode::new(node::NodeSettings {
            client,
            con,
            keys,
            node_id,
            token,
            public_url: public_url.to_string(),
            ttl: settings.node_ttl,
            shared: shared.clone(),
        })
        .start();
        let inbound = core.attach_cluster(crate::core::ClusterOutbound {
            messages: node.clone().recipient(),
            presence: node.clone().recipient(),
            groups_online: node.clone().recipient(),
            events: node.clone().recipient(),
            room_presence: node.clone().recipient(),
            room_users: node.clone().recipient(),
            users_online: node.clone().recipient(),
        });
        node.do_send(node::Inbound(inbound));
        log::info!(
            "node {node_id} joined the cluster on {} (prefix {})",
            settings.redis_url,
            settings.key_prefix
        );
        Ok(Cluster { node, shared })
    }

    /// The live nodes, this one included, by id.
    pub fn members(&self) -> Vec<Member> {
        self.shared.members.read().map(|m| m.clone()).unwrap_or_default()
    }

    /// Whether Redis answers.
    pub fn healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Relaxed)
    }

    /// Leaves the cluster (shutdown): the node's entry and users go at once, not at their TTL.
    pub async fn leave(&self) {
        let _ = self.node.send(node::Leave).await;
    }
}
