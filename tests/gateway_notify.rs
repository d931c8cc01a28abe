//! The gateway's `/notify` over a real WebSocket client, on SQLite and MariaDB.

mod common;

use std::time::Duration;

use common::{Backend, TestServer};

const GATEWAY_CONNS: &str = "wsim_connections_open{frontend=\"gateway\"}";
use serde_json::{json, Value};

on_both_backends!(
    notify_ws_delivers_replaces_and_catches_up,
    notify_refusals,
    long_poll_loses_nothing,
    sse_streams_and_resumes_after_last_event_id,
    sse_sends_keep_alive_comments
);

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
    s.wait_metric(GATEWAY_CONNS, 2.0).await;

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

    // A newer notify of the same session and platform replaces the older one (once bob's copy is
    // confirmed: what a replaced connection had not confirmed comes again on the new one).
    s.wait_rows(
        &format!("SELECT COUNT(*) AS n FROM conv_members WHERE conv = '{conv}' AND user_id = 'bob' AND delivered_upto > 0"),
        1,
    )
    .await;
    let mut bob_ws2 = s.ws(&format!("/notify?token={bob}&protoc=ws")).await;
    let reason = bob_ws.expect_closed(Duration::from_secs(5)).await;
    assert_eq!(reason.map(|r| u16::from(r.code)), Some(4001));
    let id2 = send(&s, &alice, &conv, "after replace").await;
    assert_eq!(parse(&bob_ws2.recv().await)["MsgId"], id2.as_str());

    // Sent while bob had no notify open: delivered on his next notify, in order, once.
    bob_ws2.close().await;
    s.wait_metric(GATEWAY_CONNS, 1.0).await;
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

/// GET /notify?protoc=poll: (HTTP status, MsgData or Null).
async fn poll(s: &TestServer, token: &str) -> (u16, Value) {
    let client = awc::Client::builder().timeout(Duration::from_secs(20)).finish();
    let mut res = client
        .get(s.url(&format!("/notify?token={token}&protoc=poll")))
        .send()
        .await
        .expect("GET /notify poll");
    let status = res.status().as_u16();
    let body = res.body().await.expect("body");
    let v = if body.is_empty() { Value::Null } else { serde_json::from_slice(&body).expect("JSON") };
    (status, v)
}

async fn long_poll_loses_nothing(b: Backend) {
    let s = TestServer::start_with_config(&b, "[gateway]\npoll_timeout_secs = 1\n");
    let v = s
        .post_json(
            "/inner/create_conversation",
            json!({"conversation_type": 0, "sessions": ["alice", "bob"]}),
            None,
        )
        .await;
    let conv = v["data"]["ConversationId"].as_str().expect("id").to_string();
    let alice = s.gateway_token("alice", 1).await;
    let bob = s.gateway_token("bob", 2).await;

    // Nothing yet: 204 after the timeout.
    let t = std::time::Instant::now();
    let (status, _) = poll(&s, &bob).await;
    assert_eq!(status, 204);
    assert!(t.elapsed() >= Duration::from_millis(900));

    // Sent between polls: each poll answers the next one, in order, once.
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(send(&s, &alice, &conv, &format!("p{i}")).await);
    }
    for (i, id) in sent.iter().enumerate() {
        let (status, m) = poll(&s, &bob).await;
        assert_eq!(status, 200);
        assert_eq!(m["MsgId"], id.as_str(), "poll {i}");
        assert_eq!(m["Content"], format!("p{i}"));
    }
    let (status, _) = poll(&s, &bob).await;
    assert_eq!(status, 204, "nothing twice");

    // A waiting poll answers as soon as a message arrives.
    let waiting = poll(&s, &bob);
    let sender = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        send(&s, &alice, &conv, "live").await
    };
    let ((status, m), id) = futures_util::join!(waiting, sender);
    assert_eq!(status, 200);
    assert_eq!(m["MsgId"], id.as_str());
}

/// Reads SSE events `(id, data)` from a streaming response until `n` arrived.
async fn sse_events(
    res: &mut awc::ClientResponse<
        impl futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>> + Unpin,
    >,
    buf: &mut String,
    n: usize,
) -> Vec<(String, Value)> {
    use futures_util::StreamExt;
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut id = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str::<Value>(v).expect("JSON data"));
                } else if line.starts_with("event: ") {
                    assert_eq!(line, "event: message");
                }
            }
            if let (Some(id), Some(data)) = (id, data) {
                out.push((id, data));
            }
        }
        if out.len() >= n {
            return out;
        }
        match tokio::time::timeout_at(deadline, res.next()).await {
            Ok(Some(Ok(chunk))) => buf.push_str(&String::from_utf8_lossy(&chunk)),
            other => panic!("SSE stream ended or timed out after {} events: {other:?}", out.len()),
        }
    }
}

async fn sse_streams_and_resumes_after_last_event_id(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let v = s
        .post_json(
            "/inner/create_conversation",
            json!({"conversation_type": 5, "sessions": ["alice", "bob"]}),
            None,
        )
        .await;
    let conv = v["data"]["ConversationId"].as_str().expect("id").to_string();
    let alice = s.gateway_token("alice", 1).await;
    let bob = s.gateway_token("bob", 3).await;
    let client = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
    let url = s.url(&format!("/notify?token={bob}&protoc=sse"));
    let mut res = client.get(&url).send().await.expect("GET sse");
    assert_eq!(res.status().as_u16(), 200);
    let ct = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    s.wait_metric(GATEWAY_CONNS, 1.0).await;
    let first = send(&s, &alice, &conv, "one").await;
    let second = send(&s, &alice, &conv, "two").await;
    let mut buf = String::new();
    let got = sse_events(&mut res, &mut buf, 2).await;
    assert_eq!(got[0].0, first);
    assert_eq!(got[0].1["Content"], "one");
    assert_eq!(got[1].0, second);
    assert_eq!(got[1].1["MsgId"], second.as_str());
    // The stream drops; more is sent; the client resumes after the first message it saw.
    drop(res);
    let third = send(&s, &alice, &conv, "three").await;
    let mut res =
        client.get(&url).insert_header(("Last-Event-ID", first.as_str())).send().await.expect("resume");
    let mut buf = String::new();
    let got = sse_events(&mut res, &mut buf, 2).await;
    let ids: Vec<&str> = got.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, [second.as_str(), third.as_str()]);
    // A bad Last-Event-ID is refused in the gateway envelope.
    let mut res = client.get(&url).insert_header(("Last-Event-ID", "garbage")).send().await.expect("bad id");
    let body = res.body().await.expect("body");
    let v: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(v["code"], 10001);
}

async fn sse_sends_keep_alive_comments(b: Backend) {
    use futures_util::StreamExt;
    let s = TestServer::start(&b, &["--heartbeat-interval", "1"]);
    let t = s.gateway_token("kay", 1).await;
    let client = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
    let mut res = client.get(s.url(&format!("/notify?token={t}&protoc=sse"))).send().await.expect("GET sse");
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while text.matches(": keep-alive\n\n").count() < 2 {
        match tokio::time::timeout_at(deadline, res.next()).await {
            Ok(Some(Ok(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            other => panic!("no keep-alive comments: {text:?} {other:?}"),
        }
    }
}
