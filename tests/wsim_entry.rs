//! The wsim `/entry` protocol over real WebSockets, on SQLite and MariaDB.

mod common;

use std::time::Duration;

use actix_http::ws::{CloseCode, Message};
use common::{fields, Backend, TestServer};

const MESSAGES: &str = "SELECT COUNT(*) AS n FROM messages";

on_both_backends!(
    unicast_online_keeps_payload_and_extension,
    offline_unicast_is_replayed_at_login_in_order,
    offline_messages_survive_a_restart,
    live_delivery_is_not_replayed,
    group_messages_reach_online_and_offline_members,
    group_refusals,
    two_devices_of_one_user,
    heartbeats_arrive_and_silent_peers_are_dropped,
    slow_reader_is_dropped_while_others_keep_receiving,
    bad_frames_get_error_frames,
    oversized_frame_closes_with_1009,
    members_and_records_queries,
    sigterm_exits_cleanly_without_losing_messages,
    sigint_exits_cleanly_with_clients_connected,
);

async fn create_group(s: &TestServer, creator: &str, members: &str) -> String {
    let v = s.get_json(&format!("/creategrp?creator={creator}&members={members}&name=g")).await;
    assert_eq!(v["code"], 1, "{v}");
    v["data"]["groupid"].as_str().expect("groupid").to_string()
}

async fn unicast_online_keeps_payload_and_extension(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let mut alice = s.login("alice").await;
    let mut bob = s.login("bob").await;
    let ext = "eyJzZW5kZXIiOiLlvKDkuIkifQ==+/\nx=";
    let before = chrono::Utc::now().timestamp();
    alice.send(&format!("text_bob_hi_there__你好😀_unicast_{ext}"));
    let frame = bob.recv().await;
    let (kind, from, payload, ty, from_group, timet, e) = fields(&frame);
    assert_eq!((kind.as_str(), from.as_str(), payload.as_str()), ("text", "alice", "hi_there__你好😀"));
    assert_eq!((ty.as_str(), from_group.as_str()), ("unicast", "alice"));
    assert_eq!(e, ext, "extension relayed byte for byte");
    assert!(timet >= before && timet <= chrono::Utc::now().timestamp() + 1);
    // Every kind goes through.
    for kind in ["emotion", "video", "picture", "audio"] {
        bob.send(&format!("{kind}_alice_http://x/y_z.bin_unicast_e"));
        let f = alice.recv().await;
        assert!(f.starts_with(&format!("{kind}_bob_http://x/y_z.bin_unicast_bob_")), "{f}");
        assert!(f.ends_with("_e"));
    }
    alice.expect_silence(Duration::from_millis(300)).await;
}

async fn offline_unicast_is_replayed_at_login_in_order(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let alice = s.login("alice").await;
    for i in 0..30 {
        alice.send(&format!("text_carol_m{i}_unicast_x{i}"));
    }
    s.wait_rows(MESSAGES, 30).await;
    let sent_at = chrono::Utc::now().timestamp();
    // A second later, so a replay stamped with the time of the replay would show.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut carol = s.ws("/entry").await;
    carol.send("login_carol");
    assert_eq!(carol.recv().await, "ok", "ok comes before the replay");
    for i in 0..30 {
        let (_, from, payload, _, _, timet, ext) = fields(&carol.recv().await);
        assert_eq!((from.as_str(), payload, ext), ("alice", format!("m{i}"), format!("x{i}")));
        assert!(timet <= sent_at, "original send time kept");
    }
    carol.expect_silence(Duration::from_millis(300)).await;
}

async fn offline_messages_survive_a_restart(b: Backend) {
    let mut s = TestServer::start(&b, &[]);
    let gid = create_group(&s, "alice", "dave").await;
    let alice = s.login("alice").await;
    alice.send("text_dave_before restart_unicast_e");
    alice.send(&format!("text_{gid}_group before restart_group_e"));
    s.wait_rows(MESSAGES, 2).await;
    alice.close().await;
    s.restart();
    let mut dave = s.login("dave").await;
    let mut got = vec![dave.recv().await, dave.recv().await];
    got.sort();
    assert!(got[0].starts_with("text_alice_before restart_unicast_alice_"), "{got:?}");
    assert!(got[1].starts_with(&format!("text_alice_group before restart_group_{gid}_")), "{got:?}");
}

