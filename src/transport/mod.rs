//! Mechanics shared by front-ends: WebSocket start-up with outbound accounting, delivering core
//! messages over a WebSocket, parking long-poll requests, rate limits per client address, and who may
//! read the administration endpoints.

pub mod access;
pub mod conncap;
pub mod delivery;
pub mod longpoll;
pub mod ratelimit;
pub mod secret;
pub mod slowbody;
pub mod upgraded;
pub mod ws;
