//! Messages and delivery watermarks.

use diesel::prelude::*;

use super::models::{ConversationRow, MemberRow, MessageRow};
use super::schema::{conv_members, conversations, messages};
use super::{DbConn, StoreError, WriteTransaction};
use crate::db_run;
use crate::domain::message::{ConvKind, HistoryEnd, Message};

/// A delivery watermark to raise: `user` has received everything in `conv` up to `upto`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermark {
    pub app: String,
    pub conv: String,
    pub user: String,
    pub upto: i64,
}

/// Writes one batch in one transaction: the messages, the direct conversations they open, and the
/// delivery watermarks. `new_direct` lists the direct messages whose conversation may not exist yet.
pub fn write_batch(
    conn: &mut DbConn,
    batch: &[&Message],
    new_direct: &[&Message],
    watermarks: &[Watermark],
) -> Result<(), StoreError> {
    let rows: Vec<MessageRow> = batch.iter().map(|m| MessageRow::from(*m)).collect();
    let mut convs: Vec<ConversationRow> = Vec::new();
    let mut members: Vec<MemberRow> = Vec::new();
    for m in new_direct {
        if convs.iter().any(|c| c.app == m.app && c.id == m.conv) {
            continue;
        }
        convs.push(ConversationRow {
            app: m.app.clone(),
            id: m.conv.clone(),
            kind: ConvKind::Direct as i32,
            conv_type: 0,
            creator: m.sender.clone(),
            name: String::new(),
            notice: String::new(),
            snap: String::new(),
            archived: false,
            deleted: false,
            created_us: m.sent_us,
        });
        let mut pair = vec![m.sender.clone()];
        if m.recipient != m.sender {
            pair.push(m.recipient.clone());
        }
        members.extend(pair.into_iter().map(|u| MemberRow {
            app: m.app.clone(),
            conv: m.conv.clone(),
            user_id: u,
            delivered_upto: 0,
            joined_us: m.sent_us,
        }));
    }
    db_run!(conn: {
        conn.write_transaction(|conn| {
            for chunk in convs.chunks(500) {
                diesel::insert_or_ignore_into(conversations::table).values(chunk).execute(conn)?;
            }
            for chunk in members.chunks(500) {
                diesel::insert_or_ignore_into(conv_members::table).values(chunk).execute(conn)?;
            }
            for chunk in rows.chunks(1000) {
                diesel::insert_into(messages::table).values(chunk).execute(conn)?;
            }
            conn.raise_watermarks(watermarks)
        })
    })
}

/// Raising delivery watermarks, in the cheapest form each backend offers.
pub trait RaiseWatermarks {
    fn raise_watermarks(&mut self, watermarks: &[Watermark]) -> Result<(), StoreError>;
}

/// SQLite runs in-process: one prepared UPDATE per watermark costs microseconds.
#[cfg(feature = "sqlite")]
impl RaiseWatermarks for diesel::sqlite::SqliteConnection {
    fn raise_watermarks(&mut self, watermarks: &[Watermark]) -> Result<(), StoreError> {
        for c in watermarks {
            diesel::update(
                conv_members::table
                    .filter(conv_members::app.eq(&c.app).and(conv_members::conv.eq(&c.conv)))
                    .filter(conv_members::user_id.eq(&c.user))
                    .filter(conv_members::delivered_upto.lt(c.upto)),
            )
            .set(conv_members::delivered_upto.eq(c.upto))
            .execute(self)?;
        }
        Ok(())
    }
}

/// MySQL pays a round trip per statement: one UPDATE … JOIN for up to 200 watermarks.
#[cfg(feature = "mysql")]
impl RaiseWatermarks for diesel::mysql::MysqlConnection {
    fn raise_watermarks(&mut self, watermarks: &[Watermark]) -> Result<(), StoreError> {
        use diesel::sql_types::{BigInt, Text};
        for chunk in watermarks.chunks(200) {
            let rows =
                vec!["SELECT ? AS app, ? AS conv, ? AS user_id, ? AS upto"; chunk.len()].join(" UNION ALL ");
            let sql = format!(
                "UPDATE conv_members m JOIN ({rows}) v \
                 ON m.app = v.app AND m.conv = v.conv AND m.user_id = v.user_id \
                 SET m.delivered_upto = v.upto WHERE m.delivered_upto < v.upto"
            );
            let mut q = diesel::sql_query(sql).into_boxed();
            for c in chunk {
                q = q
                    .bind::<Text, _>(c.app.clone())
                    .bind::<Text, _>(c.conv.clone())
                    .bind::<Text, _>(c.user.clone())
                    .bind::<BigInt, _>(c.upto);
            }
            q.execute(self)?;
        }
        Ok(())
    }
}

/// Up to `limit` messages of a conversation sent before `before_us`, oldest first.
pub fn history_before(
    conn: &mut DbConn,
    app: &str,
    conv: &str,
    before_us: i64,
    limit: i64,
) -> Result<Vec<Message>, StoreError> {
    let mut rows: Vec<MessageRow> = db_run!(conn: {
        messages::table
            .filter(messages::app.eq(app).and(messages::conv.eq(conv)))
            .filter(messages::sent_us.lt(before_us))
            .order(messages::id.desc())
            .limit(limit)
            .select(MessageRow::as_select())
            .load(conn)?
    });
    rows.reverse();
    Ok(rows.into_iter().map(Message::from).collect())
}

