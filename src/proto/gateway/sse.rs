//! `/notify?protoc=sse`: Server-Sent Events. Each message is `id: <MsgId>` / `event: message` /
//! `data: <MsgData JSON>`; a comment keeps the stream alive every 15 s (or every heartbeat interval when
//! that is shorter). Messages count as delivered
//! once the socket has taken them; a client that lost some reconnects with `Last-Event-ID` and gets
//! everything after that message again.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::{Error, HttpResponse};
use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::mpsc;

use super::msg::{msg_data, msg_id};
use super::notify::{notify_handle, NotifySettings};
use crate::core::session::{Delivered, DetachConn, ReplayNext, UserSession};
use crate::core::{next_conn_id, ConnEvent, ConnId, Core, Deliver};
use crate::domain::message::{SharedMessage, UserKey};
use crate::metrics::{FrontendMetrics, METRICS};
use crate::transport::delivery::highest_per_conv;
use crate::transport::ws::{CountingStream, OutboundMeter};

pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
const CONFIRM_TICK: Duration = Duration::from_millis(500);
/// How soon a paused replay looks again whether the stream has room for the next page.
const PAGE_CHECK: Duration = Duration::from_millis(5);

/// The `event: message` block of a message.
pub fn event(msg: &crate::core::Message) -> String {
    format!("id: {}\nevent: message\ndata: {}\n\n", msg_id(msg), msg_data(msg))
}

pub struct SseConn {
    id: ConnId,
    core: Core,
    settings: Arc<NotifySettings>,
    sid: String,
    platform: i64,
    resume: Option<(String, i64)>,
    session: Option<Addr<UserSession>>,
    tx: mpsc::UnboundedSender<Bytes>,
    /// Bytes queued; the stream side counts what the socket took.
    queued: OutboundMeter<SharedMessage>,
    replay_paused: bool,
    page_check_scheduled: bool,
    metrics: FrontendMetrics,
}

impl SseConn {
    /// Starts the connection; returns the response streaming its events.
    pub fn response(
        core: Core,
        settings: Arc<NotifySettings>,
        sid: String,
        platform: i64,
        resume: Option<(String, i64)>,
    ) -> HttpResponse {
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        let queued = OutboundMeter::new();
        let outflow = queued.outflow();
        let conn = SseConn {
            id: next_conn_id(),
            core,
            settings,
            sid,
            platform,
            resume,
            session: None,
            tx,
            queued,
            replay_paused: false,
            page_check_scheduled: false,
            metrics: METRICS.frontend("gateway"),
        };
        conn.start();
        let body = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<Bytes, Error>(b), rx))
        });
        let body: std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, Error>>>> = Box::pin(body);
        HttpResponse::Ok()
            .content_type("text/event-stream")
            .insert_header(("Cache-Control", "no-cache"))
            .insert_header(("X-Accel-Buffering", "no"))
            .streaming(CountingStream::new(body, outflow))
    }

    /// Queues raw bytes; false when the client is gone.
    fn push(&mut self, text: String, msg: Option<SharedMessage>) -> bool {
        let len = text.len();
        if self.tx.send(Bytes::from(text)).is_err() {
            return false;
        }
        match msg {
            Some(m) => self.queued.message_bytes(len, m),
            None => self.queued.raw_bytes(len),
        }
        true
    }

    fn confirm(&mut self) {
        let confirmed = self.queued.closed_cleanly();
        if let (false, Some(session)) = (confirmed.is_empty(), &self.session) {
            session.do_send(Delivered { conn: self.id, delivered: highest_per_conv(&confirmed) });
        }
    }

    /// Asks for the next replay page once the stream has room; until then, looks again shortly (the
    /// stream does not say when the socket took its bytes).
    fn ask_next_page(&mut self, ctx: &mut Context<Self>) {
        if !self.replay_paused {
            return;
        }
        if self.queued.backlog() >= self.settings.outbound_queue_bytes / 2 {
            if !self.page_check_scheduled {
                self.page_check_scheduled = true;
                ctx.run_later(PAGE_CHECK, |act, ctx| {
                    act.page_check_scheduled = false;
                    act.ask_next_page(ctx);
                });
            }
            return;
        }
        if let Some(session) = &self.session {
            self.replay_paused = false;
            session.do_send(ReplayNext { conn: self.id });
        }
    }
}

