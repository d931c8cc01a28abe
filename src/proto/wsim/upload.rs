//! Media uploads (`/upload/writev1|writev2|writev3`, multipart field `file`) and serving them back
//! (`/emopic/…`, `/emovideo/…`). Files are streamed to disk while hashed (MD5, 32 hex), bounded by the
//! per-kind size limit while streaming, then typed by their magic bytes and measured; the URL carries
//! the hash and the measure, as the deployed clients parse it. The same file uploaded twice is stored
//! once; a failed or partial upload leaves nothing behind.

use std::io::Write;
use std::path::{Path, PathBuf};

use actix_files::NamedFile;
use actix_multipart::Multipart;
use actix_web::http::header::{CacheControl, CacheDirective, ContentType};
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use md5::{Digest, Md5};
use serde_json::json;

use super::media::{self, Accept, Measure, MediaType};
use super::picture::{write_poster, write_rgb_jpeg, write_solid_jpeg, PictureError};

/// Where uploads go and how big they may be.
/// Uploads per minute, per client address and (with auth on) per user.
pub struct UploadLimits {
    limits: std::sync::Arc<crate::transport::ratelimit::Limits>,
    by_ip: crate::transport::ratelimit::PerIpRate,
    by_user: std::sync::Mutex<std::collections::HashMap<String, crate::transport::ratelimit::ConnRate>>,
    per_min: u32,
}

impl std::fmt::Debug for UploadLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadLimits").field("per_min", &self.per_min).finish()
    }
}

impl UploadLimits {
    pub fn new(per_min: u32, limits: std::sync::Arc<crate::transport::ratelimit::Limits>) -> UploadLimits {
        UploadLimits {
            limits,
            by_ip: crate::transport::ratelimit::PerIpRate::per_minute(per_min),
            by_user: Default::default(),
            per_min,
        }
    }

    /// Whether one more upload may start now for this address and user (counted). Exempt addresses
    /// (a reverse proxy) skip the address's limit, not the user's.
    fn allow(&self, ip: Option<std::net::IpAddr>, user: Option<&str>) -> bool {
        if self.per_min == 0 {
            return true;
        }
        if let Some(ip) = ip.filter(|_| !self.limits.exempt(ip)) {
            if !self.by_ip.allow(ip) {
                return false;
            }
        }
        let Some(user) = user else { return true };
        let mut users = self.by_user.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if users.len() > 100_000 {
            users.clear();
        }
        users
            .entry(user.to_string())
            .or_insert_with(|| crate::transport::ratelimit::ConnRate::per_minute(self.per_min))
            .allow()
    }
}

#[derive(Debug, Clone)]
pub struct UploadSettings {
    /// Uploads per minute per address and user (`[limits] uploads_per_min`).
    pub uploads: std::sync::Arc<UploadLimits>,
    /// Who may upload (`[wsim] auth`): with it on, `token=` (and `uid=`) in the query string.
    pub auth: std::sync::Arc<super::auth::WsimAuth>,
    pub app: String,
    pub data_dir: PathBuf,
    pub public_url: String,
    pub max_audio: u64,
    pub max_image: u64,
    pub max_video: u64,
}

impl UploadSettings {
    fn limit(&self, accept: Accept) -> u64 {
        match accept {
            Accept::Audio => self.max_audio,
            Accept::ImageOrAudio => self.max_audio.max(self.max_image),
            Accept::Video => self.max_video,
        }
    }

    fn limit_of(&self, ty: MediaType) -> u64 {
        if ty.is_audio() {
            self.max_audio
        } else if ty.is_image() {
            self.max_image
        } else {
            self.max_video
        }
    }
}

pub const PIC_DIR: &str = "emopic";
pub const VIDEO_DIR: &str = "emovideo";
const CHUNK_FLUSH: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
enum UploadError {
    #[error("bad file: {0}")]
    BadFile(String),
    #[error("file too large")]
    TooLarge,
    #[error("system error: {0}")]
    System(String),
    #[error("thumbnail: {0}")]
    Picture(#[from] PictureError),
    #[error("not authenticated: {0}")]
    Unauthorized(super::auth::AuthError),
    #[error("too many uploads")]
    TooMany,
}

fn answer(accept: Accept, res: Result<String, UploadError>) -> HttpResponse {
    let body = match res {
        Ok(url) => {
            let message = if accept == Accept::Video { "Succeeded" } else { "OK" };
            json!({"code": 0, "message": message, "data": url})
        }
        Err(e) => {
            log::info!("upload refused: {e}");
            let (code, message) = match e {
                UploadError::BadFile(_) => (1, "参数错误"),
                UploadError::System(_) | UploadError::Picture(_) => (2, "系统错误"),
                UploadError::TooLarge => (3, "文件过大"),
                UploadError::Unauthorized(_) => (4, "未授权"),
                UploadError::TooMany => (5, "上传过于频繁"),
            };
            json!({"code": code, "message": message, "data": ""})
        }
    };
    HttpResponse::Ok().insert_header(ContentType::json()).body(body.to_string())
}

/// Removes a temporary file unless it was kept.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, UploadError> + Send + 'static,
) -> Result<T, UploadError> {
    web::block(f).await.map_err(|e| UploadError::System(e.to_string()))?
}

