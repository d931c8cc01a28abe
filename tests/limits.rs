//! `[limits]`: a client that floods is answered with its protocol's error and counted, and what it
//! sent beyond the limit is not stored; on SQLite and MariaDB, over real sockets.

mod common;

use std::time::Duration;

use common::{sample, Backend, TestServer};

on_both_backends!(floods_are_refused_counted_and_not_stored);

#[actix_rt::test]
async fn an_address_holds_at_most_its_cap_of_open_connections() {
    connection_cap(Backend::any()).await;
}

/// Loopback is exempt by default (the load generator, a reverse proxy): this server limits it too.
const CONFIG: &str = "[limits]\nexempt = []\nhttp_requests_per_ip_per_sec = 20\n\
                      messages_per_conn_per_sec = 5\nuploads_per_min = 2\n";

async fn floods_are_refused_counted_and_not_stored(b: Backend) {
    let s = TestServer::start_with_config(&b, CONFIG);
    let flooder = s.login("flooder").await;
    let mut target = s.login("target").await;
    let mut flooder = flooder;

    // 40 messages at once: a burst of three seconds' worth (15) passes, the rest is refused.
    for i in 0..40 {
        flooder.send(&format!("text_target_m{i}_unicast_e"));
    }
    let mut refused = 0;
    while let Some(common::Event::Text(f)) = flooder.next_event(Duration::from_millis(500)).await {
        if f == "error_429_too many messages" {
            refused += 1;
        }
    }
    let mut delivered = 0;
    while let Some(common::Event::Text(f)) = target.next_event(Duration::from_millis(500)).await {
        if f.starts_with("text_flooder_m") {
            delivered += 1;
        }
    }
    assert!((15..=20).contains(&delivered), "{delivered} delivered");
    assert_eq!(delivered + refused, 40, "each message delivered or refused");
    assert_eq!(
        s.count_rows("SELECT COUNT(*) AS n FROM messages"),
        delivered as i64,
        "refused ones are not stored"
    );
    // The connection stays usable: after a pause the rate lets messages through again.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    flooder.send("text_target_later_unicast_e");
    assert!(target.recv().await.contains("_later_"));

    // Uploads: two a minute, a burst of six.
    let png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut codes = Vec::new();
    for _ in 0..7 {
        let (_, v) = s.upload("/upload/writev2", "file", "a.png", &png).await;
        codes.push(v["code"].as_i64().unwrap_or_default());
    }
    assert_eq!(codes.iter().filter(|c| **c == 5).count(), 1, "{codes:?}");
    assert_eq!(codes.last(), Some(&5), "{codes:?}");

    // HTTP: twenty a second, a burst of sixty.
    let client = awc::Client::default();
    let mut statuses = Vec::new();
    for _ in 0..90 {
        let res = client.get(s.url("/healthz")).send().await.expect("GET /healthz");
        statuses.push(res.status().as_u16());
    }
    let too_many = statuses.iter().filter(|s| **s == 429).count();
    // The uploads and sockets above took some of the burst.
    assert!((25..=45).contains(&too_many), "{too_many} of 90 refused");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let m = s.metrics().await;
    assert_eq!(sample(&m, "wsim_rate_limited_total{what=\"message\"}"), refused as f64);
    assert_eq!(sample(&m, "wsim_rate_limited_total{what=\"upload\"}"), 1.0);
    assert!(sample(&m, "wsim_rate_limited_total{what=\"http\"}") >= too_many as f64);
    assert!(sample(&m, "wsim_http_requests_total{route=\"/healthz\",status=\"429\"}") >= too_many as f64);
    let before = sample(&m, "wsim_rate_limited_total{what=\"message\"}");

    // Gru: msg beyond the socket's rate is answered msg_result errorCode -6.
    use serde_json::json;
    let mut ws = s.gru_socket(7, 9).await;
    for i in 0..30 {
        ws.send(&format!(
            "42{}",
            json!(["msg", {"type": 1, "target": {"id": 9}, "content": format!("g{i}")}])
        ));
    }
    let mut limited = 0;
    while let Some(common::Event::Text(f)) = ws.next_event(Duration::from_millis(500)).await {
        if f.starts_with("42[\"msg_result\"") && f.contains("\"errorCode\":-6") {
            limited += 1;
        }
    }
    assert!((10..=15).contains(&limited), "{limited} of 30 refused");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let m = s.metrics().await;
    assert_eq!(sample(&m, "wsim_rate_limited_total{what=\"message\"}") - before, limited as f64);
}

/// `[limits] connections_per_ip`: three WebSockets open, a fourth (and any other request) from the
/// same address is refused with 429 until one closes.
async fn connection_cap(b: Backend) {
    let s = TestServer::start_with_config(&b, "[limits]\nexempt = []\nconnections_per_ip = 3\n");
    let a = s.login("a").await;
    let _b = s.login("b").await;
    let _c = s.login("c").await;
    let fourth = awc::Client::default().ws(format!("{}/entry", s.ws_base)).connect().await;
    match fourth {
        Err(awc::error::WsClientError::InvalidResponseStatus(st)) => assert_eq!(st.as_u16(), 429),
        Err(e) => panic!("the fourth socket: {e}"),
        Ok(_) => panic!("a fourth socket was accepted"),
    }
    let res = awc::Client::default().get(s.url("/healthz")).send().await.expect("GET");
    assert_eq!(res.status().as_u16(), 429, "every request counts while three sockets are open");
    a.close().await;
    let ok = common::eventually(Duration::from_secs(5), || async {
        let res = awc::Client::default().get(s.url("/healthz")).send().await.expect("GET");
        res.status().as_u16() == 200
    })
    .await;
    assert!(ok, "a place came back when a socket closed");
    let m = s.metrics().await;
    assert!(sample(&m, "wsim_rate_limited_total{what=\"connection\"}") >= 2.0);
}
