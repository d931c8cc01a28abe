//! The store writer: the one actor that writes messages and delivery watermarks.
//!
//! Group commit: while one transaction is in flight, new work accumulates; when it finishes, everything
//! that accumulated (up to `max_batch` messages) goes out in the next transaction. A burst of messages
//! therefore costs few transactions, and ids (assigned here, in arrival order) match commit order.
//! Recipients are notified only after the commit, in id order.
//!
//! Commit gap: a transaction starts at least `commit_gap` after the previous one started. Under a
//! steady light load (each commit over before the next message comes) messages would otherwise go
//! one or two per transaction, and a commit costs its log pages whatever it carries; with the gap
//! they share one. An idle writer starts at once, and a busy one (transactions longer than the gap)
//! never waits.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::{CoreError, Origin};
use crate::domain::ids::{now_us, IdGen};
use crate::domain::message::{direct_conv_id, Draft, Message, SharedMessage, Target};
use crate::metrics::METRICS;
use crate::store::messages::{is_stored, write_batch, Watermark};
use crate::store::{Store, StoreError};

/// How many messages the writer's mailbox holds before senders are told the server is busy.
pub const WRITER_MAILBOX: usize = 50_000;
/// Bytes of messages accepted and not yet stored past which senders are told the server is busy
/// (connections also stop reading their own senders well before this; see
/// `transport::delivery::WsDelivery::inflow_add`).
pub const WRITER_QUEUE_BYTES: u64 = 32 * 1024 * 1024;
const KNOWN_DIRECT_MAX: usize = 200_000;
const WRITE_ATTEMPTS: u32 = 3;
/// Least time between two SQLite checkpoints run by the writer.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);
/// Watermark updates per transaction, with messages and without.
const WATERMARKS_WITH_MESSAGES: usize = 64;
const WATERMARKS_ALONE: usize = 512;

/// Store a message, then tell `notify` (in id order) or the origin why it failed.
pub struct Persist {
    pub draft: Draft,
    /// Who the message is for (what the other nodes of a cluster need to know).
    pub scope: super::Scope,
    /// The conversation's type, stamped on the message.
    pub conv_type: i32,
    pub origin: Origin,
    pub notify: Recipient<Persisted>,
    /// Answered after the commit, for front-ends that acknowledge sends.
    pub ack: Option<oneshot::Sender<Result<SharedMessage, CoreError>>>,
}

impl actix::Message for Persist {
    type Result = ();
}

/// A message is stored; deliver it.
#[derive(Clone)]
pub struct Persisted {
    pub msg: SharedMessage,
    /// The connection that sent it (excluded from delivery).
    pub origin: Option<crate::domain::message::ConnId>,
}

impl actix::Message for Persisted {
    type Result = ();
}

/// Raise delivery watermarks; `done` is answered once they are written.
pub struct SaveWatermarks {
    pub watermarks: Vec<Watermark>,
    pub done: Option<oneshot::Sender<bool>>,
}

impl actix::Message for SaveWatermarks {
    type Result = ();
}

/// Answers once everything received so far is written.
pub struct Flush;

impl actix::Message for Flush {
    type Result = ();
}

/// Counters of what the writer has committed so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    pub messages: u64,
    pub batches: u64,
}

/// Asks for the writer's counters.
pub struct GetStats;

impl actix::Message for GetStats {
    type Result = WriterStats;
}

struct Job {
    msg: SharedMessage,
    scope: super::Scope,
    /// A direct message, whose conversation may need creating.
    direct: bool,
    origin: Origin,
    notify: Recipient<Persisted>,
    ack: Option<oneshot::Sender<Result<SharedMessage, CoreError>>>,
}

pub struct StoreWriter {
    store: Store,
    ids: Arc<IdGen>,
    max_batch: usize,
    queue: VecDeque<Job>,
    /// Bytes of the messages queued or in flight.
    queued_bytes: u64,
    watermarks: Vec<Watermark>,
    watermark_waiters: Vec<oneshot::Sender<bool>>,
    flush_waiters: Vec<oneshot::Sender<()>>,
    in_flight: bool,
    known_direct: HashSet<(String, String)>,
    stats: WriterStats,
    /// The other nodes of a cluster, told of every stored message.
    cluster: Option<Recipient<super::Outbound>>,
    /// Offline push, fed every stored direct and group message (a bounded queue: when it is full the
    /// message is not pushed, counted).
    push: Option<tokio::sync::mpsc::Sender<SharedMessage>>,
    /// Commits since the last checkpoint (SQLite).
    dirty: bool,
    last_checkpoint: std::time::Instant,
    /// Least time between the starts of two transactions.
    commit_gap: std::time::Duration,
    /// When the last transaction started.
    last_start: Option<std::time::Instant>,
    /// A flush waits for the gap to pass.
    gap_wait: bool,
}