async fn live_delivery_is_not_replayed(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let mut bob = s.login("bob").await;
    let alice = s.login("alice").await;
    alice.send("text_bob_live_unicast_e");
    assert!(bob.recv().await.starts_with("text_alice_live_"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    bob.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut bob = s.login("bob").await;
    bob.expect_silence(Duration::from_millis(800)).await;
    // Something new is still delivered.
    alice.send("text_bob_new_unicast_e");
    assert!(bob.recv().await.starts_with("text_alice_new_"));
}

async fn group_messages_reach_online_and_offline_members(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let gid = create_group(&s, "alice", "bob,carol,dave").await;
    let mut alice = s.login("alice").await;
    let mut bob = s.login("bob").await;
    let mut carol = s.login("carol").await;
    alice.send(&format!("text_{gid}_hello_all_group_ext"));
    for ws in [&mut bob, &mut carol] {
        let (_, from, payload, ty, fg, _, ext) = fields(&ws.recv().await);
        assert_eq!((from.as_str(), payload.as_str(), ty.as_str()), ("alice", "hello_all", "group"));
        assert_eq!((fg.as_str(), ext.as_str()), (gid.as_str(), "ext"));
    }
    alice.expect_silence(Duration::from_millis(300)).await;
    // dave was offline.
    let mut dave = s.login("dave").await;
    assert!(dave.recv().await.starts_with(&format!("text_alice_hello_all_group_{gid}_")));
    // Members added later receive later messages at once; removed ones stop receiving.
    let v = s.get_json(&format!("/addmembers?groupid={gid}&members=erin")).await;
    assert_eq!(v["code"], 1);
    let mut erin = s.login("erin").await;
    erin.expect_silence(Duration::from_millis(300)).await; // no history before joining
    let v = s.get_json(&format!("/delmembers?groupid={gid}&members=carol")).await;
    assert_eq!(v["code"], 1);
    bob.send(&format!("text_{gid}_second_group_e"));
    assert!(erin.recv().await.starts_with(&format!("text_bob_second_group_{gid}_")));
    assert!(alice.recv().await.starts_with("text_bob_second_"));
    carol.expect_silence(Duration::from_millis(400)).await;
    carol.send(&format!("text_{gid}_still here?_group_e"));
    assert_eq!(carol.recv().await, "error_403_not a member");
}

async fn group_refusals(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let gid = create_group(&s, "alice", "bob").await;
    let mut mallory = s.login("mallory").await;
    mallory.send(&format!("text_{gid}_hi_group_e"));
    assert_eq!(mallory.recv().await, "error_403_not a member");
    mallory.send("text_999999_hi_group_e");
    assert_eq!(mallory.recv().await, "error_404_no such group");
    // The connection lives on.
    let mut bob = s.login("bob").await;
    mallory.send("text_bob_still alive_unicast_e");
    assert!(bob.recv().await.starts_with("text_mallory_still alive_"));
}

async fn two_devices_of_one_user(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let gid = create_group(&s, "alice", "bob").await;
    let mut phone = s.login("alice").await;
    let mut tablet = s.login("alice").await;
    let mut bob = s.login("bob").await;
    bob.send("text_alice_to both_unicast_e");
    assert!(phone.recv().await.starts_with("text_bob_to both_unicast_bob_"));
    assert!(tablet.recv().await.starts_with("text_bob_to both_unicast_bob_"));
    // A group message from the phone reaches the tablet but not the phone.
    phone.send(&format!("text_{gid}_from phone_group_e"));
    assert!(tablet.recv().await.starts_with(&format!("text_alice_from phone_group_{gid}_")));
    assert!(bob.recv().await.starts_with("text_alice_from phone_"));
    // A direct message from the phone is copied to the tablet (fromgroupid = the peer).
    phone.send("text_bob_sync_unicast_e");
    assert!(bob.recv().await.starts_with("text_alice_sync_unicast_alice_"));
    assert!(tablet.recv().await.starts_with("text_alice_sync_unicast_bob_"));
    phone.expect_silence(Duration::from_millis(300)).await;
}

async fn heartbeats_arrive_and_silent_peers_are_dropped(b: Backend) {
    let s = TestServer::start(&b, &["--heartbeat-interval", "1", "--client-timeout", "3"]);
    let mut alice = s.login("alice").await;
    alice.expect_silence(Duration::from_millis(2300)).await;
    assert!(alice.heartbeats.len() >= 2, "heartbeats: {:?}", alice.heartbeats);
    let now = chrono::Utc::now().timestamp();
    for hb in &alice.heartbeats {
        let t: i64 = hb.strip_prefix("heartbeat_").expect("prefix").parse().expect("unix seconds");
        assert!((now - t).abs() < 10);
    }
    // bob goes silent: no frames, no pongs.
    let mut bob = s.login("bob").await;
    bob.pause();
    alice.send("text_bob_while silent_unicast_e");
    // The server drops bob once he has been silent for the client timeout.
    let online = "wsim_connections_open{frontend=\"wsim\"}";
    assert!(
        common::eventually(Duration::from_secs(10), || async { s.metric(online).await == 1.0 }).await,
        "the silent peer is still connected"
    );
    bob.resume();
    bob.expect_closed(Duration::from_secs(5)).await;
    // The message waits for bob's next login.
    let mut bob = s.login("bob").await;
    assert!(bob.recv().await.starts_with("text_alice_while silent_"));
    // alice answered pings all along and is still connected.
    alice.send("text_bob_again_unicast_e");
    assert!(bob.recv().await.starts_with("text_alice_again_"));
}

async fn slow_reader_is_dropped_while_others_keep_receiving(b: Backend) {
    let s = TestServer::start(&b, &["--outbound-queue-kib", "64"]);
    let mut slow = s.login("slow").await;
    let mut fast = s.login("fast").await;
    let sender = s.login("sender").await;
    slow.pause();
    let big = "x".repeat(60_000);
    let n = 300;
    for i in 0..n {
        sender.send(&format!("text_slow_{i}:{big}_unicast_e"));
        if i % 10 == 0 {
            sender.send(&format!("text_fast_{i}_unicast_e"));
        }
    }
    // The sender's frames are taken in order: once `fast` has the last one, every message to `slow`
    // has been stored (none is still live when `slow` logs in again below).
    sender.send("text_fast_end_unicast_e");
    for i in (0..n).step_by(10) {
        let f = fast.recv().await;
        assert!(f.starts_with(&format!("text_sender_{i}_unicast_")), "{i}: {}", &f[..f.len().min(60)]);
    }
    assert!(fast.recv().await.starts_with("text_sender_end_unicast_"));
    // The slow reader was dropped: reading again ends in a close before all messages.
    slow.resume();
    let mut before_close = 0;
    loop {
        match slow.next_event(Duration::from_secs(20)).await {
            Some(common::Event::Text(_)) => before_close += 1,
            Some(common::Event::Closed(_)) => break,
            None => panic!("slow reader was not disconnected"),
        }
    }
    assert!(before_close < n, "slow reader got everything ({before_close}) instead of being dropped");
    // Nothing is lost: everything unconfirmed comes back at the next login, in order.
    let mut again = s.login("slow").await;
    for i in 0..n {
        let f = again.recv().await;
        assert!(f.starts_with(&format!("text_sender_{i}:")), "message {i}");
    }
}

async fn bad_frames_get_error_frames(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let mut ws = s.ws("/entry").await;
    for (frame, want) in [
        ("text_bob_hi_unicast_e", "error_401_login first"),
        ("members_10", "error_401_login first"),
        ("online_10", "error_401_login first"),
        ("hello", "error_400_bad signal"),
        ("", "error_400_bad signal"),
        ("login_", "error_400_bad user id"),
    ] {
        ws.send(frame);
        assert_eq!(ws.recv().await, want, "frame {frame:?}");
    }
    ws.send("login_zed");
    assert_eq!(ws.recv().await, "ok");
    for (frame, want) in [
        ("text_bob_hi_multicast_e", "error_400_bad type"),
        ("text_bob", "error_400_bad signal"),
        ("records_bob_yesterday", "error_400_bad time"),
        ("gibberish_here", "error_400_bad signal"),
    ] {
        ws.send(frame);
        assert_eq!(ws.recv().await, want, "frame {frame:?}");
    }
    ws.send_raw(Message::Binary(bytes::Bytes::from_static(&[0xff, 0xfe])));
    assert_eq!(ws.recv().await, "error_400_bad signal");
    // Still alive and usable.
    let mut bob = s.login("bob").await;
    ws.send("text_bob_after errors_unicast_e");
    assert!(bob.recv().await.starts_with("text_zed_after errors_"));
}

async fn oversized_frame_closes_with_1009(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let mut ws = s.login("big").await;
    ws.send(&format!("text_bob_{}_unicast_e", "y".repeat(70 * 1024)));
    let reason = ws.expect_closed(Duration::from_secs(5)).await;
    assert_eq!(reason.map(|r| r.code), Some(CloseCode::Size));
    // The server keeps serving.
    let v = s.get_json("/querymygrps?userid=big").await;
    assert_eq!(v["code"], 1);
}

async fn members_and_records_queries(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let gid = create_group(&s, "alice", "bob,carol").await;
    let mut alice = s.login("alice").await;
    alice.send(&format!("members_{gid}"));
    assert_eq!(alice.recv().await, format!("members_{gid}_alice,bob,carol"));
    alice.send("members_424242");
    assert_eq!(alice.recv().await, "error_404_no such group");
    let mut zed = s.login("zed").await;
    zed.send(&format!("members_{gid}"));
    assert_eq!(zed.recv().await, "error_403_not a member");
    // online_ (an extension): the members with a live connection, in member order.
    alice.send(&format!("online_{gid}"));
    assert_eq!(alice.recv().await, format!("online_{gid}_alice"));
    let carol = s.login("carol").await;
    alice.send(&format!("online_{gid}"));
    assert_eq!(alice.recv().await, format!("online_{gid}_alice,carol"));
    carol.close().await;
    let want = format!("online_{gid}_alice");
    assert_eq!(
        alice.ask_until(&format!("online_{gid}"), &want).await,
        want,
        "carol stays online after closing"
    );
    zed.send(&format!("online_{gid}"));
    assert_eq!(zed.recv().await, "error_403_not a member");
    alice.send("online_424242");
    assert_eq!(alice.recv().await, "error_404_no such group");

    for i in 0..3 {
        alice.send(&format!("text_{gid}_g{i}_group_e"));
        alice.send(&format!("text_bob_d{i}_unicast_e"));
    }
    s.wait_rows(MESSAGES, 6).await;
    alice.send(&format!("records_{gid}_0"));
    for i in 0..3 {
        assert!(alice.recv().await.starts_with(&format!("text_alice_g{i}_group_{gid}_")));
    }
    assert_eq!(alice.recv().await, format!("records_{gid}_end"));
    let mut bob = s.login("bob").await;
    // bob's replay first (group and direct messages, in send order).
    for _ in 0..6 {
        bob.recv().await;
    }
    bob.send("records_alice_0");
    for i in 0..3 {
        assert!(bob.recv().await.starts_with(&format!("text_alice_d{i}_unicast_alice_")));
    }
    assert_eq!(bob.recv().await, "records_alice_end");
    // Before a time in the past: nothing.
    bob.send("records_alice_1000");
    assert_eq!(bob.recv().await, "records_alice_end");
}

async fn sigterm_exits_cleanly_without_losing_messages(b: Backend) {
    let mut s = TestServer::start(&b, &[]);
    let alice = s.login("alice").await;
    for i in 0..200 {
        alice.send(&format!("text_bob_n{i}_unicast_e"));
    }
    // Every frame has reached the server (stored or not yet: the shutdown writes them out).
    s.wait_metric("wsim_messages_received_total{frontend=\"wsim\"}", 200.0).await;
    let st = s.stop();
    assert!(st.success(), "exit status {st:?}");
    drop(alice);
    s.restart_after_stop();
    let mut bob = s.login("bob").await;
    for i in 0..200 {
        assert!(bob.recv().await.starts_with(&format!("text_alice_n{i}_")), "message {i}");
    }
}

async fn sigint_exits_cleanly_with_clients_connected(b: Backend) {
    let mut s = TestServer::start(&b, &[]);
    let gid = create_group(&s, "alice", "bob").await;
    let mut bob = s.login("bob").await;
    let alice = s.login("alice").await;
    alice.send(&format!("text_{gid}_last words_group_e"));
    assert!(bob.recv().await.starts_with("text_alice_last words_"));
    let st = s.stop_with("INT");
    assert!(st.success(), "exit status {st:?}");
    bob.expect_closed(Duration::from_secs(10)).await;
}
