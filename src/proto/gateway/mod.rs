//! The gateway front-end: tokens, conversations, `/send_msg`, history and the `/notify` transports
//! (WebSocket, long-poll, SSE). Reaches storage and delivery only through the core; the core knows
//! nothing of JWTs or MsgIds.

pub mod envelope;
pub mod http;
pub mod msg;
pub mod msgid;
pub mod notify;
pub mod poll;
pub mod sse;
pub mod token;

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};

use crate::core::Core;
use envelope::{reply, GatewayError};
use http::HistoryQuery;
use notify::{NotifySettings, NotifyWs};
use token::TokenKeys;

/// What the gateway handlers share.
pub struct GatewayState {
    pub core: Core,
    pub app: String,
    pub keys: TokenKeys,
    pub inner_allow: Vec<ipnet::IpNet>,
    pub notify: Arc<NotifySettings>,
}

/// `GET /notify?token=&protoc=ws|poll|sse`.
async fn notify(
    state: web::Data<GatewayState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    let protoc = serde_urlencoded::from_str::<Vec<(String, String)>>(req.query_string())
        .ok()
        .and_then(|q| q.into_iter().find(|(k, _)| k == "protoc").map(|(_, v)| v))
        .unwrap_or_else(|| "ws".to_string());
    if !matches!(protoc.as_str(), "ws" | "poll" | "sse") {
        return Ok(reply(Err(GatewayError::UnsupportedProtoc)));
    }
    let claims = match state.keys.from_request(&req) {
        Ok(c) => c,
        Err(_) => return Ok(reply(Err(GatewayError::InvalidToken))),
    };
    match protoc.as_str() {
        "ws" => {
            let conn = NotifyWs::new(state.core.clone(), state.notify.clone(), claims.sid, claims.platform);
            let plumbing = conn.plumbing();
            let (_, res) = crate::transport::ws::start(conn, &req, payload, plumbing)?;
            Ok(res)
        }
        "poll" => {
            let rx =
                poll::PollConn::start(state.core.clone(), state.notify.clone(), claims.sid, claims.platform);
            Ok(match rx.await {
                Ok(poll::PollOutcome::Message(m)) => {
                    HttpResponse::Ok().content_type("application/json").body(m.to_string())
                }
                _ => HttpResponse::NoContent().finish(),
            })
        }
        _ => {
            // Last-Event-ID: resume just after that message of its conversation.
            let last = req.headers().get("Last-Event-ID").and_then(|v| v.to_str().ok()).map(str::to_string);
            let mut resume = None;
            if let Some(id) = last.filter(|s| !s.trim().is_empty()) {
                let Some(core_id) = msgid::decode(id.trim()).ok().and_then(|p| msgid::message_id(&p)) else {
                    return Ok(reply(Err(GatewayError::InvalidParameter("Last-Event-ID".into()))));
                };
                match state.core.message(&state.app, core_id).await {
                    Ok(Some(m)) => resume = Some((m.conv, m.id)),
                    Ok(None) => return Ok(reply(Err(GatewayError::NotFound))),
                    Err(e) => return Ok(reply(Err(e.into()))),
                }
            }
            Ok(sse::SseConn::response(
                state.core.clone(),
                state.notify.clone(),
                claims.sid,
                claims.platform,
                resume,
            ))
        }
    }
}

/// Mounts the gateway routes.
pub fn configure(state: web::Data<GatewayState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(state)
            .route("/notify", web::get().to(notify))
            .route("/inner/get_token", web::post().to(http::inner_get_token))
            .route("/inner/create_conversation", web::post().to(http::inner_create))
            .route("/inner/kickout_conversation", web::post().to(http::inner_kickout))
            .route("/inner/join_conversation", web::post().to(http::inner_join))
            .route("/inner/set_archive_conversations", web::post().to(http::inner_set_archive))
            .route("/create_conversation", web::post().to(http::create_conversation))
            .route("/join_conversation", web::post().to(http::join_conversation))
            .route("/leave_conversation", web::post().to(http::leave_conversation))
            .route("/check_joined_conversation", web::post().to(http::check_joined))
            .route("/mute_conversation", web::post().to(http::mute_conversation))
            .route("/get_joined_conversation", web::post().to(http::get_joined))
            .route("/get_conversation_detail", web::post().to(http::conversation_detail))
            .route("/get_lastone_msgid", web::post().to(http::lastone_msgid))
            .route("/send_msg", web::post().to(http::send_msg))
            .route(
                "/get_conversation_msg_by_range",
                web::post().to(http::history_route(HistoryQuery::ByRange)),
            )
            .route(
                "/get_conversation_30msg_before_the_id",
                web::post().to(http::history_route(HistoryQuery::Before)),
            )
            .route(
                "/get_conversation_30msg_after_the_id",
                web::post().to(http::history_route(HistoryQuery::After)),
            )
            .route("/get_conversation_last_30_msg", web::post().to(http::history_route(HistoryQuery::Last30)))
            .route(
                "/get_conversation_lastone_msg",
                web::post().to(http::history_route(HistoryQuery::LastOne)),
            );
    }
}
