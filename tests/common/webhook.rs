//! A fake offline-push webhook (the business system's endpoint): records the notifications it is
//! sent, checks their signatures, and answers as told (accept, fail first, refuse, slowly).

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::Value;

use super::eventually;

pub const SECRET: &str = "push-secret-5d1";

/// How the fake webhook answers.
#[derive(Clone, Copy)]
pub enum Mode {
    Accept,
    /// 503 to the first `n` requests, then 200.
    FailFirst(usize),
    Refuse,
    /// Waits this long, then 200.
    Slow(Duration),
}

#[derive(Default)]
struct Seen {
    requests: usize,
    notifications: Vec<Value>,
    bad_signatures: usize,
}

/// The business system's push endpoint.
#[derive(Clone)]
pub struct Hook {
    seen: Arc<Mutex<Seen>>,
    pub url: String,
}

impl Hook {
    pub fn start(mode: Mode) -> Hook {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        Hook::start_on(listener, mode)
    }

    pub fn start_on(listener: TcpListener, mode: Mode) -> Hook {
        let url = format!("http://{}/push", listener.local_addr().expect("addr"));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let state = seen.clone();
        let server = HttpServer::new(move || {
            let state = state.clone();
            App::new().route(
                "/push",
                web::post().to(move |req: HttpRequest, body: web::Bytes| {
                    let state = state.clone();
                    async move {
                        let n = {
                            let mut s = state.lock().expect("hook state");
                            s.requests += 1;
                            s.requests
                        };
                        match mode {
                            Mode::Refuse => return HttpResponse::BadRequest().finish(),
                            Mode::FailFirst(k) if n <= k => {
                                return HttpResponse::ServiceUnavailable().finish()
                            }
                            Mode::Slow(d) => tokio::time::sleep(d).await,
                            _ => {}
                        }
                        let want = signature(&body);
                        let got = req.headers().get("X-Wsim-Signature").and_then(|v| v.to_str().ok());
                        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let mut s = state.lock().expect("hook state");
                        if got != Some(want.as_str()) {
                            s.bad_signatures += 1;
                        }
                        s.notifications.extend(v["notifications"].as_array().cloned().unwrap_or_default());
                        HttpResponse::Ok().finish()
                    }
                }),
            )
        })
        .listen(listener)
        .expect("listen")
        .workers(1)
        .run();
        actix_rt::spawn(server);
        Hook { seen, url }
    }

    pub fn notifications(&self) -> Vec<Value> {
        self.seen.lock().expect("hook state").notifications.clone()
    }

    pub fn requests(&self) -> usize {
        self.seen.lock().expect("hook state").requests
    }

    /// The notifications for `user`.
    pub fn of(&self, user: &str) -> Vec<Value> {
        self.notifications().into_iter().filter(|n| n["recipient"] == user).collect()
    }

    /// Waits (at most 10 s) until `user` has `n` notifications; answers them.
    pub async fn wait_for(&self, user: &str, n: usize) -> Vec<Value> {
        let ok = eventually(Duration::from_secs(10), || async { self.of(user).len() >= n }).await;
        let got = self.of(user);
        assert!(ok && got.len() == n, "{user}: {} notification(s), not {n}: {got:?}", got.len());
        assert_eq!(self.seen.lock().expect("hook state").bad_signatures, 0, "signatures");
        got
    }
}

fn signature(body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}
