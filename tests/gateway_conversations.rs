//! The gateway's tokens and conversation endpoints over real HTTP, on SQLite and MariaDB, and the
//! cross-protocol path from wsim's /entry into a gateway conversation.

mod common;

use common::{Backend, TestServer};
use serde_json::json;

on_both_backends!(
    conversations_lifecycle,
    inner_endpoints,
    tokens_are_checked,
    entry_messages_reach_gateway_conversations,
    wsim_groups_change_members_only_through_their_own_api
);

async fn conversations_lifecycle(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let alice = s.gateway_token("alice", 1).await;
    let bob = s.gateway_token("bob", 2).await;
    let v = s.post_json("/create_conversation", json!({"conversation_type": 3}), Some(&alice)).await;
    assert_eq!(v["code"], 0, "{v}");
    assert!(v.get("error").is_none());
    let conv = v["data"]["ConversationId"].as_str().expect("id").to_string();
    assert_eq!(conv.len(), 36, "a UUID: {conv}");

    let v = s.post_json("/check_joined_conversation", json!({"conversation_id": conv}), Some(&alice)).await;
    assert_eq!(v["data"], json!({"Joined": true}));
    let v = s.post_json("/check_joined_conversation", json!({"conversation_id": conv}), Some(&bob)).await;
    assert_eq!(v["data"], json!({"Joined": false}));
    let v = s.post_json("/get_joined_conversation", json!({"SessionId": "alice"}), Some(&alice)).await;
    assert_eq!(v["data"], json!({"Conversations": [conv]}));
    let v = s.post_json("/get_joined_conversation", json!({"SessionId": "bob"}), Some(&bob)).await;
    assert_eq!(v["data"], json!({"Conversations": []}));
    let v = s.post_json("/get_joined_conversation", json!({"SessionId": "alice"}), Some(&bob)).await;
    assert_eq!(v["code"], 10003);

    let v = s.post_json("/get_conversation_detail", json!({"conversation_id": conv}), Some(&bob)).await;
    assert_eq!(v, json!({"code": 10004, "error": "not a member of the conversation"}));
    let v = s.post_json("/join_conversation", json!({"conversation_id": conv}), Some(&bob)).await;
    assert_eq!(v["data"], json!({"ConversationId": conv}));
    let v = s.post_json("/get_conversation_detail", json!({"conversation_id": conv}), Some(&bob)).await;
    let d = &v["data"];
    assert_eq!(d["ConversationID"], conv.as_str());
    assert_eq!(d["ConversationType"], 3);
    assert_eq!(d["LastMsgID"], "");
    assert_eq!(d["LastSendTime"], 0);
    assert_eq!(d["IsDelete"], false);
    assert_eq!(d["IsArchive"], false);
    let v = s.post_json("/get_lastone_msgid", json!({"conversation_id": conv}), Some(&bob)).await;
    assert_eq!(v["data"], json!({"MsgId": ""}));

    let v = s.post_json("/leave_conversation", json!({"conversation_id": conv}), Some(&bob)).await;
    assert_eq!(v["data"], json!({"ConversationId": conv}));
    let v = s.post_json("/leave_conversation", json!({"conversation_id": conv}), Some(&bob)).await;
    assert_eq!(v["code"], 10004);

    for (path, body, code) in [
        ("/create_conversation", json!({"conversation_type": 16}), 90010),
        ("/create_conversation", json!({"conversation_type": -1}), 90010),
        ("/join_conversation", json!({"conversation_id": "no-such-conversation"}), 10005),
        ("/check_joined_conversation", json!({"conversation_id": "no-such-conversation"}), 10005),
        ("/join_conversation", json!({}), 10001),
        ("/join_conversation", json!({"conversation_id": 5}), 10001),
    ] {
        let v = s.post_json(path, body.clone(), Some(&alice)).await;
        assert_eq!(v["code"], code, "{path} {body}: {v}");
        assert!(v.get("data").is_none());
    }
}

