//! What offline push reads and keeps: muted conversations, delivery watermarks and the recent
//! messages of a conversation (for unread counts).

use diesel::prelude::*;

use super::schema::{conv_members, messages, mutes};
use super::{DbConn, StoreError};
use crate::db_run;

/// Most ids one `IN (…)` list carries.
const IN_CHUNK: usize = 500;

/// Mutes (`on`) or unmutes `conv` for `user`.
pub fn set_mute(conn: &mut DbConn, app: &str, user: &str, conv: &str, on: bool) -> Result<(), StoreError> {
    db_run!(conn: {
        if on {
            diesel::insert_or_ignore_into(mutes::table)
                .values((mutes::app.eq(app), mutes::user_id.eq(user), mutes::conv.eq(conv)))
                .execute(conn)?;
        } else {
            diesel::delete(
                mutes::table.filter(mutes::app.eq(app).and(mutes::conv.eq(conv)).and(mutes::user_id.eq(user))),
            )
            .execute(conn)?;
        }
    });
    Ok(())
}

/// The conversations among `convs` that each of `users` muted, as (user, conversation).
pub fn muted_pairs(
    conn: &mut DbConn,
    app: &str,
    users: &[String],
    convs: &[String],
) -> Result<Vec<(String, String)>, StoreError> {
    let mut out = Vec::new();
    for users in users.chunks(IN_CHUNK) {
        for convs in convs.chunks(IN_CHUNK) {
            let rows: Vec<(String, String)> = db_run!(conn: {
                mutes::table
                    .filter(mutes::app.eq(app))
                    .filter(mutes::user_id.eq_any(users))
                    .filter(mutes::conv.eq_any(convs))
                    .select((mutes::user_id, mutes::conv))
                    .load(conn)?
            });
            out.extend(rows);
        }
    }
    Ok(out)
}

/// The delivery watermarks of `users` in `convs`, as (user, conversation, watermark); pairs without
/// a row are left out (nothing was ever delivered to the user there).
pub fn watermark_pairs(
    conn: &mut DbConn,
    app: &str,
    users: &[String],
    convs: &[String],
) -> Result<Vec<(String, String, i64)>, StoreError> {
    let mut out = Vec::new();
    for users in users.chunks(IN_CHUNK) {
        for convs in convs.chunks(IN_CHUNK) {
            let rows: Vec<(String, String, i64)> = db_run!(conn: {
                conv_members::table
                    .filter(conv_members::app.eq(app))
                    .filter(conv_members::user_id.eq_any(users))
                    .filter(conv_members::conv.eq_any(convs))
                    .select((conv_members::user_id, conv_members::conv, conv_members::delivered_upto))
                    .load(conn)?
            });
            out.extend(rows);
        }
    }
    Ok(out)
}

/// The newest `limit` messages of `conv` as (id, sender), newest first: one index range.
pub fn recent_senders(
    conn: &mut DbConn,
    app: &str,
    conv: &str,
    limit: i64,
) -> Result<Vec<(i64, String)>, StoreError> {
    let rows: Vec<(i64, String)> = db_run!(conn: {
        messages::table
            .filter(messages::app.eq(app).and(messages::conv.eq(conv)))
            .order(messages::id.desc())
            .limit(limit)
            .select((messages::id, messages::sender))
            .load(conn)?
    });
    Ok(rows)
}
