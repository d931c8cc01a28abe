//! Mechanics shared by front-ends: WebSocket start-up with outbound accounting, and delivering core
//! messages over a WebSocket.

pub mod delivery;
pub mod ws;
