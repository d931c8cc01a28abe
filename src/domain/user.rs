//! Users' profiles.

/// What a user shows of itself: a nickname (its id until set) and an avatar URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub id: String,
    pub nickname: String,
    pub avatar: String,
}
