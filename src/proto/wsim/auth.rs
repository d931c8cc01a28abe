//! Who a wsim user is, when the operator asks (`[wsim] auth`; an extension: the original protocol
//! trusted every client). `token`: tokens this server issues (`/inner/wsim_token`), bound to the user
//! with an expiry and an HMAC; `callback`: tokens the business system issues, checked by a GET to its
//! URL (timeout, bounded concurrency). `off`: anyone is whoever they say.
//!
//! A token never contains `_` (the `/entry` signaling separator): `login_<userid>_<token>` splits at
//! the last one.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::{WsimAuthMode, WsimAuthSettings};

/// Why a user is not who it says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("token required")]
    Missing,
    #[error("invalid token")]
    Invalid,
    #[error("token expired")]
    Expired,
    #[error("token check unavailable")]
    Unavailable,
}

/// Who may do what, once a request's user is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// Auth is off: the legacy protocol, anyone may do anything.
    Anyone,
    /// A user whose token checked out.
    User(String),
    /// The holder of `[wsim] admin_token`.
    Admin,
}

impl Actor {
    /// Whether this actor may act as `user` (its own profile, its own groups).
    pub fn is(&self, user: &str) -> bool {
        match self {
            Actor::Anyone | Actor::Admin => true,
            Actor::User(u) => u == user,
        }
    }

    /// Whether this actor may act for any user.
    pub fn unrestricted(&self) -> bool {
        matches!(self, Actor::Anyone | Actor::Admin)
    }
}

enum Mode {
    Off,
    Token { key: Vec<u8>, ttl: Duration },
    Callback { url: String, timeout: Duration, permits: Arc<tokio::sync::Semaphore> },
}

pub struct WsimAuth {
    mode: Mode,
    admin_token: Option<String>,
}

impl std::fmt::Debug for WsimAuth {
    /// Names the mode, never a key or token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match self.mode {
            Mode::Off => "off",
            Mode::Token { .. } => "token",
            Mode::Callback { .. } => "callback",
        };
        f.debug_struct("WsimAuth")
            .field("mode", &mode)
            .field("admin_token", &self.admin_token.is_some())
            .finish()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

impl WsimAuth {
    /// The settings' mode; the token key is `key` (configured or kept in the data directory).
    pub fn new(settings: &WsimAuthSettings, key: Vec<u8>) -> WsimAuth {
        let mode = match &settings.mode {
            WsimAuthMode::Off => Mode::Off,
            WsimAuthMode::Token => Mode::Token { key, ttl: settings.token_ttl },
            WsimAuthMode::Callback(url) => Mode::Callback {
                url: url.clone(),
                timeout: settings.callback_timeout,
                permits: Arc::new(tokio::sync::Semaphore::new(settings.callback_concurrency)),
            },
        };
        WsimAuth { mode, admin_token: settings.admin_token.clone() }
    }

    /// No authentication (the legacy protocol).
    pub fn off() -> WsimAuth {
        WsimAuth { mode: Mode::Off, admin_token: None }
    }

    pub fn enabled(&self) -> bool {
        !matches!(self.mode, Mode::Off)
    }

