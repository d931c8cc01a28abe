//! `/notify?protoc=poll`: one long-poll. Answers the next undelivered message (a MsgData object) as
//! soon as there is one, or HTTP 204 after the poll timeout. Only the answered message counts as
//! delivered, so whatever else arrived is answered by the next poll: nothing is lost between polls.
//! A newer poll of the same session and platform ends the older one with 204.

use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::msg::msg_data;
use super::notify::{notify_handle, NotifySettings};
use crate::core::session::{DetachConn, UserSession};
use crate::core::{next_conn_id, ConnEvent, ConnId, Core, Deliver};
use crate::domain::message::UserKey;
use crate::transport::longpoll::Parked;

/// What a poll ends with.
#[derive(Debug)]
pub enum PollOutcome {
    Message(serde_json::Value),
    Timeout,
}

pub struct PollConn {
    id: ConnId,
    core: Core,
    settings: Arc<NotifySettings>,
    sid: String,
    platform: i64,
    session: Option<Addr<UserSession>>,
    answer: Parked<PollOutcome>,
    delivered: Vec<(String, i64)>,
}

impl PollConn {
    pub fn start(
        core: Core,
        settings: Arc<NotifySettings>,
        sid: String,
        platform: i64,
    ) -> oneshot::Receiver<PollOutcome> {
        let (tx, rx) = oneshot::channel();
        let mut answer = Parked::default();
        answer.park(tx);
        PollConn {
            id: next_conn_id(),
            core,
            settings,
            sid,
            platform,
            session: None,
            answer,
            delivered: Vec::new(),
        }
        .start();
        rx
    }

    fn finish(&mut self, outcome: PollOutcome, ctx: &mut Context<Self>) {
        let _ = self.answer.answer(outcome);
        ctx.stop();
    }
}

impl Actor for PollConn {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let handle = notify_handle(&self.settings, self.id, self.platform, ctx.address(), None);
        let key = UserKey::new(self.settings.app.clone(), self.sid.clone());
        let core = self.core.clone();
        ctx.wait(async move { core.login(key, handle).await }.into_actor(self).map(
            |res, act, ctx| match res {
                Ok(session) => act.session = Some(session),
                Err(_) => act.finish(PollOutcome::Timeout, ctx),
            },
        ));
        ctx.run_later(self.settings.poll_timeout, |act, ctx| act.finish(PollOutcome::Timeout, ctx));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if let Some(session) = self.session.take() {
            session.do_send(DetachConn { conn: self.id, delivered: std::mem::take(&mut self.delivered) });
        }
        let _ = self.answer.answer(PollOutcome::Timeout);
    }
}

impl Handler<Deliver> for PollConn {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        if !self.answer.waiting() || msg.msg.group().is_none() {
            return;
        }
        self.delivered = vec![(msg.msg.conv.clone(), msg.msg.id)];
        self.finish(PollOutcome::Message(msg_data(&msg.msg)), ctx);
    }
}

impl Handler<ConnEvent> for PollConn {
    type Result = ();

    fn handle(&mut self, msg: ConnEvent, ctx: &mut Self::Context) {
        match msg {
            ConnEvent::Replaced => {
                self.session = None;
                self.finish(PollOutcome::Timeout, ctx);
            }
            // The poll ends; the client polls again and logs in anew.
            ConnEvent::Unavailable => self.finish(PollOutcome::Timeout, ctx),
            _ => {}
        }
    }
}
