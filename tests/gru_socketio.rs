//! Gru's Socket.IO endpoint driven by the real `socket.io-client` packages from npm: 1.x and 2.x
//! (Engine.IO v3) and 4.x (Engine.IO v4), over websocket only, polling only and polling with upgrade (see
//! tests/node/agent.js; `make test` installs the packages).

mod common;

use std::time::Duration;

use common::node::NodeAgent;
use common::{Backend, TestServer};
use serde_json::{json, Value};

/// Real Socket.IO clients in one Node process (tests/node/agent.js).
struct Agent(NodeAgent);

impl std::ops::Deref for Agent {
    type Target = NodeAgent;
    fn deref(&self) -> &NodeAgent {
        &self.0
    }
}

impl std::ops::DerefMut for Agent {
    fn deref_mut(&mut self) -> &mut NodeAgent {
        &mut self.0
    }
}

impl Agent {
    async fn start() -> Agent {
        Agent(NodeAgent::start("agent.js", "sio4").await)
    }

    fn connect(&mut self, name: &str, v: u8, url: &str, transports: &[&str]) {
        self.cmd(json!({"op": "connect", "name": name, "v": v, "url": url, "transports": transports}));
    }

    fn emit(&mut self, name: &str, event: &str, data: Value) {
        self.cmd(json!({"op": "emit", "name": name, "event": event, "data": data}));
    }

    /// Connects, authenticates with a fresh ticket and waits for a successful auth_result.
    #[allow(clippy::too_many_arguments)]
    async fn login(
        &mut self,
        s: &TestServer,
        name: &str,
        v: u8,
        transports: &[&str],
        user: u64,
        group: Option<u64>,
    ) {
        let token2 = token2(s, user, 0).await;
        self.connect(name, v, &s.base, transports);
        self.expect(name, "connect").await;
        let mut auth =
            json!({"id": user, "name": format!("user{user}"), "token1": "t1", "token2": token2, "type": 0});
        if let Some(g) = group {
            auth["groupId"] = json!(g);
        }
        self.emit(name, "auth", json!(auth.to_string()));
        let r = self.expect(name, "auth_result").await;
        assert_eq!(r, json!({"success": true, "errorCode": 0, "msg": "", "data": {"userType": "TEACHER"}}));
    }
}

async fn token2(s: &TestServer, user: u64, user_type: u8) -> String {
    let t =
        s.get_json(&format!("/ticket?userType={user_type}&userName=user{user}&userId={user}&token1=x")).await;
    t["data"]["token"].as_str().expect("token2").to_string()
}

on_both_backends!(
    auth_ok_failing_and_acked,
    broadcast_with_echo_across_versions_and_transports,
    unicast_reaches_every_socket_of_the_user,
    polling_upgrades_to_websocket_and_keeps_its_socket,
    online_subscribe_and_events_before_auth,
    heartbeats_keep_live_clients_and_the_server_drops_silent_ones,
    clients_reconnect_after_the_server_restarts,
    engineio_errors_come_in_the_reference_format,
    engineio_v3_text_payloads_when_base64_is_asked_for,
    engineio_v3_binary_payloads_for_xhr2_clients,
    engineio_v4_payloads_and_a_client_that_stops_polling,
    a_failed_probe_leaves_the_session_polling_and_the_next_upgrades_it,
    two_gets_at_once_close_the_session,
    a_garbage_frame_ends_its_session_only,
    sockets_that_do_not_authenticate_in_time_are_disconnected,
    the_demo_apps_auth_and_subscribe,
    auth_without_type_takes_the_type_of_its_token,
    handshakes_per_address_are_limited
);

/// md5 hex of `text`.
fn md5_hex(text: &str) -> String {
    use md5::{Digest, Md5};
    format!("{:x}", Md5::digest(text.as_bytes()))
}

const WS: &[&str] = &["websocket"];
const POLLING: &[&str] = &["polling"];
const UPGRADE: &[&str] = &["polling", "websocket"];

