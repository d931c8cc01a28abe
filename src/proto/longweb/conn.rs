//! LongwebWs: one `/ws/onsocket` socket. Checks the app, the parameters and (when a token is given) the
//! token with the app's checktoken API; a failure is one text frame `no permission connect! => …` then
//! a close. On success no frame is sent: the socket joins its groups (rooms) and receives each pushed
//! message's Content verbatim. Client frames are ignored.

use std::sync::Arc;

use actix::prelude::*;
use actix_web_actors::ws::{self, CloseCode, CloseReason, ProtocolError};

use super::callbacks::{check_token, TokenFailure};
use super::{Kind, LongwebState};
use crate::core::rooms::RoomMember;
use crate::core::{next_conn_id, Deliver};
use crate::domain::message::Message;
use crate::metrics::METRICS;
use crate::transport::delivery::{self, WsDelivery, WsFrontend};

/// What a socket asked for.
#[derive(Debug, Clone)]
pub struct SocketRequest {
    pub appid: String,
    pub groups: Vec<String>,
    pub user: String,
    pub token: Option<String>,
}

pub struct LongwebWs {
    state: Arc<LongwebState>,
    req: SocketRequest,
    verified: Option<bool>,
    delivery: WsDelivery,
}

impl LongwebWs {
    pub fn new(state: Arc<LongwebState>, req: SocketRequest) -> Self {
        let delivery =
            WsDelivery::new(next_conn_id(), state.queue_bytes, METRICS.frontend("longweb"), "longweb")
                .unconfirmed();
        LongwebWs { state, req, verified: None, delivery }
    }

    pub fn plumbing(&self) -> crate::transport::ws::Plumbing {
        self.delivery.plumbing()
    }
}

/// Why a socket is not admitted; the text is the one frame the client gets before the close.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("no permission connect! => appid[{0}] no exists")]
    UnknownApp(String),
    #[error("no permission connect! => appid, groupid and userid are required")]
    MissingIds,
    #[error("{}", .failure.message(.appid))]
    Token { failure: TokenFailure, appid: String },
}

/// Checks a socket's request: `Ok(verified)` or why it is refused.
pub async fn admit(state: &LongwebState, req: &SocketRequest) -> Result<bool, Refusal> {
    let settings = state.settings();
    let Some(app) = settings.app(&req.appid).cloned() else {
        return Err(Refusal::UnknownApp(req.appid.clone()));
    };
    if req.groups.is_empty() || req.user.is_empty() {
        return Err(Refusal::MissingIds);
    }
    let Some(token) = req.token.as_deref().filter(|t| !t.is_empty()) else { return Ok(false) };
    check_token(
        &state.limits,
        &app,
        &req.groups[0],
        &req.user,
        token,
        settings.callback_timeout,
        settings.callback_concurrency,
    )
    .await
    .map(|()| true)
    .map_err(|failure| Refusal::Token { failure, appid: req.appid.clone() })
}

impl WsFrontend for LongwebWs {
    fn delivery(&mut self) -> &mut WsDelivery {
        &mut self.delivery
    }

    const SAME_FRAME_FOR_ALL: bool = true;

    fn render(&self, msg: &Message) -> Option<bytestring::ByteString> {
        Some(msg.payload.as_str().into())
    }
}

impl Actor for LongwebWs {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.delivery.metrics.connections.inc();
        let state = self.state.clone();
        let req = self.req.clone();
        ctx.wait(async move { admit(&state, &req).await }.into_actor(self).map(|res, act, ctx| match res {
            Ok(verified) => {
                act.verified = Some(verified);
                act.state.count(&act.req.appid, Kind::Socket, verified, 1);
                let member = RoomMember {
                    conn: act.delivery.id,
                    user: act.req.user.clone(),
                    verified,
                    deliver: ctx.address().recipient(),
                };
                let joined = act.state.core.join_rooms(&act.req.appid, act.req.groups.clone(), member);
                ctx.wait(joined.into_actor(act));
            }
            Err(refusal) => {
                delivery::text(act, ctx, refusal.to_string());
                ctx.close(Some(CloseReason { code: CloseCode::Policy, description: None }));
                ctx.stop();
            }
        }));
        delivery::keep_watch(ctx, self.state.client_timeout, self.state.heartbeat_interval, delivery::ping);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.delivery.metrics.connections.dec();
        if let Some(verified) = self.verified {
            self.state.core.leave_rooms(self.delivery.id);
            self.state.count(&self.req.appid, Kind::Socket, verified, -1);
        }
    }
}

impl Handler<Deliver> for LongwebWs {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        delivery::deliver(self, msg, ctx);
    }
}

impl StreamHandler<Result<ws::Message, ProtocolError>> for LongwebWs {
    fn handle(&mut self, item: Result<ws::Message, ProtocolError>, ctx: &mut Self::Context) {
        self.delivery.heard();
        let _ = delivery::control(self, item, ctx);
    }
}
