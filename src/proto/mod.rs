//! Front-ends: one folder per protocol. Each owns its wire format, its connection actors and its
//! HTTP handlers, and reaches storage and delivery only through `core::Core`.

pub mod gateway;
pub mod gru;
pub mod longweb;
pub mod wsim;
