//! User profiles: nickname and avatar.

use std::collections::HashMap;

use diesel::prelude::*;

use super::models::UserRow;
use super::schema::users::dsl;
use super::{DbConn, StoreError, WriteTransaction};
use crate::db_run;
use crate::domain::ids::now_us;
use crate::domain::user::Profile;

/// Sets the fields given (`None` keeps the stored value); a new user starts with `default_nickname`
/// (its id) and `default_avatar`.
pub fn set_profile(
    conn: &mut DbConn,
    app: &str,
    id: &str,
    nickname: Option<&str>,
    avatar: Option<&str>,
    default_avatar: &str,
) -> Result<Profile, StoreError> {
    db_run!(conn: {
        conn.write_transaction(|conn| {
            let existing: Option<UserRow> = dsl::users
                .filter(dsl::app.eq(app).and(dsl::id.eq(id)))
                .select(UserRow::as_select())
                .first(conn)
                .optional()?;
            let row = UserRow {
                app: app.to_string(),
                id: id.to_string(),
                nickname: nickname
                    .map(str::to_string)
                    .or_else(|| existing.as_ref().map(|u| u.nickname.clone()))
                    .unwrap_or_else(|| id.to_string()),
                avatar: avatar
                    .map(str::to_string)
                    .or_else(|| existing.as_ref().map(|u| u.avatar.clone()))
                    .unwrap_or_else(|| default_avatar.to_string()),
                updated_us: now_us(),
            };
            if existing.is_some() {
                diesel::update(dsl::users.filter(dsl::app.eq(app).and(dsl::id.eq(id))))
                    .set((
                        dsl::nickname.eq(&row.nickname),
                        dsl::avatar.eq(&row.avatar),
                        dsl::updated_us.eq(row.updated_us),
                    ))
                    .execute(conn)?;
            } else {
                diesel::insert_into(dsl::users).values(&row).execute(conn)?;
            }
            Ok(Profile::from(row))
        })
    })
}

impl From<UserRow> for Profile {
    fn from(r: UserRow) -> Profile {
        Profile { id: r.id, nickname: r.nickname, avatar: r.avatar }
    }
}

/// Profiles of the given users that have one (users never profiled are absent).
pub fn profiles(
    conn: &mut DbConn,
    app: &str,
    ids: &[String],
) -> Result<HashMap<String, Profile>, StoreError> {
    let mut out = HashMap::new();
    for chunk in ids.chunks(500) {
        let rows: Vec<UserRow> = db_run!(conn: {
            dsl::users
                .filter(dsl::app.eq(app).and(dsl::id.eq_any(chunk)))
                .select(UserRow::as_select())
                .load(conn)?
        });
        out.extend(rows.into_iter().map(|r| (r.id.clone(), Profile::from(r))));
    }
    Ok(out)
}
