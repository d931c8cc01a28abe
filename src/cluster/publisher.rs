//! The publisher: takes what this node stored (and its membership events) in the order it came and
//! publishes it to the nodes that need it. It drains whatever is queued at once: one `SMISMEMBER`
//! pipeline finds, for every message of the batch, the nodes with a recipient online, and one
//! `PUBLISH` pipeline sends them, so a busy node costs two Redis round trips per batch, not per
//! message.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use redis::aio::ConnectionManager;
use tokio::sync::mpsc;

use super::node::{bounded, group_entry, user_entry, BodyOut};
use super::{Keys, Shared};
use crate::core::{ClusterEvent, Outbound, Scope};
use crate::domain::message::Message;
use crate::metrics::METRICS;

/// At most this many publications go out in one batch.
const MAX_BATCH: usize = 256;

/// What waits to be published.
pub(super) enum Publication {
    /// A stored message: to the nodes with recipients online.
    Message(Outbound),
    /// A change: to every other node.
    Event(ClusterEvent),
    /// The heartbeat refreshed the nodes to publish to.
    Refresh,
}

/// The entry of a room message's recipients in a node's room interest (`<p>:rooms:<id>`): one
/// user's connections anywhere in the app, one room, or every room of the app.
pub(super) fn room_target_entry(m: &Message) -> String {
    match (m.conv.is_empty(), m.recipient.is_empty()) {
        (true, false) => room_user_entry(&m.app, &m.recipient),
        (false, _) => room_entry(&m.app, &m.conv),
        (true, true) => room_app_entry(&m.app),
    }
}

/// In a node's room interest: `user` has a connection in `app`'s rooms there.
pub(super) fn room_user_entry(app: &str, user: &str) -> String {
    format!("u\n{app}\n{user}")
}

/// In a node's room interest: `room` has a connection there.
pub(super) fn room_entry(app: &str, room: &str) -> String {
    format!("r\n{app}\n{room}")
}

/// In a node's room interest: some room of `app` has a connection there.
pub(super) fn room_app_entry(app: &str) -> String {
    format!("a\n{app}")
}

/// The interest set of node `n` and the entries in it that name a message's recipients.
fn interest(keys: &Keys, n: u16, out: &Outbound) -> (String, Vec<String>) {
    let m = &out.msg;
    match out.scope {
        Scope::Direct => {
            let mut users = vec![user_entry(&m.app, &m.recipient)];
            if m.sender != m.recipient {
                users.push(user_entry(&m.app, &m.sender));
            }
            (keys.users(n), users)
        }
        Scope::Group => (keys.groups(n), vec![group_entry(&m.app, &m.conv)]),
        Scope::Room => (keys.rooms(n), vec![room_target_entry(m)]),
    }
}

pub(super) struct Publisher {
    pub con: ConnectionManager,
    pub keys: Keys,
    pub shared: Arc<Shared>,
    /// This node's id and instance token.
    pub me: u16,
    pub token: String,
    /// A publication was dropped before it got a sequence number.
    pub lost: Arc<AtomicBool>,
    /// The next sequence number for each node.
    next_seq: HashMap<u16, u64>,
    /// The nodes published to at the last batch, and when each node that left them did.
    publishing_to: Vec<u16>,
    left_at: HashMap<u16, u64>,
}

impl Publisher {
    pub fn new(
        con: ConnectionManager,
        keys: Keys,
        shared: Arc<Shared>,
        me: u16,
        token: String,
        lost: Arc<AtomicBool>,
    ) -> Publisher {
        Publisher {
            con,
            keys,
            shared,
            me,
            token,
            lost,
            next_seq: HashMap::new(),
            publishing_to: Vec::new(),
            left_at: HashMap::new(),
        }
    }

