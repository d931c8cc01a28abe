//! App wiring: opens the store, starts the core, binds the listeners and mounts every front-end.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use std::time::Duration;

use actix_http::HttpService;
use actix_service::{map_config, IntoServiceFactory};
use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{AppConfig, Service};
use actix_web::{web, App, HttpResponse, HttpServer};

use crate::cluster::Cluster;
use crate::config::GruNode;
use crate::config::Settings;
use crate::core::service::CoreSettings;
use crate::core::Core;
use crate::metrics::METRICS;
use crate::proto::gateway::{self, notify::NotifySettings, token::TokenKeys, GatewayState};
use crate::proto::gru::{self, ticket::Token2, GruState};
use crate::proto::longweb::{self, LongwebState};
use crate::proto::wsim::auth::WsimAuth;
use crate::proto::wsim::snap::{Origin, SnapSettings};
use crate::proto::wsim::upload::UploadLimits;
use crate::proto::wsim::upload::{self, UploadSettings};
use crate::proto::wsim::{self, conn::ConnSettings, WsimState};
use crate::store::{Store, StoreError};
use crate::transport::access::AdminAccess;
use crate::transport::conncap::{ConnCap, HeldBody};
use crate::transport::ratelimit::Limits;
use crate::transport::slowbody::MinRate;
use crate::transport::upgraded;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {0}: {1}")]
    Bind(String, std::io::Error),
}

/// A started server.
pub struct Running {
    pub addrs: Vec<SocketAddr>,
    pub public_url: String,
    server: actix_web::dev::Server,
    /// Servers on extra addresses (the Gru ticket service), running on their own.
    extra: Vec<actix_web::dev::ServerHandle>,
    core: Core,
    cluster: Option<Cluster>,
}

impl Running {
    /// Serves until SIGINT/SIGTERM (or [`Running::handle`]'s stop), then writes out everything
    /// accepted before returning.
    pub async fn wait(self) -> std::io::Result<()> {
        let res = self.server.await;
        for h in self.extra {
            h.stop(true).await;
        }
        log::info!("stopped accepting; flushing");
        if let Some(c) = &self.cluster {
            c.leave().await;
        }
        self.core.flush().await;
        log::info!("flushed; bye");
        res
    }

    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }
}

/// Re-reads the longweb apps from the configuration file on SIGHUP; connections stay open.
fn spawn_reloader(path: Option<std::path::PathBuf>, state: Arc<LongwebState>) {
    actix_web::rt::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            log::warn!("cannot listen for SIGHUP; longweb apps will not be reloaded");
            return;
        };
        while hup.recv().await.is_some() {
            let Some(path) = path.clone() else {
                log::info!("SIGHUP: no configuration file to reload");
                continue;
            };
            let loaded = actix_web::rt::task::spawn_blocking(move || {
                Settings::read_file(&path)
                    .and_then(|f| crate::config::LongwebSettings::from_config(&f.longweb))
                    .map_err(|e| e.to_string())
            })
            .await;
            match loaded {
                Ok(Ok(settings)) => {
                    log::info!("SIGHUP: {} longweb apps loaded", settings.apps.len());
                    state.reload(settings);
                }
                Ok(Err(e)) => log::error!("SIGHUP: configuration not reloaded: {e}"),
                Err(e) => log::error!("SIGHUP: {e}"),
            }
        }
    });
}

/// The origins group snaps may fetch avatars from: `[wsim] avatar_fetch_allow`, and the origin of a
/// configured default avatar.
fn avatar_origins(wsim: &crate::config::WsimSettings) -> Result<Vec<Origin>, StartError> {
    let mut origins = Vec::new();
    for o in &wsim.avatar_fetch_allow {
        let origin = Origin::of(o)
            .ok_or_else(|| StartError::Config(format!("[wsim] avatar_fetch_allow: {o} is not an origin")))?;
        origins.push(origin);
    }
    origins.extend(Origin::of(&wsim.default_avatar));
    Ok(origins)
}

async fn metrics(access: web::Data<AdminAccess>, req: actix_web::HttpRequest) -> HttpResponse {
    if !access.allows(&req) {
        return HttpResponse::Forbidden().body("forbidden: [admin] allow does not include this address\n");
    }
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(METRICS.render())
}

