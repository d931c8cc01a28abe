//! The gateway's `/notify` over a real WebSocket client, on SQLite and MariaDB.

mod common;

use std::time::Duration;

use common::{Backend, TestServer};
use serde_json::{json, Value};

on_both_backends!(notify_ws_delivers_replaces_and_catches_up, notify_refusals);

async fn send(s: &TestServer, token: &str, conv: &str, content: &str) -> String {
    let v = s
        .post_json("/send_msg", json!({"conversation_id": conv, "type": 1, "content": content}), Some(token))
        .await;
    assert_eq!(v["code"], 0, "{v}");
    v["data"]["MsgID"].as_str().expect("MsgID").to_string()
}

fn parse(frame: &str) -> Value {
    serde_json::from_str(frame).unwrap_or_else(|_| panic!("MsgData JSON: {frame}"))
}

async fn notify_ws_delivers_replaces_and_catches_up(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let v = s
        .post_json(
            "/inner/create_conversation",
            json!({"conversation_type": 4, "sessions": ["alice", "bob"]}),
            None,
        )
        .await;
    let conv = v["data"]["ConversationId"].as_str().expect("id").to_string();
    let alice = s.gateway_token("alice", 1).await;
    let bob = s.gateway_token("bob", 1).await;
    let mut bob_ws = s.ws(&format!("/notify?token={bob}&protoc=ws")).await;
    let mut alice_ws = s.ws(&format!("/notify?token={alice}&protoc=ws")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let id1 = send(&s, &alice, &conv, "hello").await;
    for ws in [&mut bob_ws, &mut alice_ws] {
        let m = parse(&ws.recv().await);
        assert_eq!(m["MsgId"], id1.as_str(), "the sender's own session gets it too");
        assert_eq!(m["ConversationID"], conv.as_str());
        assert_eq!(m["FromSession"], "alice");
        assert_eq!(m["Content"], "hello");
        assert_eq!(m["Type"], 1);
        assert!(m["SendTime"].as_i64().expect("µs") > 1_600_000_000_000_000);
    }

    // A newer notify of the same session and platform replaces the older one.
    let mut bob_ws2 = s.ws(&format!("/notify?token={bob}&protoc=ws")).await;
    let reason = bob_ws.expect_closed(Duration::from_secs(5)).await;
    assert_eq!(reason.map(|r| u16::from(r.code)), Some(4001));
    let id2 = send(&s, &alice, &conv, "after replace").await;
    assert_eq!(parse(&bob_ws2.recv().await)["MsgId"], id2.as_str());

    // Sent while bob had no notify open: delivered on his next notify, in order, once.
    bob_ws2.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut sent = Vec::new();
    for i in 0..3 {
        sent.push(send(&s, &alice, &conv, &format!("offline {i}")).await);
    }
    let mut bob_ws3 = s.ws(&format!("/notify?token={bob}&protoc=ws")).await;
    for id in &sent {
        assert_eq!(parse(&bob_ws3.recv().await)["MsgId"], id.as_str());
    }
    bob_ws3.expect_silence(Duration::from_millis(500)).await;

    // A frame sent on /entry into the conversation reaches /notify.
    let ann = s.login("alice").await;
    ann.send(&format!("text_{conv}_from entry_group_e"));
    let m = parse(&bob_ws3.recv().await);
    assert_eq!((m["FromSession"].as_str(), m["Content"].as_str()), (Some("alice"), Some("from entry")));
}

async fn notify_refusals(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let v = s.get_json("/notify?token=bogus&protoc=ws").await;
    assert_eq!(v, json!({"code": 10101, "error": "invalid token"}));
    let t = s.gateway_token("x", 1).await;
    let v = s.get_json(&format!("/notify?token={t}&protoc=carrier-pigeon")).await;
    assert_eq!(v["code"], 90013);
}
