//! The gateway's /send_msg and history endpoints over real HTTP, on SQLite and MariaDB, and
//! /send_msg into a wsim group reaching /entry.

mod common;

use common::{fields, Backend, TestServer};
use serde_json::{json, Value};

on_both_backends!(send_and_history, send_msg_reaches_entry_members);

fn ids(v: &Value) -> Vec<String> {
    v["data"]["Msg"]
        .as_array()
        .expect("Msg")
        .iter()
        .map(|m| m["Content"].as_str().expect("c").to_string())
        .collect()
}

fn range(a: usize, b: usize) -> Vec<String> {
    (a..=b).map(|i| format!("m{i}")).collect()
}

async fn send_and_history(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let v = s
        .post_json(
            "/inner/create_conversation",
            json!({"conversation_type": 2, "sessions": ["alice", "bob"]}),
            None,
        )
        .await;
    let conv = v["data"]["ConversationId"].as_str().expect("id").to_string();
    let alice = s.gateway_token("alice", 1).await;
    let bob = s.gateway_token("bob", 1).await;
    let eve = s.gateway_token("eve", 1).await;
    let mut msg_ids = Vec::new();
    for i in 0..35 {
        let body = json!({"conversation_id": conv, "status": i % 3, "type": 1, "content": format!("m{i}")});
        let v = s.post_json("/send_msg", body, Some(&alice)).await;
        assert_eq!(v["code"], 0, "{v}");
        msg_ids.push(v["data"]["MsgID"].as_str().expect("MsgID").to_string());
    }
    assert!(msg_ids.windows(2).all(|w| w[0] < w[1]), "string order is send order");

    let last30 =
        s.post_json("/get_conversation_last_30_msg", json!({"conversation_id": conv}), Some(&bob)).await;
    assert_eq!(ids(&last30), range(5, 34));
    let m = &last30["data"]["Msg"][0];
    assert_eq!(m["MsgId"], msg_ids[5].as_str());
    assert_eq!(m["ConversationID"], conv.as_str());
    assert_eq!(m["FromSession"], "alice");
    assert_eq!(m["Status"], 5 % 3);
    assert_eq!(m["Type"], 1);
    assert!(m["SendTime"].as_i64().expect("µs") > 1_600_000_000_000_000);
    let desc = s
        .post_json(
            "/get_conversation_last_30_msg",
            json!({"conversation_id": conv, "desc": true}),
            Some(&bob),
        )
        .await;
    let mut want = range(5, 34);
    want.reverse();
    assert_eq!(ids(&desc), want);

    let one =
        s.post_json("/get_conversation_lastone_msg", json!({"conversation_id": conv}), Some(&bob)).await;
    assert_eq!(ids(&one), range(34, 34));
    let before = s
        .post_json(
            "/get_conversation_30msg_before_the_id",
            json!({"conversation_id": conv, "msg_id": msg_ids[10]}),
            Some(&bob),
        )
        .await;
    assert_eq!(ids(&before), range(0, 10));
    let after = s
        .post_json(
            "/get_conversation_30msg_after_the_id",
            json!({"conversation_id": conv, "msg_id": msg_ids[10]}),
            Some(&bob),
        )
        .await;
    assert_eq!(ids(&after), range(10, 34));
    let by_range = s
        .post_json(
            "/get_conversation_msg_by_range",
            json!({"conversation_id": conv, "start_msg_id": msg_ids[3], "end_msg_id": msg_ids[7], "desc": true}),
            Some(&bob),
        )
        .await;
    let mut want = range(3, 7);
    want.reverse();
    assert_eq!(ids(&by_range), want);

    let other = s
        .post_json("/inner/create_conversation", json!({"conversation_type": 0, "sessions": ["bob"]}), None)
        .await["data"]["ConversationId"]
        .as_str()
        .expect("id")
        .to_string();
    let v = s
        .post_json("/send_msg", json!({"conversation_id": other, "type": 1, "content": "x"}), Some(&bob))
        .await;
    let foreign = v["data"]["MsgID"].as_str().expect("id").to_string();
    for (path, body, token, code) in [
        ("/send_msg", json!({"conversation_id": conv, "type": 1, "content": "x"}), &eve, 10004),
        ("/send_msg", json!({"conversation_id": "nope", "type": 1, "content": "x"}), &alice, 10005),
        ("/send_msg", json!({"type": 1}), &alice, 10001),
        ("/get_conversation_last_30_msg", json!({"conversation_id": conv}), &eve, 10004),
        (
            "/get_conversation_30msg_before_the_id",
            json!({"conversation_id": conv, "msg_id": "bogus"}),
            &bob,
            10001,
        ),
        (
            "/get_conversation_30msg_after_the_id",
            json!({"conversation_id": conv, "msg_id": foreign}),
            &bob,
            10001,
        ),
        (
            "/get_conversation_msg_by_range",
            json!({"conversation_id": conv, "start_msg_id": msg_ids[1]}),
            &bob,
            10001,
        ),
    ] {
        let v = s.post_json(path, body.clone(), Some(token)).await;
        assert_eq!(v["code"], code, "{path} {body}: {v}");
    }
    let v = s.post_json("/send_msg", json!({"conversation_id": conv, "content": "x"}), None).await;
    assert_eq!(v["code"], 10101);
    // The detail endpoint agrees with the last message.
    let v = s.post_json("/get_conversation_detail", json!({"conversation_id": conv}), Some(&bob)).await;
    assert_eq!(v["data"]["LastMsgID"], msg_ids[34].as_str());
}

async fn send_msg_reaches_entry_members(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let v = s.get_json("/creategrp?creator=u1&members=u2&name=g").await;
    let gid = v["data"]["groupid"].as_str().expect("gid").to_string();
    let mut u2 = s.login("u2").await;
    let t = s.gateway_token("u1", 1).await;
    let v = s
        .post_json(
            "/send_msg",
            json!({"conversation_id": gid, "type": 3, "content": "http://x/p.jpg"}),
            Some(&t),
        )
        .await;
    assert_eq!(v["code"], 0, "{v}");
    let (kind, from, payload, ty, group, _, _) = fields(&u2.recv().await);
    assert_eq!((kind.as_str(), from.as_str(), payload.as_str()), ("picture", "u1", "http://x/p.jpg"));
    assert_eq!((ty.as_str(), group.as_str()), ("group", gid.as_str()));
    // And the other way: a frame on /entry shows up in the gateway's history.
    u2.send(&format!("audio_{gid}_http://x/a-3.mp3_group_e"));
    let from_u2 = || async {
        let v = s.post_json("/get_conversation_lastone_msg", json!({"conversation_id": gid}), Some(&t)).await;
        v["data"]["Msg"][0]["FromSession"] == "u2"
    };
    assert!(
        common::eventually(std::time::Duration::from_secs(10), from_u2).await,
        "the frame was not stored"
    );
    let v = s.post_json("/get_conversation_lastone_msg", json!({"conversation_id": gid}), Some(&t)).await;
    let m = &v["data"]["Msg"][0];
    assert_eq!((m["FromSession"].as_str(), m["Type"].as_i64()), (Some("u2"), Some(4)));
    assert_eq!(m["Content"], "http://x/a-3.mp3");
}
