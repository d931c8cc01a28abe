//! Persistent groups (conversations): a wsim group, a gateway conversation, or the direct
//! conversation of two users.

use super::message::ConvKind;

/// A group with its members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub app: String,
    pub id: String,
    pub kind: ConvKind,
    /// The gateway's conversation type (0-15); 0 for wsim groups.
    pub conv_type: i32,
    pub creator: String,
    pub name: String,
    pub notice: String,
    /// The group avatar URL.
    pub snap: String,
    pub archived: bool,
    pub deleted: bool,
    /// Creation time, microseconds since the Unix epoch.
    pub created_us: i64,
    /// In joining order (the creator first).
    pub members: Vec<String>,
}