/// Up to `limit` messages of a conversation with ids in `lo..=hi` (either bound optional), taken from
/// the `end` of that range, returned oldest first.
pub fn history_range(
    conn: &mut DbConn,
    app: &str,
    conv: &str,
    lo: Option<i64>,
    hi: Option<i64>,
    end: HistoryEnd,
    limit: i64,
) -> Result<Vec<Message>, StoreError> {
    let (lo, hi) = (lo.unwrap_or(i64::MIN), hi.unwrap_or(i64::MAX));
    let mut rows: Vec<MessageRow> = db_run!(conn: {
        let q = messages::table
            .filter(messages::app.eq(app).and(messages::conv.eq(conv)))
            .filter(messages::id.ge(lo).and(messages::id.le(hi)))
            .select(MessageRow::as_select())
            .limit(limit);
        match end {
            HistoryEnd::Oldest => q.order(messages::id.asc()).load(conn)?,
            HistoryEnd::Newest => q.order(messages::id.desc()).load(conn)?,
        }
    });
    if end == HistoryEnd::Newest {
        rows.reverse();
    }
    Ok(rows.into_iter().map(Message::from).collect())
}

/// One of a user's conversations as seen by offline replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvState {
    pub conv: String,
    pub kind: ConvKind,
    /// Highest message id already delivered to the user.
    pub delivered_upto: i64,
    /// When the user joined the conversation (microseconds since the Unix epoch).
    pub joined_us: i64,
}

/// Every conversation (group or direct) the user belongs to, with its watermark.
pub fn conversations_of(conn: &mut DbConn, app: &str, user: &str) -> Result<Vec<ConvState>, StoreError> {
    let rows: Vec<(String, i32, i64, i64)> = db_run!(conn: {
        conv_members::table
            .inner_join(
                conversations::table.on(conversations::app
                    .eq(conv_members::app)
                    .and(conversations::id.eq(conv_members::conv))),
            )
            .filter(conv_members::app.eq(app).and(conv_members::user_id.eq(user)))
            .filter(conversations::deleted.eq(false))
            .select((conv_members::conv, conversations::kind, conv_members::delivered_upto, conv_members::joined_us))
            .load(conn)?
    });
    Ok(rows
        .into_iter()
        .map(|(conv, kind, delivered_upto, joined_us)| ConvState {
            conv,
            kind: ConvKind::from_i32(kind),
            delivered_upto,
            joined_us,
        })
        .collect())
}

/// Whether the message with this id is stored: after a commit whose outcome is unknown (the
/// connection was lost while the COMMIT was on its way), the batch's first id says whether the whole
/// batch went in.
pub fn is_stored(conn: &mut DbConn, id: i64) -> Result<bool, StoreError> {
    let found: Option<i64> = db_run!(conn: {
        messages::table.filter(messages::id.eq(id)).select(messages::id).first(conn).optional()?
    });
    Ok(found.is_some())
}

/// One message by id (within its app).
pub fn message_by_id(conn: &mut DbConn, app: &str, id: i64) -> Result<Option<Message>, StoreError> {
    let row: Option<MessageRow> = db_run!(conn: {
        messages::table
            .filter(messages::id.eq(id).and(messages::app.eq(app)))
            .select(MessageRow::as_select())
            .first(conn)
            .optional()?
    });
    Ok(row.map(Message::from))
}

/// The newest message of a conversation: one index probe.
pub fn last_message(conn: &mut DbConn, app: &str, conv: &str) -> Result<Option<Message>, StoreError> {
    let row: Option<MessageRow> = db_run!(conn: {
        messages::table
            .filter(messages::app.eq(app).and(messages::conv.eq(conv)))
            .order(messages::id.desc())
            .select(MessageRow::as_select())
            .first(conn)
            .optional()?
    });
    Ok(row.map(Message::from))
}

/// The highest message id of a conversation (0 when it has none): one index probe.
pub fn last_message_id(conn: &mut DbConn, app: &str, conv: &str) -> Result<i64, StoreError> {
    let last: Option<i64> = db_run!(conn: {
        messages::table
            .filter(messages::app.eq(app).and(messages::conv.eq(conv)))
            .order(messages::id.desc())
            .select(messages::id)
            .first(conn)
            .optional()?
    });
    Ok(last.unwrap_or(0))
}

/// A page of offline replay.
#[derive(Debug, Default)]
pub struct ReplayPage {
    /// Oldest first, at most the limit asked for.
    pub messages: Vec<Message>,
    /// Conversations that have nothing above their watermark (no need to ask again).
    pub exhausted: Vec<String>,
}

/// The next page of offline replay: messages of the given conversations with ids above each
/// conversation's watermark, not sent by `user`, oldest first, at most `limit`.
pub fn replay_page(
    conn: &mut DbConn,
    app: &str,
    user: &str,
    after: &[(String, i64)],
    limit: i64,
) -> Result<ReplayPage, StoreError> {
    let mut out: Vec<MessageRow> = Vec::new();
    let mut exhausted = Vec::new();
    for (conv, upto) in after {
        let rows: Vec<MessageRow> = db_run!(conn: {
            messages::table
                .filter(messages::app.eq(app).and(messages::conv.eq(conv)))
                .filter(messages::id.gt(upto))
                .filter(messages::sender.ne(user))
                .order(messages::id.asc())
                .limit(limit)
                .select(MessageRow::as_select())
                .load(conn)?
        });
        if rows.is_empty() {
            exhausted.push(conv.clone());
        }
        out.extend(rows);
    }
    out.sort_by_key(|m| m.id);
    out.truncate(usize::try_from(limit).unwrap_or(0));
    Ok(ReplayPage { messages: out.into_iter().map(Message::from).collect(), exhausted })
}
