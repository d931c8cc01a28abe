//! WebSocket handshakes at the socket level, on SQLite and MariaDB: upgraded connections leave the
//! HTTP/1 dispatcher, so what a client sends right behind its handshake must still arrive, and a
//! refused upgrade must still get its HTTP answer.

mod common;

use std::time::Duration;

use common::{Backend, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

on_both_backends!(
    a_frame_sent_with_the_handshake_is_answered,
    refused_upgrades_get_their_answer_and_a_close,
    a_frame_split_into_single_bytes_is_answered,
);

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn handshake(path: &str, port: u16) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// A client text frame (masked, as clients must).
fn client_text(text: &str) -> Vec<u8> {
    assert!(text.len() < 126);
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut f = vec![0x81, 0x80 | text.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

fn port(s: &TestServer) -> u16 {
    s.base.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port in base url")
}

/// Reads until the end of the response head; returns the head and what came after it.
async fn read_head(sock: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            return (head, buf[end + 4..].to_vec());
        }
        let n = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut chunk))
            .await
            .expect("response head in time")
            .expect("read");
        assert!(n > 0, "closed before the response head: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The next server text frame's payload (server frames are not masked), skipping pings.
async fn read_text(sock: &mut TcpStream, mut have: Vec<u8>) -> String {
    let mut chunk = [0u8; 4096];
    loop {
        if have.len() >= 2 {
            let (op, len) = (have[0] & 0x0f, (have[1] & 0x7f) as usize);
            assert!(len < 126, "short frames only here");
            if have.len() >= 2 + len {
                let payload = have[2..2 + len].to_vec();
                have.drain(..2 + len);
                if op == 0x1 {
                    return String::from_utf8(payload).expect("utf-8 text");
                }
                continue;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut chunk))
            .await
            .expect("a frame in time")
            .expect("read");
        assert!(n > 0, "closed before a text frame");
        have.extend_from_slice(&chunk[..n]);
    }
}

async fn a_frame_sent_with_the_handshake_is_answered(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let mut sock = TcpStream::connect(("127.0.0.1", port(&s))).await.expect("connect");
    // One write: the handshake and the first frame arrive together.
    let mut bytes = handshake("/entry", port(&s)).into_bytes();
    bytes.extend(client_text("login_early"));
    sock.write_all(&bytes).await.expect("write");
    let (head, rest) = read_head(&mut sock).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    assert_eq!(read_text(&mut sock, rest).await, "ok");
}

async fn a_frame_split_into_single_bytes_is_answered(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let mut sock = TcpStream::connect(("127.0.0.1", port(&s))).await.expect("connect");
    sock.set_nodelay(true).expect("nodelay");
    sock.write_all(handshake("/entry", port(&s)).as_bytes()).await.expect("write");
    let (head, rest) = read_head(&mut sock).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    for byte in client_text("login_drip") {
        sock.write_all(&[byte]).await.expect("write");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(read_text(&mut sock, rest).await, "ok");
}

async fn refused_upgrades_get_their_answer_and_a_close(b: Backend) {
    let s = TestServer::start(&b, &[]);
    let p = port(&s);
    for (request, status) in [
        (handshake("/no-such-endpoint", p), "HTTP/1.1 404"),
        // A handshake without its key.
        (
            "GET /entry HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".to_string(),
            "HTTP/1.1 400",
        ),
    ] {
        let mut sock = TcpStream::connect(("127.0.0.1", p)).await.expect("connect");
        sock.write_all(request.as_bytes()).await.expect("write");
        let (head, _) = read_head(&mut sock).await;
        assert!(head.starts_with(status), "{request:?}: {head}");
        assert!(head.to_ascii_lowercase().contains("connection: close"), "{head}");
        // The server closes the socket after its answer.
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut rest))
            .await
            .expect("closed in time")
            .expect("read to the end");
    }
    // The server keeps serving.
    s.login("after").await;
}
