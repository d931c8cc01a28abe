//! Calls into the business app: `checktoken` (is this token valid for app/group/user?) over awc with
//! a timeout and a per-app bound on concurrent calls, so a slow or dead app never holds up another.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::config::LongwebApp;

/// Why a token check failed, with the seed's codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenFailure {
    /// -101001: the app has no authapi.
    NoAuthApi,
    /// -101002: the call failed.
    CallFailed(String),
    /// -101003: the answer is not the expected JSON.
    BadAnswer(String),
    /// -101004: RetCode ≠ 0.
    Refused(String),
    /// -101005: the answer names another app, group or user.
    Mismatch,
}

impl TokenFailure {
    pub fn code(&self) -> i64 {
        match self {
            TokenFailure::NoAuthApi => -101001,
            TokenFailure::CallFailed(_) => -101002,
            TokenFailure::BadAnswer(_) => -101003,
            TokenFailure::Refused(_) => -101004,
            TokenFailure::Mismatch => -101005,
        }
    }

    /// The message, as the original server worded it.
    pub fn message(&self, appid: &str) -> String {
        match self {
            TokenFailure::NoAuthApi => format!("no permission connect! => appid[{appid}] has no authapi"),
            TokenFailure::CallFailed(e) | TokenFailure::BadAnswer(e) => {
                format!("no permission connect! => check token has an error => {e}")
            }
            TokenFailure::Refused(m) => format!("no permission connect! => check token result => {m}"),
            TokenFailure::Mismatch => {
                "no permission connect! => check token: appid|groupid|userid not match".to_string()
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AuthResponse {
    ret_code: i64,
    #[serde(default)]
    ret_msg: String,
    #[serde(default, rename = "AppID")]
    app_id: serde_json::Value,
    #[serde(default, rename = "GroupID")]
    group_id: serde_json::Value,
    #[serde(default, rename = "UserID")]
    user_id: serde_json::Value,
}

thread_local! {
    /// One client (and so one connection pool) per worker thread; timeouts are set per request.
    static CLIENT: awc::Client = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
}

fn client() -> awc::Client {
    CLIENT.with(|c| c.clone())
}

/// A JSON string or number as text.
pub fn text_of(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

/// Per-app limits on concurrent callbacks.
#[derive(Default)]
pub struct CallLimits {
    per_app: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl CallLimits {
    fn of(&self, appid: &str, n: usize) -> Arc<Semaphore> {
        let mut map = self.per_app.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(appid.to_string()).or_insert_with(|| Arc::new(Semaphore::new(n))).clone()
    }
}

/// Asks the app whether `token` is valid for (app, group, user).
pub async fn check_token(
    limits: &CallLimits,
    app: &LongwebApp,
    group: &str,
    user: &str,
    token: &str,
    timeout: Duration,
    concurrency: usize,
) -> Result<(), TokenFailure> {
    let Some(api) = app.authapi.as_deref() else { return Err(TokenFailure::NoAuthApi) };
    let permit = limits.of(&app.appid, concurrency);
    let _permit = tokio::time::timeout(timeout, permit.acquire_owned())
        .await
        .map_err(|_| TokenFailure::CallFailed("too many calls in progress".into()))?
        .map_err(|e| TokenFailure::CallFailed(e.to_string()))?;
    let query = serde_urlencoded::to_string([
        ("appid", &app.appid[..]),
        ("groupid", group),
        ("userid", user),
        ("token", token),
    ])
    .map_err(|e| TokenFailure::CallFailed(e.to_string()))?;
    let sep = if api.contains('?') { '&' } else { '?' };
    let url = format!("{api}{sep}{query}");
    let mut res = client()
        .get(&url)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| TokenFailure::CallFailed(e.to_string()))?;
    if !res.status().is_success() {
        return Err(TokenFailure::CallFailed(format!("HTTP {}", res.status())));
    }
    let body = res.body().limit(64 * 1024).await.map_err(|e| TokenFailure::CallFailed(e.to_string()))?;
    let answer: AuthResponse =
        serde_json::from_slice(&body).map_err(|e| TokenFailure::BadAnswer(e.to_string()))?;
    if answer.ret_code != 0 {
        return Err(TokenFailure::Refused(answer.ret_msg));
    }
    if text_of(&answer.app_id) != app.appid
        || text_of(&answer.group_id) != group
        || text_of(&answer.user_id) != user
    {
        return Err(TokenFailure::Mismatch);
    }
    Ok(())
}

/// Why a call to the business app's messageapi failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("too many calls in progress")]
    Busy,
    #[error("the call failed: {0}")]
    Failed(String),
    #[error("HTTP {0}")]
    Status(u16),
}

/// Asks the app's messageapi whether a poll should be answered at once: `Ok(Some(body))` when it
/// answered something, `Ok(None)` for an empty answer, `Err` when the call failed.
pub async fn query_message(
    limits: &CallLimits,
    app: &LongwebApp,
    api: &str,
    params: [(&str, &str); 4],
    timeout: Duration,
    concurrency: usize,
) -> Result<Option<String>, CallError> {
    let permit = limits.of(&app.appid, concurrency);
    let _permit = tokio::time::timeout(timeout, permit.acquire_owned())
        .await
        .map_err(|_| CallError::Busy)?
        .map_err(|_| CallError::Busy)?;
    let query = serde_urlencoded::to_string(params).map_err(|e| CallError::Failed(e.to_string()))?;
    let sep = if api.contains('?') { '&' } else { '?' };
    let mut res = client()
        .get(format!("{api}{sep}{query}"))
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| CallError::Failed(e.to_string()))?;
    if !res.status().is_success() {
        return Err(CallError::Status(res.status().as_u16()));
    }
    let body = res.body().limit(1 << 20).await.map_err(|e| CallError::Failed(e.to_string()))?;
    let text = String::from_utf8_lossy(&body).into_owned();
    Ok(Some(text).filter(|t| !t.trim().is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_have_the_seed_codes() {
        for (f, code) in [
            (TokenFailure::NoAuthApi, -101001),
            (TokenFailure::CallFailed("x".into()), -101002),
            (TokenFailure::BadAnswer("x".into()), -101003),
            (TokenFailure::Refused("x".into()), -101004),
            (TokenFailure::Mismatch, -101005),
        ] {
            assert_eq!(f.code(), code);
            assert!(f.message("10000").starts_with("no permission connect! => "));
        }
    }

    #[test]
    fn numbers_and_strings_read_alike() {
        assert_eq!(text_of(&serde_json::json!(10000)), "10000");
        assert_eq!(text_of(&serde_json::json!("10000")), "10000");
        assert_eq!(text_of(&serde_json::json!(null)), "");
    }
}