    fn mac(key: &[u8], app: &str, user: &str, expires: u64) -> Option<Hmac<Sha256>> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).ok()?;
        mac.update(format!("wsim\n{app}\n{user}\n{expires}").as_bytes());
        Some(mac)
    }

    /// A token for `user` (token mode only): `<hex of the user id>.<expiry>.<hex HMAC>`, and its
    /// expiry (Unix seconds).
    pub fn issue(&self, app: &str, user: &str, now: u64) -> Option<(String, u64)> {
        let Mode::Token { key, ttl } = &self.mode else { return None };
        let expires = now + ttl.as_secs();
        let mac = Self::mac(key, app, user, expires)?;
        Some((format!("{}.{expires}.{}", hex(user.as_bytes()), hex(&mac.finalize().into_bytes())), expires))
    }

    /// The user a token of this server names, checked (token mode).
    fn token_user(key: &[u8], app: &str, token: &str, now: u64) -> Result<String, AuthError> {
        let mut parts = token.split('.');
        let (Some(user), Some(expires), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Invalid);
        };
        let user = unhex(user).and_then(|u| String::from_utf8(u).ok()).ok_or(AuthError::Invalid)?;
        let expires: u64 = expires.parse().map_err(|_| AuthError::Invalid)?;
        let sig = unhex(sig).ok_or(AuthError::Invalid)?;
        let mac = Self::mac(key, app, &user, expires).ok_or(AuthError::Invalid)?;
        mac.verify_slice(&sig).map_err(|_| AuthError::Invalid)?;
        if expires <= now {
            return Err(AuthError::Expired);
        }
        Ok(user)
    }

    /// The user a token of this server names (token mode; `Invalid` in the others), checked at `now`.
    pub fn token_owner(&self, app: &str, token: &str, now: u64) -> Result<String, AuthError> {
        match &self.mode {
            Mode::Token { key, .. } => Self::token_user(key, app, token, now),
            _ => Err(AuthError::Invalid),
        }
    }

    /// Who presents `token` claiming to be `claimed` (`None`: not named; token mode then takes the
    /// token's user). The admin token is the admin whatever is claimed.
    pub async fn actor(
        &self,
        app: &str,
        claimed: Option<&str>,
        token: Option<&str>,
    ) -> Result<Actor, AuthError> {
        let token = token.filter(|t| !t.is_empty());
        match (&self.mode, token) {
            (Mode::Off, _) => Ok(Actor::Anyone),
            (_, None) => Err(AuthError::Missing),
            (_, Some(t)) if self.admin_token.as_deref() == Some(t) => Ok(Actor::Admin),
            (Mode::Token { key, .. }, Some(t)) => {
                let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
                let user = Self::token_user(key, app, t, now)?;
                match claimed {
                    Some(c) if c != user => Err(AuthError::Invalid),
                    _ => Ok(Actor::User(user)),
                }
            }
            (Mode::Callback { url, timeout, permits }, Some(t)) => {
                let user = claimed.ok_or(AuthError::Missing)?;
                Self::ask(url, *timeout, permits, user, t).await?;
                Ok(Actor::User(user.to_string()))
            }
        }
    }

    /// `GET <url>?userid=&token=` answering `{"success":true}`.
    async fn ask(
        url: &str,
        timeout: Duration,
        permits: &tokio::sync::Semaphore,
        user: &str,
        token: &str,
    ) -> Result<(), AuthError> {
        let _permit = permits.acquire().await.map_err(|_| AuthError::Unavailable)?;
        let query = serde_urlencoded::to_string([("userid", user), ("token", token)])
            .map_err(|_| AuthError::Invalid)?;
        let sep = if url.contains('?') { '&' } else { '?' };
        let client = awc::Client::builder().timeout(timeout).finish();
        let mut res = client.get(format!("{url}{sep}{query}")).send().await.map_err(|e| {
            log::warn!("wsim auth callback: {e}");
            AuthError::Unavailable
        })?;
        if !res.status().is_success() {
            log::warn!("wsim auth callback answered {}", res.status());
            return Err(AuthError::Unavailable);
        }
        let body = res.body().limit(64 * 1024).await.map_err(|_| AuthError::Unavailable)?;
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|_| AuthError::Unavailable)?;
        if v.get("success").and_then(serde_json::Value::as_bool) == Some(true) {
            Ok(())
        } else {
            Err(AuthError::Invalid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_auth(ttl: u64) -> WsimAuth {
        WsimAuth {
            mode: Mode::Token { key: b"key".to_vec(), ttl: Duration::from_secs(ttl) },
            admin_token: Some("root-token".into()),
        }
    }

    #[test]
    fn issued_tokens_name_their_user_and_expire() {
        let auth = token_auth(60);
        let Mode::Token { key, .. } = &auth.mode else { unreachable!() };
        let (t, expires) = auth.issue("default", "张三_1", 1_000).expect("token mode issues");
        assert_eq!(expires, 1_060);
        assert!(!t.contains('_'), "no signaling separator in {t}");
        assert_eq!(WsimAuth::token_user(key, "default", &t, 1_000), Ok("张三_1".to_string()));
        assert_eq!(WsimAuth::token_user(key, "default", &t, 1_060), Err(AuthError::Expired));
        assert_eq!(WsimAuth::token_user(key, "other-app", &t, 1_000), Err(AuthError::Invalid));
        // Tampered: another user, a later expiry, another key, garbage.
        let (mallory, _) = auth.issue("default", "mallory", 1_000).expect("token");
        let sig = t.rsplit('.').next().expect("sig");
        let forged_user = format!("{}.{expires}.{sig}", hex(b"bob"));
        let forged_expiry = format!("{}.{}.{sig}", hex("张三_1".as_bytes()), expires + 1000);
        for bad in [forged_user.as_str(), &forged_expiry, "", "a.b.c", "x", &format!("{mallory}.extra")] {
            assert_eq!(WsimAuth::token_user(key, "default", bad, 1_000), Err(AuthError::Invalid), "{bad}");
        }
        assert_eq!(WsimAuth::token_user(b"other", "default", &t, 1_000), Err(AuthError::Invalid));
        assert!(WsimAuth::off().issue("default", "u", 0).is_none());
    }

    #[actix_rt::test]
    async fn actors_follow_the_mode_the_claim_and_the_admin_token() {
        let auth = token_auth(3600);
        let now = u64::try_from(chrono::Utc::now().timestamp()).expect("now");
        let (t, _) = auth.issue("default", "alice", now).expect("token");
        assert_eq!(auth.actor("default", None, Some(&t)).await, Ok(Actor::User("alice".into())));
        assert_eq!(auth.actor("default", Some("alice"), Some(&t)).await, Ok(Actor::User("alice".into())));
        assert_eq!(auth.actor("default", Some("bob"), Some(&t)).await, Err(AuthError::Invalid));
        assert_eq!(auth.actor("default", Some("alice"), None).await, Err(AuthError::Missing));
        assert_eq!(auth.actor("default", Some("bob"), Some("root-token")).await, Ok(Actor::Admin));
        assert_eq!(WsimAuth::off().actor("default", Some("bob"), None).await, Ok(Actor::Anyone));
        assert!(Actor::User("alice".into()).is("alice") && !Actor::User("alice".into()).is("bob"));
        assert!(Actor::Admin.is("bob") && Actor::Anyone.unrestricted());
    }
}