async fn auth_ok_failing_and_acked(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let mut a = Agent::start().await;
    for (v, transports) in [(2, WS), (4, WS), (2, POLLING), (4, POLLING), (2, UPGRADE), (4, UPGRADE)] {
        let good = format!("good{v}{}", transports.join("+"));
        a.login(&s, &good, v, transports, 123, Some(10)).await;
        // An acked auth: the ack carries the same answer.
        let t2 = token2(&s, 124, 1).await;
        let auth = json!({"id": 124, "name": "user124", "token2": t2, "type": 1});
        a.cmd(json!({"op": "emit", "name": good, "event": "auth", "data": auth, "ack": true}));
        let ack = a.expect_raw(|e| e["name"] == good && e["event"] == "ack").await;
        assert_eq!(ack["data"]["data"], json!({"userType": "STUDENT"}), "{ack}");
        assert_eq!(a.expect(&good, "auth_result").await["success"], true);

        let bad = format!("bad{v}{}", transports.join("+"));
        a.connect(&bad, v, &s.base, transports);
        a.expect(&bad, "connect").await;
        // A refused auth gets no answer: the server disconnects (as the original did).
        let auth = json!({"id": 123, "name": "user123", "token2": t2, "type": 0});
        a.emit(&bad, "auth", json!(auth.to_string()));
        assert_eq!(a.expect(&bad, "disconnect").await, "io server disconnect", "v{v} {transports:?}");
        a.expect_none(&bad, "auth_result", Duration::from_millis(100)).await;

        let missing = format!("missing{v}{}", transports.join("+"));
        a.connect(&missing, v, &s.base, transports);
        a.expect(&missing, "connect").await;
        a.emit(&missing, "auth", json!("{\"id\":1}"));
        assert_eq!(a.expect(&missing, "disconnect").await, "io server disconnect");
        a.expect_none(&missing, "auth_result", Duration::from_millis(100)).await;
    }
}

async fn broadcast_with_echo_across_versions_and_transports(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let mut a = Agent::start().await;
    a.login(&s, "teacher", 2, WS, 1, Some(10)).await;
    a.login(&s, "s4poll", 4, POLLING, 2, Some(10)).await;
    a.login(&s, "s2poll", 2, POLLING, 3, Some(10)).await;
    a.login(&s, "s4ws", 4, WS, 4, Some(10)).await;
    a.login(&s, "other", 4, WS, 5, Some(11)).await;
    a.login(&s, "s1up", 1, UPGRADE, 6, Some(10)).await;
    let before = chrono::Utc::now().timestamp_millis();
    let mut last_id = 0;
    for i in 0..3 {
        let content = format!("{{\"userName\":\"王老师\",\"message\":\"第{i}页\"}}");
        let msg = json!({"type": 1, "target": {"id": 10, "type": 1}, "content": content});
        a.emit("teacher", "msg", json!(msg.to_string()));
        let r = a.expect("teacher", "msg_result").await;
        assert_eq!((r["success"].clone(), r["errorCode"].clone()), (json!(true), json!(0)), "{r}");
        for who in ["teacher", "s4poll", "s2poll", "s4ws", "s1up"] {
            let m = a.expect(who, "msg").await;
            assert_eq!(m["content"], content.as_str(), "{who}");
            assert_eq!(m["fromId"], 1);
            assert_eq!(m["msgType"], 1);
            assert_eq!(m["expireTime"], 0);
            assert_eq!(m["target"], json!({"id": 10, "type": 1}));
            assert_eq!(m["id"], r["data"]["id"], "{who}: the id msg_result gave");
            let t = m["createTime"].as_i64().expect("ms");
            assert!(t >= before - 1000 && t < before + 10_000);
        }
        let id = r["data"]["id"].as_i64().expect("id");
        assert!(id > last_id && id < (1 << 53), "ids increase and are exact in JavaScript");
        last_id = id;
    }
    a.expect_none("other", "msg", Duration::from_millis(300)).await;
    // Stored (for history) before they were delivered.
    let stored = s
        .count_rows("SELECT COUNT(*) AS n FROM messages WHERE app = '#gru' AND conv = '10' AND sender = '1'");
    assert_eq!(stored, 3);
    // Without a target, type 1 goes to the auth group; objects work as well as JSON strings.
    a.emit("s4ws", "msg", json!({"type": 1, "content": "to my group"}));
    assert_eq!(a.expect("s4ws", "msg_result").await["success"], true);
    for who in ["teacher", "s4poll", "s2poll", "s4ws", "s1up"] {
        let m = a.expect(who, "msg").await;
        assert_eq!((m["content"].clone(), m["fromId"].clone()), (json!("to my group"), json!(4)));
        assert_eq!(m["target"]["id"], 10);
    }
    // A bad type is refused with -2 and reaches nobody.
    for bad in [json!({"content": "x"}), json!({"type": 3, "content": "x"})] {
        a.emit("teacher", "msg", json!(bad.to_string()));
        let r = a.expect("teacher", "msg_result").await;
        assert_eq!(r, json!({"success": false, "errorCode": -2, "msg": "消息类型不正确，请注明类型"}));
    }
    a.expect_none("s4ws", "msg", Duration::from_millis(300)).await;
}