async fn inner_endpoints(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let v = s
        .post_json("/inner/create_conversation", json!({"conversation_type": 1, "sessions": []}), None)
        .await;
    assert_eq!(v["code"], 90011);
    let v = s
        .post_json(
            "/inner/create_conversation",
            json!({"conversation_type": 1, "sessions": ["u1", "u2"]}),
            None,
        )
        .await;
    let conv = v["data"]["ConversationId"].as_str().expect("id").to_string();
    let u2 = s.gateway_token("u2", 1).await;
    let u3 = s.gateway_token("u3", 1).await;
    let v = s.post_json("/check_joined_conversation", json!({"conversation_id": conv}), Some(&u2)).await;
    assert_eq!(v["data"]["Joined"], true);
    let v = s
        .post_json("/inner/join_conversation", json!({"conversation_id": conv, "sessions": ["u3"]}), None)
        .await;
    assert_eq!(v["data"], json!({"ConversationId": conv}));
    let v = s.post_json("/check_joined_conversation", json!({"conversation_id": conv}), Some(&u3)).await;
    assert_eq!(v["data"]["Joined"], true);
    let v = s
        .post_json("/inner/kickout_conversation", json!({"conversation_id": conv, "sessions": ["u2"]}), None)
        .await;
    assert_eq!(v["code"], 0);
    let v = s.post_json("/check_joined_conversation", json!({"conversation_id": conv}), Some(&u2)).await;
    assert_eq!(v["data"]["Joined"], false);
    let v = s
        .post_json(
            "/inner/set_archive_conversations",
            json!({"conversation_ids": [conv], "is_archive": true}),
            None,
        )
        .await;
    assert_eq!(v, json!({"code": 0}));
    let v = s.post_json("/get_conversation_detail", json!({"conversation_id": conv}), Some(&u3)).await;
    assert_eq!(v["data"]["IsArchive"], true);
    assert_eq!(v["data"]["ConversationType"], 1);
    let v = s
        .post_json(
            "/inner/set_archive_conversations",
            json!({"conversation_ids": ["nope"], "is_archive": true}),
            None,
        )
        .await;
    assert_eq!(v["code"], 10005);
    let v = s
        .post_json("/inner/join_conversation", json!({"conversation_id": "nope", "sessions": ["u3"]}), None)
        .await;
    assert_eq!(v["code"], 10005);
    let v = s
        .post_json("/inner/create_conversation", json!({"conversation_type": 99, "sessions": ["u1"]}), None)
        .await;
    assert_eq!(v["code"], 90010);
}

async fn tokens_are_checked(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let v = s.post_json("/create_conversation", json!({"conversation_type": 0}), None).await;
    assert_eq!(v, json!({"code": 10101, "error": "invalid token"}));
    let v = s.post_json("/create_conversation", json!({"conversation_type": 0}), Some("garbage")).await;
    assert_eq!(v["code"], 10101);
    // ?token= works as well as the header.
    let t = s.gateway_token("carol", 3).await;
    let v =
        s.post_json(&format!("/create_conversation?token={t}"), json!({"conversation_type": 0}), None).await;
    assert_eq!(v["code"], 0, "{v}");
    let v = s.post_json("/inner/get_token", json!({"platform": 1}), None).await;
    assert_eq!(v["code"], 10001);
}

/// With an allow-list that excludes loopback, `/inner/*` refuses this test (10003).
#[actix_rt::test]
async fn inner_endpoints_refuse_other_networks() {
    let s = TestServer::start_with_config(&Backend::any(), "[gateway]\ninner_allow = [\"10.0.0.0/8\"]\n");
    for path in [
        "/inner/get_token",
        "/inner/create_conversation",
        "/inner/kickout_conversation",
        "/inner/join_conversation",
        "/inner/set_archive_conversations",
    ] {
        let v =
            s.post_json(path, json!({"session": "x", "sessions": ["x"], "conversation_id": "c"}), None).await;
        assert_eq!(v, json!({"code": 10003, "error": "not allowed"}), "{path}");
    }
}

