//! Test helpers: start the real `wsim` binary on an ephemeral port against a fresh SQLite file or a
//! fresh MariaDB database, and talk to it with real WebSocket and HTTP clients.
#![allow(dead_code)]

pub mod freeze;
pub mod node;
pub mod raw;
pub mod webhook;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use actix_http::ws::{CloseReason, Frame, Message};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;

/// Which database a test server uses.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    Mysql(String),
}

impl Backend {
    /// A backend for scenarios that are about something else: SQLite when the server is built with
    /// it, else MariaDB (`WSIM_TEST_MYSQL_URL`).
    pub fn any() -> Backend {
        if cfg!(feature = "sqlite") {
            return Backend::Sqlite;
        }
        match std::env::var("WSIM_TEST_MYSQL_URL") {
            Ok(url) if !url.is_empty() => Backend::Mysql(url),
            _ => panic!("built without the sqlite feature and WSIM_TEST_MYSQL_URL is not set"),
        }
    }

    /// SQLite, when the server is built with it.
    pub fn sqlite() -> Option<Backend> {
        if cfg!(feature = "sqlite") {
            Some(Backend::Sqlite)
        } else {
            eprintln!("built without the sqlite feature: skipping the SQLite variant");
            None
        }
    }

    /// MariaDB when `WSIM_TEST_MYSQL_URL` is set; with `CI=true` a missing URL fails the test. Built
    /// without the mysql feature, the MariaDB variants are skipped.
    pub fn mysql() -> Option<Backend> {
        if !cfg!(feature = "mysql") {
            eprintln!("built without the mysql feature: skipping the MariaDB variant");
            return None;
        }
        match std::env::var("WSIM_TEST_MYSQL_URL") {
            Ok(url) if !url.is_empty() => Some(Backend::Mysql(url)),
            _ => {
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!("CI=true but WSIM_TEST_MYSQL_URL is not set: MariaDB tests cannot be skipped");
                }
                eprintln!("WSIM_TEST_MYSQL_URL not set: skipping the MariaDB variant");
                None
            }
        }
    }
}

/// Runs each listed scenario `async fn name(backend: Backend)` once on SQLite and once on MariaDB.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[actix_rt::test]
                async fn $name() {
                    if let Some(b) = $crate::common::Backend::sqlite() {
                        super::$name(b).await
                    }
                }
            )*
        }
        mod mysql {
            $(
                #[actix_rt::test]
                async fn $name() {
                    if let Some(b) = $crate::common::Backend::mysql() {
                        super::$name(b).await
                    }
                }
            )*
        }
    };
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A database created for one test server, dropped with it.
pub struct MysqlDb {
    admin_url: String,
    name: String,
}

/// The database access the tests need beside the server's own, per backend (each compiled only
/// with its feature, so the helpers build with either backend alone).
mod db {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }

    /// Runs statements on a MariaDB server.
    #[cfg(feature = "mysql")]
    pub fn mysql_execute(url: &str, sql: &str) -> Result<(), String> {
        use diesel::connection::SimpleConnection;
        use diesel::Connection;
        let mut conn = diesel::mysql::MysqlConnection::establish(url).map_err(|e| e.to_string())?;
        conn.batch_execute(sql).map_err(|e| e.to_string())
    }

    #[cfg(not(feature = "mysql"))]
    pub fn mysql_execute(_url: &str, _sql: &str) -> Result<(), String> {
        Err("built without the mysql feature".into())
    }

    /// The `n` of a `SELECT COUNT(*) AS n …` on a MariaDB database.
    #[cfg(feature = "mysql")]
    pub fn mysql_count(url: &str, sql: &str) -> i64 {
        use diesel::{Connection, RunQueryDsl};
        let mut c = diesel::mysql::MysqlConnection::establish(url).expect("connect");
        diesel::sql_query(sql).get_result::<Count>(&mut c).expect("count").n
    }

    #[cfg(not(feature = "mysql"))]
    pub fn mysql_count(_url: &str, _sql: &str) -> i64 {
        panic!("built without the mysql feature")
    }

    /// The `n` of a `SELECT COUNT(*) AS n …` on a SQLite database file.
    #[cfg(feature = "sqlite")]
    pub fn sqlite_count(path: &str, sql: &str) -> i64 {
        use diesel::{Connection, RunQueryDsl};
        let mut c = diesel::sqlite::SqliteConnection::establish(path).expect("open SQLite");
        diesel::sql_query(sql).get_result::<Count>(&mut c).expect("count").n
    }

    #[cfg(not(feature = "sqlite"))]
    pub fn sqlite_count(_path: &str, _sql: &str) -> i64 {
        panic!("built without the sqlite feature")
    }
}

