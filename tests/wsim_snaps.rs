//! Group snaps drawn from member avatars, checked by decoding the JPEG and sampling the tiles, on
//! SQLite and MariaDB.

mod common;

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

/// A business CDN on an ephemeral port serving one green avatar.
fn start_cdn() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = HttpServer::new(|| {
        App::new().route(
            "/green.png",
            web::get().to(|| async { HttpResponse::Ok().content_type("image/png").body(png(GREEN)) }),
        )
    })
    .listen(listener)
    .expect("listen")
    .workers(1)
    .run();
    actix_rt::spawn(server);
    format!("http://{addr}/green.png")
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
    let s = TestServer::start(&b, &[]);
    let cdn = start_cdn();
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
}
