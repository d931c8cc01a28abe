//! Peers as a broken or hostile network has them: a raw TCP client that speaks just enough HTTP or
//! WebSocket to get served and then stops reading; and a sampler of the server's anonymous memory.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A client on a plain TCP socket that reads only when told to.
pub struct RawPeer {
    stream: TcpStream,
}

/// The receive buffer of a raw peer's socket. Fixed, because Linux otherwise grows it with what the
/// peer read fast (up to `net.ipv4.tcp_rmem`'s maximum, 32 MiB on some machines): a peer that read a
/// replay quickly and then stopped would have the kernel take tens of MB for it, and what it finds
/// when it reads again would measure the kernel, not the server.
const PEER_RECEIVE_BUFFER: usize = 256 * 1024;

/// A TCP connection to `addr` with a receive buffer of [`PEER_RECEIVE_BUFFER`].
fn connect(addr: &str) -> TcpStream {
    use std::net::ToSocketAddrs;
    let to = addr.to_socket_addrs().expect("resolve").next().expect("an address");
    let socket =
        socket2::Socket::new(socket2::Domain::for_address(to), socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(PEER_RECEIVE_BUFFER).expect("SO_RCVBUF");
    socket.connect(&to.into()).expect("connect");
    socket.into()
}

impl RawPeer {
    /// Connects to `base` (`http://host:port`) and writes `request` (a whole HTTP request).
    pub fn http(base: &str, request: &str) -> RawPeer {
        let addr = base.trim_start_matches("http://");
        let mut stream = connect(addr);
        stream.write_all(request.as_bytes()).expect("write request");
        RawPeer { stream }
    }

    /// A `GET path` with the given extra header lines (each ending in `\r\n`).
    pub fn get(base: &str, path: &str, headers: &str) -> RawPeer {
        Self::http(base, &format!("GET {path} HTTP/1.1\r\nHost: wsim\r\n{headers}\r\n"))
    }

    /// A WebSocket handshake on `path`; returns once the server answered 101 (the answer's headers
    /// are read, nothing more).
    pub fn websocket(base: &str, path: &str) -> RawPeer {
        let mut peer = Self::get(
            base,
            path,
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n",
        );
        let head = peer.read_head();
        assert!(head.starts_with("HTTP/1.1 101"), "handshake answered {head}");
        peer
    }

    /// Closes the connection.
    pub fn close(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    /// Reads an HTTP response head, byte by byte (so nothing after it is taken).
    pub fn read_head(&mut self) -> String {
        self.stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = self.stream.read(&mut byte).expect("read the response head");
            assert_eq!(n, 1, "closed during the response head: {}", String::from_utf8_lossy(&head));
            head.push(byte[0]);
        }
        String::from_utf8_lossy(&head).into_owned()
    }

    /// Sends one masked text frame.
    pub fn send_text(&mut self, text: &str) {
        let data = text.as_bytes();
        let mut frame = vec![0x81u8];
        match data.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n < 65536 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [0x12u8, 0x34, 0x56, 0x78];
        frame.extend_from_slice(&mask);
        frame.extend(data.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).expect("send a frame");
    }

    /// Reads exactly `n` bytes.
    fn read_exact(&mut self, n: usize) -> Vec<u8> {
        self.stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut buf = vec![0u8; n];
        self.stream.read_exact(&mut buf).expect("read from the server");
        buf
    }

    /// Reads the next text frame of a WebSocket (server frames are not masked; control frames are
    /// skipped, unanswered: this peer never answers pings).
    pub fn read_text_frame(&mut self) -> String {
        loop {
            let head = self.read_exact(2);
            let len = match head[1] & 0x7f {
                126 => {
                    let b = self.read_exact(2);
                    u16::from_be_bytes([b[0], b[1]]) as usize
                }
                127 => {
                    let b = self.read_exact(8);
                    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as usize
                }
                n => n as usize,
            };
            let payload = self.read_exact(len);
            if head[0] & 0x0f == 1 {
                return String::from_utf8(payload).expect("utf8 text frame");
            }
        }
    }

    /// Reads up to `limit` bytes (as they come, for at most `wait`); returns what was read.
    pub fn read_up_to(&mut self, limit: usize, wait: Duration) -> Vec<u8> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        while out.len() < limit && Instant::now() < deadline {
            self.stream.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
            let want = (limit - out.len()).min(buf.len());
            match self.stream.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        out
    }

    /// Reads everything until the server closes the connection; returns what was read, or `None`
    /// when it is still open after `wait`.
    pub fn read_until_closed(&mut self, wait: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + wait;
        let mut total = Vec::new();
        let mut buf = vec![0u8; 256 * 1024];
        self.stream.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
        while Instant::now() < deadline {
            match self.stream.read(&mut buf) {
                Ok(0) => return Some(total),
                Ok(n) => total.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => return Some(total),
            }
        }
        None
    }
}

/// Anonymous resident memory of a process (RssAnon: heap and stacks, not the page cache), in KiB.
pub fn rss_anon_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("RssAnon in /proc status")
}

/// Samples a process's RssAnon every 20 ms in a thread of its own, keeping the highest reading.
pub struct MemoryWatch {
    pub baseline_kib: u64,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MemoryWatch {
    pub fn start(pid: u32) -> MemoryWatch {
        let baseline_kib = rss_anon_kib(pid);
        let peak = Arc::new(AtomicU64::new(baseline_kib));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                    if let Some(v) = status
                        .lines()
                        .find_map(|l| l.strip_prefix("RssAnon:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                    {
                        p.fetch_max(v, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        MemoryWatch { baseline_kib, peak, stop, thread: Some(thread) }
    }

    /// The highest growth over the baseline seen so far, in KiB.
    pub fn peak_growth_kib(&self) -> u64 {
        self.peak.load(Ordering::Relaxed).saturating_sub(self.baseline_kib)
    }
}

impl Drop for MemoryWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
