//! Gateway tokens: HS256 JWTs `{sid, platform, iss, exp}`, signed with the configured key or with one
//! generated once and kept in the data directory (so restarts keep tokens valid).

use std::path::Path;
use std::time::Duration;

use actix_web::http::header;
use actix_web::HttpRequest;
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

pub const ISSUER: &str = "wsim";
const KEY_FILE: &str = "gateway-jwt.key";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The session (user) id.
    pub sid: String,
    pub platform: i64,
    pub iss: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("invalid token")]
    Invalid,
    #[error("cannot sign token: {0}")]
    Sign(String),
    #[error("token key file {0}: {1}")]
    KeyFile(String, std::io::Error),
}

/// Issues and checks tokens.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl TokenKeys {
    pub fn new(secret: &[u8], ttl: Duration) -> TokenKeys {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.leeway = 0;
        TokenKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
        }
    }

    /// The configured key, or the one kept in `data_dir` (created on first use).
    pub fn load(configured: &str, data_dir: &Path, ttl: Duration) -> Result<TokenKeys, TokenError> {
        let key = crate::transport::secret::load_or_create(configured, data_dir, KEY_FILE)
            .map_err(|e| TokenError::KeyFile(data_dir.join(KEY_FILE).display().to_string(), e))?;
        Ok(TokenKeys::new(&key, ttl))
    }

    pub fn issue(&self, sid: &str, platform: i64) -> Result<String, TokenError> {
        let exp = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0) + self.ttl.as_secs();
        let claims = Claims { sid: sid.to_string(), platform, iss: ISSUER.to_string(), exp };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| TokenError::Sign(e.to_string()))
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|d| d.claims)
            .map_err(|_| TokenError::Invalid)
    }

    /// The token of a request: `Authorization: Bearer …`, else `?token=`.
    pub fn from_request(&self, req: &HttpRequest) -> Result<Claims, TokenError> {
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(|t| t.trim().to_string());
        let token = match bearer {
            Some(t) => t,
            None => serde_urlencoded::from_str::<Vec<(String, String)>>(req.query_string())
                .ok()
                .and_then(|q| q.into_iter().find(|(k, _)| k == "token").map(|(_, v)| v))
                .ok_or(TokenError::Invalid)?,
        };
        self.verify(&token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_and_carry_the_claims() {
        let keys = TokenKeys::new(b"secret", Duration::from_secs(60));
        let t = keys.issue("50864896-8136-4a43-8a48-1d3325a7f78f", 1).expect("token");
        let c = keys.verify(&t).expect("valid");
        assert_eq!(c.sid, "50864896-8136-4a43-8a48-1d3325a7f78f");
        assert_eq!(c.platform, 1);
        assert_eq!(c.iss, ISSUER);
    }

    #[test]
    fn bad_tokens_are_refused() {
        let keys = TokenKeys::new(b"secret", Duration::from_secs(60));
        let other = TokenKeys::new(b"other", Duration::from_secs(60));
        let t = other.issue("a", 1).expect("token");
        assert!(keys.verify(&t).is_err(), "wrong key");
        assert!(keys.verify("not.a.token").is_err());
        assert!(keys.verify("").is_err());
        let expired = TokenKeys::new(b"secret", Duration::from_secs(0));
        let t = {
            let claims = Claims { sid: "a".into(), platform: 1, iss: ISSUER.into(), exp: 1_000 };
            encode(&Header::new(Algorithm::HS256), &claims, &expired.encoding).expect("sign")
        };
        assert!(keys.verify(&t).is_err(), "expired");
    }

    #[test]
    fn generated_key_is_kept() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = TokenKeys::load("", dir.path(), Duration::from_secs(60)).expect("keys");
        let b = TokenKeys::load("", dir.path(), Duration::from_secs(60)).expect("keys again");
        let t = a.issue("s", 2).expect("token");
        assert_eq!(b.verify(&t).expect("same key after restart").sid, "s");
    }
}
