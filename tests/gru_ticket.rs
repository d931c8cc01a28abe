//! Gru's `/ticket` over real HTTP: node choice, backups, token1 checks and error codes.

mod common;

use actix_web::{web, App, HttpResponse, HttpServer};
use common::{Backend, TestServer};
use md5::{Digest, Md5};
use serde_json::{json, Value};

on_both_backends!(
    ticket_with_defaults,
    consistent_nodes_backups_and_md5_token1,
    callback_token1_no_node_and_own_listen_address
);

async fn ticket_with_defaults(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let before = chrono::Utc::now().timestamp_millis();
    let v = s.get_json("/ticket?userType=1&userName=student1&userId=123&token1=whatever").await;
    assert_eq!(v["success"], true, "{v}");
    assert_eq!(v["errorCode"], 0);
    let d = &v["data"];
    assert_eq!(d["addr"], s.base.as_str(), "this server, at its public URL");
    assert_eq!(d["name"], "node_1");
    assert_eq!(d["backupNodes"], json!([]));
    assert!(d["token"].as_str().is_some_and(|t| t.len() > 20));
    let t = d["time"].as_i64().expect("ms");
    assert!(t >= before && t < before + 10_000);
    for q in ["/ticket?userName=a&userId=1", "/ticket?userType=1&userId=1", "/ticket?userType=1&userName=a"] {
        let v = s.get_json(q).await;
        assert_eq!(v, json!({"success": false, "errorCode": 710, "msg": "missing parameter"}), "{q}");
    }
    // GET only; other paths are not found.
    let client = awc::Client::default();
    for method in ["POST", "PUT", "DELETE"] {
        let m = awc::http::Method::from_bytes(method.as_bytes()).expect("method");
        let mut res =
            client.request(m, s.url("/ticket?userType=1&userName=a&userId=1")).send().await.expect("HTTP");
        assert_eq!(res.status().as_u16(), 405, "{method}");
        assert_eq!(res.headers().get("allow").and_then(|v| v.to_str().ok()), Some("GET"));
        let v: Value = res.json().await.expect("JSON");
        assert_eq!(v["errorCode"], 405);
    }
    for path in ["/ticket/", "/ticket/x", "/tickets"] {
        let res = client.get(s.url(path)).send().await.expect("HTTP");
        assert_eq!(res.status().as_u16(), 404, "{path}");
    }
}

const NODES: &str = "nodes = [{ name = \"node_1\", addr = \"http://10.0.0.1:11111\" }, \
                     { name = \"node_2\", addr = \"http://10.0.0.2:11111\" }, \
                     { name = \"node_3\", addr = \"http://10.0.0.3:11111\" }]\n";

async fn consistent_nodes_backups_and_md5_token1(b: Backend) {
    let s = TestServer::start_with_config(
        &b,
        &format!("[gru]\n{NODES}token1_check = \"md5\"\ntoken1_salt = \"pepper\"\n"),
    );
    let token1 = |id: &str, name: &str| -> String {
        Md5::digest(format!("{id}_{name}_pepper").as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    };
    let mut chosen = std::collections::HashSet::new();
    for id in 0..40 {
        let id = id.to_string();
        let q = format!(
            "/ticket?userType=0&userName=n{id}&userId={id}&token1={}",
            token1(&id, &format!("n{id}"))
        );
        let a = s.get_json(&q).await;
        assert_eq!(a["success"], true, "{a}");
        let b = s.get_json(&q).await;
        assert_eq!(a["data"]["addr"], b["data"]["addr"], "the same user gets the same node");
        let backups: Vec<&str> = a["data"]["backupNodes"]
            .as_array()
            .expect("backups")
            .iter()
            .map(|n| n["name"].as_str().expect("name"))
            .collect();
        assert_eq!(backups.len(), 2);
        assert!(!backups.contains(&a["data"]["name"].as_str().expect("name")));
        chosen.insert(a["data"]["name"].as_str().expect("name").to_string());
    }
    assert_eq!(chosen.len(), 3, "users spread over the nodes");
    let v = s.get_json("/ticket?userType=0&userName=x&userId=1&token1=wrong").await;
    assert_eq!(v, json!({"success": false, "errorCode": 711, "msg": "invalid token1"}));
    let v = s.get_json("/ticket?userType=0&userName=x&userId=1").await;
    assert_eq!(v["errorCode"], 710);
}

async fn callback_token1_no_node_and_own_listen_address(b: Backend) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let cb = format!("http://{}/check", listener.local_addr().expect("addr"));
    let server = HttpServer::new(|| {
        App::new().route(
            "/check",
            web::get().to(|q: web::Query<std::collections::HashMap<String, String>>| async move {
                let ok = q.get("token1").map(String::as_str) == Some("good") && q.get("userId").is_some();
                HttpResponse::Ok().json(json!({"success": ok}))
            }),
        )
    })
    .listen(listener)
    .expect("listen")
    .workers(1)
    .run();
    actix_rt::spawn(server);
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let ticket_addr = free.local_addr().expect("addr");
    drop(free);
    let s = TestServer::start_with_config(
        &b,
        &format!("[gru]\n{NODES}token1_check = \"callback\"\ntoken1_callback = \"{cb}\"\nticket_listen = \"{ticket_addr}\"\n"),
    );
    let v = s.get_json("/ticket?userType=1&userName=a&userId=9&token1=good").await;
    assert_eq!(v["success"], true, "{v}");
    let v = s.get_json("/ticket?userType=1&userName=a&userId=9&token1=bad").await;
    assert_eq!(v["errorCode"], 711);
    // The ticket service's own address answers /ticket, and only that.
    let client = awc::Client::default();
    let mut res = client
        .get(format!("http://{ticket_addr}/ticket?userType=1&userName=a&userId=9&token1=good"))
        .send()
        .await
        .expect("ticket port");
    let v: Value = serde_json::from_slice(&res.body().await.expect("body")).expect("JSON");
    assert_eq!(v["success"], true);
    let res = client.get(format!("http://{ticket_addr}/healthz")).send().await.expect("GET");
    assert_eq!(res.status().as_u16(), 404);

    let s = TestServer::start_with_config(&b, "[gru]\nnodes = []\n");
    let v = s.get_json("/ticket?userType=1&userName=a&userId=9").await;
    assert_eq!(v, json!({"success": false, "errorCode": 701, "msg": "no node available"}));
}
