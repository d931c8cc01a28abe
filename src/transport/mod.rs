//! Mechanics shared by front-ends: WebSocket start-up with outbound accounting, delivering core
//! messages over a WebSocket, and rate limits per client address.

pub mod delivery;
pub mod ratelimit;
pub mod ws;
