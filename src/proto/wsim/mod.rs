//! The wsim front-end: `/entry` WebSocket signaling and the group HTTP API, at `/` and under `/wsim/`.

pub mod auth;
pub mod codec;
pub mod conn;
pub mod http;
pub mod media;
pub mod picture;
pub mod render;
pub mod snap;
pub mod upload;

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};

use crate::core::Core;
use conn::{ConnSettings, EntryConn};

/// What the wsim handlers share.
pub struct WsimState {
    pub core: Core,
    /// Who users are (`[wsim] auth`).
    pub auth: Arc<auth::WsimAuth>,
    /// Networks allowed to call `/inner/wsim_token` (the gateway's `inner_allow`).
    pub inner_allow: Vec<ipnet::IpNet>,
    /// The rate limits (`[limits]`).
    pub limits: Arc<crate::transport::ratelimit::Limits>,
    pub app: String,
    pub ok_code: i64,
    pub default_avatar: String,
    pub default_group_snap: String,
    pub conn: Arc<ConnSettings>,
    pub snaps: snap::SnapSettings,
}

async fn entry(
    state: web::Data<WsimState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    let rate = state.limits.conn_rate(req.peer_addr().map(|a| a.ip()));
    let conn = EntryConn::new(state.core.clone(), state.conn.clone(), rate);
    let plumbing = conn.plumbing();
    let (_, res) = crate::transport::ws::start(conn, &req, payload, plumbing)?;
    Ok(res)
}

/// Mounts the wsim routes.
pub fn configure(state: web::Data<WsimState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(state);
        for prefix in ["", "/wsim"] {
            cfg.route(&format!("{prefix}/entry"), web::get().to(entry));
            for (name, op) in http::Op::ALL {
                let handler = move |state: web::Data<WsimState>, req: HttpRequest, body: web::Bytes| async move {
                    http::answer(&state, op, &req, &body, &http::Caller::FromParams).await
                };
                cfg.route(&format!("{prefix}/{name}"), web::get().to(handler));
                cfg.route(&format!("{prefix}/{name}"), web::post().to(handler));
            }
            cfg.route(&format!("{prefix}/inner/wsim_token"), web::get().to(http::inner_wsim_token));
            cfg.route(&format!("{prefix}/inner/wsim_token"), web::post().to(http::inner_wsim_token));
        }
    }
}
