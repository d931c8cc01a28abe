//! The longweb front-end over real HTTP and WebSocket, with a fake business app (checktoken) inside
//! the test, on SQLite and MariaDB.

mod common;

use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use common::{Backend, TestServer};
use serde_json::{json, Value};

on_both_backends!(sendmessage_codes_and_routing, sockets_admission_and_tokens, long_polling);

/// The business app: checktoken answers according to the token it is given.
fn start_business_app() -> String {
    async fn checktoken(q: web::Query<std::collections::HashMap<String, String>>) -> HttpResponse {
        let get = |k: &str| q.get(k).cloned().unwrap_or_default();
        let ok = json!({"RetCode": 0, "RetMsg": "ok", "AppID": get("appid"), "GroupID": get("groupid"), "UserID": get("userid")});
        match get("token").as_str() {
            "ok" => HttpResponse::Ok().json(ok),
            "numeric" => HttpResponse::Ok().json(json!({"RetCode": 0, "AppID": get("appid").parse::<i64>().unwrap_or(0), "GroupID": get("groupid"), "UserID": get("userid")})),
            "mismatch" => HttpResponse::Ok().json(json!({"RetCode": 0, "AppID": get("appid"), "GroupID": get("groupid"), "UserID": "someone else"})),
            "refused" => HttpResponse::Ok().json(json!({"RetCode": 1, "RetMsg": "token expired"})),
            "badjson" => HttpResponse::Ok().body("this is not json"),
            "slow" => {
                tokio::time::sleep(Duration::from_secs(3)).await;
                HttpResponse::Ok().json(ok)
            }
            _ => HttpResponse::Ok().json(json!({"RetCode": 2, "RetMsg": "unknown token"})),
        }
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    async fn querymessage(q: web::Query<std::collections::HashMap<String, String>>) -> HttpResponse {
        match q.get("querykey").map(String::as_str) {
            Some("now") => HttpResponse::Ok()
                .body(format!("immediate data for {}", q.get("userid").cloned().unwrap_or_default())),
            Some("fail") => HttpResponse::InternalServerError().finish(),
            _ => HttpResponse::Ok().finish(),
        }
    }
    let server = HttpServer::new(|| {
        App::new()
            .route("/api/checktoken", web::get().to(checktoken))
            .route("/api/querymessage", web::get().to(querymessage))
    })
    .listen(listener)
    .expect("listen")
    .workers(2)
    .run();
    actix_rt::spawn(server);
    format!("http://{addr}/api/checktoken")
}

fn config(dir: &std::path::Path, authapi: &str, allowips: &str, extra_app: bool) -> std::path::PathBuf {
    let path = dir.join("wsim.toml");
    let messageapi = authapi.replace("checktoken", "querymessage");
    let mut text = format!(
        "[longweb]\nallowips = [{allowips}]\ncallback_timeout_secs = 1\n\
         [[longweb.apps]]\nappid = \"10000\"\nname = \"demo\"\nauthapi = \"{authapi}\"\n\
         messageapi = \"{messageapi}\"\ntimeout = 2\n\
         [[longweb.apps]]\nappid = \"10001\"\nname = \"plain\"\ntimeout = 1\n\
         [[longweb.apps]]\nappid = \"10002\"\nname = \"down\"\nauthapi = \"http://127.0.0.1:1/api/checktoken\"\n"
    );
    if extra_app {
        text.push_str("[[longweb.apps]]\nappid = \"10005\"\nname = \"late\"\n");
    }
    std::fs::write(&path, text).expect("config");
    path
}

async fn push(s: &TestServer, body: Value) -> Value {
    s.post_json("/sendmessage", body, None).await
}

fn msg(group: &str, user: &str, level: &str, content: &str) -> Value {
    json!({"AppID": "10000", "GroupID": "1", "UserID": "", "MessageLevel": level, "ToAppID": "10000",
           "ToGroupID": group, "ToUserID": user, "Content": content})
}

async fn socket(s: &TestServer, query: &str) -> common::Ws {
    s.ws(&format!("/ws/onsocket?{query}")).await
}

async fn sendmessage_codes_and_routing(b: Backend) {
    let dir = tempfile::tempdir().expect("tmp");
    let authapi = start_business_app();
    let cfg = config(dir.path(), &authapi, "\"127.0.0.1\", \"::1\"", false);
    let s = TestServer::start(&b, &["--config", cfg.to_str().expect("path")]);

    // RetCodes.
    let client = awc::Client::default();
    let mut res = client.post(s.url("/sendmessage")).send_body("").await.expect("POST");
    let v: Value = serde_json::from_slice(&res.body().await.expect("body")).expect("JSON");
    assert_eq!(v, json!({"RetCode": -2, "RetMsg": "message is empty"}));
    let mut res = client.post(s.url("/sendmessage")).send_body("{not json").await.expect("POST");
    let v: Value = serde_json::from_slice(&res.body().await.expect("body")).expect("JSON");
    assert_eq!(v["RetCode"], -10001);
    assert_eq!(push(&s, json!([1, 2])).await["RetCode"], -10001);
    let mut unknown = msg("g1", "", "0", "x");
    unknown["AppID"] = json!("999");
    unknown["ToAppID"] = json!("999");
    assert_eq!(
        push(&s, unknown).await,
        json!({"RetCode": -10002, "RetMsg": "this appid no have permission"})
    );
    let mut other = msg("g1", "", "0", "x");
    other["ToAppID"] = json!("10001");
    assert_eq!(push(&s, other).await["RetCode"], -10002);
    assert_eq!(push(&s, msg("g1", "", "0", "")).await["RetCode"], -2);
    // Numbers are accepted for string fields.
    let numeric =
        json!({"AppID": 10000, "ToAppID": 10000, "ToGroupID": 7, "MessageLevel": 0, "Content": "n"});
    assert_eq!(push(&s, numeric).await, json!({"RetCode": 0, "RetMsg": "ok"}));

    // Routing: a, b in g1 (b with a verified token), c in g2, d in "online", e in another app, f in g1+g2.
    let mut a = socket(&s, "appid=10000&groupid=g1&userid=u1").await;
    let mut bb = socket(&s, "appid=10000&groupid=g1&userid=u2&token=ok").await;
    let mut c = socket(&s, "appid=10000&groupid=g2&userid=u3").await;
    let mut d = socket(&s, "appid=10000&groupid=online&userid=u4").await;
    let mut e = socket(&s, "appid=10001&groupid=g1&userid=u5").await;
    let mut f =
        socket(&s, "appid=10000&userid=u6&groupids=%7B%22IDs%22%3A%5B%22g1%22%2C%22g2%22%5D%7D").await;
    s.wait_metric("wsim_connections_open{frontend=\"longweb\"}", 6.0).await;

    let content = r#"{"userName":"王老师","message":"跳转到第三页"}"#;
    assert_eq!(push(&s, msg("g1", "", "0", content)).await["RetCode"], 0);
    for ws in [&mut a, &mut bb, &mut f] {
        assert_eq!(ws.recv().await, content, "Content delivered verbatim");
    }
    push(&s, msg("", "", "0", "to everyone")).await;
    for ws in [&mut a, &mut bb, &mut c, &mut f] {
        assert_eq!(ws.recv().await, "to everyone");
    }
    push(&s, msg("g1", "", "1", "no token only")).await;
    assert_eq!(a.recv().await, "no token only");
    assert_eq!(f.recv().await, "no token only");
    push(&s, msg("g1", "", "2", "token only")).await;
    assert_eq!(bb.recv().await, "token only");
    push(&s, msg("g1", "u2", "0", "just u2")).await;
    assert_eq!(bb.recv().await, "just u2");
    push(&s, msg("g2", "", "0", "g2 news")).await;
    assert_eq!(c.recv().await, "g2 news");
    assert_eq!(f.recv().await, "g2 news");
    for ws in [&mut a, &mut bb, &mut c, &mut d, &mut e, &mut f] {
        ws.expect_silence(Duration::from_millis(300)).await;
    }
    // /state counts the sockets per app.
    let v = s.get_json("/state").await;
    assert_eq!(v["Apps"]["10000"]["WebSocket"], json!({"WithToken": 1, "WithoutToken": 4}));
    assert_eq!(v["Apps"]["10001"]["WebSocket"], json!({"WithToken": 0, "WithoutToken": 1}));

    // SIGHUP reloads the apps without dropping connections.
    let mut late = msg("g1", "", "0", "late app");
    late["AppID"] = json!("10005");
    late["ToAppID"] = json!("10005");
    assert_eq!(push(&s, late.clone()).await["RetCode"], -10002);
    config(dir.path(), &authapi, "\"127.0.0.1\", \"::1\"", true);
    s.signal("HUP");
    let reloaded = || async { push(&s, late.clone()).await["RetCode"] == 0 };
    assert!(
        common::eventually(Duration::from_secs(10), reloaded).await,
        "the new app is not taken after SIGHUP"
    );
    push(&s, msg("g1", "", "0", "still here")).await;
    assert_eq!(a.recv().await, "still here");
}

async fn sockets_admission_and_tokens(b: Backend) {
    let dir = tempfile::tempdir().expect("tmp");
    let authapi = start_business_app();
    let cfg = config(dir.path(), &authapi, "\"127.0.0.1\"", false);
    let s = TestServer::start(&b, &["--config", cfg.to_str().expect("path")]);
    for (query, want) in [
        ("appid=999&groupid=g&userid=u", "no permission connect! => appid[999] no exists"),
        (
            "appid=10000&groupid=g&userid=u&token=refused",
            "no permission connect! => check token result => token expired",
        ),
        (
            "appid=10000&groupid=g&userid=u&token=mismatch",
            "no permission connect! => check token: appid|groupid|userid not match",
        ),
        (
            "appid=10000&groupid=g&userid=u&token=badjson",
            "no permission connect! => check token has an error => ",
        ),
        ("appid=10001&groupid=g&userid=u&token=any", "no permission connect! => appid[10001] has no authapi"),
        ("appid=10002&groupid=g&userid=u&token=ok", "no permission connect! => check token has an error => "),
        ("appid=10000&userid=u", "no permission connect! => "),
    ] {
        let mut ws = socket(&s, query).await;
        let frame = ws.recv().await;
        assert!(frame.starts_with(want), "{query}: {frame}");
        ws.expect_closed(Duration::from_secs(5)).await;
    }
    // A good token, also with a numeric AppID in the answer: no frame, and messages arrive.
    let mut ok = socket(&s, "appid=10000&groupid=g&userid=u&token=numeric").await;
    ok.expect_silence(Duration::from_millis(300)).await;
    push(&s, msg("g", "", "2", "verified")).await;
    assert_eq!(ok.recv().await, "verified");

    // A slow checktoken of one app does not hold up another app.
    let slow = s.ws("/ws/onsocket?appid=10000&groupid=s&userid=slow&token=slow");
    let other = async {
        let t = Instant::now();
        let mut plain = socket(&s, "appid=10001&groupid=q&userid=q1").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut m = msg("q", "", "0", "quick");
        m["AppID"] = json!("10001");
        m["ToAppID"] = json!("10001");
        assert_eq!(push(&s, m).await["RetCode"], 0);
        assert_eq!(plain.recv().await, "quick");
        t.elapsed()
    };
    let (_slow_ws, took) = futures_util::join!(slow, other);
    assert!(took < Duration::from_millis(1500), "another app waited {took:?}");
}

/// With an allow-list that excludes loopback, /sendmessage answers -1.
#[actix_rt::test]
async fn sendmessage_refuses_other_addresses() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(dir.path(), "http://127.0.0.1:1/x", "\"10.0.0.0/8\"", false);
    let s = TestServer::start(&Backend::any(), &["--config", cfg.to_str().expect("path")]);
    assert_eq!(push(&s, msg("g1", "", "0", "x")).await, json!({"RetCode": -1, "RetMsg": "not allow ip"}));
}

