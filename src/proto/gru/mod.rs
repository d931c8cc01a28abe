//! The Gru front-end: `/ticket` (node assignment and token2) and the Socket.IO endpoint
//! `/socket.io/` (Engine.IO v3 and v4, polling and WebSocket with upgrade) carrying the Gru events
//! `auth`, `subscribe`, `msg` and `online` on live core rooms.

pub mod endpoint;
pub mod engineio;
pub mod events;
pub mod polling;
pub mod socket;
pub mod socketio;
pub mod ticket;
pub mod ws;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::Addr;
use actix_web::http::header::ContentType;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use crate::cluster::Cluster;
use crate::config::{GruNode, GruSettings, Token1Check};
use crate::core::Core;
use crate::domain::message::ConnId;
use crate::metrics::{FrontendMetrics, METRICS};
use crate::transport::ratelimit::PerIpRate;
use ticket::{md5_token1, nodes_for, Token2};

/// What the Gru handlers share.
pub struct GruState {
    pub core: Core,
    /// The nodes `/ticket` hands out without a cluster.
    pub nodes: Vec<GruNode>,
    /// With a cluster, its live nodes are handed out instead.
    pub cluster: Option<Cluster>,
    pub token1: Token1Check,
    pub token2: Token2,
    pub callback_timeout: Duration,
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    /// How long a socket may stay without a successful `auth` before it is disconnected.
    pub auth_timeout: Duration,
    /// Largest Engine.IO message or polling body accepted from a client.
    pub max_payload: usize,
    /// Bytes of packets that may wait for a slow client before its session is closed.
    pub queue_bytes: usize,
    /// The front-end's metric handles (looked up once).
    pub metrics: FrontendMetrics,
    /// New Engine.IO sessions per client address.
    pub handshakes: PerIpRate,
    /// The rate limits (`[limits]`).
    pub limits: Arc<crate::transport::ratelimit::Limits>,
    /// Polling sessions by sid (WebSocket sessions need no lookup).
    sessions: Mutex<HashMap<String, (Addr<polling::GruPoll>, ConnId)>>,
}

impl GruState {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        core: Core,
        nodes: Vec<GruNode>,
        cluster: Option<Cluster>,
        settings: &GruSettings,
        token2: Token2,
        callback_timeout: Duration,
        queue_bytes: usize,
    ) -> GruState {
        GruState {
            core,
            nodes,
            cluster,
            token1: settings.token1.clone(),
            token2,
            callback_timeout,
            ping_interval: settings.ping_interval,
            ping_timeout: settings.ping_timeout,
            auth_timeout: settings.auth_timeout,
            max_payload: crate::transport::ws::MAX_FRAME,
            queue_bytes,
            metrics: METRICS.frontend("gru"),
            handshakes: PerIpRate::new(settings.handshakes_per_ip_per_sec),
            limits: Arc::new(crate::transport::ratelimit::Limits::none()),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// The nodes a ticket chooses from: the cluster's live nodes, or the configured ones.
    pub fn ticket_nodes(&self) -> Vec<GruNode> {
        match &self.cluster {
            Some(c) => c
                .members()
                .into_iter()
                .map(|m| GruNode { name: format!("node_{}", m.id), addr: m.url })
                .collect(),
            None => self.nodes.clone(),
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Addr<polling::GruPoll>, ConnId)>> {
        self.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn remember_session(&self, sid: &str, addr: Addr<polling::GruPoll>, conn: ConnId) {
        self.sessions().insert(sid.to_string(), (addr, conn));
    }

    pub fn find_session(&self, sid: &str) -> Option<(Addr<polling::GruPoll>, ConnId)> {
        self.sessions().get(sid).cloned()
    }

    pub fn forget_session(&self, sid: &str) {
        self.sessions().remove(sid);
    }

    /// Polling sessions open now.
    pub fn polling_sessions(&self) -> usize {
        self.sessions().len()
    }
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
    let valid = crate::domain::message::valid_id;
    if !valid(&id) || !valid(&user_type) || name.chars().any(char::is_control) || name.len() > 255 {
        return failure(710, "bad parameter");
    }
    if !token1_ok(&state, &id, &name, &user_type, &token1).await {
        return failure(711, "invalid token1");
    }
    let nodes = state.ticket_nodes();
    let order = nodes_for(&nodes, &id);
    let Some((first, backups)) = order.split_first() else { return failure(701, "no node available") };
    let now_ms = crate::domain::ids::now_ms();
    let token2 = state.token2.issue(&id, &name, &user_type, &token1, now_ms / 1000);
    let backup: Vec<Value> = backups.iter().map(|n| json!({"addr": n.addr, "name": n.name})).collect();
    answer(&json!({
        "success": true,
        "errorCode": 0,
        "msg": "",
        "data": {"time": now_ms, "addr": first.addr, "name": first.name, "token": token2, "backupNodes": backup},
    }))
}

/// `/ticket` with another method than GET.
async fn ticket_method() -> HttpResponse {
    HttpResponse::MethodNotAllowed()
        .insert_header((actix_web::http::header::ALLOW, "GET"))
        .insert_header(ContentType::json())
        .body(json!({"success": false, "errorCode": 405, "msg": "method not allowed"}).to_string())
}

fn ticket_resource() -> actix_web::Resource {
    web::resource("/ticket").route(web::get().to(ticket)).default_service(web::to(ticket_method))
}

/// Mounts `/ticket`.
pub fn configure_ticket(state: Arc<GruState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::new(state)).service(ticket_resource());
    }
}

/// Mounts `/ticket` and the Socket.IO endpoint.
pub fn configure(state: Arc<GruState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::new(state))
            .service(ticket_resource())
            .route("/socket.io/", web::route().to(endpoint::socket_io))
            .route("/socket.io", web::route().to(endpoint::socket_io));
    }
}