    /// Publishes what comes on `rx`, in order, batch by batch, until the channel closes.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Publication>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut run: Vec<Outbound> = Vec::with_capacity(MAX_BATCH);
        while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            let others = self.targets().await;
            for publication in batch.drain(..) {
                match publication {
                    Publication::Message(out) => run.push(out),
                    Publication::Event(ev) => {
                        // Messages before the event go before it.
                        self.publish_messages(&others, &mut run).await;
                        self.publish_event(&others, &ev).await;
                    }
                    Publication::Refresh => {}
                }
            }
            self.publish_messages(&others, &mut run).await;
        }
    }

    /// The nodes to publish to now (sorted by the heartbeat that wrote them); tells those this node
    /// did not publish to until now that they may have missed messages, and makes every node see a
    /// gap when a publication was dropped.
    async fn targets(&mut self) -> Vec<u16> {
        let others: Vec<u16> = self.shared.targets.read().map(|t| t.clone()).unwrap_or_default();
        if self.lost.swap(false, Ordering::AcqRel) {
            self.skip(&others);
        }
        // A node this one did not publish to until now may have missed messages stored meanwhile
        // (its users were online there before this node knew of it): tell it.
        if self.publishing_to != others {
            let now = crate::domain::ids::now_ms();
            for gone in self.publishing_to.iter().filter(|n| !others.contains(n)) {
                self.left_at.insert(*gone, now);
            }
            let joined: Vec<u16> =
                others.iter().copied().filter(|n| !self.publishing_to.contains(n)).collect();
            for n in joined {
                let sync = BodyOut::Sync { since_ms: self.left_at.remove(&n) };
                let Ok(body) = serde_json::to_string(&sync) else { continue };
                let mut pipe = redis::pipe();
                self.push(&mut pipe, n, &body);
                self.flush(pipe, 1).await;
            }
            self.publishing_to = others.clone();
        }
        others
    }

    /// Takes a sequence number of every node in `nodes` without publishing: they see a gap.
    fn skip(&mut self, nodes: &[u16]) {
        for &n in nodes {
            *self.next_seq.entry(n).or_insert(1) += 1;
        }
    }

    /// Publishes the messages of `run` (emptied) to the nodes among `others` with a recipient online:
    /// one lookup pipeline, one publish pipeline.
    async fn publish_messages(&mut self, others: &[u16], run: &mut Vec<Outbound>) {
        if run.is_empty() {
            return;
        }
        if others.is_empty() {
            run.clear();
            return;
        }
        let mut lookup = redis::pipe();
        for out in run.iter() {
            for &n in others {
                let (key, entries) = interest(&self.keys, n, out);
                lookup.cmd("SMISMEMBER").arg(key).arg(entries);
            }
        }
        let hits = match bounded(lookup.query_async::<Vec<Vec<bool>>>(&mut self.con)).await {
            Ok(hits) if hits.len() == run.len() * others.len() => hits,
            Ok(hits) => {
                log::warn!("cluster: presence lookup: {} answers for {} questions", hits.len(), run.len());
                return self.drop_run(others, run);
            }
            Err(e) => {
                log::warn!("cluster: presence lookup: {e}");
                return self.drop_run(others, run);
            }
        };
        let mut publish = redis::pipe();
        let mut count = 0;
        for (out, row) in run.drain(..).zip(hits.chunks(others.len())) {
            let mut targets = others.iter().zip(row).filter(|(_, hit)| hit.iter().any(|h| *h)).peekable();
            if targets.peek().is_none() {
                continue;
            }
            log::trace!("cluster: publishing {} ({:?})", out.msg.id, out.scope);
            let Ok(body) = serde_json::to_string(&BodyOut::Message { scope: out.scope, msg: &out.msg })
            else {
                continue;
            };
            for (&n, _) in targets {
                self.push(&mut publish, n, &body);
                count += 1;
            }
        }
        if count > 0 {
            self.flush(publish, count).await;
        }
    }

    /// The lookup failed: every node may have had a recipient of each message: they all see a gap.
    fn drop_run(&mut self, others: &[u16], run: &mut Vec<Outbound>) {
        METRICS.cluster_dropped.inc_by(run.len() as u64);
        run.clear();
        self.skip(others);
    }

    /// Publishes an event to every node in `others`; the interest of users added to a group is
    /// written first, so that the group's next messages reach their nodes.
    async fn publish_event(&mut self, others: &[u16], ev: &ClusterEvent) {
        if others.is_empty() {
            return;
        }
        if let ClusterEvent::MembersChanged { app, group, added, .. } = ev {
            self.add_interest(others, app, group, added).await;
        }
        let Ok(body) = serde_json::to_string(&BodyOut::Event(ev)) else { return };
        let mut pipe = redis::pipe();
        for &n in others {
            self.push(&mut pipe, n, &body);
        }
        self.flush(pipe, others.len()).await;
    }

    /// Adds `group` to the interest of every node in `nodes` where one of `users` is online.
    async fn add_interest(&mut self, nodes: &[u16], app: &str, group: &str, users: &[String]) {
        if users.is_empty() {
            return;
        }
        let entries: Vec<String> = users.iter().map(|u| user_entry(app, u)).collect();
        let mut pipe = redis::pipe();
        for &n in nodes {
            pipe.cmd("SMISMEMBER").arg(self.keys.users(n)).arg(&entries);
        }
        let Ok(hits) = bounded(pipe.query_async::<Vec<Vec<bool>>>(&mut self.con)).await else { return };
        let mut pipe = redis::pipe();
        let mut any = false;
        for (&n, hit) in nodes.iter().zip(hits) {
            if hit.iter().any(|h| *h) {
                pipe.cmd("SADD").arg(self.keys.groups(n)).arg(group_entry(app, group)).ignore();
                any = true;
            }
        }
        if any {
            if let Err(e) = bounded(pipe.query_async::<()>(&mut self.con)).await {
                log::debug!("cluster: group interest: {e}");
            }
        }
    }

    /// Adds a publish of `body` to node `n` to `pipe`, with the node's next sequence number (taken
    /// even when the publish then fails, so that the node sees the gap).
    fn push(&mut self, pipe: &mut redis::Pipeline, n: u16, body: &str) {
        let seq = self.next_seq.entry(n).or_insert(1);
        let payload =
            format!("{{\"from\":{},\"token\":\"{}\",\"seq\":{seq},\"body\":{body}}}", self.me, self.token);
        *seq += 1;
        pipe.cmd("PUBLISH").arg(self.keys.inbox(n)).arg(payload).ignore();
    }

    /// Sends `count` publishes in one round trip.
    async fn flush(&mut self, pipe: redis::Pipeline, count: usize) {
        match bounded(pipe.query_async::<()>(&mut self.con)).await {
            Ok(()) => {
                METRICS.cluster_published.inc_by(count as u64);
            }
            Err(e) => {
                log::warn!("cluster: publishing: {e}");
                METRICS.cluster_dropped.inc();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room_message(room: &str, user: &str) -> Message {
        Message {
            id: 1,
            app: "900".into(),
            conv: room.into(),
            sender: "s".into(),
            recipient: user.into(),
            kind: "text".into(),
            payload: String::new(),
            extension: String::new(),
            sent_us: 0,
            status: 0,
            conv_type: 0,
        }
    }

    #[test]
    fn room_messages_name_the_interest_of_their_recipients() {
        // (room, user, entry looked up)
        let table = [
            ("g", "", "r\n900\ng"),   // a room: nodes with a connection in it
            ("g", "u1", "r\n900\ng"), // one user in a room: nodes with the room
            ("", "u1", "u\n900\nu1"), // one user anywhere in the app
            ("", "", "a\n900"),       // every room of the app
        ];
        for (room, user, want) in table {
            assert_eq!(room_target_entry(&room_message(room, user)), want, "{room:?} {user:?}");
        }
        // What a node writes when a connection joins matches what is looked up.
        assert_eq!(room_entry("900", "g"), room_target_entry(&room_message("g", "")));
        assert_eq!(room_user_entry("900", "u1"), room_target_entry(&room_message("", "u1")));
        assert_eq!(room_app_entry("900"), room_target_entry(&room_message("", "")));
    }
}
