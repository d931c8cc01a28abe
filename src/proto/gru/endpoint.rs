//! `/socket.io/`: the Engine.IO HTTP endpoint. Routes a request by `EIO`, `transport` and `sid` to a
//! new session (handshake), a polling session's GET or POST, or a WebSocket (direct or upgrade).
//! Errors are the Engine.IO ones: HTTP 400 with `{"code","message"}`.

use std::collections::HashMap;
use std::sync::Arc;

use actix::Actor;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};
use futures_util::StreamExt;
use serde_json::json;

use super::engineio::{self, Eio, Packet};
use super::polling::{GruPoll, PayloadMode, PollBody, PollError, PollGet, PollPost};
use super::socket::GruSocket;
use super::ws::GruWs;
use super::GruState;
use crate::core::next_conn_id;

/// The Engine.IO error codes.
#[derive(Debug, Clone, Copy)]
enum EioFailure {
    UnknownTransport = 0,
    UnknownSid = 1,
    BadHandshakeMethod = 2,
    BadRequest = 3,
    /// Not a code of the reference server's (there, 4 is "Forbidden", from its `allowRequest`).
    TooManyHandshakes = 4,
    UnsupportedVersion = 5,
}

impl EioFailure {
    fn message(self) -> &'static str {
        match self {
            EioFailure::UnknownTransport => "Transport unknown",
            EioFailure::UnknownSid => "Session ID unknown",
            EioFailure::BadHandshakeMethod => "Bad handshake method",
            EioFailure::BadRequest => "Bad request",
            EioFailure::UnsupportedVersion => "Unsupported protocol version",
            EioFailure::TooManyHandshakes => "Too many handshakes",
        }
    }
}

impl From<PollError> for EioFailure {
    fn from(e: PollError) -> Self {
        match e {
            PollError::UnknownSession => EioFailure::UnknownSid,
            PollError::BadRequest => EioFailure::BadRequest,
        }
    }
}

/// Lets browsers on other origins poll (the reference server's `cors` option, open to all).
fn with_cors(req: &HttpRequest, mut res: HttpResponseBuilder) -> HttpResponseBuilder {
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        res.insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone()))
            .insert_header((header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true"));
    }
    res
}

fn failure(req: &HttpRequest, f: EioFailure) -> HttpResponse {
    let status = match f {
        EioFailure::TooManyHandshakes => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::BAD_REQUEST,
    };
    with_cors(req, HttpResponse::build(status))
        .content_type("application/json")
        .body(json!({"code": f as u8, "message": f.message()}).to_string())
}

fn text(req: &HttpRequest, body: String) -> HttpResponse {
    with_cors(req, HttpResponse::Ok()).content_type("text/plain; charset=UTF-8").body(body)
}

/// A GET's answer: a binary payload as `application/octet-stream` (what XHR2 clients of Engine.IO v3
/// take as data), else text.
fn poll_answer(req: &HttpRequest, body: PollBody) -> HttpResponse {
    if body.binary {
        with_cors(req, HttpResponse::Ok()).content_type("application/octet-stream").body(body.bytes)
    } else {
        with_cors(req, HttpResponse::Ok()).content_type("text/plain; charset=UTF-8").body(body.bytes)
    }
}

/// Every method on `/socket.io/`.
pub async fn socket_io(
    state: web::Data<Arc<GruState>>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    let gru = state.get_ref().clone();
    if req.method() == Method::OPTIONS {
        let mut res = with_cors(&req, HttpResponse::NoContent());
        res.insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST"));
        if let Some(h) = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            res.insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, h.clone()));
        }
        return Ok(res.finish());
    }
    let q: HashMap<String, String> = serde_urlencoded::from_str::<Vec<(String, String)>>(req.query_string())
        .unwrap_or_default()
        .into_iter()
        .collect();
    let Some(eio) = q.get("EIO").and_then(|v| Eio::from_query(v)) else {
        return Ok(failure(&req, EioFailure::UnsupportedVersion));
    };
    if q.contains_key("j") {
        // JSONP polling (very old browsers) is not offered.
        return Ok(failure(&req, EioFailure::BadRequest));
    }
    let sid = q.get("sid").filter(|s| !s.is_empty()).cloned();
    // A client that reconnects in a tight loop gets refused instead of a session each time.
    if sid.is_none() {
        if let Some(peer) = req.peer_addr() {
            if !gru.handshakes.allow(peer.ip()) {
                crate::metrics::METRICS.handshakes_refused.inc();
                return Ok(failure(&req, EioFailure::TooManyHandshakes));
            }
        }
    }
    // Engine.IO v3 clients that can take binary (XHR2) leave `b64` out.
    let binary = eio == Eio::V3 && q.get("b64").is_none_or(|v| v.is_empty());
    match q.get("transport").map(String::as_str) {
        Some("websocket") => websocket(gru, &req, payload, eio, sid),
        Some("polling") => Ok(polling(gru, &req, payload, eio, sid, binary).await),
        _ => Ok(failure(&req, EioFailure::UnknownTransport)),
    }
}

