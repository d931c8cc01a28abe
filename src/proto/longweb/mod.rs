//! The longweb front-end: business apps push with `/sendmessage`; browsers and apps listen on
//! `/ws/onsocket` (and, next, the JSONP long-poll). Each app is a tenant of the core (its appid is the
//! core app), its groups are live rooms. Apps come from the configuration and are re-read on SIGHUP.

pub mod callbacks;
pub mod conn;
pub mod params;
pub mod poll;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use actix::Actor;
use actix_web::http::header::ContentType;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use crate::config::LongwebSettings;
use crate::core::rooms::Publish;
use crate::core::Core;
use crate::domain::message::valid_id;
use crate::transport::access::AdminAccess;
use callbacks::CallLimits;
use conn::{LongwebWs, SocketRequest};

/// Connection kinds counted by `/state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Socket,
    Poll,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    socket_token: i64,
    socket_plain: i64,
    poll_token: i64,
    poll_plain: i64,
}

/// What the longweb handlers share.
pub struct LongwebState {
    pub core: Core,
    settings: RwLock<Arc<LongwebSettings>>,
    pub limits: CallLimits,
    counts: Mutex<HashMap<String, Counts>>,
    pub heartbeat_interval: Duration,
    pub client_timeout: Duration,
    pub queue_bytes: u64,
    boxes: Mutex<HashMap<(String, String, String), actix::Addr<poll::PollBox>>>,
}

impl LongwebState {
    pub fn new(
        core: Core,
        settings: LongwebSettings,
        heartbeat: Duration,
        timeout: Duration,
        queue: u64,
    ) -> Self {
        LongwebState {
            core,
            settings: RwLock::new(Arc::new(settings)),
            limits: CallLimits::default(),
            counts: Mutex::new(HashMap::new()),
            heartbeat_interval: heartbeat,
            client_timeout: timeout,
            queue_bytes: queue,
            boxes: Mutex::new(HashMap::new()),
        }
    }

    /// The current apps and limits.
    pub fn settings(&self) -> Arc<LongwebSettings> {
        self.settings.read().map(|s| s.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Replaces the apps and limits (SIGHUP); open connections stay.
    pub fn reload(&self, settings: LongwebSettings) {
        let mut guard = self.settings.write().unwrap_or_else(|p| p.into_inner());
        *guard = Arc::new(settings);
    }

    pub fn count(&self, appid: &str, kind: Kind, token: bool, delta: i64) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let c = counts.entry(appid.to_string()).or_default();
        let slot = match (kind, token) {
            (Kind::Socket, true) => &mut c.socket_token,
            (Kind::Socket, false) => &mut c.socket_plain,
            (Kind::Poll, true) => &mut c.poll_token,
            (Kind::Poll, false) => &mut c.poll_plain,
        };
        *slot += delta;
    }
}

fn ret(code: i64, msg: &str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(ContentType::json())
        .body(json!({"RetCode": code, "RetMsg": msg}).to_string())
}

/// `POST /sendmessage`: a business backend pushes a message.
async fn sendmessage(
    state: web::Data<Arc<LongwebState>>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let settings = state.settings();
    let allowed = req.peer_addr().is_some_and(|a| settings.allowips.iter().any(|n| n.contains(&a.ip())));
    if !allowed {
        return ret(-1, "not allow ip");
    }
    let push = match params::parse_push(&body) {
        Ok(p) => p,
        Err((code, msg)) => return ret(code, msg),
    };
    if settings.app(&push.appid).is_none() || (!push.to_app.is_empty() && push.to_app != push.appid) {
        return ret(-10002, "this appid no have permission");
    }
    let publish = Publish {
        app: push.appid,
        sender: push.sender,
        room: push.group,
        user: Some(push.user).filter(|u| !u.is_empty()),
        audience: push.audience,
        kind: "text".into(),
        payload: push.content,
        extension: String::new(),
        origin: None,
    };
    match state.core.publish(publish).await {
        Ok(_) => ret(0, "ok"),
        Err(e) => {
            log::error!("longweb sendmessage: {e}");
            ret(-3, "message not stored")
        }
    }
}

/// `GET /ws/onsocket?appid=&groupid=&userid=&token=` (or `groupids={"IDs":[…]}`).
async fn onsocket(
    state: web::Data<Arc<LongwebState>>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    let p = params::socket_params(req.query_string());
    let conn = LongwebWs::new(
        state.get_ref().clone(),
        SocketRequest { appid: p.appid, groups: p.groups, user: p.user, token: p.token },
    );
    let plumbing = conn.plumbing();
    let (_, res) = crate::transport::ws::start(conn, &req, payload, plumbing)?;
    Ok(res)
}

/// True for a usable JSONP callback name: JavaScript identifier characters, dots and `$`.
pub fn valid_callback(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '.'))
}

/// `<callback>({"RetCode":…,"RetMsg":…,"Message":…});` with the JSONP headers.
pub fn jsonp(callback: &str, code: i64, msg: &str, message: &str) -> HttpResponse {
    let body = json!({"RetCode": code, "RetMsg": msg, "Message": message});
    HttpResponse::Ok()
        .content_type("application/javascript; charset=UTF-8")
        .insert_header(("Access-Control-Allow-Origin", "*"))
        .insert_header(("Cache-Control", "no-cache"))
        .body(format!("{callback}({body});"))
}