/// One JSONP poll: (the raw body, the parsed object, content type, CORS header).
async fn poll(s: &TestServer, query: &str) -> (String, Value, String, String) {
    let client = awc::Client::builder().timeout(Duration::from_secs(20)).finish();
    let mut res = client.get(s.url(&format!("/poll/onpolling?{query}"))).send().await.expect("GET poll");
    assert_eq!(res.status().as_u16(), 200);
    let header = |n: &str| res.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let (ct, cors) = (header("content-type"), header("access-control-allow-origin"));
    let body = String::from_utf8(res.body().await.expect("body").to_vec()).expect("utf8");
    let open = body.find('(').expect("JSONP");
    let json: Value = serde_json::from_str(&body[open + 1..body.len() - 2]).expect("JSON inside");
    assert!(body.ends_with(");"), "{body}");
    (body, json, ct, cors)
}

async fn long_polling(b: Backend) {
    let dir = tempfile::tempdir().expect("tmp");
    let authapi = start_business_app();
    let cfg = config(dir.path(), &authapi, "\"127.0.0.1\"", false);
    let s = TestServer::start(&b, &["--config", cfg.to_str().expect("path")]);

    // Shape, headers and validation codes.
    let (body, v, ct, cors) =
        poll(&s, "appid=10001&groupid=g&userid=u&querykey=k&jsonpcallback=jQuery123_456&_=1700000000").await;
    assert!(body.starts_with("jQuery123_456("), "{body}");
    assert_eq!(ct, "application/javascript; charset=UTF-8");
    assert_eq!(cors, "*");
    assert_eq!(v, json!({"RetCode": -100009, "RetMsg": "time out", "Message": ""}));
    let (body, v, _, _) = poll(&s, "appid=10001&groupid=g&userid=u").await;
    assert!(body.starts_with("callback("), "default callback name: {body}");
    assert_eq!(v["RetCode"], -100001);
    let (body, v, _, _) = poll(&s, "appid=10001&groupid=g&querykey=k&jsonpcallback=alert(1)").await;
    assert!(body.starts_with("callback("));
    assert_eq!(v["RetCode"], -100001);
    let (_, v, _, _) = poll(&s, "appid=999&groupid=g&querykey=k").await;
    assert_eq!(v["RetCode"], -100002);
    let (_, v, _, _) = poll(&s, "appid=10000&groupid=g&userid=u&querykey=k&token=refused").await;
    assert_eq!(v["RetCode"], -101004);
    let (_, v, _, _) = poll(&s, "appid=10001&groupid=g&userid=u&querykey=k&token=t").await;
    assert_eq!(v["RetCode"], -101001);
    for (query, code) in [
        ("appid=10002&groupid=g&userid=u&querykey=k&token=ok", -101002),
        ("appid=10000&groupid=g&userid=u&querykey=k&token=badjson", -101003),
        ("appid=10000&groupid=g&userid=u&querykey=k&token=mismatch", -101005),
    ] {
        let (_, v, _, _) = poll(&s, query).await;
        assert_eq!(v["RetCode"], code, "{query}");
    }

    // querymessage first: a non-empty answer returns at once; a failure is -200009.
    let t = Instant::now();
    let (_, v, _, _) = poll(&s, "appid=10000&groupid=g&userid=u7&querykey=now").await;
    assert_eq!(v, json!({"RetCode": 0, "RetMsg": "ok", "Message": "immediate data for u7"}));
    assert!(t.elapsed() < Duration::from_secs(1));
    let (_, v, _, _) = poll(&s, "appid=10000&groupid=g&userid=u7&querykey=fail").await;
    assert_eq!(v["RetCode"], -200009);

    // Messages pushed between polls are kept and returned by the next polls, in order.
    let (_, v, _, _) = poll(&s, "appid=10001&groupid=room&userid=p1&querykey=k").await;
    assert_eq!(v["RetCode"], -100009, "first poll registers the box");
    let push_plain = |content: &str| json!({"AppID": "10001", "ToAppID": "10001", "ToGroupID": "room", "Content": content});
    for i in 0..3 {
        assert_eq!(push(&s, push_plain(&format!("between {i}"))).await["RetCode"], 0);
    }
    for i in 0..3 {
        let (_, v, _, _) = poll(&s, "appid=10001&groupid=room&userid=p1&querykey=k").await;
        assert_eq!(v["Message"], format!("between {i}"));
        assert_eq!(v["RetCode"], 0);
    }
    // A waiting poll is answered by the next push.
    let waiting = poll(&s, "appid=10001&groupid=room&userid=p1&querykey=k");
    let pusher = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        push(&s, push_plain("live")).await
    };
    let ((_, v, _, _), _) = futures_util::join!(waiting, pusher);
    assert_eq!(v["Message"], "live");
    // The box is bounded (1,000 messages; and bytes, see tests/slow_readers.rs): the oldest are
    // dropped, and counted.
    for i in 0..1005 {
        push(&s, push_plain(&format!("flood {i}"))).await;
    }
    let (_, v, _, _) = poll(&s, "appid=10001&groupid=room&userid=p1&querykey=k").await;
    assert_eq!(v["Message"], "flood 5");
    let client = awc::Client::default();
    let mut res = client.get(s.url("/metrics")).send().await.expect("metrics");
    let text = String::from_utf8(res.body().await.expect("body").to_vec()).expect("utf8");
    assert!(text.contains("wsim_poll_messages_dropped_total 5"), "{text}");
}
