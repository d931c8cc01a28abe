//! Mechanics shared by front-ends: WebSocket start-up with outbound accounting, delivering core
//! messages over a WebSocket, parking long-poll requests, and rate limits per client address.

pub mod delivery;
pub mod longpoll;
pub mod ratelimit;
pub mod ws;
