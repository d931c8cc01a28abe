//! Group snaps drawn from member avatars, checked by decoding the JPEG and sampling the tiles, on
//! SQLite and MariaDB.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::dev::Service;
use actix_web::{web, App, HttpResponse, HttpServer};
use common::{Backend, TestServer};
use image::{Rgb, RgbImage};

on_both_backends!(snaps_follow_members_and_avatars);

const RED: [u8; 3] = [220, 30, 30];
const GREEN: [u8; 3] = [30, 200, 30];
const BLUE: [u8; 3] = [30, 30, 220];
const NEUTRAL: [u8; 3] = [0xbb, 0xbb, 0xbb];

fn png(rgb: [u8; 3]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    RgbImage::from_pixel(60, 60, Rgb(rgb)).write_to(&mut out, image::ImageFormat::Png).expect("png");
    out.into_inner()
}

fn near(p: &Rgb<u8>, want: [u8; 3]) -> bool {
    p.0.iter().zip(want).all(|(a, b)| (i16::from(*a) - i16::from(b)).abs() <= 16)
}

/// A web server on an ephemeral port: `/green.png` (a green avatar) and `/redirect?to=URL` (302);
/// counts the requests it gets and keeps the last User-Agent.
struct FakeHost {
    base: String,
    hits: Arc<AtomicUsize>,
    agent: Arc<Mutex<String>>,
}

fn start_host() -> FakeHost {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (hits, agent) = (Arc::new(AtomicUsize::new(0)), Arc::new(Mutex::new(String::new())));
    let (h, a) = (hits.clone(), agent.clone());
    let server = HttpServer::new(move || {
        let (h, a) = (h.clone(), a.clone());
        App::new()
            .wrap_fn(move |req, srv| {
                h.fetch_add(1, Ordering::SeqCst);
                let ua = req.headers().get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or("");
                if let Ok(mut last) = a.lock() {
                    *last = ua.to_string();
                }
                srv.call(req)
            })
            .route(
                "/green.png",
                web::get().to(|| async { HttpResponse::Ok().content_type("image/png").body(png(GREEN)) }),
            )
            .route(
                "/redirect",
                web::get().to(|q: web::Query<std::collections::HashMap<String, String>>| async move {
                    let to = q.get("to").cloned().unwrap_or_default();
                    HttpResponse::Found().insert_header(("Location", to)).finish()
                }),
            )
    })
    .listen(listener)
    .expect("listen")
    .workers(1)
    .run();
    actix_rt::spawn(server);
    FakeHost { base: format!("http://{addr}"), hits, agent }
}

async fn snap_of(s: &TestServer, gid: &str) -> (String, RgbImage) {
    let v = s.get_json(&format!("/grpinfo?groupid={gid}")).await;
    let url = v["data"]["snap"].as_str().expect("snap").to_string();
    let client = awc::Client::default();
    let mut res = client.get(&url).send().await.expect("GET snap");
    assert_eq!(res.status().as_u16(), 200, "{url}");
    let body = res.body().limit(1 << 22).await.expect("body");
    let img = image::load_from_memory(&body).expect("a JPEG").to_rgb8();
    assert_eq!(img.dimensions(), (340, 340));
    (url, img)
}

