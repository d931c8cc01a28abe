//! Peers that stop reading, on every front-end and transport: each is dropped once the outbound
//! queue limit of unsent data waits for it (counted in `wsim_slow_consumers_dropped_total`), the
//! server's anonymous memory stays bounded while 12,000 messages of 8,000 bytes (96 MB) are sent
//! its way, and what was stored stays stored for its next login.

mod common;

use std::time::Duration;

use common::raw::{MemoryWatch, RawPeer};
use common::{eventually, Backend, TestServer};

on_both_backends!(wsim_readers_that_stop_before_during_and_after_their_replay);

/// Messages sent at a peer that does not read, and their size.
const MESSAGES: usize = 12_000;
const SIZE: usize = 8_000;
/// Growth of the server's anonymous memory allowed meanwhile.
const MEMORY_BOUND_KIB: u64 = 32 * 1024;

/// A payload of `SIZE` bytes carrying its sequence number.
fn payload(seq: usize) -> String {
    let head = format!("{seq}:");
    format!("{head}{}", "x".repeat(SIZE - head.len()))
}

/// The sequence number of a wsim receive frame from `sender`.
fn seq_of(frame: &str, sender: &str) -> usize {
    let rest = frame.strip_prefix(&format!("text_{sender}_")).unwrap_or_else(|| panic!("frame {frame:.80}"));
    rest.split(':').next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("frame {frame:.80}"))
}

async fn wsim_readers_that_stop_before_during_and_after_their_replay(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let v = s.get_json("/creategrp?creator=sender&members=v_before,v_during,v_after").await;
    let gid = v["data"]["groupid"].as_str().expect("group id").to_string();
    let sender = s.login("sender").await;
    // 300 messages (2.4 MB, over the 1 MiB limit) wait for the three while they are offline.
    let offline = 300;
    for seq in 0..offline {
        sender.send(&format!("text_{gid}_{}_group_e", payload(seq)));
    }
    assert!(
        eventually(Duration::from_secs(30), || async {
            s.count_rows("SELECT COUNT(*) AS n FROM messages") == offline as i64
        })
        .await,
        "the offline messages were not stored"
    );
    // v_before reads nothing, not even `ok`; v_during reads a third of its replay; v_after reads all
    // of it. Then none of them reads again.
    let mut before = RawPeer::websocket(&s.base, "/entry");
    before.send_text("login_v_before");
    let mut during = RawPeer::websocket(&s.base, "/entry");
    during.send_text("login_v_during");
    assert_eq!(during.read_text_frame(), "ok");
    for seq in 0..offline / 3 {
        assert_eq!(seq_of(&during.read_text_frame(), "sender"), seq);
    }
    let mut after = RawPeer::websocket(&s.base, "/entry");
    after.send_text("login_v_after");
    assert_eq!(after.read_text_frame(), "ok");
    for seq in 0..offline {
        assert_eq!(seq_of(&after.read_text_frame(), "sender"), seq);
    }

    let memory = MemoryWatch::start(s.pid());
    for seq in offline..offline + MESSAGES {
        sender.send(&format!("text_{gid}_{}_group_e", payload(seq)));
    }
    let total = (offline + MESSAGES) as i64;
    let dropped = "wsim_slow_consumers_dropped_total{frontend=\"wsim\"}";
    assert!(
        eventually(Duration::from_secs(60), || async {
            s.count_rows("SELECT COUNT(*) AS n FROM messages") == total && s.metric(dropped).await == 3.0
        })
        .await,
        "stored {} of {total}, dropped {}",
        s.count_rows("SELECT COUNT(*) AS n FROM messages"),
        s.metric(dropped).await
    );
    let growth = memory.peak_growth_kib();
    drop(memory);
    eprintln!("wsim: server RssAnon grew by at most {growth} KiB while 3 peers did not read");
    assert!(growth < MEMORY_BOUND_KIB, "RssAnon grew by {growth} KiB");

    // The server gave up on them: what a peer still finds when it reads again ends in a close, long
    // before the 96 MB sent its way.
    for (name, peer) in [("v_before", &mut before), ("v_during", &mut during), ("v_after", &mut after)] {
        let got = peer.read_until_closed(Duration::from_secs(20));
        let got = got.unwrap_or_else(|| panic!("{name}: still open"));
        assert!(got < 16 << 20, "{name} read {got} bytes before the close");
    }
    // Nothing was lost: each gets every message, in order, at its next login (none of them answered
    // a ping, so none of what they read counts as delivered).
    for name in ["v_before", "v_during", "v_after"] {
        let mut again = s.login(name).await;
        for want in 0..offline + MESSAGES {
            let f = match again.next_event(Duration::from_secs(10)).await {
                Some(common::Event::Text(f)) => f,
                other => panic!("{name}: expected message {want}, got {other:?}"),
            };
            assert_eq!(seq_of(&f, "sender"), want, "{name}");
        }
        again.close().await;
    }
}