async fn unicast_reaches_every_socket_of_the_user(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let mut a = Agent::start().await;
    a.login(&s, "sender", 4, WS, 5, Some(10)).await;
    a.login(&s, "sender2", 2, WS, 5, None).await;
    a.login(&s, "phone", 2, WS, 7, Some(10)).await;
    a.login(&s, "browser", 4, POLLING, 7, None).await;
    a.login(&s, "bystander", 4, WS, 8, Some(10)).await;
    let msg = json!({"type": 0, "target": {"id": 7, "type": 0}, "content": "only for 7"});
    a.emit("sender", "msg", json!(msg.to_string()));
    assert_eq!(a.expect("sender", "msg_result").await["success"], true);
    for who in ["phone", "browser"] {
        let m = a.expect(who, "msg").await;
        assert_eq!(m["content"], "only for 7");
        assert_eq!((m["msgType"].clone(), m["fromId"].clone()), (json!(0), json!(5)));
        assert_eq!(m["target"], json!({"id": 7, "type": 0}));
    }
    for who in ["sender", "sender2", "bystander"] {
        a.expect_none(who, "msg", Duration::from_millis(200)).await;
    }
    // Unicast without a target is refused.
    a.emit("sender", "msg", json!({"type": 0, "content": "to whom?"}));
    assert_eq!(a.expect("sender", "msg_result").await["errorCode"], -3);
}

async fn online_subscribe_and_events_before_auth(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let mut a = Agent::start().await;
    a.connect("anon", 4, &s.base, WS);
    a.expect("anon", "connect").await;
    for (event, result) in
        [("msg", "msg_result"), ("online", "online_result"), ("subscribe", "subscribe_result")]
    {
        a.emit("anon", event, json!("10"));
        let r = a.expect("anon", result).await;
        assert_eq!((r["success"].clone(), r["errorCode"].clone()), (json!(false), json!(-1)), "{event}: {r}");
    }
    a.login(&s, "u5", 4, WS, 5, Some(10)).await;
    a.login(&s, "u7a", 2, POLLING, 7, Some(10)).await;
    a.login(&s, "u7b", 4, UPGRADE, 7, Some(10)).await;
    a.login(&s, "u9", 2, WS, 9, Some(20)).await;
    a.emit("u5", "online", json!("10"));
    assert_eq!(
        a.expect("u5", "online_result").await,
        json!({"success": true, "errorCode": 0, "msg": "", "data": [5, 7]})
    );
    // u9 subscribes to group 10 as well and then hears its broadcasts.
    a.emit("u9", "subscribe", json!("10"));
    let r = a.expect("u9", "subscribe_result").await;
    assert_eq!(r, json!({"success": true, "errorCode": 0, "msg": "", "data": [20, 10]}));
    a.emit("u9", "online", json!(10));
    assert_eq!(a.expect("u9", "online_result").await["data"], json!([5, 7, 9]));
    a.emit("u5", "msg", json!({"type": 1, "target": {"id": 10}, "content": "hello 10"}));
    assert_eq!(a.expect("u9", "msg").await["content"], "hello 10");
    // A socket that leaves is no longer online.
    let open = s.metric(GRU_CONNS).await;
    a.cmd(json!({"op": "close", "name": "u9"}));
    s.wait_metric(GRU_CONNS, open - 1.0).await;
    a.emit("u5", "online", json!("10"));
    assert_eq!(a.expect("u5", "online_result").await["data"], json!([5, 7]));
    a.login(&s, "u12", 4, WS, 12, Some(10)).await;
    a.emit("u5", "online", json!("10"));
    assert_eq!(a.expect("u5", "online_result").await["data"], json!([5, 7, 12]), "numeric order");
    a.emit("u5", "subscribe", json!({"bad": 1}));
    assert_eq!(a.expect("u5", "subscribe_result").await["errorCode"], -4);
}

async fn polling_upgrades_to_websocket_and_keeps_its_socket(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let mut a = Agent::start().await;
    for v in [1u8, 2, 4] {
        let name = format!("up{v}");
        a.login(&s, &name, v, UPGRADE, 30 + v as u64, Some(40)).await;
        let up = a.expect_raw(|e| e["name"] == name.as_str() && e["event"] == "upgrade").await;
        assert_eq!(up["transport"], "websocket");
    }
    a.login(&s, "sender", 4, WS, 99, Some(40)).await;
    for i in 0..5 {
        a.emit("sender", "msg", json!({"type": 1, "content": format!("after upgrade {i}")}));
        for who in ["up1", "up2", "up4", "sender"] {
            assert_eq!(a.expect(who, "msg").await["content"], format!("after upgrade {i}"));
        }
    }
    // The upgraded sockets still send.
    a.emit("up2", "msg", json!({"type": 0, "target": {"id": 99}, "content": "from v2"}));
    assert_eq!(a.expect("up2", "msg_result").await["success"], true);
    assert_eq!(a.expect("sender", "msg").await["content"], "from v2");
    for who in ["up1", "up2", "up4"] {
        a.cmd(json!({"op": "transport", "name": who}));
        assert_eq!(
            a.expect_raw(|e| e["name"] == who && e["event"] == "transport").await["transport"],
            "websocket"
        );
    }
}