impl StoreWriter {
    pub fn new(store: Store, ids: Arc<IdGen>, max_batch: usize) -> Self {
        StoreWriter {
            store,
            ids,
            max_batch: max_batch.max(1),
            queue: VecDeque::new(),
            queued_bytes: 0,
            watermarks: Vec::new(),
            watermark_waiters: Vec::new(),
            flush_waiters: Vec::new(),
            in_flight: false,
            known_direct: HashSet::new(),
            stats: WriterStats::default(),
            cluster: None,
            push: None,
            dirty: false,
            last_checkpoint: std::time::Instant::now(),
            commit_gap: std::time::Duration::ZERO,
            last_start: None,
            gap_wait: false,
        }
    }

    /// Transactions start at least `gap` apart (see the module's notes).
    pub fn with_commit_gap(mut self, gap: std::time::Duration) -> Self {
        self.commit_gap = gap;
        self
    }

    /// Whether the next transaction waits for the commit gap: it started too recently and the
    /// queue is short of a full batch. Schedules one flush for when the gap has passed.
    fn wait_for_gap(&mut self, ctx: &mut Context<Self>) -> bool {
        let Some(since) = self.last_start.map(|t| t.elapsed()) else { return false };
        if since >= self.commit_gap || self.queue.len() >= self.max_batch {
            return false;
        }
        if !self.gap_wait {
            self.gap_wait = true;
            ctx.run_later(self.commit_gap - since, |act, ctx| {
                act.gap_wait = false;
                act.flush(ctx);
            });
        }
        true
    }

    fn stamp(&self, draft: Draft, conv_type: i32) -> Message {
        let (conv, recipient) = match draft.target {
            Target::User(to) => (direct_conv_id(&draft.sender, &to), to),
            Target::Group(g) => (g, String::new()),
            Target::Room { room, user } => (room, user.unwrap_or_default()),
        };
        Message {
            id: self.ids.next(),
            app: draft.app,
            conv,
            sender: draft.sender,
            recipient,
            kind: draft.kind,
            payload: draft.payload,
            extension: draft.extension,
            sent_us: now_us(),
            status: draft.status,
            conv_type,
        }
    }

