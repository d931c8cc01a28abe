//! `/notify`: a session's live feed of its conversations' messages, as MsgData JSON. This file owns the
//! WebSocket transport (`protoc=ws`): one text frame per message; client frames are ignored. A newer
//! notify of the same session and platform replaces the older one (closed with 4001 `replaced`).

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web_actors::ws::{self, CloseCode, CloseReason, ProtocolError};

use super::msg::msg_data;
use crate::core::{next_conn_id, ConnEvent, ConnHandle, ConnId, Core, Deliver};
use crate::domain::message::{Message, UserKey};
use crate::metrics::METRICS;
use crate::transport::delivery::{self, WsDelivery, WsFrontend};

/// What a notify connection needs from the configuration.
#[derive(Debug, Clone)]
pub struct NotifySettings {
    pub app: String,
    pub heartbeat_interval: Duration,
    pub client_timeout: Duration,
    pub outbound_queue_bytes: u64,
    pub poll_timeout: Duration,
}

/// The device key of a notify: one per session and platform.
pub fn device_key(platform: i64) -> String {
    format!("gateway:{platform}")
}

/// The core handle of a notify connection (any transport) of `platform`.
pub fn notify_handle<A>(
    settings: &NotifySettings,
    id: ConnId,
    platform: i64,
    addr: Addr<A>,
    resume: Option<(String, i64)>,
) -> ConnHandle
where
    A: Actor + Handler<Deliver> + Handler<ConnEvent>,
    A::Context: actix::dev::ToEnvelope<A, Deliver> + actix::dev::ToEnvelope<A, ConnEvent>,
{
    ConnHandle {
        id,
        deliver: addr.clone().recipient(),
        events: addr.recipient(),
        device: Some(device_key(platform)),
        resume,
        held_limit: settings.outbound_queue_bytes / 2,
    }
}

/// One `/notify?protoc=ws` socket.
pub struct NotifyWs {
    core: Core,
    settings: Arc<NotifySettings>,
    sid: String,
    platform: i64,
    delivery: WsDelivery,
}

impl NotifyWs {
    pub fn new(core: Core, settings: Arc<NotifySettings>, sid: String, platform: i64) -> Self {
        let delivery = WsDelivery::new(
            next_conn_id(),
            settings.outbound_queue_bytes,
            METRICS.frontend("gateway"),
            "gateway",
        );
        NotifyWs { core, settings, sid, platform, delivery }
    }

    pub fn plumbing(&self) -> crate::transport::ws::Plumbing {
        self.delivery.plumbing()
    }
}

impl WsFrontend for NotifyWs {
    fn delivery(&mut self) -> &mut WsDelivery {
        &mut self.delivery
    }

    /// Conversation messages only; direct wsim messages stay for the user's wsim devices.
    fn render(&self, msg: &Message) -> Option<bytestring::ByteString> {
        msg.group().map(|_| msg_data(msg).to_string().into())
    }
}

impl Actor for NotifyWs {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.delivery.metrics.connections.inc();
        let handle = notify_handle(&self.settings, self.delivery.id, self.platform, ctx.address(), None);
        let key = UserKey::new(self.settings.app.clone(), self.sid.clone());
        let core = self.core.clone();
        ctx.wait(async move { core.login(key, handle).await }.into_actor(self).map(
            |res, act, ctx| match res {
                Ok(session) => act.delivery.session = Some(session),
                Err(_) => ctx.stop(),
            },
        ));
        delivery::keep_watch(
            ctx,
            self.settings.client_timeout,
            self.settings.heartbeat_interval,
            delivery::ping,
        );
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.delivery.metrics.connections.dec();
        self.delivery.detach();
    }
}

impl Handler<Deliver> for NotifyWs {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        delivery::deliver(self, msg, ctx);
    }
}

impl Handler<ConnEvent> for NotifyWs {
    type Result = ();

    fn handle(&mut self, msg: ConnEvent, ctx: &mut Self::Context) {
        match msg {
            ConnEvent::ReplayPaused => {
                self.delivery.replay_paused();
                delivery::pump(self, ctx);
            }
            ConnEvent::Rejected(_) => {}
            ConnEvent::Replaced => {
                // The session already dropped this connection: nothing to report on detach.
                self.delivery.session = None;
                ctx.close(Some(CloseReason {
                    code: CloseCode::Other(4001),
                    description: Some("replaced".into()),
                }));
                ctx.stop();
            }
            ConnEvent::TooSlow => delivery::drop_slow(self, ctx),
            ConnEvent::Unavailable => {
                ctx.close(Some(CloseReason {
                    code: CloseCode::Again,
                    description: Some("try again later".into()),
                }));
                ctx.stop();
            }
        }
    }
}

impl StreamHandler<Result<ws::Message, ProtocolError>> for NotifyWs {
    /// Client data frames are ignored; any frame keeps the connection alive.
    fn handle(&mut self, item: Result<ws::Message, ProtocolError>, ctx: &mut Self::Context) {
        self.delivery.heard();
        let _ = delivery::control(self, item, ctx);
    }
}