impl Actor for SseConn {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.metrics.connections.inc();
        let handle =
            notify_handle(&self.settings, self.id, self.platform, ctx.address(), self.resume.clone());
        let key = UserKey::new(self.settings.app.clone(), self.sid.clone());
        let core = self.core.clone();
        // An opening comment makes proxies and clients see the stream at once.
        if !self.push(": connected\n\n".to_string(), None) {
            ctx.stop();
            return;
        }
        ctx.wait(async move { core.login(key, handle).await }.into_actor(self).map(
            |res, act, ctx| match res {
                Ok(session) => act.session = Some(session),
                Err(_) => ctx.stop(),
            },
        ));
        // Every 15 s, or at the heartbeat interval when that is shorter.
        let keep_alive = KEEP_ALIVE.min(self.settings.heartbeat_interval.max(Duration::from_secs(1)));
        ctx.run_interval(keep_alive, |act, ctx| {
            if !act.push(": keep-alive\n\n".to_string(), None) {
                ctx.stop();
            }
        });
        ctx.run_interval(CONFIRM_TICK, |act, ctx| {
            if act.tx.is_closed() {
                ctx.stop();
                return;
            }
            act.confirm();
            act.ask_next_page(ctx);
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.metrics.connections.dec();
        let delivered = highest_per_conv(&self.queued.closed_cleanly());
        if let Some(session) = self.session.take() {
            session.do_send(DetachConn { conn: self.id, delivered });
        }
    }
}

impl Handler<Deliver> for SseConn {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        if msg.msg.group().is_none() {
            return;
        }
        let text = event(&msg.msg);
        // Replay pages come one at a time, when the stream has room (see `ask_next_page`); live
        // messages find the stream full only when the client stopped reading.
        if !msg.replay && self.queued.backlog() + text.len() as u64 > self.settings.outbound_queue_bytes {
            log::info!("gateway sse conn {}: peer not reading, dropping", self.id);
            self.metrics.slow_dropped.inc();
            self.queued.abort();
            ctx.stop();
            return;
        }
        if self.push(text, Some(msg.msg)) {
            self.metrics.delivered.inc();
        } else {
            ctx.stop();
        }
    }
}

impl Handler<ConnEvent> for SseConn {
    type Result = ();

    fn handle(&mut self, msg: ConnEvent, ctx: &mut Self::Context) {
        match msg {
            ConnEvent::ReplayPaused => {
                self.replay_paused = true;
                self.ask_next_page(ctx);
            }
            ConnEvent::Rejected(_) => {}
            ConnEvent::Replaced => {
                self.session = None;
                ctx.stop();
            }
            ConnEvent::Unavailable => ctx.stop(),
            ConnEvent::TooSlow => {
                log::info!("gateway sse conn {}: peer not keeping up with its replay, dropping", self.id);
                self.metrics.slow_dropped.inc();
                self.queued.abort();
                ctx.stop();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_have_id_event_and_data_lines() {
        let m = crate::core::Message {
            id: crate::domain::ids::id_from_parts(1_697_986_744_068, 1).expect("id"),
            app: "default".into(),
            conv: "87ba7679-b682-47e7-8499-0385dda22b66".into(),
            sender: "s".into(),
            recipient: String::new(),
            kind: "text".into(),
            payload: "line one\nline two".into(),
            extension: String::new(),
            sent_us: 1,
            status: 0,
            conv_type: 0,
        };
        let e = event(&m);
        assert!(e.starts_with("id: EDCZL-SY32-243Y-VWQ\nevent: message\ndata: {"), "{e}");
        assert!(e.ends_with("}\n\n"));
        assert_eq!(e.matches('\n').count(), 4, "the JSON stays on one data line: {e}");
    }
}