    /// When the SQLite log has grown long (the background checkpoints cannot finish beside the
    /// commits), runs a checkpoint between two transactions: with no write in progress it copies
    /// the rest of the log back, and the next commit starts the log over. Returns whether one
    /// started.
    fn checkpoint_if_due(&mut self, ctx: &mut Context<Self>) -> bool {
        if !self.dirty || self.last_checkpoint.elapsed() < CHECKPOINT_EVERY || !self.store.wal_too_long() {
            return false;
        }
        self.dirty = false;
        self.in_flight = true;
        let store = self.store.clone();
        ctx.spawn(async move { store.complete_checkpoint().await }.into_actor(self).map(|(), act, ctx| {
            act.in_flight = false;
            act.last_checkpoint = std::time::Instant::now();
            act.flush(ctx);
        }));
        true
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight || self.checkpoint_if_due(ctx) {
            return;
        }
        if self.queue.is_empty() && self.watermarks.is_empty() {
            for w in self.flush_waiters.drain(..) {
                let _ = w.send(());
            }
            return;
        }
        if self.wait_for_gap(ctx) {
            return;
        }
        self.last_start = Some(std::time::Instant::now());
        let n = self.queue.len().min(self.max_batch);
        let jobs: Vec<Job> = self.queue.drain(..n).collect();
        // Messages come first: watermarks ride along in small numbers while messages wait, and get
        // transactions of their own when the queue is empty.
        let watermark_room = if jobs.is_empty() { WATERMARKS_ALONE } else { WATERMARKS_WITH_MESSAGES };
        let watermarks: Vec<Watermark> =
            self.watermarks.drain(..self.watermarks.len().min(watermark_room)).collect();
        let watermark_waiters =
            if self.watermarks.is_empty() { std::mem::take(&mut self.watermark_waiters) } else { Vec::new() };
        let msgs: Vec<SharedMessage> = jobs.iter().map(|j| j.msg.clone()).collect();
        let new_direct: Vec<usize> = jobs
            .iter()
            .enumerate()
            .filter(|(_, j)| {
                j.direct && !self.known_direct.contains(&(j.msg.app.clone(), j.msg.conv.clone()))
            })
            .map(|(i, _)| i)
            .collect();
        self.in_flight = true;
        let started = std::time::Instant::now();
        let store = self.store.clone();
        let fut = write_with_retries(store, Arc::new(msgs), Arc::new(new_direct), Arc::new(watermarks));
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            act.in_flight = false;
            let written: u64 = jobs.iter().map(|j| j.msg.approx_size()).sum();
            act.queued_bytes = act.queued_bytes.saturating_sub(written);
            match res {
                Ok(()) => {
                    act.dirty = true;
                    act.stats.batches += 1;
                    act.stats.messages += jobs.len() as u64;
                    METRICS.stored.inc_by(jobs.len() as u64);
                    METRICS.batch_size.observe(jobs.len() as f64);
                    METRICS.batch_seconds.observe(started.elapsed().as_secs_f64());
                    if act.known_direct.len() > KNOWN_DIRECT_MAX {
                        act.known_direct.clear();
                    }
                    for job in jobs {
                        if job.direct {
                            act.known_direct.insert((job.msg.app.clone(), job.msg.conv.clone()));
                        }
                        job.notify.do_send(Persisted { msg: job.msg.clone(), origin: job.origin.conn });
                        if let Some(cluster) = &act.cluster {
                            cluster.do_send(super::Outbound { msg: job.msg.clone(), scope: job.scope });
                        }
                        if let Some(push) = act.push.as_ref().filter(|_| job.scope != super::Scope::Room) {
                            if push.try_send(push_digest(&job.msg)).is_err() {
                                METRICS.push_dropped("feed");
                            }
                        }
                        if let Some(ack) = job.ack {
                            let _ = ack.send(Ok(job.msg));
                        }
                    }
                    for w in watermark_waiters {
                        let _ = w.send(true);
                    }
                }
                Err(e) => {
                    log::error!("store writer: batch of {} messages failed: {e}", jobs.len());
                    METRICS.store_failures.inc();
                    for job in jobs {
                        job.origin.reject(CoreError::Storage);
                        if let Some(ack) = job.ack {
                            let _ = ack.send(Err(CoreError::Storage));
                        }
                    }
                    for w in watermark_waiters {
                        let _ = w.send(false);
                    }
                }
            }
            act.flush(ctx);
        }));
    }
}

/// Writes one batch in one transaction, [`WRITE_ATTEMPTS`] times at most, 40 and 60 ms apart, each
/// attempt on a connection taken from the pool afresh (one the failure broke is not handed out again). Whatever failed, the transaction was rolled back whole — unless the
/// connection was lost while the COMMIT was on its way: then the database may have committed it.
/// So after a failure the batch's first message id, looked up on another connection, says whether
/// it went in: a committed batch is a success (its messages are delivered and acknowledged, never
/// refused while stored), and is never written twice.
async fn write_with_retries(
    store: Store,
    msgs: Arc<Vec<SharedMessage>>,
    new_direct: Arc<Vec<usize>>,
    watermarks: Arc<Vec<Watermark>>,
) -> Result<(), StoreError> {
    let first_id = msgs.first().map(|m| m.id);
    let mut attempt = 1;
    loop {
        let (m, d, w) = (msgs.clone(), new_direct.clone(), watermarks.clone());
        let err = match store
            .run_unbounded(move |conn| {
                let batch: Vec<&Message> = m.iter().map(|m| m.as_ref()).collect();
                let direct: Vec<&Message> = d.iter().map(|&i| batch[i]).collect();
                write_batch(conn, &batch, &direct, &w)
            })
            .await
        {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        attempt += 1;
        tokio::time::sleep(std::time::Duration::from_millis(20 * attempt as u64)).await;
        if let Some(id) = first_id {
            match store.run_unbounded(move |conn| is_stored(conn, id)).await {
                Ok(true) => {
                    log::warn!(
                        "store writer: a batch reported failed was committed ({err}); taken as stored"
                    );
                    return Ok(());
                }
                Ok(false) => {}
                // Unknown still: writing again is safe (the ids are keys, a second copy is refused).
                Err(check) => log::warn!("store writer: cannot tell whether a failed batch went in: {check}"),
            }
        }
        if attempt > WRITE_ATTEMPTS {
            return Err(err);
        }
        log::warn!("store writer: attempt {} failed, retrying: {err}", attempt - 1);
    }
}

impl Actor for StoreWriter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(WRITER_MAILBOX);
    }
}