/// Streams the `file` field to a temporary file; returns it with its MD5 and size.
async fn receive(
    settings: &UploadSettings,
    mut payload: Multipart,
    limit: u64,
) -> Result<(TempFile, String, u64), UploadError> {
    let tmp_dir = settings.data_dir.join("tmp");
    let path = tmp_dir.join(uuid::Uuid::new_v4().simple().to_string());
    let mut temp = TempFile(None);
    let mut found = false;
    let mut hasher = Md5::new();
    let mut size = 0u64;
    while let Some(field) = payload.next().await {
        let mut field = field.map_err(|e| UploadError::BadFile(e.to_string()))?;
        if field.name() != Some("file") || found {
            while let Some(chunk) = field.next().await {
                chunk.map_err(|e| UploadError::BadFile(e.to_string()))?;
            }
            continue;
        }
        found = true;
        let (dir, p) = (tmp_dir.clone(), path.clone());
        let mut file = blocking(move || {
            std::fs::create_dir_all(&dir).map_err(|e| UploadError::System(e.to_string()))?;
            std::fs::File::create(&p).map_err(|e| UploadError::System(e.to_string()))
        })
        .await?;
        temp.0 = Some(path.clone());
        let mut buf: Vec<u8> = Vec::with_capacity(CHUNK_FLUSH);
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(|e| UploadError::BadFile(format!("upload interrupted: {e}")))?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(UploadError::TooLarge);
            }
            hasher.update(&chunk);
            buf.extend_from_slice(&chunk);
            if buf.len() >= CHUNK_FLUSH {
                let data = std::mem::replace(&mut buf, Vec::with_capacity(CHUNK_FLUSH));
                file = blocking(move || {
                    file.write_all(&data).map_err(|e| UploadError::System(e.to_string()))?;
                    Ok(file)
                })
                .await?;
            }
        }
        blocking(move || {
            file.write_all(&buf).and_then(|_| file.flush()).map_err(|e| UploadError::System(e.to_string()))
        })
        .await?;
    }
    if !found || size == 0 {
        return Err(UploadError::BadFile("no file".into()));
    }
    let hex: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((temp, hex, size))
}

/// Types, measures and files an upload; returns its URL path below the public URL.
fn store(
    settings: &UploadSettings,
    temp: &mut TempFile,
    hex: &str,
    size: u64,
    accept: Accept,
) -> Result<String, UploadError> {
    let path = temp.0.clone().ok_or_else(|| UploadError::System("no temporary file".into()))?;
    let mut head = [0u8; 64];
    let n = {
        use std::io::Read;
        let mut f = std::fs::File::open(&path).map_err(|e| UploadError::System(e.to_string()))?;
        f.read(&mut head).map_err(|e| UploadError::System(e.to_string()))?
    };
    let ty = media::sniff(&head[..n], accept).ok_or_else(|| UploadError::BadFile("unknown type".into()))?;
    if size > settings.limit_of(ty) {
        return Err(UploadError::TooLarge);
    }
    let measure = media::measure(&path, ty).map_err(|e| UploadError::BadFile(e.to_string()))?;
    media::check_complete(&path, ty).map_err(|e| UploadError::BadFile(e.to_string()))?;
    let stem = match measure {
        Measure::Seconds(s) => format!("{hex}-{s}"),
        Measure::Size(w, h) => format!("{hex}-{w}x{h}"),
    };
    let dir_name = if accept == Accept::Video { VIDEO_DIR } else { PIC_DIR };
    let dir = settings.data_dir.join(dir_name);
    std::fs::create_dir_all(&dir).map_err(|e| UploadError::System(e.to_string()))?;
    let name = format!("{stem}.{}", ty.ext());
    let target = dir.join(&name);
    if target.exists() {
        // Stored already: the temporary copy goes.
        drop(temp.0.take().map(std::fs::remove_file));
    } else {
        std::fs::rename(&path, &target).map_err(|e| UploadError::System(e.to_string()))?;
        temp.0 = None;
    }
    if let Measure::Size(w, h) = measure {
        if accept == Accept::Video {
            let thumb = dir.join(format!("{stem}.jpg"));
            if !thumb.exists() {
                // The real first frame for H.264; a neutral poster of the video's size otherwise.
                let written = match media::first_frame_rgb(&target) {
                    Some((fw, fh, rgb)) => write_rgb_jpeg(&thumb, fw, fh, &rgb),
                    None => write_poster(&thumb, w, h),
                };
                written?;
            }
        }
    }
    Ok(format!("/{dir_name}/{name}"))
}

/// With auth on, the uploader's token (query string `token=`, and `uid=` for callback checks),
/// checked before a byte of the file is read.
/// Then the upload rate of the address and user (`[limits] uploads_per_min`).
async fn check_uploader(settings: &UploadSettings, req: &HttpRequest) -> Result<(), UploadError> {
    let mut user = None;
    if settings.auth.enabled() {
        let query: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string()).unwrap_or_default();
        let get =
            |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty());
        let uid = get("uid").filter(|u| crate::domain::message::valid_id(u));
        let actor =
            settings.auth.actor(&settings.app, uid, get("token")).await.map_err(UploadError::Unauthorized)?;
        if let super::auth::Actor::User(u) = actor {
            user = Some(u);
        }
    }
    if !settings.uploads.allow(req.peer_addr().map(|a| a.ip()), user.as_deref()) {
        crate::metrics::METRICS.limited("upload");
        return Err(UploadError::TooMany);
    }
    Ok(())
}