/// `GET /poll/onpolling?appid=&groupid=&userid=&querykey=&jsonpcallback=&token=`.
async fn onpolling(state: web::Data<Arc<LongwebState>>, req: HttpRequest) -> HttpResponse {
    let q: HashMap<String, String> = serde_urlencoded::from_str::<Vec<(String, String)>>(req.query_string())
        .unwrap_or_default()
        .into_iter()
        .collect();
    let get = |k: &str| q.get(k).map(|v| v.trim().to_string()).unwrap_or_default();
    let callback = Some(get("jsonpcallback")).filter(|c| !c.is_empty()).unwrap_or_else(|| "callback".into());
    if !valid_callback(&callback) {
        return jsonp("callback", -100001, "invalid jsonpcallback", "");
    }
    let (appid, group, user, querykey) = (get("appid"), get("groupid"), get("userid"), get("querykey"));
    if appid.is_empty() || group.is_empty() || querykey.is_empty() {
        return jsonp(&callback, -100001, "appid, groupid and querykey can not be empty", "");
    }
    if !valid_id(&group) || (!user.is_empty() && !valid_id(&user)) {
        return jsonp(&callback, -100001, "bad groupid or userid", "");
    }
    let settings = state.settings();
    let Some(app) = settings.app(&appid).cloned() else {
        return jsonp(&callback, -100002, &format!("appid[{appid}] no exists"), "");
    };
    let token = get("token");
    let verified = if token.is_empty() {
        false
    } else {
        let checked = callbacks::check_token(
            &state.limits,
            &app,
            &group,
            &user,
            &token,
            settings.callback_timeout,
            settings.callback_concurrency,
        )
        .await;
        match checked {
            Ok(()) => true,
            Err(f) => return jsonp(&callback, f.code(), &f.message(&appid), ""),
        }
    };
    if let Some(api) = app.messageapi.as_deref() {
        let params = [
            ("appid", &appid[..]),
            ("groupid", &group[..]),
            ("querykey", &querykey[..]),
            ("userid", &user[..]),
        ];
        let answer = callbacks::query_message(
            &state.limits,
            &app,
            api,
            params,
            settings.callback_timeout,
            settings.callback_concurrency,
        )
        .await;
        match answer {
            Ok(Some(body)) => return jsonp(&callback, 0, "ok", &body),
            Ok(None) => {}
            Err(e) => return jsonp(&callback, -200009, &format!("messageapi failed: {e}"), ""),
        }
    }
    let wait = Duration::from_secs(app.timeout.max(1));
    let mailbox = state.poll_box(&appid, &group, &user, verified, wait);
    let (tx, rx) = tokio::sync::oneshot::channel();
    state.count(&appid, Kind::Poll, verified, 1);
    mailbox.do_send(poll::Poll { wait, answer: tx });
    let answer = rx.await;
    state.count(&appid, Kind::Poll, verified, -1);
    match answer {
        Ok(Some(content)) => jsonp(&callback, 0, "ok", &content),
        Ok(None) => jsonp(&callback, -100009, "time out", ""),
        // The box went away without answering: the poll could not be registered.
        Err(_) => jsonp(&callback, -100003, "register failed", ""),
    }
}

impl LongwebState {
    /// The long-poll box of (app, group, user), started when missing.
    fn poll_box(
        &self,
        app: &str,
        group: &str,
        user: &str,
        verified: bool,
        wait: Duration,
    ) -> actix::Addr<poll::PollBox> {
        let key = (app.to_string(), group.to_string(), user.to_string());
        let mut boxes = self.boxes.lock().unwrap_or_else(|p| p.into_inner());
        boxes.retain(|_, a| a.connected());
        if let Some(a) = boxes.get(&key) {
            return a.clone();
        }
        // Kept for a few poll timeouts after the last poll, so a client that polls again loses nothing.
        let idle_after = (wait * 3).max(Duration::from_secs(60));
        let addr = poll::PollBox::new(
            self.core.clone(),
            key.0.clone(),
            key.1.clone(),
            key.2.clone(),
            verified,
            idle_after,
            self.queue_bytes as usize,
        )
        .start();
        boxes.insert(key, addr.clone());
        addr
    }
}

/// `GET /state`: connection counts per app.
async fn app_state(
    state: web::Data<Arc<LongwebState>>,
    access: web::Data<AdminAccess>,
    req: HttpRequest,
) -> HttpResponse {
    if !access.allows(&req) {
        return HttpResponse::Forbidden()
            .insert_header(ContentType::json())
            .body(json!({"RetCode": -1, "RetMsg": "not allow ip"}).to_string());
    }
    HttpResponse::Ok().insert_header(ContentType::json()).body(state.apps_state().to_string())
}

impl LongwebState {
    /// `{"Apps": {<appid>: {"Name", "WebSocket": {"WithToken", "WithoutToken"}, "LongPoll": {…}}}}`:
    /// the configured apps and their open connections.
    pub fn apps_state(&self) -> Value {
        let settings = self.settings();
        let counts = self.counts.lock().map(|c| c.clone()).unwrap_or_default();
        let apps: BTreeMap<String, Value> = settings
            .apps
            .iter()
            .map(|a| {
                let c = counts.get(&a.appid).copied().unwrap_or_default();
                let v = json!({
                    "Name": a.name,
                    "WebSocket": {"WithToken": c.socket_token, "WithoutToken": c.socket_plain},
                    "LongPoll": {"WithToken": c.poll_token, "WithoutToken": c.poll_plain},
                });
                (a.appid.clone(), v)
            })
            .collect();
        json!({"Apps": apps})
    }
}

/// Mounts the longweb routes.
pub fn configure(state: Arc<LongwebState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::new(state))
            .route("/sendmessage", web::post().to(sendmessage))
            .route("/ws/onsocket", web::get().to(onsocket))
            .route("/poll/onpolling", web::get().to(onpolling))
            .route("/state", web::get().to(app_state));
    }
}
