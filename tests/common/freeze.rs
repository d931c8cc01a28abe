//! A TCP proxy that can freeze (it keeps reading but delivers nothing either way, as a database server
//! stopped with SIGSTOP would look to its clients) or go down (every connection cut, new ones closed at
//! once, as a crashed server), or lose the answer to one COMMIT (the database commits, the client
//! sees its connection cut: the outcome of that transaction is unknown to it). Threads of its own,
//! independent of the test's runtime.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct FreezableProxy {
    pub addr: SocketAddr,
    frozen: Arc<AtomicBool>,
    down: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    lose_commit_answer: Arc<AtomicBool>,
}

/// What the two directions of one proxied connection share: once the client's COMMIT has gone out
/// while the proxy was told to lose its answer, the answer is swallowed and the connection cut.
#[derive(Clone, Default)]
struct Cut {
    armed: Arc<AtomicBool>,
    after_answer: Arc<AtomicBool>,
}

/// Which way a [`pump`] forwards.
#[derive(Clone, Copy, PartialEq)]
enum Way {
    ToServer,
    ToClient,
}

fn pump(mut from: TcpStream, mut to: TcpStream, frozen: Arc<AtomicBool>, way: Way, cut: Cut) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while frozen.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
        }
        match way {
            Way::ToServer
                if buf[..n].windows(6).any(|w| w.eq_ignore_ascii_case(b"COMMIT"))
                    && cut.armed.swap(false, Ordering::SeqCst) =>
            {
                cut.after_answer.store(true, Ordering::SeqCst);
            }
            Way::ToClient if cut.after_answer.load(Ordering::SeqCst) => {
                // The database answered the COMMIT: it is committed; the client never hears it.
                let _ = from.shutdown(std::net::Shutdown::Both);
                break;
            }
            _ => {}
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}

impl FreezableProxy {
    /// Listens on an ephemeral loopback port and forwards every connection to `upstream`.
    pub fn start(upstream: SocketAddr) -> FreezableProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let frozen = Arc::new(AtomicBool::new(false));
        let down = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Default::default();
        let lose_commit_answer = Arc::new(AtomicBool::new(false));
        let (f, d, o, l) = (frozen.clone(), down.clone(), open.clone(), lose_commit_answer.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if d.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream) else { continue };
                if let (Ok(mut list), Ok(c), Ok(s)) = (o.lock(), client.try_clone(), server.try_clone()) {
                    list.push(c);
                    list.push(s);
                }
                let (c2, s2) = match (client.try_clone(), server.try_clone()) {
                    (Ok(c), Ok(s)) => (c, s),
                    _ => continue,
                };
                let (f1, f2) = (f.clone(), f.clone());
                let cut = Cut { armed: l.clone(), after_answer: Default::default() };
                let cut2 = cut.clone();
                std::thread::spawn(move || pump(client, server, f1, Way::ToServer, cut));
                std::thread::spawn(move || pump(s2, c2, f2, Way::ToClient, cut2));
            }
        });
        FreezableProxy { addr, frozen, down, open, lose_commit_answer }
    }

    /// The database crashes: every connection is cut and new ones are closed at once.
    pub fn crash(&self) {
        self.down.store(true, Ordering::SeqCst);
        if let Ok(mut list) = self.open.lock() {
            for s in list.drain(..) {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    /// The database is back.
    pub fn recover(&self) {
        self.down.store(false, Ordering::SeqCst);
    }

    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    /// The next COMMIT any connection sends reaches the database, which commits it; its answer is
    /// lost and that connection cut.
    pub fn lose_next_commit_answer(&self) {
        self.lose_commit_answer.store(true, Ordering::SeqCst);
    }

    pub fn thaw(&self) {
        self.frozen.store(false, Ordering::SeqCst);
    }
}
