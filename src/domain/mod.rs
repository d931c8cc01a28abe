//! The domain: the values every layer speaks of — ids, users, groups (conversations), messages —
//! with no actors, no storage and no wire format. The bottom of the dependency graph: it imports
//! nothing else of the crate.

pub mod group;
pub mod ids;
pub mod message;
pub mod user;
