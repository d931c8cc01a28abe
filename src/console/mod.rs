//! The web console (`static/`), embedded in the binary: `GET /` serves it, so `wsim` alone (no files,
//! no network at run time) gives a person a page to chat from. It talks to the server the way the
//! mobile apps do (`/entry`, the group API); its administration half calls [`admin`].

pub mod admin;

use actix_web::{web, HttpResponse};

const INDEX: &str = include_str!("../../static/index.html");

async fn index() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(INDEX)
}

/// Mounts the console at `/` (and `/console/`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index)).route("/console/", web::get().to(index));
}
