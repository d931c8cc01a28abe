//! Groups (persistent conversations) and their membership.

use std::collections::HashMap;

use diesel::prelude::*;

use super::models::{ConversationRow, MemberRow};
use super::schema::{conv_members, conversations, counters, messages};
use super::{DbConn, StoreError, WriteTransaction};
use crate::db_run;
use crate::domain::group::Group;
use crate::domain::ids::now_us;
use crate::domain::message::ConvKind;

/// First group id handed out by the group counter.
pub const FIRST_GROUP_ID: i64 = 10;
const GROUP_COUNTER: &str = "group_id";

/// The group a conversation row and its members (in joining order) make.
fn group_of(row: ConversationRow, members: Vec<String>) -> Group {
    Group {
        app: row.app,
        id: row.id,
        kind: ConvKind::from_i32(row.kind),
        conv_type: row.conv_type,
        creator: row.creator,
        name: row.name,
        notice: row.notice,
        snap: row.snap,
        archived: row.archived,
        deleted: row.deleted,
        created_us: row.created_us,
        members,
    }
}

/// What a new group starts with.
#[derive(Debug, Clone)]
pub struct NewGroup<'a> {
    pub app: &'a str,
    /// The id to use; `None` takes the next decimal id from the group counter.
    pub id: Option<&'a str>,
    /// The gateway's conversation type (0-15); 0 for wsim groups.
    pub conv_type: i32,
    pub creator: &'a str,
    pub name: &'a str,
    pub notice: &'a str,
    /// Members other than the creator (the creator is always added first).
    pub members: &'a [String],
    /// The group avatar URL to start with.
    pub snap: &'a str,
}

/// Increments the named counter and evaluates to its new value (the first value is `$start`).
/// A macro so that it expands inside a backend-specific transaction.
macro_rules! next_counter {
    ($conn:ident, $name:expr, $start:expr) => {{
        let updated = diesel::update(counters::table.filter(counters::name.eq($name)))
            .set(counters::value.eq(counters::value + 1))
            .execute($conn)?;
        if updated == 0 {
            diesel::insert_into(counters::table)
                .values((counters::name.eq($name), counters::value.eq($start)))
                .execute($conn)?;
        }
        counters::table.filter(counters::name.eq($name)).select(counters::value).first::<i64>($conn)?
    }};
}

/// Creates a group with a fresh decimal id from the group counter.
pub fn create_group(conn: &mut DbConn, new: &NewGroup<'_>) -> Result<Group, StoreError> {
    let mut members: Vec<String> = vec![new.creator.to_string()];
    for m in new.members {
        if !members.contains(m) {
            members.push(m.clone());
        }
    }
    db_run!(conn: {
        conn.write_transaction(|conn| {
            let id = if let Some(id) = new.id {
                let taken: i64 = conversations::table
                    .filter(conversations::app.eq(new.app).and(conversations::id.eq(id)))
                    .count()
                    .get_result(conn)?;
                if taken > 0 {
                    return Err(StoreError::Conflict(format!("conversation {id} exists")));
                }
                id.to_string()
            } else {
                loop {
                let candidate = next_counter!(conn, GROUP_COUNTER, FIRST_GROUP_ID).to_string();
                let taken: i64 = conversations::table
                    .filter(conversations::app.eq(new.app).and(conversations::id.eq(&candidate)))
                    .count()
                    .get_result(conn)?;
                if taken == 0 {
                    break candidate;
                }
            }
            };
            let now = now_us();
            let row = ConversationRow {
                app: new.app.to_string(),
                id: id.clone(),
                kind: ConvKind::Group as i32,
                conv_type: new.conv_type,
                creator: new.creator.to_string(),
                name: new.name.to_string(),
                notice: new.notice.to_string(),
                snap: new.snap.to_string(),
                archived: false,
                deleted: false,
                created_us: now,
            };
            diesel::insert_into(conversations::table).values(&row).execute(conn)?;
            let rows: Vec<MemberRow> = members
                .iter()
                .enumerate()
                .map(|(i, m)| MemberRow {
                    app: new.app.to_string(),
                    conv: id.clone(),
                    user_id: m.clone(),
                    delivered_upto: 0,
                    joined_us: now + i as i64,
                })
                .collect();
            for chunk in rows.chunks(500) {
                diesel::insert_into(conv_members::table).values(chunk).execute(conn)?;
            }
            Ok(group_of(row, members.clone()))
        })
    })
}

/// A group by id (`None` when it does not exist or is not a group).
pub fn group(conn: &mut DbConn, app: &str, id: &str) -> Result<Option<Group>, StoreError> {
    let row: Option<ConversationRow> = db_run!(conn: {
        conversations::table
            .filter(conversations::app.eq(app).and(conversations::id.eq(id)))
            .filter(conversations::kind.eq(ConvKind::Group as i32))
            .filter(conversations::deleted.eq(false))
            .select(ConversationRow::as_select())
            .first(conn)
            .optional()?
    });
    match row {
        None => Ok(None),
        Some(row) => {
            let members = members_of(conn, app, id)?;
            Ok(Some(group_of(row, members)))
        }
    }
}

/// Member ids of a conversation, in joining order.
pub fn members_of(conn: &mut DbConn, app: &str, conv: &str) -> Result<Vec<String>, StoreError> {
    Ok(db_run!(conn: {
        conv_members::table
            .filter(conv_members::app.eq(app).and(conv_members::conv.eq(conv)))
            .order((conv_members::joined_us.asc(), conv_members::user_id.asc()))
            .select(conv_members::user_id)
            .load::<String>(conn)?
    }))
}

