//! Mechanics shared by front-ends: WebSocket start-up with outbound accounting.

pub mod ws;