async fn snaps_follow_members_and_avatars(b: Backend) {
    // The business CDN is allowed; the "internal" host is not (a private or loopback service).
    let (cdn_host, internal) = (start_host(), start_host());
    let s =
        TestServer::start_with_config(&b, &format!("[wsim]\navatar_fetch_allow = [\"{}\"]\n", cdn_host.base));
    let cdn = format!("{}/green.png", cdn_host.base);
    let (_, v) = s.upload("/upload/writev2", "file", "red.png", &png(RED)).await;
    let red_url = v["data"].as_str().expect("url").to_string();
    let (_, v) = s.upload("/upload/writev2", "file", "blue.png", &png(BLUE)).await;
    let blue_url = v["data"].as_str().expect("url").to_string();
    for (user, avatar) in [
        ("r", red_url.as_str()),
        ("g", cdn.as_str()),
        ("x", "http://127.0.0.1:1/gone.png"),
        ("b", blue_url.as_str()),
    ] {
        let v = s.get_json(&format!("/setuserinfo?userid={user}&snap={avatar}")).await;
        assert_eq!(v["code"], 1, "{v}");
    }
    // r (own media, red), g (fetched, green), x (unreachable), d (never set: the default avatar).
    let v = s.get_json("/creategrp?creator=r&members=g,x,d&name=snappy").await;
    let gid = v["data"]["groupid"].as_str().expect("gid").to_string();
    let created_snap = v["data"]["snap"].as_str().expect("snap").to_string();
    let re = format!("/emovideo/{gid}_");
    assert!(created_snap.contains(&re) && created_snap.ends_with(".jpg"), "{created_snap}");
    let hex = created_snap.rsplit('_').next().expect("tail").trim_end_matches(".jpg");
    assert!(hex.len() == 8 && hex.chars().all(|c| c.is_ascii_hexdigit()), "{created_snap}");
    let (url1, img) = snap_of(&s, &gid).await;
    assert_eq!(url1, created_snap);
    // 2x2 grid of 150 px tiles: centres at 90 and 250.
    assert!(near(img.get_pixel(90, 90), RED));
    assert!(near(img.get_pixel(250, 90), GREEN));
    assert!(near(img.get_pixel(90, 250), NEUTRAL));
    assert!(!near(img.get_pixel(250, 250), RED) && !near(img.get_pixel(250, 250), GREEN));
    assert!(near(img.get_pixel(3, 3), [0xee, 0xee, 0xee]), "light grey background");

    // A fifth member switches to the 3x3 grid of 100 px tiles (centres 60, 170, 280).
    let v = s.get_json(&format!("/addmembers?groupid={gid}&members=b")).await;
    assert_eq!(v["code"], 1);
    let (url2, img) = snap_of(&s, &gid).await;
    assert_ne!(url2, url1, "a new file name");
    assert!(near(img.get_pixel(60, 60), RED));
    assert!(near(img.get_pixel(170, 60), GREEN));
    assert!(near(img.get_pixel(170, 170), BLUE), "fifth tile");

    // Removing a member redraws too.
    let v = s.get_json(&format!("/delmembers?groupid={gid}&members=g")).await;
    assert_eq!(v["code"], 1);
    let (url3, img) = snap_of(&s, &gid).await;
    assert_ne!(url3, url2);
    assert!(near(img.get_pixel(250, 90), NEUTRAL), "x moved into the second tile");

    // A member's new avatar redraws the snap.
    let v = s.get_json(&format!("/setuserinfo?userid=r&snap={blue_url}")).await;
    assert_eq!(v["code"], 1);
    let (url4, img) = snap_of(&s, &gid).await;
    assert_ne!(url4, url3);
    assert!(near(img.get_pixel(90, 90), BLUE));
    // refreshgrp answers the current snap.
    let v = s.get_json(&format!("/refreshgrp?groupid={gid}")).await;
    assert_eq!(v["data"]["snap"], url4.as_str());
    let agent = cdn_host.agent.lock().map(|a| a.clone()).unwrap_or_default();
    assert!(agent.starts_with("wsim/"), "the fetcher says who it is: {agent:?}");

    // Avatars on a host that is not allowed are never fetched, directly or through a redirect from
    // an allowed one: the tiles stay neutral and the internal host sees no request.
    let inside = format!("{}/green.png", internal.base);
    let via_cdn = format!("{}/redirect?to={inside}", cdn_host.base);
    for (user, avatar) in [("i1", inside.as_str()), ("i2", via_cdn.as_str())] {
        let v = s.get_json(&format!("/setuserinfo?userid={user}&snap={}", urlencode(avatar))).await;
        assert_eq!(v["code"], 1, "{v}");
    }
    let v = s.get_json("/creategrp?creator=i1&members=i2&name=inside").await;
    let gid = v["data"]["groupid"].as_str().expect("gid").to_string();
    let (_, img) = snap_of(&s, &gid).await;
    assert!(near(img.get_pixel(90, 90), NEUTRAL) && near(img.get_pixel(250, 90), NEUTRAL));
    assert_eq!(internal.hits.load(Ordering::SeqCst), 0, "the internal host was never asked");
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