async fn heartbeats_keep_live_clients_and_the_server_drops_silent_ones(b: Backend) {
    let s = TestServer::start_with_config(&b, "[gru]\nping_interval_ms = 300\nping_timeout_ms = 300\n");
    let mut a = Agent::start().await;
    a.login(&s, "v2", 2, WS, 1, Some(1)).await;
    a.login(&s, "v4", 4, WS, 2, Some(1)).await;
    a.login(&s, "v4poll", 4, POLLING, 3, Some(1)).await;
    for who in ["v2", "v4", "v4poll"] {
        a.expect_none(who, "disconnect", Duration::from_millis(400)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for who in ["v2", "v4", "v4poll"] {
        a.expect_none(who, "disconnect", Duration::from_millis(10)).await;
    }
    a.emit("v2", "online", json!("1"));
    assert_eq!(a.expect("v2", "online_result").await["data"], json!([1, 2, 3]));

    // A raw Engine.IO v4 client that never answers the server's pings is let go.
    let mut raw = common::Ws::connect(&format!("{}/socket.io/?EIO=4&transport=websocket", s.ws_base)).await;
    assert!(raw.recv().await.starts_with("0{"), "open packet");
    raw.send("40");
    assert!(raw.recv().await.starts_with("40{\"sid\":"));
    assert_eq!(raw.recv().await, "2", "the server pings (v4)");
    raw.expect_closed(Duration::from_secs(3)).await;
}

async fn clients_reconnect_after_the_server_restarts(b: Backend) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let listen = format!("127.0.0.1:{port}");
    let mut s = TestServer::start(&b, &["--listen", &listen]);
    let url = format!("http://{listen}");
    let mut a = Agent::start().await;
    let mut tokens = Vec::new();
    for (name, v, transports, user) in [("r2", 2u8, WS, 1u64), ("r4", 4, UPGRADE, 2)] {
        let t2 = token2(&s, user, 0).await;
        a.cmd(json!({"op": "connect", "name": name, "v": v, "url": url, "transports": transports,
                     "reconnection": true}));
        a.expect(name, "connect").await;
        tokens.push((name, user, t2));
    }
    let auth = |user: u64, t2: &str| json!({"id": user, "name": format!("user{user}"), "token2": t2, "type": 0, "groupId": 3});
    for (name, user, t2) in &tokens {
        a.emit(name, "auth", json!(auth(*user, t2).to_string()));
        assert_eq!(a.expect(name, "auth_result").await["success"], true);
    }
    s.restart();
    for (name, user, t2) in &tokens {
        a.expect(name, "disconnect").await;
        a.expect(name, "connect").await;
        // token2 outlives the restart (its key is kept in the data directory).
        a.emit(name, "auth", json!(auth(*user, t2).to_string()));
        assert_eq!(a.expect(name, "auth_result").await["success"], true, "{name}");
    }
    a.emit("r2", "msg", json!({"type": 1, "content": "back"}));
    assert_eq!(a.expect("r4", "msg").await["content"], "back");
}

async fn http(method: &str, url: &str, body: &str, content_type: &str) -> (u16, String) {
    let client = awc::Client::default();
    let req = if method == "POST" { client.post(url) } else { client.get(url) };
    let mut res =
        req.insert_header(("Content-Type", content_type)).send_body(body.to_string()).await.expect("HTTP");
    let status = res.status().as_u16();
    let body = res.body().limit(1 << 20).await.expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A request with a byte body: (status, content type, body).
async fn http_bytes(method: &str, url: &str, body: Vec<u8>, content_type: &str) -> (u16, String, Vec<u8>) {
    let client = awc::Client::default();
    let req = if method == "POST" { client.post(url) } else { client.get(url) };
    let mut res = req.insert_header(("Content-Type", content_type)).send_body(body).await.expect("HTTP");
    let ct = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let body = res.body().limit(1 << 20).await.expect("body");
    (res.status().as_u16(), ct, body.to_vec())
}

/// The packets of an Engine.IO v3 binary payload (text packets only), read as the XHR2 clients
/// of socket.io 1.x read them.
fn binary_packets(mut b: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while !b.is_empty() {
        assert_eq!(b[0], 0, "a text packet");
        let end = b.iter().position(|&x| x == 0xff).expect("length end");
        let len = b[1..end].iter().fold(0usize, |n, &d| {
            assert!(d <= 9, "a digit as a byte of value 0-9");
            n * 10 + d as usize
        });
        out.push(String::from_utf8(b[end + 1..end + 1 + len].to_vec()).expect("utf8"));
        b = &b[end + 1 + len..];
    }
    out
}

/// A text packet as an Engine.IO v3 binary payload.
fn binary_payload(packet: &str) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend(packet.len().to_string().bytes().map(|d| d - b'0'));
    out.push(0xff);
    out.extend_from_slice(packet.as_bytes());
    out
}

/// A GET on a polling session that is expected to go: the first answer that is not 200 (within 10 s).
async fn gone(poll: &str) -> (u16, String) {
    for _ in 0..200 {
        let (st, body) = http("GET", poll, "", "text/plain").await;
        if st != 200 {
            return (st, body);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{poll}: the session is still there")
}

const GRU_CONNS: &str = "wsim_connections_open{frontend=\"gru\"}";

/// The sid in an open packet (`0{...}`), found anywhere in a polling body.
fn sid_of(body: &str) -> String {
    let start = body.find("0{").expect("open packet") + 1;
    let end = body[start..].find('}').expect("end") + start + 1;
    let open: Value = serde_json::from_str(&body[start..end]).expect("open JSON");
    open["sid"].as_str().expect("sid").to_string()
}

/// A raw polling client's `/socket.io/` URL on `s`.
fn eio_url(s: &TestServer, q: &str) -> String {
    s.url(&format!("/socket.io/?{q}"))
}

async fn engineio_errors_come_in_the_reference_format(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let url = |q: &str| eio_url(&s, q);
    for (q, code) in [
        ("EIO=5&transport=polling", 5),
        ("transport=polling", 5),
        ("EIO=4&transport=pigeon", 0),
        ("EIO=4&transport=polling&sid=nope", 1),
        ("EIO=3&transport=websocket", 3),
    ] {
        let (status, body) = http("GET", &url(q), "", "text/plain").await;
        assert_eq!(status, 400, "{q}");
        assert_eq!(serde_json::from_str::<Value>(&body).expect("JSON")["code"], code, "{q}: {body}");
    }
    let (status, body) = http("POST", &url("EIO=4&transport=polling"), "40", "text/plain").await;
    assert_eq!((status, body.contains("\"code\":2")), (400, true), "{body}");
}

async fn engineio_v3_text_payloads_when_base64_is_asked_for(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let url = |q: &str| eio_url(&s, q);
    // Engine.IO v3 with base64 asked for: length-prefixed text payloads, and the namespace joined at
    // once.
    let (status, v3) = http("GET", &url("EIO=3&transport=polling&b64=1"), "", "text/plain").await;
    assert_eq!(status, 200);
    let open_len = v3.split_once(':').expect("length").0;
    assert!(open_len.parse::<usize>().is_ok() && v3.ends_with("2:40"), "{v3}");
    assert!(v3.contains("\"upgrades\":[\"websocket\"]"), "{v3}");
    let sid3 = sid_of(&v3);
    let (_, pong) = {
        let (st, ok) =
            http("POST", &url(&format!("EIO=3&transport=polling&b64=1&sid={sid3}")), "1:2", "text/plain")
                .await;
        assert_eq!((st, ok.as_str()), (200, "ok"));
        http("GET", &url(&format!("EIO=3&transport=polling&b64=1&sid={sid3}")), "", "text/plain").await
    };
    assert_eq!(pong, "1:3", "v3 clients ping, the server answers");
}

async fn engineio_v3_binary_payloads_for_xhr2_clients(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let url = |q: &str| eio_url(&s, q);
    // Engine.IO v3 without b64 (XHR2 browsers): binary payloads both ways.
    let (st, ct, open) = http_bytes("GET", &url("EIO=3&transport=polling&t=1"), vec![], "text/plain").await;
    assert_eq!((st, ct.as_str()), (200, "application/octet-stream"));
    let packets = binary_packets(&open);
    assert!(packets.len() == 2 && packets[0].starts_with("0{") && packets[1] == "40", "{packets:?}");
    let sidb = sid_of(&packets[0]);
    let poll_b = url(&format!("EIO=3&transport=polling&sid={sidb}"));
    let mut two = binary_payload("2");
    two.extend(binary_payload("42[\"online\",\"7\"]"));
    let (st, _, ok) = http_bytes("POST", &poll_b, two, "application/octet-stream").await;
    assert_eq!((st, ok.as_slice()), (200, &b"ok"[..]));
    let (_, ct, answer) = http_bytes("GET", &poll_b, vec![], "text/plain").await;
    let answer = binary_packets(&answer);
    assert_eq!(ct, "application/octet-stream");
    assert_eq!(answer[0], "3", "{answer:?}");
    assert!(answer[1].starts_with("42[\"online_result\",{") && answer[1].contains("-1"), "{answer:?}");
    // A text payload is still taken from such a client.
    let (st, _) = http("POST", &poll_b, "1:2", "text/plain;charset=UTF-8").await;
    assert_eq!(st, 200);
    assert_eq!(binary_packets(&http_bytes("GET", &poll_b, vec![], "text/plain").await.2), ["3"]);
    // Binary packets (attachments) are refused, and so is a payload that does not parse.
    let (st, _, _) = http_bytes("POST", &poll_b, vec![1, 1, 0xff, 4], "application/octet-stream").await;
    assert_eq!(st, 400, "binary packets are refused");
    let (st, _, _) = http_bytes("GET", &poll_b, vec![], "text/plain").await;
    assert_eq!(st, 400, "and the session is closed");
}

async fn engineio_v4_payloads_and_a_client_that_stops_polling(b: Backend) {
    let s = TestServer::start(&b, &["--outbound-queue-kib", "64"]);
    let url = |q: &str| eio_url(&s, q);
    // Engine.IO v4: record-separated payloads; the client asks for the namespace.
    let (_, v4) = http("GET", &url("EIO=4&transport=polling"), "", "text/plain").await;
    assert!(v4.starts_with("0{") && v4.contains("\"maxPayload\""), "{v4}");
    let sid = sid_of(&v4);
    let poll = url(&format!("EIO=4&transport=polling&sid={sid}"));
    let t2 = token2(&s, 50, 0).await;
    let auth = json!(["auth", {"id": 50, "name": "user50", "token2": t2, "type": 0, "groupId": 77}]);
    let (st, ok) = http("POST", &poll, &format!("40\u{1e}42{auth}"), "text/plain;charset=UTF-8").await;
    assert_eq!((st, ok.as_str()), (200, "ok"));
    let (_, answer) = http("GET", &poll, "", "text/plain").await;
    let packets: Vec<&str> = answer.split('\u{1e}').collect();
    assert!(packets[0].starts_with("40{\"sid\":"), "{answer}");
    assert!(
        packets[1].starts_with("42[\"auth_result\",{") && packets[1].contains("\"success\":true"),
        "{answer}"
    );

    // This polling client stops polling while its group gets 100 KiB: past the 64 KiB bound the
    // session is closed rather than kept growing.
    let mut sender =
        common::Ws::connect(&format!("{}/socket.io/?EIO=4&transport=websocket", s.ws_base)).await;
    sender.recv().await;
    sender.send("40");
    sender.recv().await;
    let t2 = token2(&s, 51, 0).await;
    sender.send(&format!("42{}", json!(["auth", {"id": 51, "name": "user51", "token2": t2, "type": 0}])));
    assert!(sender.recv().await.contains("\"success\":true"));
    let big = "x".repeat(1000);
    for _ in 0..100 {
        sender.send(&format!("42{}", json!(["msg", {"type": 1, "target": {"id": 77}, "content": big}])));
    }
    let mut results = 0;
    while results < 100 {
        let f = sender.recv().await;
        if f.starts_with("42[\"msg_result\"") {
            assert!(f.contains("\"success\":true"), "{f}");
            results += 1;
        }
    }
    let (st, body) = gone(&poll).await;
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("\"code\":1"), "the session is gone: {body}");
}

async fn a_failed_probe_leaves_the_session_polling_and_the_next_upgrades_it(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let url = |q: &str| eio_url(&s, q);
    // A probe that is not followed by the upgrade leaves the session polling; a second probe then
    // completes the upgrade, and the polling transport is gone for that session.
    let (_, open) = http("GET", &url("EIO=4&transport=polling"), "", "text/plain").await;
    let sid = sid_of(&open);
    let poll = url(&format!("EIO=4&transport=polling&sid={sid}"));
    let upgrade = format!("{}/socket.io/?EIO=4&transport=websocket&sid={sid}", s.ws_base);
    let mut probe = common::Ws::connect(&upgrade).await;
    probe.send("2probe");
    assert_eq!(probe.recv().await, "3probe");
    probe.close().await;
    let (st, ok) = http("POST", &poll, "40", "text/plain").await;
    assert_eq!((st, ok.as_str()), (200, "ok"), "still polling after the failed probe");
    let (_, connected) = http("GET", &poll, "", "text/plain").await;
    assert!(connected.starts_with("40{\"sid\""), "{connected}");
    let mut ws = common::Ws::connect(&upgrade).await;
    ws.send("2probe");
    assert_eq!(ws.recv().await, "3probe");
    let (_, noop) = http("GET", &poll, "", "text/plain").await;
    assert_eq!(noop, "6", "a poll during the upgrade gets a noop");
    ws.send("5");
    let t2 = token2(&s, 52, 0).await;
    ws.send(&format!("42{}", json!(["auth", {"id": 52, "name": "user52", "token2": t2, "type": 0}])));
    assert!(ws.recv().await.starts_with("42[\"auth_result\",{\"data\""), "the socket lives on the WebSocket");
    let (st, body) = gone(&poll).await;
    assert_eq!(st, 400, "{body}");
}

async fn two_gets_at_once_close_the_session(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let url = |q: &str| eio_url(&s, q);
    // Two GETs at once on one session: the second is refused and the session closed.
    let (_, open) = http("GET", &url("EIO=4&transport=polling"), "", "text/plain").await;
    let poll = url(&format!("EIO=4&transport=polling&sid={}", sid_of(&open)));
    let first = actix_rt::spawn({
        let poll = poll.clone();
        async move { http("GET", &poll, "", "text/plain").await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (st, body) = http("GET", &poll, "", "text/plain").await;
    assert_eq!(st, 400, "{body}");
    assert_eq!(first.await.expect("first GET").1, "1", "the waiting GET gets the close packet");
}

async fn a_garbage_frame_ends_its_session_only(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let url = |q: &str| eio_url(&s, q);
    // A WebSocket frame of garbage ends that session, and the server keeps serving.
    let mut bad = common::Ws::connect(&format!("{}/socket.io/?EIO=4&transport=websocket", s.ws_base)).await;
    bad.recv().await;
    bad.send("4zzz");
    bad.expect_closed(Duration::from_secs(3)).await;
    let (st, _) = http("GET", &url("EIO=4&transport=polling"), "", "text/plain").await;
    assert_eq!(st, 200);
}

async fn sockets_that_do_not_authenticate_in_time_are_disconnected(b: Backend) {
    let s = TestServer::start_with_config(&b, "[gru]\nauth_timeout_secs = 1\n");
    let mut a = Agent::start().await;
    for (name, v, transports) in [("quiet2", 2u8, POLLING), ("quiet4", 4, UPGRADE), ("quiet4ws", 4, WS)] {
        a.connect(name, v, &s.base, transports);
        a.expect(name, "connect").await;
    }
    a.login(&s, "authed", 4, UPGRADE, 1, Some(1)).await;
    for name in ["quiet2", "quiet4", "quiet4ws"] {
        assert_eq!(a.expect(name, "disconnect").await, "io server disconnect", "{name}");
    }
    a.expect_none("authed", "disconnect", Duration::from_millis(1500)).await;
    a.emit("authed", "online", json!("1"));
    assert_eq!(a.expect("authed", "online_result").await["data"], json!([1]));
}

/// The Gru demo app (gru-example) computes its tokens itself with the original's salted MD5, sends
/// `auth` without `type` or `groupId`, and subscribes with `{"userId","subscribeGroups":[{"id","name"}]}`.
async fn the_demo_apps_auth_and_subscribe(b: Backend) {
    let s = TestServer::start_with_config(
        &b,
        "[gru]\ntoken1_check = \"md5\"\ntoken1_salt = \"token_gen_for_ticket@sumory.com\"\n\
         token2_check = \"md5\"\ntoken2_salt = \"token_gen_for_spear@sumory.com\"\n",
    );
    let (id, name) = ("201", "张三");
    let token1 = md5_hex(&format!("{id}_{name}_token_gen_for_ticket@sumory.com"));
    let token2 = md5_hex(&format!("{id}_{name}_{token1}_token_gen_for_spear@sumory.com"));
    // /ticket hands out the same token2 in this mode.
    let q = format!("/ticket?userType=1&userName={}&userId={id}&token1={token1}", "%E5%BC%A0%E4%B8%89");
    assert_eq!(s.get_json(&q).await["data"]["token"], token2.as_str());

    let mut a = Agent::start().await;
    for (v, transports) in [(1, UPGRADE), (2, POLLING), (4, WS)] {
        let sock = format!("demo{v}");
        a.connect(&sock, v, &s.base, transports);
        a.expect(&sock, "connect").await;
        let auth = json!({"id": 201, "name": name, "token1": token1, "token2": token2});
        a.emit(&sock, "auth", json!(auth.to_string()));
        let r = a.expect(&sock, "auth_result").await;
        assert_eq!(r, json!({"success": true, "errorCode": 0, "msg": "", "data": {"userType": "STUDENT"}}));
        let sub = json!({"userId": 201, "subscribeGroups": [{"id": 160, "name": "一班"}, {"id": "161", "name": "二班"}]});
        a.emit(&sock, "subscribe", json!(sub.to_string()));
        let r = a.expect(&sock, "subscribe_result").await;
        assert_eq!(r, json!({"success": true, "errorCode": 0, "msg": "", "data": [160, 161]}), "v{v}");
        a.emit(
            &sock,
            "msg",
            json!(json!({"type": 1, "target": {"id": 161}, "content": format!("你好 {v}")}).to_string()),
        );
        let m = a.expect(&sock, "msg").await;
        assert_eq!(
            (m["content"].clone(), m["target"]["id"].clone()),
            (json!(format!("你好 {v}")), json!(161))
        );
        // A token2 of someone else (or without token1) is refused: no answer, a disconnect.
        let bad = format!("bad{v}");
        a.connect(&bad, v, &s.base, transports);
        a.expect(&bad, "connect").await;
        a.emit(
            &bad,
            "auth",
            json!(json!({"id": 202, "name": name, "token1": token1, "token2": token2}).to_string()),
        );
        assert_eq!(a.expect(&bad, "disconnect").await, "io server disconnect");
        a.expect_none(&bad, "auth_result", Duration::from_millis(50)).await;
    }
}

async fn auth_without_type_takes_the_type_of_its_token(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let mut a = Agent::start().await;
    for (user, ticket_type, want) in [(301u64, 0u8, "TEACHER"), (302, 1, "STUDENT")] {
        let t2 = token2(&s, user, ticket_type).await;
        let sock = format!("t{user}");
        a.connect(&sock, 4, &s.base, WS);
        a.expect(&sock, "connect").await;
        a.emit(&sock, "auth", json!({"id": user, "name": format!("user{user}"), "token2": t2}));
        assert_eq!(a.expect(&sock, "auth_result").await["data"]["userType"], want);
        // Naming another type than the token's is refused.
        let other = format!("o{user}");
        a.connect(&other, 4, &s.base, WS);
        a.expect(&other, "connect").await;
        let wrong = 1 - ticket_type;
        a.emit(
            &other,
            "auth",
            json!({"id": user, "name": format!("user{user}"), "token2": t2, "type": wrong}),
        );
        assert_eq!(a.expect(&other, "disconnect").await, "io server disconnect");
    }
    // token2_check = "off": no token needed; a socket without a type is a student.
    let s = TestServer::start_with_config(&b, "[gru]\ntoken2_check = \"off\"\n");
    a.connect("free", 2, &s.base, POLLING);
    a.expect("free", "connect").await;
    a.emit("free", "auth", json!({"id": 9, "name": "nine", "groupId": 3}));
    assert_eq!(a.expect("free", "auth_result").await["data"]["userType"], "STUDENT");
}

async fn handshakes_per_address_are_limited(b: Backend) {
    let s = TestServer::start_with_config(&b, "[gru]\nhandshakes_per_ip_per_sec = 2\n");
    let url = s.url("/socket.io/?EIO=3&transport=polling&b64=1");
    // A burst of three seconds' worth (6), then refusals in the Engine.IO error format.
    for i in 0..6 {
        assert_eq!(http("GET", &url, "", "text/plain").await.0, 200, "handshake {i}");
    }
    let (status, body) = http("GET", &url, "", "text/plain").await;
    assert_eq!(status, 429);
    assert_eq!(serde_json::from_str::<Value>(&body).expect("JSON")["code"], 4, "{body}");
    let ws = awc::Client::default()
        .ws(format!("{}/socket.io/?EIO=4&transport=websocket", s.ws_base))
        .connect()
        .await;
    assert!(ws.is_err(), "a WebSocket handshake counts too");
    assert!(s.metric("wsim_handshakes_refused_total").await >= 2.0);
    // Requests of existing sessions are not handshakes; the bucket refills at the rate.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(http("GET", &url, "", "text/plain").await.0, 200);
}