/// Groups `user` belongs to, oldest first, with their members.
pub fn groups_of(conn: &mut DbConn, app: &str, user: &str) -> Result<Vec<Group>, StoreError> {
    let rows: Vec<ConversationRow> = db_run!(conn: {
        conversations::table
            .inner_join(
                conv_members::table.on(conv_members::app
                    .eq(conversations::app)
                    .and(conv_members::conv.eq(conversations::id))),
            )
            .filter(conv_members::app.eq(app).and(conv_members::user_id.eq(user)))
            .filter(conversations::kind.eq(ConvKind::Group as i32))
            .filter(conversations::deleted.eq(false))
            .order((conversations::created_us.asc(), conversations::id.asc()))
            .select(ConversationRow::as_select())
            .load(conn)?
    });
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let mut members: HashMap<String, Vec<String>> = HashMap::new();
    for chunk in ids.chunks(200) {
        let pairs: Vec<(String, String)> = db_run!(conn: {
            conv_members::table
                .filter(conv_members::app.eq(app).and(conv_members::conv.eq_any(chunk)))
                .order((conv_members::joined_us.asc(), conv_members::user_id.asc()))
                .select((conv_members::conv, conv_members::user_id))
                .load(conn)?
        });
        for (conv, user) in pairs {
            members.entry(conv).or_default().push(user);
        }
    }
    Ok(rows
        .into_iter()
        .map(|row| {
            let members = members.remove(&row.id).unwrap_or_default();
            group_of(row, members)
        })
        .collect())
}

/// Adds members to a group; returns the ones that were not members yet. New members start with their
/// delivery watermark at the group's last message, so they are not sent the group's past.
pub fn add_members(
    conn: &mut DbConn,
    app: &str,
    group: &str,
    users: &[String],
) -> Result<Vec<String>, StoreError> {
    db_run!(conn: {
        conn.write_transaction(|conn| {
            let last: i64 = messages::table
                .filter(messages::app.eq(app).and(messages::conv.eq(group)))
                .order(messages::id.desc())
                .select(messages::id)
                .first::<i64>(conn)
                .optional()?
                .unwrap_or(0);
            let existing: Vec<String> = conv_members::table
                .filter(conv_members::app.eq(app).and(conv_members::conv.eq(group)))
                .select(conv_members::user_id)
                .load(conn)?;
            let now = now_us();
            let mut added: Vec<String> = Vec::new();
            for u in users {
                if !existing.contains(u) && !added.contains(u) {
                    added.push(u.clone());
                }
            }
            let rows: Vec<MemberRow> = added
                .iter()
                .enumerate()
                .map(|(i, u)| MemberRow {
                    app: app.to_string(),
                    conv: group.to_string(),
                    user_id: u.clone(),
                    delivered_upto: last,
                    joined_us: now + i as i64,
                })
                .collect();
            for chunk in rows.chunks(500) {
                diesel::insert_into(conv_members::table).values(chunk).execute(conn)?;
            }
            Ok(added)
        })
    })
}

/// Removes members from a group; returns the ones that were members.
pub fn remove_members(
    conn: &mut DbConn,
    app: &str,
    group: &str,
    users: &[String],
) -> Result<Vec<String>, StoreError> {
    db_run!(conn: {
        conn.write_transaction(|conn| {
            let existing: Vec<String> = conv_members::table
                .filter(conv_members::app.eq(app).and(conv_members::conv.eq(group)))
                .filter(conv_members::user_id.eq_any(users))
                .select(conv_members::user_id)
                .load(conn)?;
            diesel::delete(
                conv_members::table
                    .filter(conv_members::app.eq(app).and(conv_members::conv.eq(group)))
                    .filter(conv_members::user_id.eq_any(&existing)),
            )
            .execute(conn)?;
            Ok(existing)
        })
    })
}

/// Updates a group's name and/or notice.
pub fn edit_group(
    conn: &mut DbConn,
    app: &str,
    group: &str,
    name: Option<&str>,
    notice: Option<&str>,
) -> Result<(), StoreError> {
    db_run!(conn: {
        let target = conversations::table
            .filter(conversations::app.eq(app).and(conversations::id.eq(group)));
        if let Some(name) = name {
            diesel::update(target).set(conversations::name.eq(name)).execute(conn)?;
        }
        if let Some(notice) = notice {
            diesel::update(target).set(conversations::notice.eq(notice)).execute(conn)?;
        }
        Ok(())
    })
}

/// Sets or clears the archived flag of conversations; returns how many exist.
pub fn set_archived(
    conn: &mut DbConn,
    app: &str,
    ids: &[String],
    archived: bool,
) -> Result<usize, StoreError> {
    db_run!(conn: {
        let n = diesel::update(
            conversations::table.filter(conversations::app.eq(app).and(conversations::id.eq_any(ids))),
        )
        .set(conversations::archived.eq(archived))
        .execute(conn)?;
        Ok(n)
    })
}

/// Sets a group's snap URL.
pub fn set_snap(conn: &mut DbConn, app: &str, group: &str, snap: &str) -> Result<(), StoreError> {
    db_run!(conn: {
        diesel::update(
            conversations::table.filter(conversations::app.eq(app).and(conversations::id.eq(group))),
        )
        .set(conversations::snap.eq(snap))
        .execute(conn)?;
        Ok(())
    })
}