async fn healthz(store: web::Data<Store>, cluster: web::Data<Option<Cluster>>) -> HttpResponse {
    if !store.is_healthy() {
        return HttpResponse::ServiceUnavailable().content_type("text/plain").body("database unavailable");
    }
    if cluster.as_ref().as_ref().is_some_and(|c| !c.healthy()) {
        return HttpResponse::ServiceUnavailable().content_type("text/plain").body("redis unavailable");
    }
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

/// One access log line (target `wsim::http`, level info): client address, request line, status,
/// body size (`-` when streamed) and the time to the answer's head.
fn access_log(
    peer: Option<SocketAddr>,
    line: &str,
    status: u16,
    size: BodySize,
    started: std::time::Instant,
) {
    let peer = peer.map_or_else(|| "-".to_string(), |p| p.ip().to_string());
    let size = match size {
        BodySize::Sized(n) => n.to_string(),
        BodySize::None => "0".to_string(),
        BodySize::Stream => "-".to_string(),
    };
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    log::info!(target: "wsim::http", "{peer} \"{line}\" {status} {size} {ms:.3}ms");
}

/// Opens the store, starts the core and binds every listen address.
pub async fn start(settings: Settings) -> Result<Running, StartError> {
    let (url, pool) = (settings.database_url.clone(), settings.pool_size);
    let store = actix_web::rt::task::spawn_blocking(move || Store::connect(&url, pool))
        .await
        .map_err(|_| StoreError::Cancelled)??
        .with_call_timeout(settings.store_call_timeout);
    store.watch_health();
    log::info!("store ready ({:?})", store.backend());
    let core = Core::start(
        store.clone(),
        &CoreSettings {
            node_id: settings.node_id,
            max_batch: settings.max_batch,
            commit_gap: settings.commit_gap,
        },
    );

    let mut listeners = Vec::new();
    for addr in &settings.listen {
        let l = TcpListener::bind(addr).map_err(|e| StartError::Bind(addr.clone(), e))?;
        listeners.push(l);
    }
    let addrs: Vec<SocketAddr> = listeners.iter().filter_map(|l| l.local_addr().ok()).collect();
    let public_url = settings
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://127.0.0.1:{}", addrs.first().map(|a| a.port()).unwrap_or(6060)));

    let cluster = match &settings.cluster {
        Some(c) => Some(
            Cluster::join(c, settings.node_id, &public_url, &core)
                .await
                .map_err(|e| StartError::Config(format!("cluster: {e}")))?,
        ),
        None => None,
    };

    if let Some(push) = &settings.push {
        crate::push::start(core.clone(), push.clone());
    }
    let or_default = |v: &str, default: String| if v.is_empty() { default } else { v.to_string() };
    let auth_key = match settings.wsim.auth.mode {
        crate::config::WsimAuthMode::Token => crate::transport::secret::load_or_create(
            &settings.wsim.auth.secret,
            &settings.data_dir,
            "wsim-auth.key",
        )
        .map_err(|e| StartError::Config(format!("[wsim] auth key: {e}")))?,
        _ => Vec::new(),
    };
    let wsim_auth = Arc::new(WsimAuth::new(&settings.wsim.auth, auth_key));
    let limits = Arc::new(Limits::new(
        settings.limits.exempt.clone(),
        settings.limits.http_requests_per_ip_per_sec,
        settings.limits.messages_per_conn_per_sec,
    ));
    let wsim_state = web::Data::new(WsimState {
        auth: wsim_auth.clone(),
        inner_allow: settings.gateway.inner_allow.clone(),
        core: core.clone(),
        app: settings.default_app.clone(),
        ok_code: settings.wsim.ok_code,
        default_avatar: or_default(
            &settings.wsim.default_avatar,
            format!("{public_url}/emopic/default_avatar.jpg"),
        ),
        default_group_snap: or_default(
            &settings.wsim.default_group_snap,
            format!("{public_url}/emovideo/default_group.jpg"),
        ),
        limits: limits.clone(),
        conn: Arc::new(ConnSettings {
            auth: wsim_auth.clone(),
            app: settings.default_app.clone(),
            heartbeat_interval: settings.heartbeat_interval,
            client_timeout: settings.client_timeout,
            outbound_queue_bytes: settings.outbound_queue_bytes,
        }),
        snaps: SnapSettings {
            data_dir: settings.data_dir.clone(),
            public_url: public_url.clone(),
            fetch_timeout: settings.wsim.avatar_fetch_timeout,
            max_avatar_bytes: settings.wsim.avatar_max_bytes,
            fetch_allow: avatar_origins(&settings.wsim)?,
        },
    });
    let keys = TokenKeys::load(&settings.gateway.jwt_key, &settings.data_dir, settings.gateway.token_ttl)
        .map_err(|e| StartError::Config(e.to_string()))?;
    let gateway_state = web::Data::new(GatewayState {
        core: core.clone(),
        app: settings.default_app.clone(),
        keys,
        inner_allow: settings.gateway.inner_allow.clone(),
        notify: Arc::new(NotifySettings {
            app: settings.default_app.clone(),
            heartbeat_interval: settings.heartbeat_interval,
            client_timeout: settings.client_timeout,
            outbound_queue_bytes: settings.outbound_queue_bytes,
            poll_timeout: settings.gateway.poll_timeout,
        }),
    });
    let data_dir = settings.data_dir.clone();
    actix_web::rt::task::spawn_blocking(move || upload::ensure_defaults(&data_dir))
        .await
        .map_err(|e| StartError::Config(e.to_string()))?
        .map_err(|e| StartError::Config(format!("media folders: {e}")))?;
    let (max_audio, max_image, max_video) = settings.upload_limits;
    let upload_settings = web::Data::new(UploadSettings {
        uploads: Arc::new(UploadLimits::new(settings.limits.uploads_per_min, limits.clone())),
        auth: wsim_auth.clone(),
        app: settings.default_app.clone(),
        data_dir: settings.data_dir.clone(),
        public_url: public_url.clone(),
        max_audio,
        max_image,
        max_video,
    });
    let longweb_state = Arc::new(LongwebState::new(
        core.clone(),
        settings.longweb.clone(),
        settings.heartbeat_interval,
        settings.client_timeout,
        settings.outbound_queue_bytes,
    ));
    spawn_reloader(settings.config_path.clone(), longweb_state.clone());
    let gru_nodes = settings
        .gru
        .nodes
        .clone()
        .unwrap_or_else(|| vec![GruNode { name: "node_1".into(), addr: public_url.clone() }]);
    let gru = &settings.gru;
    let token2 = Token2::load(gru.token2.clone(), &gru.token2_secret, &settings.data_dir, gru.token2_ttl)
        .map_err(|e| StartError::Config(format!("gru token2 key: {e}")))?;
    let mut gru = GruState::new(
        core.clone(),
        gru_nodes,
        cluster.clone(),
        &settings.gru,
        token2,
        settings.longweb.callback_timeout,
        settings.outbound_queue_bytes as usize,
    );
    gru.limits = limits.clone();
    let gru_state = Arc::new(gru);
    let store_data = web::Data::new(store);
    let cluster_data = web::Data::new(cluster.clone());
    let ticket_state = gru_state.clone();
    let admin_access = web::Data::new(AdminAccess::new(settings.admin_allow.clone()));
    let console_state = web::Data::new(crate::console::admin::ConsoleState {
        admin_token: settings.console_admin_token.clone(),
        wsim: wsim_state.clone(),
        longweb: longweb_state.clone(),
        gru: gru_state.clone(),
        cluster: cluster.clone(),
    });

    let http_limits = limits.clone();
    let (body_rate, body_grace) = (settings.limits.body_min_bytes_per_sec, settings.limits.body_grace);
    let conn_cap = ConnCap::new(settings.limits.connections_per_ip);
    let make_app = move || {
        let limits = http_limits.clone();
        let (cap, cap_limits) = (conn_cap.clone(), http_limits.clone());
        App::new()
            // Request bodies keep a minimum average rate (WebSocket streams are not bodies).
            .wrap_fn(move |mut req, srv| {
                use actix_web::HttpMessage;
                let upgrade = req.headers().contains_key(actix_web::http::header::UPGRADE);
                if body_rate > 0 && !upgrade {
                    let body = MinRate::new(req.take_payload(), body_grace, body_rate);
                    req.set_payload(actix_web::dev::Payload::Stream { payload: Box::pin(body) });
                }
                srv.call(req)
            })
            // Open requests per client address ([limits] connections_per_ip): 429 beyond; a place is
            // held as long as the response (a WebSocket, an SSE stream) lives.
            .wrap_fn(move |req, srv| {
                use futures_util::future::Either;
                let ip = req.peer_addr().map(|a| a.ip());
                match cap.enter(ip, cap_limits.exempt(ip)) {
                    Some(held) => {
                        let fut = srv.call(req);
                        Either::Left(async move {
                            let res = fut.await?;
                            Ok(res.map_body(|_, body| HeldBody::new(body, held)).map_into_left_body())
                        })
                    }
                    None => {
                        METRICS.limited("connection");
                        let refused = HttpResponse::TooManyRequests()
                            .json(serde_json::json!({"code": 429, "message": "too many open connections"}));
                        let res = req.into_response(refused).map_into_right_body();
                        Either::Right(async move { Ok(res) })
                    }
                }
            })
            // Requests per client address ([limits] http_requests_per_ip_per_sec): 429 beyond.
            .wrap_fn(move |req, srv| {
                use futures_util::future::Either;
                if limits.http_allow(req.peer_addr().map(|a| a.ip())) {
                    let fut = srv.call(req);
                    return Either::Left(async move { fut.await.map(|r| r.map_into_left_body()) });
                }
                METRICS.limited("http");
                let refused = HttpResponse::TooManyRequests()
                    .insert_header(("Retry-After", "1"))
                    .json(serde_json::json!({"code": 429, "message": "too many requests"}));
                let res = req.into_response(refused).map_into_right_body();
                Either::Right(async move { Ok(res) })
            })
            // The outermost layer boxes the request's future: the HTTP/1 dispatcher keeps room for it
            // inline for the connection's whole life (an SSE stream's or a long-poll's too, long after
            // its request was answered), so a pointer there instead of every middleware's state saves
            // kilobytes per idle connection. It counts the answer and writes the access log line when
            // the answer's head is ready (actix-web's Logger would keep its state in the body, for as
            // long as a WebSocket lives).
            .wrap_fn(|req, srv| {
                let started = std::time::Instant::now();
                let peer = req.peer_addr();
                let line = log::log_enabled!(target: "wsim::http", log::Level::Info)
                    .then(|| format!("{} {} {:?}", req.method(), req.uri(), req.version()));
                let fut = srv.call(req);
                Box::pin(async move {
                    let res = fut.await?;
                    let route = res.request().match_pattern().unwrap_or_else(|| "unmatched".to_string());
                    let status = res.status().as_u16();
                    METRICS.http_request(&route, status);
                    if let Some(line) = line {
                        access_log(peer, &line, status, res.response().body().size(), started);
                    }
                    Ok(res)
                })
                    as futures_util::future::LocalBoxFuture<'static, Result<_, actix_web::Error>>
            })
            .app_data(store_data.clone())
            .app_data(cluster_data.clone())
            .app_data(admin_access.clone())
            .route("/healthz", web::get().to(healthz))
            .route("/metrics", web::get().to(metrics))
            .configure(crate::console::configure)
            .configure(crate::console::admin::configure(console_state.clone()))
            .configure(wsim::configure(wsim_state.clone()))
            .configure(upload::configure(upload_settings.clone()))
            .configure(longweb::configure(longweb_state.clone()))
            .configure(gru::configure(gru_state.clone()))
            .configure(gateway::configure(gateway_state.clone()))
    };
    let mut builder = actix_server::Server::build().shutdown_timeout(5).backlog(1024);
    let shutdown = builder.graceful_shutdown_signal();
    let keep_alive = settings.limits.keep_alive;
    for l in listeners {
        let addr = l.local_addr().map_err(|e| StartError::Bind("?".into(), e))?;
        let (make_app, shutdown) = (make_app.clone(), shutdown.clone());
        builder = builder
            .listen(format!("wsim-{addr}"), l, move || {
                let signal = shutdown.clone();
                let config = AppConfig::default();
                HttpService::build()
                    .graceful_shutdown_signal(move || {
                        let signal = signal.clone();
                        async move { signal.notified().await }
                    })
                    .keep_alive(keep_alive)
                    // A connection that sends no complete request head within 5 s is answered 408.
                    .client_request_timeout(Duration::from_secs(5))
                    .client_disconnect_timeout(Duration::from_secs(1))
                    // Small frames must leave at once (Nagle plus delayed ACKs would add ~40 ms).
                    .tcp_nodelay(true)
                    .local_addr(addr)
                    // WebSocket handshakes leave the HTTP/1 dispatcher and its buffers behind.
                    .upgrade(upgraded::service(make_app.clone(), config.clone()))
                    .finish(map_config(make_app().into_factory(), move |_| config.clone()))
                    .tcp()
            })
            .map_err(|e| StartError::Bind(addr.to_string(), e))?;
    }
    let server = builder.run();
    // The ticket service may have an address of its own, serving only /ticket.
    let mut extra = Vec::new();
    if let Some(addr) = &settings.gru.ticket_listen {
        let l = TcpListener::bind(addr).map_err(|e| StartError::Bind(addr.clone(), e))?;
        let state = ticket_state;
        let ticket_server =
            HttpServer::new(move || App::new().configure(gru::configure_ticket(state.clone())))
                .workers(1)
                .listen(l)
                .map_err(|e| StartError::Bind(addr.clone(), e))?
                .run();
        extra.push(ticket_server.handle());
        actix_web::rt::spawn(ticket_server);
    }
    Ok(Running { addrs, public_url, server, extra, core, cluster })
}