impl Handler<Persist> for StoreWriter {
    type Result = ();

    fn handle(&mut self, p: Persist, ctx: &mut Self::Context) {
        if self.queued_bytes > WRITER_QUEUE_BYTES {
            p.origin.reject(CoreError::Busy);
            if let Some(ack) = p.ack {
                let _ = ack.send(Err(CoreError::Busy));
            }
            return;
        }
        let direct = matches!(p.draft.target, Target::User(_));
        let msg = Arc::new(self.stamp(p.draft, p.conv_type));
        self.queued_bytes += msg.approx_size();
        self.queue.push_back(Job {
            msg,
            scope: p.scope,
            direct,
            origin: p.origin,
            notify: p.notify,
            ack: p.ack,
        });
        self.flush(ctx);
    }
}

/// From now on, tell `0` of every stored message (a cluster's link).
pub struct SetCluster(pub Recipient<super::Outbound>);
impl actix::Message for SetCluster {
    type Result = ();
}

impl Handler<SetCluster> for StoreWriter {
    type Result = ();

    fn handle(&mut self, msg: SetCluster, _: &mut Self::Context) {
        self.cluster = Some(msg.0);
    }
}

/// Longest payload a message handed to offline push keeps, bytes.
pub const PUSH_PAYLOAD_MAX: usize = 2048;

/// What offline push needs of a message, small whatever the message (its queue holds thousands): no
/// extension, and a payload of at most [`PUSH_PAYLOAD_MAX`] bytes: a text cut at a character
/// boundary, a longer media URL left out (a cut URL points nowhere).
pub fn push_digest(m: &SharedMessage) -> SharedMessage {
    if m.payload.len() <= PUSH_PAYLOAD_MAX && m.extension.is_empty() {
        return m.clone();
    }
    let payload = if m.payload.len() <= PUSH_PAYLOAD_MAX {
        m.payload.clone()
    } else if matches!(m.kind.as_str(), "picture" | "audio" | "video") {
        String::new()
    } else {
        let mut end = PUSH_PAYLOAD_MAX;
        while !m.payload.is_char_boundary(end) {
            end -= 1;
        }
        m.payload[..end].to_string()
    };
    Arc::new(Message { payload, extension: String::new(), ..(**m).clone() })
}

/// From now on, feed every stored direct and group message to offline push.
pub struct SetPush(pub tokio::sync::mpsc::Sender<SharedMessage>);
impl actix::Message for SetPush {
    type Result = ();
}

impl Handler<SetPush> for StoreWriter {
    type Result = ();

    fn handle(&mut self, msg: SetPush, _: &mut Self::Context) {
        self.push = Some(msg.0);
    }
}

impl Handler<SaveWatermarks> for StoreWriter {
    type Result = ();

    fn handle(&mut self, s: SaveWatermarks, ctx: &mut Self::Context) {
        self.watermarks.extend(s.watermarks);
        if let Some(done) = s.done {
            self.watermark_waiters.push(done);
        }
        self.flush(ctx);
    }
}

impl Handler<Flush> for StoreWriter {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Flush, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.flush_waiters.push(tx);
        self.flush(ctx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

impl Handler<GetStats> for StoreWriter {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _: GetStats, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: &str, payload: String, extension: &str) -> SharedMessage {
        Arc::new(Message {
            id: 1,
            app: "default".into(),
            conv: "10".into(),
            sender: "alice".into(),
            recipient: String::new(),
            kind: kind.into(),
            payload,
            extension: extension.into(),
            sent_us: 0,
            status: 0,
            conv_type: 0,
        })
    }

    #[test]
    fn push_digests_stay_small_whatever_the_message() {
        let small = message("text", "hi".into(), "");
        assert!(Arc::ptr_eq(&push_digest(&small), &small), "a small message is shared, not copied");
        let ext = push_digest(&message("text", "hi".into(), &"e".repeat(60_000)));
        assert_eq!((ext.payload.as_str(), ext.extension.as_str()), ("hi", ""));
        // 1000 three-byte characters: cut at a character boundary within the limit.
        let long = push_digest(&message("text", "好".repeat(1000), ""));
        assert_eq!(long.payload, "好".repeat(PUSH_PAYLOAD_MAX / 3));
        let url = format!("http://h/{}", "a".repeat(60_000));
        assert_eq!(push_digest(&message("picture", url, "")).payload, "", "a cut URL points nowhere");
        let fits = format!("http://h/{}.png", "a".repeat(100));
        assert_eq!(push_digest(&message("video", fits.clone(), "x")).payload, fits);
    }
}