impl MysqlDb {
    pub fn create(admin_url: &str) -> (MysqlDb, String) {
        let name = format!(
            "wsim_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            chrono::Utc::now().timestamp_micros() % 1_000_000
        );
        db::mysql_execute(
            admin_url,
            &format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"),
        )
        .expect("create the test database");
        let base = admin_url.rsplit_once('/').map(|(b, _)| b).unwrap_or(admin_url);
        (MysqlDb { admin_url: admin_url.to_string(), name: name.clone() }, format!("{base}/{name}"))
    }
}

impl Drop for MysqlDb {
    fn drop(&mut self) {
        let _ = db::mysql_execute(&self.admin_url, &format!("DROP DATABASE IF EXISTS `{}`", self.name));
    }
}

/// The real server, as a child process.
pub struct TestServer {
    child: Option<Child>,
    pub base: String,
    pub ws_base: String,
    database_url: String,
    extra: Vec<String>,
    dir: tempfile::TempDir,
    _mysql: Option<MysqlDb>,
}

impl TestServer {
    pub fn start(backend: &Backend, extra: &[&str]) -> TestServer {
        let mut s = Self::prepare(backend, extra);
        s.spawn();
        s
    }

    /// Starts with `toml` as the configuration file (kept in the server's data directory).
    pub fn start_with_config(backend: &Backend, toml: &str) -> TestServer {
        let mut s = Self::prepare(backend, &[]);
        let path = s.dir.path().join("wsim.toml");
        std::fs::write(&path, toml).expect("write the configuration");
        s.extra.push("--config".into());
        s.extra.push(path.display().to_string());
        s.spawn();
        s
    }

