//! Row types of the schema and their conversion to domain types.

use diesel::prelude::*;

use super::schema::{conv_members, conversations, messages, users};
use crate::domain::message::Message;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = users)]
pub struct UserRow {
    pub app: String,
    pub id: String,
    pub nickname: String,
    pub avatar: String,
    pub updated_us: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = conversations)]
pub struct ConversationRow {
    pub app: String,
    pub id: String,
    pub kind: i32,
    pub conv_type: i32,
    pub creator: String,
    pub name: String,
    pub notice: String,
    pub snap: String,
    pub archived: bool,
    pub deleted: bool,
    pub created_us: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = conv_members)]
pub struct MemberRow {
    pub app: String,
    pub conv: String,
    pub user_id: String,
    pub delivered_upto: i64,
    pub joined_us: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = messages)]
pub struct MessageRow {
    pub id: i64,
    pub app: String,
    pub conv: String,
    pub sender: String,
    pub recipient: String,
    pub kind: String,
    pub payload: String,
    pub extension: String,
    pub sent_us: i64,
    pub status: i32,
    pub conv_type: i32,
}

impl From<MessageRow> for Message {
    fn from(r: MessageRow) -> Message {
        Message {
            id: r.id,
            app: r.app,
            conv: r.conv,
            sender: r.sender,
            recipient: r.recipient,
            kind: r.kind,
            payload: r.payload,
            extension: r.extension,
            sent_us: r.sent_us,
            status: r.status,
            conv_type: r.conv_type,
        }
    }
}

impl From<&Message> for MessageRow {
    fn from(m: &Message) -> MessageRow {
        MessageRow {
            id: m.id,
            app: m.app.clone(),
            conv: m.conv.clone(),
            sender: m.sender.clone(),
            recipient: m.recipient.clone(),
            kind: m.kind.clone(),
            payload: m.payload.clone(),
            extension: m.extension.clone(),
            sent_us: m.sent_us,
            status: m.status,
            conv_type: m.conv_type,
        }
    }
}
