//! The Gru front-end. So far `/ticket` (node assignment and token2) and the Engine.IO / Socket.IO
//! codecs; the Socket.IO endpoint (`auth`, `subscribe`, `msg`, `online` over Engine.IO v3/v4, polling
//! and websocket) is the next step.

pub mod engineio;
pub mod socketio;
pub mod ticket;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::ContentType;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use crate::config::{GruNode, Token1Check};
use ticket::{md5_token1, nodes_for, Token2};

/// What the Gru handlers share.
pub struct GruState {
    pub nodes: Vec<GruNode>,
    pub token1: Token1Check,
    pub token2: Token2,
    pub callback_timeout: Duration,
}

fn answer(v: &Value) -> HttpResponse {
    HttpResponse::Ok().insert_header(ContentType::json()).body(v.to_string())
}

fn failure(code: u32, msg: &str) -> HttpResponse {
    answer(&json!({"success": false, "errorCode": code, "msg": msg}))
}

async fn token1_ok(state: &GruState, id: &str, name: &str, user_type: &str, token1: &str) -> bool {
    match &state.token1 {
        Token1Check::Off => true,
        Token1Check::Md5(salt) => md5_token1(id, name, salt) == token1.to_ascii_lowercase(),
        Token1Check::Callback(url) => {
            let Ok(query) = serde_urlencoded::to_string([
                ("userId", id),
                ("userName", name),
                ("userType", user_type),
                ("token1", token1),
            ]) else {
                return false;
            };
            let sep = if url.contains('?') { '&' } else { '?' };
            let client = awc::Client::builder().timeout(state.callback_timeout).finish();
            let Ok(mut res) = client.get(format!("{url}{sep}{query}")).send().await else { return false };
            let Ok(body) = res.body().limit(64 * 1024).await else { return false };
            serde_json::from_slice::<Value>(&body).is_ok_and(|v| v["success"] == json!(true))
        }
    }
}

/// `GET /ticket?userType=&userName=&userId=&token1=`.
async fn ticket(state: web::Data<Arc<GruState>>, req: HttpRequest) -> HttpResponse {
    let q: HashMap<String, String> = serde_urlencoded::from_str::<Vec<(String, String)>>(req.query_string())
        .unwrap_or_default()
        .into_iter()
        .collect();
    let get = |k: &str| q.get(k).map(|v| v.trim().to_string()).unwrap_or_default();
    let (id, name, user_type, token1) = (get("userId"), get("userName"), get("userType"), get("token1"));
    let needs_token1 = state.token1 != Token1Check::Off;
    if id.is_empty() || name.is_empty() || user_type.is_empty() || (needs_token1 && token1.is_empty()) {
        return failure(710, "missing parameter");
    }
    if !crate::core::message::valid_id(&id) || name.chars().any(char::is_control) || name.len() > 255 {
        return failure(710, "bad parameter");
    }
    if !token1_ok(&state, &id, &name, &user_type, &token1).await {
        return failure(711, "invalid token1");
    }
    let order = nodes_for(&state.nodes, &id);
    let Some((first, backups)) = order.split_first() else { return failure(701, "no node available") };
    let now_ms = crate::core::ids::now_ms();
    let token2 = state.token2.issue(&id, &name, &user_type, now_ms / 1000);
    let backup: Vec<Value> = backups.iter().map(|n| json!({"addr": n.addr, "name": n.name})).collect();
    answer(&json!({
        "success": true,
        "errorCode": 0,
        "msg": "",
        "data": {"time": now_ms, "addr": first.addr, "name": first.name, "token": token2, "backupNodes": backup},
    }))
}

/// Mounts `/ticket`.
pub fn configure(state: Arc<GruState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::new(state)).route("/ticket", web::get().to(ticket));
    }
}