fn websocket(
    gru: Arc<GruState>,
    req: &HttpRequest,
    payload: web::Payload,
    eio: Eio,
    sid: Option<String>,
) -> Result<HttpResponse, actix_web::Error> {
    let is_upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v: &HeaderValue| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if req.method() != Method::GET || !is_upgrade {
        return Ok(failure(req, EioFailure::BadRequest));
    }
    let actor = match sid {
        None => {
            GruWs::direct(gru.clone(), GruSocket::new(eio, next_conn_id(), gru.limits.conn_rate(peer(req))))
        }
        Some(sid) => {
            let Some((poll, conn)) = gru.find_session(&sid) else {
                return Ok(failure(req, EioFailure::UnknownSid));
            };
            // Replaced by the polling session's socket (rate included) at the hand-over.
            let mut sock = GruSocket::new(eio, conn, gru.limits.conn_rate(peer(req)));
            sock.sid = sid;
            GruWs::upgrade(gru.clone(), sock, poll)
        }
    };
    let plumbing = actor.plumbing();
    let (_, res) = crate::transport::ws::start(actor, req, payload, plumbing)?;
    Ok(res)
}

async fn polling(
    gru: Arc<GruState>,
    req: &HttpRequest,
    payload: web::Payload,
    eio: Eio,
    sid: Option<String>,
    binary: bool,
) -> HttpResponse {
    let method = req.method().clone();
    let mode = if binary { PayloadMode::Binary } else { PayloadMode::Text };
    let poll = match sid {
        None if method == Method::GET => {
            let sock = GruSocket::new(eio, next_conn_id(), gru.limits.conn_rate(peer(req)));
            let (sid, conn) = (sock.sid.clone(), sock.conn);
            let addr = GruPoll::new(gru.clone(), sock, binary).start();
            gru.remember_session(&sid, addr.clone(), conn);
            addr
        }
        None => return failure(req, EioFailure::BadHandshakeMethod),
        Some(sid) => match gru.find_session(&sid) {
            Some((addr, _)) => addr,
            None => return failure(req, EioFailure::UnknownSid),
        },
    };
    if method == Method::GET {
        let waiting = match poll.send(PollGet).await {
            Ok(Ok(rx)) => rx,
            Ok(Err(e)) => return failure(req, e.into()),
            Err(_) => return failure(req, EioFailure::UnknownSid),
        };
        // The session answers when it has packets; a session that ends answers `close`.
        let body =
            waiting.await.unwrap_or_else(|_| PollBody::of(eio, mode, &[engineio::encode(&Packet::Close)]));
        return poll_answer(req, body);
    }
    if method != Method::POST {
        return failure(req, EioFailure::BadRequest);
    }
    let binary_body = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/octet-stream"));
    let body = match read_body(payload, gru.max_payload).await {
        Ok(b) => b,
        Err(status) => {
            return with_cors(req, HttpResponse::build(status)).body(status.canonical_reason().unwrap_or(""))
        }
    };
    match poll.send(PollPost { body, binary: binary_body }).await {
        Ok(Ok(())) => text(req, "ok".into()),
        Ok(Err(e)) => failure(req, e.into()),
        Err(_) => failure(req, EioFailure::UnknownSid),
    }
}

/// The request body, at most `limit` bytes.
async fn read_body(mut payload: web::Payload, limit: usize) -> Result<Vec<u8>, StatusCode> {
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| StatusCode::BAD_REQUEST)?;
        if body.len() + chunk.len() > limit {
            return Err(StatusCode::PAYLOAD_TOO_LARGE);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn peer(req: &HttpRequest) -> Option<std::net::IpAddr> {
    req.peer_addr().map(|a| a.ip())
}
