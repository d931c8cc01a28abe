//! `/poll/onpolling`: the JSONP long-poll. Each (app, group, user) that polls has a [`PollBox`] in the
//! group's room: messages pushed while no poll is waiting are kept there (at most [`BOX_CAPACITY`],
//! oldest dropped first, counted in /metrics) and answered by the next poll, so a client that polls
//! again loses nothing. A box nobody polls for a while leaves the room; so does a box holding more
//! than the outbound queue limit in bytes (a client that stopped polling, counted as a slow consumer;
//! its next poll starts a new box, and the app's `messageapi` is there for what it missed).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::core::rooms::RoomMember;
use crate::core::{next_conn_id, ConnId, Core, Deliver};
use crate::metrics::METRICS;
use crate::transport::longpoll::Parked;

/// Messages a box keeps between two polls (beyond, the oldest are dropped; the byte bound usually
/// comes first).
pub const BOX_CAPACITY: usize = 1000;

/// Wait for the next message, up to `wait`; answered `None` on timeout (or when a newer poll of the
/// same box takes over).
pub struct Poll {
    pub wait: Duration,
    pub answer: oneshot::Sender<Option<String>>,
}
impl actix::Message for Poll {
    type Result = ();
}

pub struct PollBox {
    id: ConnId,
    core: Core,
    app: String,
    group: String,
    user: String,
    verified: bool,
    queue: VecDeque<String>,
    queued_bytes: usize,
    /// Bytes the box may hold.
    limit: usize,
    waiting: Parked<Option<String>>,
    last_poll: Instant,
    idle_after: Duration,
}

impl PollBox {
    pub fn new(
        core: Core,
        app: String,
        group: String,
        user: String,
        verified: bool,
        idle_after: Duration,
        limit: usize,
    ) -> Self {
        PollBox {
            id: next_conn_id(),
            core,
            app,
            group,
            user,
            verified,
            queue: VecDeque::new(),
            queued_bytes: 0,
            limit,
            waiting: Parked::default(),
            last_poll: Instant::now(),
            idle_after,
        }
    }
}

impl Actor for PollBox {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let member = RoomMember {
            conn: self.id,
            user: self.user.clone(),
            verified: self.verified,
            deliver: ctx.address().recipient(),
        };
        // Deliveries wait until the box is in its room everywhere.
        ctx.wait(self.core.join_rooms(&self.app, vec![self.group.clone()], member).into_actor(self));
        let check = (self.idle_after / 4).max(Duration::from_secs(1));
        ctx.run_interval(check, |act, ctx| {
            if !act.waiting.waiting() && act.last_poll.elapsed() > act.idle_after {
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.core.leave_rooms(self.id);
        let _ = self.waiting.answer(None);
    }
}

impl Handler<Poll> for PollBox {
    type Result = ();

    fn handle(&mut self, msg: Poll, ctx: &mut Self::Context) {
        self.last_poll = Instant::now();
        if let Some(m) = self.queue.pop_front() {
            self.queued_bytes -= m.len();
            let _ = msg.answer.send(Some(m));
            return;
        }
        let (ticket, older) = self.waiting.park(msg.answer);
        if let Some(older) = older {
            let _ = older.send(None);
        }
        ctx.run_later(msg.wait, move |act, _| {
            if let Some(tx) = act.waiting.expire(ticket) {
                let _ = tx.send(None);
                act.last_poll = Instant::now();
            }
        });
    }
}

impl Handler<Deliver> for PollBox {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        let content = match self.waiting.answer(Some(msg.msg.payload.clone())) {
            Ok(()) => return,
            // No poll waits (or it went away just now): keep the message for the next one.
            Err(back) => back.unwrap_or_default(),
        };
        if self.queue.len() >= BOX_CAPACITY {
            if let Some(old) = self.queue.pop_front() {
                self.queued_bytes -= old.len();
            }
            METRICS.poll_dropped.inc();
        }
        self.queued_bytes += content.len();
        self.queue.push_back(content);
        if self.queued_bytes > self.limit {
            log::info!(
                "longweb poll box {}/{}/{}: {} bytes wait unpolled, closing",
                self.app,
                self.group,
                self.user,
                self.queued_bytes
            );
            METRICS.frontend("longweb").slow_dropped.inc();
            ctx.stop();
        }
    }
}
