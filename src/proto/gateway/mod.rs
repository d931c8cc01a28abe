//! The gateway front-end (work in progress): so far its message id codec. The notify transports,
//! tokens and HTTP endpoints follow.

pub mod msgid;
pub mod token;