async fn upload(
    settings: web::Data<UploadSettings>,
    req: HttpRequest,
    payload: Multipart,
    accept: Accept,
) -> HttpResponse {
    let res = async {
        check_uploader(&settings, &req).await?;
        let (mut temp, hex, size) = receive(&settings, payload, settings.limit(accept)).await?;
        let s = settings.clone();
        let path = blocking(move || store(&s, &mut temp, &hex, size, accept)).await?;
        Ok(format!("{}{path}", settings.public_url))
    }
    .await;
    answer(accept, res)
}

pub async fn writev1(
    settings: web::Data<UploadSettings>,
    req: HttpRequest,
    payload: Multipart,
) -> HttpResponse {
    upload(settings, req, payload, Accept::Audio).await
}

pub async fn writev2(
    settings: web::Data<UploadSettings>,
    req: HttpRequest,
    payload: Multipart,
) -> HttpResponse {
    upload(settings, req, payload, Accept::ImageOrAudio).await
}

pub async fn writev3(
    settings: web::Data<UploadSettings>,
    req: HttpRequest,
    payload: Multipart,
) -> HttpResponse {
    upload(settings, req, payload, Accept::Video).await
}

/// A small form to try an upload from a browser.
pub async fn form(req: HttpRequest) -> HttpResponse {
    let path = req.path().to_string();
    let body = format!(
        "<!doctype html><meta charset=utf-8><title>wsim upload</title>\
         <form method=post enctype=multipart/form-data action=\"{path}\">\
         <input type=file name=file> <button>Upload</button></form>"
    );
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(body)
}

/// True for names the media folders may hold: no separators, no leading dot.
fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

async fn serve(settings: &UploadSettings, dir: &str, name: &str, req: &HttpRequest) -> HttpResponse {
    if !safe_name(name) {
        return HttpResponse::NotFound().finish();
    }
    let path = settings.data_dir.join(dir).join(name);
    match NamedFile::open_async(&path).await {
        Ok(f) => {
            let mut res = f.use_etag(true).use_last_modified(true).into_response(req);
            res.headers_mut().insert(
                actix_web::http::header::CACHE_CONTROL,
                CacheControl(vec![CacheDirective::Public, CacheDirective::MaxAge(31_536_000)])
                    .to_string()
                    .parse()
                    .unwrap_or_else(|_| actix_web::http::header::HeaderValue::from_static("public")),
            );
            res
        }
        Err(_) => HttpResponse::NotFound().finish(),
    }
}

pub async fn serve_pic(
    settings: web::Data<UploadSettings>,
    name: web::Path<String>,
    req: HttpRequest,
) -> HttpResponse {
    serve(&settings, PIC_DIR, &name, &req).await
}

pub async fn serve_video(
    settings: web::Data<UploadSettings>,
    name: web::Path<String>,
    req: HttpRequest,
) -> HttpResponse {
    serve(&settings, VIDEO_DIR, &name, &req).await
}

/// Mounts the upload endpoints and the media folders.
pub fn configure(settings: web::Data<UploadSettings>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(settings);
        for (path, handler) in
            [("writev1", Accept::Audio), ("writev2", Accept::ImageOrAudio), ("writev3", Accept::Video)]
        {
            let route = format!("/upload/{path}");
            cfg.route(&route, web::get().to(form));
            match handler {
                Accept::Audio => cfg.route(&route, web::post().to(writev1)),
                Accept::ImageOrAudio => cfg.route(&route, web::post().to(writev2)),
                Accept::Video => cfg.route(&route, web::post().to(writev3)),
            };
        }
        cfg.route("/emopic/{name}", web::get().to(serve_pic))
            .route("/emovideo/{name}", web::get().to(serve_video));
    }
}

/// Writes the default avatar and group snap images when missing.
pub fn ensure_defaults(data_dir: &Path) -> Result<(), PictureError> {
    for (dir, name, size) in
        [(PIC_DIR, "default_avatar.jpg", 100u16), (VIDEO_DIR, "default_group.jpg", 340u16)]
    {
        let d = data_dir.join(dir);
        std::fs::create_dir_all(&d)?;
        let p = d.join(name);
        if !p.exists() {
            write_solid_jpeg(&p, size, size, [0xe6, 0xe6, 0xe6])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_are_served() {
        for (name, ok) in [
            ("f85c0e8786bbc2d12db8d4f941f3dbd8-3.mp3", true),
            ("10_144fab26.jpg", true),
            ("../wsim.db", false),
            ("a/b.jpg", false),
            (".hidden", false),
            ("", false),
            ("a%2fb", false),
        ] {
            assert_eq!(safe_name(name), ok, "{name}");
        }
    }
}