    fn prepare(backend: &Backend, extra: &[&str]) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mysql, database_url) = match backend {
            Backend::Sqlite => (None, format!("sqlite://{}", dir.path().join("wsim.db").display())),
            Backend::Mysql(admin) => {
                let (db, url) = MysqlDb::create(admin);
                (Some(db), url)
            }
        };
        let s = TestServer {
            child: None,
            base: String::new(),
            ws_base: String::new(),
            database_url,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            dir,
            _mysql: mysql,
        };
        s
    }

    fn spawn(&mut self) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wsim"))
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--database-url")
            .arg(&self.database_url)
            .arg("--data-dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .env("RUST_LOG", std::env::var("WSIM_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start wsim");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(a) = line.strip_prefix("wsim listening on http://") {
                        break a.to_string();
                    }
                }
                _ => panic!("wsim exited before listening"),
            }
        };
        // Keep draining stdout so the child never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        self.base = format!("http://{addr}");
        self.ws_base = format!("ws://{addr}");
        self.child = Some(child);
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.stop_with("TERM")
    }

    /// Sends the named signal and waits for the exit status.
    pub fn stop_with(&mut self, signal: &str) -> ExitStatus {
        self.signal(signal);
        let mut child = self.child.take().expect("running");
        for _ in 0..200 {
            if let Ok(Some(st)) = child.try_wait() {
                return st;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        panic!("wsim did not exit within 10 s of SIG{signal}");
    }

    /// Sends a signal without waiting for an exit (e.g. HUP).
    pub fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("running");
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Starts again after [`TestServer::stop`].
    pub fn restart_after_stop(&mut self) {
        self.spawn();
    }

    /// Stops (SIGTERM) and starts again on the same database.
    pub fn restart(&mut self) {
        let st = self.stop();
        assert!(st.success(), "exit status {st:?}");
        self.spawn();
    }

    /// Drops the MariaDB database under the running server (to test failure handling).
    pub fn drop_mysql_database(&self) {
        let mysql = self._mysql.as_ref().expect("a MariaDB test server");
        db::mysql_execute(&mysql.admin_url, &format!("DROP DATABASE `{}`", mysql.name)).expect("drop");
    }

    /// Runs `sql`, a `SELECT COUNT(*) AS n …`, on the server's database.
    pub fn count_rows(&self, sql: &str) -> i64 {
        match self.database_url.strip_prefix("sqlite://") {
            Some(path) => db::sqlite_count(path, sql),
            None => db::mysql_count(&self.database_url, sql),
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        let client = awc::Client::default();
        let mut res = client.get(self.url("/metrics")).send().await.expect("GET /metrics");
        assert_eq!(res.status().as_u16(), 200);
        String::from_utf8(res.body().limit(1 << 20).await.expect("body").to_vec()).expect("utf8")
    }

    /// The value of the metric sample named exactly `series` (with its labels), 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        sample(&self.metrics().await, series)
    }

    /// Waits (at most 10 s) until the metric sample `series` reads `want`.
    pub async fn wait_metric(&self, series: &str, want: f64) {
        if !eventually(Duration::from_secs(10), || async { self.metric(series).await == want }).await {
            panic!("{series} is {}, not {want}", self.metric(series).await);
        }
    }

    /// Waits (at most 10 s) until `sql`, a `SELECT COUNT(*) AS n …`, counts `want`.
    pub async fn wait_rows(&self, sql: &str, want: i64) {
        if !eventually(Duration::from_secs(10), || async { self.count_rows(sql) == want }).await {
            panic!("{sql}: {} rows, not {want}", self.count_rows(sql));
        }
    }

    /// A server of a cluster: on `database_url` (shared, not owned), with `toml` as its configuration
    /// and these extra flags.
    pub fn start_node(database_url: &str, toml: &str, extra: &[&str]) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("wsim.toml");
        std::fs::write(&path, toml).expect("write the configuration");
        let mut flags: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        flags.push("--config".into());
        flags.push(path.display().to_string());
        let mut s = TestServer {
            child: None,
            base: String::new(),
            ws_base: String::new(),
            database_url: database_url.to_string(),
            extra: flags,
            dir,
            _mysql: None,
        };
        s.spawn();
        s
    }

    /// The command line a server of this test would start with, for a start that is expected to
    /// fail: runs it and returns its exit status and what it wrote to stderr.
    pub fn run_to_exit(database_url: &str, extra: &[&str]) -> (ExitStatus, String) {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = Command::new(env!("CARGO_BIN_EXE_wsim"))
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--database-url")
            .arg(database_url)
            .arg("--data-dir")
            .arg(dir.path())
            .args(extra)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run wsim");
        (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// POSTs a multipart form with one field (`file` unless named otherwise); returns status and body.
    pub async fn upload(
        &self,
        path: &str,
        field: &str,
        filename: &str,
        data: &[u8],
    ) -> (u16, serde_json::Value) {
        let boundary = "wsimtestboundary7d93";
        let mut body = Vec::new();
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let client = awc::Client::builder().timeout(Duration::from_secs(60)).finish();
        let mut res = client
            .post(self.url(path))
            .insert_header(("Content-Type", format!("multipart/form-data; boundary={boundary}")))
            .send_body(body)
            .await
            .expect("POST upload");
        let status = res.status().as_u16();
        let body = res.body().limit(1 << 20).await.expect("body");
        (status, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get_json(&self, path_and_query: &str) -> serde_json::Value {
        let client = awc::Client::default();
        let mut res = client.get(self.url(path_and_query)).send().await.expect("GET");
        assert_eq!(res.status().as_u16(), 200, "GET {path_and_query}");
        let body = res.body().await.expect("body");
        serde_json::from_slice(&body).unwrap_or_else(|_| panic!("JSON from {path_and_query}: {body:?}"))
    }

    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> serde_json::Value {
        let client = awc::Client::default();
        let mut res = client.post(self.url(path)).send_form(&form).await.expect("POST");
        assert_eq!(res.status().as_u16(), 200);
        let body = res.body().await.expect("body");
        serde_json::from_slice(&body).expect("JSON")
    }

    /// POSTs a JSON body (with a bearer token when given) and returns the JSON answer.
    pub async fn post_json(
        &self,
        path: &str,
        body: serde_json::Value,
        token: Option<&str>,
    ) -> serde_json::Value {
        let client = awc::Client::default();
        let mut req = client.post(self.url(path));
        if let Some(t) = token {
            req = req.insert_header(("Authorization", format!("Bearer {t}")));
        }
        let mut res = req.send_json(&body).await.expect("POST");
        assert_eq!(res.status().as_u16(), 200, "POST {path}");
        let body = res.body().await.expect("body");
        serde_json::from_slice(&body).unwrap_or_else(|_| panic!("JSON from {path}: {body:?}"))
    }

    /// A gateway token for `session` (from `/inner/get_token`).
    /// Creates a gateway conversation of `sessions` through `/inner/create_conversation`; its id.
    pub async fn create_conversation(&self, conversation_type: i64, sessions: &[&str]) -> String {
        let v = self
            .post_json(
                "/inner/create_conversation",
                serde_json::json!({"conversation_type": conversation_type, "sessions": sessions}),
                None,
            )
            .await;
        v["data"]["ConversationId"].as_str().expect("conversation id").to_string()
    }

    pub async fn gateway_token(&self, session: &str, platform: i64) -> String {
        let v = self
            .post_json(
                "/inner/get_token",
                serde_json::json!({"session": session, "platform": platform}),
                None,
            )
            .await;
        assert_eq!(v["code"], 0, "{v}");
        v["data"].as_str().expect("token").to_string()
    }

    pub async fn ws(&self, path: &str) -> Ws {
        Ws::connect(&format!("{}{path}", self.ws_base)).await
    }

    /// A WebSocket on `/entry`, logged in as `user` (the `ok` consumed).
    /// A Gru socket (Engine.IO v4 WebSocket) of `user`, authenticated (with the token2 `/ticket`
    /// issues) into `group`.
    pub async fn gru_socket(&self, user: u64, group: u64) -> Ws {
        let t = self.get_json(&format!("/ticket?userType=1&userName=u{user}&userId={user}")).await;
        let token2 = t["data"]["token"].as_str().expect("token2").to_string();
        let mut ws = self.ws("/socket.io/?EIO=4&transport=websocket").await;
        ws.recv().await;
        ws.send("40");
        ws.recv().await;
        let auth = serde_json::json!(["auth", {"id": user, "name": format!("u{user}"), "token2": token2, "groupId": group}]);
        ws.send(&format!("42{auth}"));
        assert!(ws.recv().await.contains("\"success\":true"));
        ws
    }

    pub async fn login(&self, user: &str) -> Ws {
        let mut ws = self.ws("/entry").await;
        ws.send(&format!("login_{user}"));
        assert_eq!(ws.recv().await, "ok");
        ws
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

enum Cmd {
    Text(String),
    Raw(Message),
    Pause,
    Resume,
    Close,
}

#[derive(Debug)]
pub enum Event {
    Text(String),
    Closed(Option<CloseReason>),
}

/// A WebSocket client that reads in the background (answering pings like real clients do), so the
/// test sees text frames in order; `pause` stops reading altogether.
pub struct Ws {
    tx: mpsc::UnboundedSender<Cmd>,
    rx: mpsc::UnboundedReceiver<Event>,
    pub heartbeats: Vec<String>,
}

pub const RECV_TIMEOUT: Duration = Duration::from_secs(10);

impl Ws {
    pub async fn connect(url: &str) -> Ws {
        let client = awc::Client::builder().max_http_version(awc::http::Version::HTTP_11).finish();
        let (_, mut framed) = client
            .ws(url)
            .max_frame_size(16 * 1024 * 1024)
            .connect()
            .await
            .unwrap_or_else(|e| panic!("ws connect {url}: {e}"));
        let (tx, mut cmd_rx) = mpsc::unbounded_channel::<Cmd>();
        let (ev_tx, rx) = mpsc::unbounded_channel::<Event>();
        actix_rt::spawn(async move {
            let mut paused = false;
            loop {
                tokio::select! {
                    cmd = cmd_rx.recv() => match cmd {
                        Some(Cmd::Text(t)) => { let _ = framed.send(Message::Text(t.into())).await; }
                        Some(Cmd::Raw(m)) => { let _ = framed.send(m).await; }
                        Some(Cmd::Pause) => paused = true,
                        Some(Cmd::Resume) => paused = false,
                        Some(Cmd::Close) | None => {
                            let _ = framed.send(Message::Close(None)).await;
                            // Read until the server's close comes back.
                            let deadline = tokio::time::sleep(Duration::from_secs(2));
                            tokio::pin!(deadline);
                            loop {
                                tokio::select! {
                                    f = framed.next() => match f {
                                        Some(Ok(Frame::Close(_))) | None | Some(Err(_)) => break,
                                        _ => {}
                                    },
                                    _ = &mut deadline => break,
                                }
                            }
                            let _ = ev_tx.send(Event::Closed(None));
                            break;
                        }
                    },
                    frame = framed.next(), if !paused => match frame {
                        Some(Ok(Frame::Text(b))) => {
                            let _ = ev_tx.send(Event::Text(String::from_utf8_lossy(&b).into_owned()));
                        }
                        Some(Ok(Frame::Ping(p))) => { let _ = framed.send(Message::Pong(p)).await; }
                        Some(Ok(Frame::Close(r))) => { let _ = ev_tx.send(Event::Closed(r)); break; }
                        None | Some(Err(_)) => { let _ = ev_tx.send(Event::Closed(None)); break; }
                        _ => {}
                    },
                }
            }
        });
        Ws { tx, rx, heartbeats: Vec::new() }
    }

    pub fn send(&self, text: &str) {
        let _ = self.tx.send(Cmd::Text(text.to_string()));
    }

    pub fn send_raw(&self, msg: Message) {
        let _ = self.tx.send(Cmd::Raw(msg));
    }

    /// Stop reading from the socket (and so stop answering pings).
    pub fn pause(&self) {
        let _ = self.tx.send(Cmd::Pause);
    }

    pub fn resume(&self) {
        let _ = self.tx.send(Cmd::Resume);
    }

    pub async fn close(mut self) {
        let _ = self.tx.send(Cmd::Close);
        let _ = tokio::time::timeout(Duration::from_secs(3), async {
            while let Some(ev) = self.rx.recv().await {
                if let Event::Closed(_) = ev {
                    break;
                }
            }
        })
        .await;
    }

    /// The next event (heartbeat frames are collected aside), or `None` after `wait`.
    pub async fn next_event(&mut self, wait: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Err(_) => return None,
                Ok(None) => return Some(Event::Closed(None)),
                Ok(Some(Event::Text(t))) if t.starts_with("heartbeat_") => self.heartbeats.push(t),
                Ok(Some(ev)) => return Some(ev),
            }
        }
    }

    /// The next text frame (heartbeats skipped); panics on close or timeout.
    pub async fn recv(&mut self) -> String {
        match self.next_event(RECV_TIMEOUT).await {
            Some(Event::Text(t)) => t,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// Sends `ask` every 100 ms (at most 50 times) until the answer is `want`; answers the last one.
    pub async fn ask_until(&mut self, ask: &str, want: &str) -> String {
        let mut last = String::new();
        for _ in 0..50 {
            self.send(ask);
            last = self.recv().await;
            if last == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        last
    }

    /// Asserts that no text frame (other than heartbeats) arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(ev) = self.next_event(wait).await {
            panic!("expected silence, got {ev:?}");
        }
    }

    /// Waits for the server to close the connection; returns the close reason.
    pub async fn expect_closed(&mut self, wait: Duration) -> Option<CloseReason> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Err(_) => panic!("connection still open after {wait:?}"),
                Ok(None) => return None,
                Ok(Some(Event::Closed(r))) => return r,
                Ok(Some(Event::Text(_))) => {}
            }
        }
    }
}

/// The Redis the cluster tests use: `WSIM_TEST_REDIS_URL`, else the machine's (127.0.0.1:6379).
pub fn redis_url() -> String {
    std::env::var("WSIM_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into())
}

/// A Redis server of a test's own, on a free port, keeping nothing on disk: it can be killed and
/// started again on the same port.
pub struct TestRedis {
    pub port: u16,
    child: Option<std::process::Child>,
}

impl TestRedis {
    /// `None` (skipped) when `redis-server` is not installed.
    pub fn start() -> Option<TestRedis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let mut r = TestRedis { port, child: None };
        r.restart();
        r.child.is_some().then_some(r)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) and waits until it answers.
    pub fn restart(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        let Ok(child) = child else { return };
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server on port {} does not answer", self.port);
    }

    /// Kills the server outright (its data goes with it).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Nodes of one cluster: a database of their own on MariaDB, a key prefix of their own in Redis.
pub struct TestCluster {
    pub nodes: Vec<TestServer>,
    pub redis: String,
    pub prefix: String,
    pub database_url: String,
    _db: MysqlDb,
}

impl TestCluster {
    /// `n` nodes (ids 1..=n), each with `toml` added to its configuration; `None` (skipped) without
    /// MariaDB.
    pub fn start(n: u16, toml: &str) -> Option<TestCluster> {
        Self::start_on(&redis_url(), n, toml)
    }

    /// The same, on the Redis at `redis`.
    pub fn start_on(redis: &str, n: u16, toml: &str) -> Option<TestCluster> {
        let Some(Backend::Mysql(admin)) = Backend::mysql() else { return None };
        let (db, database_url) = MysqlDb::create(&admin);
        let prefix = format!("wsimtest{}x{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let mut c =
            TestCluster { nodes: Vec::new(), redis: redis.to_string(), prefix, database_url, _db: db };
        for id in 1..=n {
            c.add_node(id, toml);
        }
        Some(c)
    }

    /// The configuration a node of this cluster starts with (beside `toml`).
    pub fn config(&self, toml: &str) -> String {
        format!("[cluster]\nkey_prefix = \"{}\"\nnode_ttl_secs = 3\n{toml}", self.prefix)
    }

    /// Waits (at most 5 s) until node `id`'s room interest in Redis has `entry` (`present`) or not.
    pub async fn wait_room_interest(&self, id: u16, entry: &str, present: bool) {
        let client = redis::Client::open(self.redis.as_str()).expect("redis url");
        let con = client.get_multiplexed_async_connection().await.expect("redis");
        let key = format!("{}:rooms:{id}", self.prefix);
        let held = eventually(Duration::from_secs(5), || {
            let mut con = con.clone();
            let (key, entry) = (key.clone(), entry.to_string());
            async move {
                let is: bool = redis::cmd("SISMEMBER")
                    .arg(&key)
                    .arg(&entry)
                    .query_async(&mut con)
                    .await
                    .unwrap_or(false);
                is == present
            }
        })
        .await;
        assert!(held, "node {id}: {entry:?} in its room interest should be {present}");
    }

    /// Starts node `id`.
    pub fn add_node(&mut self, id: u16, toml: &str) {
        let config = self.config(toml);
        let id = id.to_string();
        let node = TestServer::start_node(
            &self.database_url,
            &config,
            &["--redis-url", &self.redis, "--node-id", &id],
        );
        self.nodes.push(node);
    }
}

/// The value of the sample whose name and labels are exactly `series` in a `/metrics` text, or 0
/// when absent.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse().expect("number"))
        .unwrap_or(0.0)
}

/// Polls `check` every 50 ms until it holds or `wait` passes; returns whether it held.
pub async fn eventually<F, Fut>(wait: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Splits a receive frame into its 7 fields (payload may contain `_`: fields are taken from both ends).
pub fn fields(frame: &str) -> (String, String, String, String, String, i64, String) {
    let parts: Vec<&str> = frame.split('_').collect();
    assert!(parts.len() >= 7, "not a receive frame: {frame}");
    let n = parts.len();
    (
        parts[0].to_string(),
        parts[1].to_string(),
        parts[2..n - 4].join("_"),
        parts[n - 4].to_string(),
        parts[n - 3].to_string(),
        parts[n - 2].parse().expect("timet"),
        parts[n - 1].to_string(),
    )
}