/// One product: a message sent on /entry into a gateway conversation reaches its members on /entry
/// and becomes the conversation's last message.
async fn entry_messages_reach_gateway_conversations(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let v = s
        .post_json(
            "/inner/create_conversation",
            json!({"conversation_type": 2, "sessions": ["ann", "ben"]}),
            None,
        )
        .await;
    let conv = v["data"]["ConversationId"].as_str().expect("id").to_string();
    let ann = s.login("ann").await;
    let mut ben = s.login("ben").await;
    ann.send(&format!("text_{conv}_hello gateway_group_e"));
    assert!(ben.recv().await.starts_with(&format!("text_ann_hello gateway_group_{conv}_")));
    let t = s.gateway_token("ben", 1).await;
    let v = s.post_json("/get_conversation_detail", json!({"conversation_id": conv}), Some(&t)).await;
    let last = v["data"]["LastMsgID"].as_str().expect("id").to_string();
    assert_eq!(last.len(), 19, "{v}");
    assert_eq!(v["data"]["LastSendSession"], "ann");
    assert!(v["data"]["LastSendTime"].as_i64().expect("µs") > 1_600_000_000_000_000);
    let v = s.post_json("/get_lastone_msgid", json!({"conversation_id": conv}), Some(&t)).await;
    assert_eq!(v["data"]["MsgId"], last.as_str());
}

/// With its database gone, the gateway answers 10002 in its envelope and keeps serving.
#[actix_rt::test]
async fn a_lost_database_answers_internal_error() {
    let Some(b) = Backend::mysql() else { return };
    let s = TestServer::start(&b, &[]);
    let t = s.gateway_token("dana", 1).await;
    s.drop_mysql_database();
    let v = s.post_json("/create_conversation", json!({"conversation_type": 0}), Some(&t)).await;
    assert_eq!(v, json!({"code": 10002, "error": "internal error"}));
    let v = s.post_json("/get_joined_conversation", json!({}), Some(&t)).await;
    assert_eq!(v["code"], 10002);
    // Tokens need no database.
    let v = s.post_json("/inner/get_token", json!({"session": "dana", "platform": 1}), None).await;
    assert_eq!(v["code"], 0);
}

/// Tokens stay valid across a restart (the generated key is kept in the data directory), and so do
/// conversations and their messages.
#[actix_rt::test]
async fn tokens_and_conversations_survive_a_restart() {
    let mut s = TestServer::start(&Backend::any(), &[]);
    let t = s.gateway_token("rita", 1).await;
    let v = s.post_json("/create_conversation", json!({"conversation_type": 1}), Some(&t)).await;
    let conv = v["data"]["ConversationId"].as_str().expect("id").to_string();
    let v = s
        .post_json("/send_msg", json!({"conversation_id": conv, "type": 1, "content": "kept"}), Some(&t))
        .await;
    let id = v["data"]["MsgID"].as_str().expect("MsgID").to_string();
    s.restart();
    let v = s.post_json("/get_conversation_lastone_msg", json!({"conversation_id": conv}), Some(&t)).await;
    assert_eq!(v["code"], 0, "{v}");
    assert_eq!(v["data"]["Msg"][0]["MsgId"], id.as_str());
    assert_eq!(v["data"]["Msg"][0]["Content"], "kept");
}

/// A wsim group (sequential decimal id) is a conversation members reach from the gateway, but nobody
/// joins or leaves it there: a guessed id gives no way in (10003), inner endpoints included.
async fn wsim_groups_change_members_only_through_their_own_api(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let v = s.get_json("/creategrp?creator=alice&members=bob").await;
    let gid = v["data"]["groupid"].as_str().expect("gid").to_string();
    let (mallory, bob) = (s.gateway_token("mallory", 1).await, s.gateway_token("bob", 1).await);
    // (path, body, token)
    let table = [
        ("/join_conversation", json!({"conversation_id": gid}), Some(&mallory)),
        ("/leave_conversation", json!({"conversation_id": gid}), Some(&bob)),
        ("/inner/join_conversation", json!({"conversation_id": gid, "sessions": ["mallory"]}), None),
        ("/inner/kickout_conversation", json!({"conversation_id": gid, "sessions": ["bob"]}), None),
    ];
    for (path, body, token) in table {
        let v = s.post_json(path, body, token.map(String::as_str)).await;
        assert_eq!(v["code"], 10003, "{path}: {v}");
    }
    let v = s.get_json(&format!("/grpinfo?groupid={gid}")).await;
    let members: Vec<&str> = v["data"]["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["userid"].as_str())
        .collect();
    assert_eq!(members, ["alice", "bob"], "{v}");
    // mallory reads nothing of it either.
    let v =
        s.post_json("/get_conversation_last_30_msg", json!({"conversation_id": gid}), Some(&mallory)).await;
    assert_eq!(v["code"], 10004, "not a member: {v}");
}
