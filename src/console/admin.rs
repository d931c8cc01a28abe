//! The console's administration calls, under `/console/api/`: the group API acting as the admin,
//! and the server's live state. Each call presents `[console] admin_token` in the `X-Admin-Token`
//! header; with no token configured, administration is open to loopback addresses only.

use std::net::IpAddr;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use crate::cluster::Cluster;
use crate::metrics::{parse_samples, METRICS};
use crate::proto::gru::GruState;
use crate::proto::longweb::LongwebState;
use crate::proto::wsim::auth::Actor;
use crate::proto::wsim::http::{self, Caller, Op};
use crate::proto::wsim::WsimState;

/// The header administration calls carry their token in.
pub const TOKEN_HEADER: &str = "X-Admin-Token";

/// Why an administration call is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("administration is disabled from this address: set [console] admin_token")]
    Disabled,
    #[error("admin token required")]
    Missing,
    #[error("wrong admin token")]
    Wrong,
}

impl Refusal {
    fn status(self) -> StatusCode {
        match self {
            Refusal::Disabled => StatusCode::FORBIDDEN,
            Refusal::Missing | Refusal::Wrong => StatusCode::UNAUTHORIZED,
        }
    }

    /// The answer: 401 or 403 with `{"code","message"}`.
    fn response(self) -> HttpResponse {
        HttpResponse::build(self.status())
            .json(json!({"code": self.status().as_u16(), "message": self.to_string()}))
    }
}

/// Equal, in a time that does not depend on where the first difference is.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a call presenting `presented` from `peer` may administer: with a configured token, the
/// token, from anywhere; without one, loopback peers only.
pub fn admit(configured: Option<&str>, presented: Option<&str>, peer: Option<IpAddr>) -> Result<(), Refusal> {
    match (configured, presented.filter(|p| !p.is_empty())) {
        (Some(_), None) => Err(Refusal::Missing),
        (Some(token), Some(p)) if same_secret(token.as_bytes(), p.as_bytes()) => Ok(()),
        (Some(_), Some(_)) => Err(Refusal::Wrong),
        (None, _) if peer.is_some_and(|ip| ip.is_loopback() || is_mapped_loopback(ip)) => Ok(()),
        (None, _) => Err(Refusal::Disabled),
    }
}

/// `::ffff:127.0.0.1` and the like (an IPv4 loopback peer on a dual-stack socket).
fn is_mapped_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        IpAddr::V4(_) => false,
    }
}

/// What the administration calls share.
pub struct ConsoleState {
    /// `[console] admin_token`.
    pub admin_token: Option<String>,
    pub wsim: web::Data<WsimState>,
    pub longweb: Arc<LongwebState>,
    pub gru: Arc<GruState>,
    pub cluster: Option<Cluster>,
}

impl ConsoleState {
    fn admit(&self, req: &HttpRequest) -> Result<(), Refusal> {
        let presented = req.headers().get(TOKEN_HEADER).and_then(|v| v.to_str().ok()).map(str::trim);
        admit(self.admin_token.as_deref(), presented, req.peer_addr().map(|a| a.ip()))
    }
}

/// `GET /console/api/admin`: 200 when the call may administer (the page asks before it shows the
/// administration), 401 or 403 with the reason otherwise.
async fn check(state: web::Data<ConsoleState>, req: HttpRequest) -> HttpResponse {
    match state.admit(&req) {
        Ok(()) => HttpResponse::Ok().json(json!({"code": 0, "token": state.admin_token.is_some()})),
        Err(refused) => refused.response(),
    }
}

/// `/console/api/wsim/{op}`: a group API call (same parameters and answers) acting as the admin.
async fn wsim_op(
    state: web::Data<ConsoleState>,
    req: HttpRequest,
    op: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    if let Err(refused) = state.admit(&req) {
        return refused.response();
    }
    match Op::from_name(&op) {
        Some(op) => http::answer(&state.wsim, op, &req, &body, &Caller::Known(Actor::Admin)).await,
        None => HttpResponse::NotFound().json(json!({"code": 404, "message": "no such call"})),
    }
}

/// `GET /console/api/server`: the metrics (histogram buckets and per-route HTTP counts left out),
/// longweb's apps and connections, the Gru nodes `/ticket` hands out, the cluster's nodes.
async fn server(state: web::Data<ConsoleState>, req: HttpRequest) -> HttpResponse {
    if let Err(refused) = state.admit(&req) {
        return refused.response();
    }
    let metrics: Vec<_> = parse_samples(&METRICS.render())
        .into_iter()
        .filter(|s| !s.name.ends_with("_bucket") && !s.name.starts_with("wsim_http_requests"))
        .map(|s| {
            let labels: serde_json::Map<String, Value> =
                s.labels.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
            json!({"name": s.name, "labels": labels, "value": s.value})
        })
        .collect();
    let gru_nodes: Vec<Value> =
        state.gru.ticket_nodes().into_iter().map(|n| json!({"name": n.name, "addr": n.addr})).collect();
    let cluster = state.cluster.as_ref().map(|c| {
        let nodes: Vec<Value> = c.members().into_iter().map(|m| json!({"id": m.id, "url": m.url})).collect();
        json!({"healthy": c.healthy(), "nodes": nodes})
    });
    HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(json!({
        "time_ms": chrono::Utc::now().timestamp_millis(),
        "metrics": metrics,
        "longweb": state.longweb.apps_state(),
        "gru_nodes": gru_nodes,
        "cluster": cluster,
    }))
}

/// Mounts the administration calls.
pub fn configure(state: web::Data<ConsoleState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.service(
            web::scope("/console/api")
                .app_data(state)
                .route("/admin", web::get().to(check))
                .route("/server", web::get().to(server))
                .route("/wsim/{op}", web::get().to(wsim_op))
                .route("/wsim/{op}", web::post().to(wsim_op)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_follows_the_token_or_loopback() {
        let lo: Option<IpAddr> = Some("127.0.0.1".parse().expect("ip"));
        let lo6: Option<IpAddr> = Some("::1".parse().expect("ip"));
        let mapped: Option<IpAddr> = Some("::ffff:127.0.0.1".parse().expect("ip"));
        let far: Option<IpAddr> = Some("192.0.2.7".parse().expect("ip"));
        type Case<'a> = (Option<&'a str>, Option<&'a str>, Option<IpAddr>, Result<(), Refusal>);
        let cases: Vec<Case<'_>> = vec![
            // No token configured: loopback only, whatever is presented.
            (None, None, lo, Ok(())),
            (None, None, lo6, Ok(())),
            (None, None, mapped, Ok(())),
            (None, Some("x"), lo, Ok(())),
            (None, None, far, Err(Refusal::Disabled)),
            (None, Some("anything"), far, Err(Refusal::Disabled)),
            (None, None, None, Err(Refusal::Disabled)),
            // A token configured: the token, from anywhere (loopback included).
            (Some("s3cret"), Some("s3cret"), far, Ok(())),
            (Some("s3cret"), Some("s3cret"), lo, Ok(())),
            (Some("s3cret"), None, lo, Err(Refusal::Missing)),
            (Some("s3cret"), Some(""), far, Err(Refusal::Missing)),
            (Some("s3cret"), Some("s3cre"), far, Err(Refusal::Wrong)),
            (Some("s3cret"), Some("s3cret "), far, Err(Refusal::Wrong)),
            (Some("s3cret"), Some("S3CRET"), lo, Err(Refusal::Wrong)),
        ];
        for (configured, presented, peer, want) in cases {
            assert_eq!(admit(configured, presented, peer), want, "{configured:?} {presented:?} {peer:?}");
        }
    }
}
