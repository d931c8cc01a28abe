//! The gateway's JSON envelope and error codes: `{"code":0,"data":…}` on success,
//! `{"code":N,"error":"…"}` (no `data`) on failure, always HTTP 200.

use actix_web::http::header::ContentType;
use actix_web::HttpResponse;
use serde_json::{json, Value};

use crate::core::CoreError;

/// A gateway refusal, with its documented code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    #[error("internal error")]
    Internal,
    #[error("not allowed")]
    NotAllowed,
    #[error("not a member of the conversation")]
    NotMember,
    #[error("not found")]
    NotFound,
    #[error("invalid token")]
    InvalidToken,
    #[error("conversation type out of range (0..15)")]
    TypeOutOfRange,
    #[error("at least one session is required")]
    NoSessions,
    #[error("unsupported protoc")]
    UnsupportedProtoc,
}

impl GatewayError {
    pub fn code(&self) -> u32 {
        match self {
            GatewayError::InvalidParameter(_) => 10001,
            GatewayError::Internal => 10002,
            GatewayError::NotAllowed => 10003,
            GatewayError::NotMember => 10004,
            GatewayError::NotFound => 10005,
            GatewayError::InvalidToken => 10101,
            GatewayError::TypeOutOfRange => 90010,
            GatewayError::NoSessions => 90011,
            GatewayError::UnsupportedProtoc => 90013,
        }
    }
}

impl From<CoreError> for GatewayError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::NotMember => GatewayError::NotMember,
            CoreError::NoSuchGroup => GatewayError::NotFound,
            CoreError::BadId => GatewayError::InvalidParameter("id".into()),
            CoreError::Busy | CoreError::Storage => GatewayError::Internal,
        }
    }
}

fn json_response(body: &Value) -> HttpResponse {
    HttpResponse::Ok().insert_header(ContentType::json()).body(body.to_string())
}

/// Renders a handler's result in the envelope; `Ok(None)` is `{"code":0}`.
pub fn reply(result: Result<Option<Value>, GatewayError>) -> HttpResponse {
    match result {
        Ok(Some(data)) => json_response(&json!({"code": 0, "data": data})),
        Ok(None) => json_response(&json!({"code": 0})),
        Err(e) => json_response(&json!({"code": e.code(), "error": e.to_string()})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_its_documented_code() {
        for (e, code) in [
            (GatewayError::InvalidParameter("x".into()), 10001),
            (GatewayError::Internal, 10002),
            (GatewayError::NotAllowed, 10003),
            (GatewayError::NotMember, 10004),
            (GatewayError::NotFound, 10005),
            (GatewayError::InvalidToken, 10101),
            (GatewayError::TypeOutOfRange, 90010),
            (GatewayError::NoSessions, 90011),
            (GatewayError::UnsupportedProtoc, 90013),
        ] {
            assert_eq!(e.code(), code, "{e}");
        }
        assert_eq!(GatewayError::InvalidToken.to_string(), "invalid token");
    }
}
