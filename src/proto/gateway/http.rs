//! The gateway's HTTP endpoints: tokens and conversations (public ones need a token; `/inner/*` ones
//! are for the business backend and only answer allowed networks).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::envelope::{reply, GatewayError};
use super::GatewayState;
use super::{msg, msgid};
use crate::core::service::GroupSpec;
use crate::core::{Draft, Origin, Target};
use crate::domain::group::Group;
use crate::domain::message::HistoryEnd;
use crate::domain::message::{valid_id, ConvKey, GroupKey, UserKey};

/// Highest conversation type (4 bits in a MsgId).
pub const MAX_CONV_TYPE: i64 = 15;

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, GatewayError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { body };
    serde_json::from_slice(body).map_err(|e| GatewayError::InvalidParameter(e.to_string()))
}

fn check_id(id: &str, what: &str) -> Result<(), GatewayError> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(GatewayError::InvalidParameter(what.to_string()))
    }
}

fn check_type(t: i64) -> Result<i32, GatewayError> {
    if (0..=MAX_CONV_TYPE).contains(&t) {
        Ok(t as i32)
    } else {
        Err(GatewayError::TypeOutOfRange)
    }
}

fn check_sessions(sessions: &[String]) -> Result<(), GatewayError> {
    if sessions.is_empty() {
        return Err(GatewayError::NoSessions);
    }
    sessions.iter().try_for_each(|s| check_id(s, "sessions"))
}

/// The caller's session id, from its token.
fn session_of(state: &GatewayState, req: &HttpRequest) -> Result<String, GatewayError> {
    state.keys.from_request(req).map(|c| c.sid).map_err(|_| GatewayError::InvalidToken)
}

/// `/inner/*` answers only the configured networks.
fn inner_allowed(state: &GatewayState, req: &HttpRequest) -> Result<(), GatewayError> {
    let ip = req.peer_addr().map(|a| a.ip()).ok_or(GatewayError::NotAllowed)?;
    if state.inner_allow.iter().any(|n| n.contains(&ip)) {
        Ok(())
    } else {
        Err(GatewayError::NotAllowed)
    }
}

async fn existing(state: &GatewayState, id: &str) -> Result<Group, GatewayError> {
    check_id(id, "conversation_id")?;
    state.core.group(&GroupKey::new(&state.app, id)).await?.ok_or(GatewayError::NotFound)
}

/// Conversations the gateway created have the ids it gave them (random UUIDs, not guessable); the
/// others are wsim groups (decimal ids), whose members change only through the wsim group API.
fn gateway_managed(g: &Group) -> Result<(), GatewayError> {
    if uuid::Uuid::try_parse(&g.id).is_ok() {
        Ok(())
    } else {
        Err(GatewayError::NotAllowed)
    }
}

async fn member_of(state: &GatewayState, id: &str, sid: &str) -> Result<Group, GatewayError> {
    let g = existing(state, id).await?;
    if g.members.iter().any(|m| m == sid) {
        Ok(g)
    } else {
        Err(GatewayError::NotMember)
    }
}

async fn create(
    state: &GatewayState,
    conv_type: i32,
    creator: String,
    members: Vec<String>,
) -> Result<Value, GatewayError> {
    let id = uuid::Uuid::new_v4().hyphenated().to_string();
    let spec = GroupSpec { id: Some(id.clone()), conv_type, creator, members, ..GroupSpec::default() };
    state.core.create_group(&state.app, spec).await?;
    Ok(json!({"ConversationId": id}))
}

#[derive(Deserialize)]
struct GetToken {
    session: String,
    #[serde(default)]
    platform: i64,
}

#[derive(Deserialize)]
struct ConversationRef {
    conversation_id: String,
}

#[derive(Deserialize)]
struct CreateConversation {
    #[serde(default)]
    conversation_type: i64,
}

#[derive(Deserialize)]
struct InnerCreate {
    #[serde(default)]
    conversation_type: i64,
    #[serde(default)]
    sessions: Vec<String>,
}

#[derive(Deserialize)]
struct ConversationSessions {
    conversation_id: String,
    #[serde(default)]
    sessions: Vec<String>,
}

#[derive(Deserialize)]
struct SetArchive {
    #[serde(default)]
    conversation_ids: Vec<String>,
    #[serde(default)]
    is_archive: bool,
}

#[derive(Deserialize)]
struct JoinedOf {
    #[serde(default, rename = "SessionId")]
    session_id: Option<String>,
}

pub async fn inner_get_token(
    state: web::Data<GatewayState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    reply(
        async {
            inner_allowed(&state, &req)?;
            let p: GetToken = parse(&body)?;
            check_id(&p.session, "session")?;
            let token = state.keys.issue(&p.session, p.platform).map_err(|_| GatewayError::Internal)?;
            Ok(Some(Value::String(token)))
        }
        .await,
    )
}

pub async fn create_conversation(
    state: web::Data<GatewayState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    reply(
        async {
            let sid = session_of(&state, &req)?;
            let p: CreateConversation = parse(&body)?;
            let conv_type = check_type(p.conversation_type)?;
            Ok(Some(create(&state, conv_type, sid, Vec::new()).await?))
        }
        .await,
    )
}

pub async fn join_conversation(
    state: web::Data<GatewayState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    reply(
        async {
            let sid = session_of(&state, &req)?;
            let p: ConversationRef = parse(&body)?;
            gateway_managed(&existing(&state, &p.conversation_id).await?)?;
            state.core.add_members(&GroupKey::new(&state.app, &p.conversation_id), vec![sid]).await?;
            Ok(Some(json!({"ConversationId": p.conversation_id})))
        }
        .await,
    )
}

pub async fn leave_conversation(
    state: web::Data<GatewayState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    reply(
        async {
            let sid = session_of(&state, &req)?;
            let p: ConversationRef = parse(&body)?;
            gateway_managed(&member_of(&state, &p.conversation_id, &sid).await?)?;
            state.core.remove_members(&GroupKey::new(&state.app, &p.conversation_id), vec![sid]).await?;
            Ok(Some(json!({"ConversationId": p.conversation_id})))
        }
        .await,
    )
}

pub async fn check_joined(
    state: web::Data<GatewayState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    reply(
        async {
            let sid = session_of(&state, &req)?;
            let p: ConversationRef = parse(&body)?;
            let g = existing(&state, &p.conversation_id).await?;
            Ok(Some(json!({"Joined": g.members.contains(&sid)})))
        }
        .await,
    )
}

#[derive(Deserialize)]
struct MuteRef {
    conversation_id: String,
    mute: bool,
}

/// `/mute_conversation` (an extension): `{"conversation_id","mute":true|false}`; a muted
/// conversation is not pushed to the session's phone while it is offline. Members only.
pub async fn mute_conversation(
    state: web::Data<GatewayState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    reply(
        async {
            let sid = session_of(&state, &req)?;
            let p: MuteRef = parse(&body)?;
            let g = member_of(&state, &p.conversation_id, &sid).await?;
            let group = GroupKey::new(&state.app, &g.id);
            state.core.set_mute(&UserKey::new(&state.app, &sid), &ConvKey::group(&group), p.mute).await?;
            Ok(Some(json!({"Muted": p.mute})))
        }
        .await,
    )
}

pub async fn get_joined(state: web::Data<GatewayState>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    reply(
        async {
            let sid = session_of(&state, &req)?;
            let p: JoinedOf = parse(&body)?;
            if p.session_id.as_deref().is_some_and(|s| !s.is_empty() && s != sid) {
                return Err(GatewayError::NotAllowed);
            }
            let groups = state.core.groups_of(&UserKey::new(&state.app, &sid)).await?;
            let ids: Vec<String> = groups.into_iter().map(|g| g.id).collect();
            Ok(Some(json!({"Conversations": ids})))
        }
        .await,
    )
}

pub async fn conversation_detail(
    state: web::Data<GatewayState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    reply(
        async {
            let sid = session_of(&state, &req)?;
            let p: ConversationRef = parse(&body)?;
            let g = member_of(&state, &p.conversation_id, &sid).await?;
            let last =
                state.core.last_message(&ConvKey { app: state.app.clone(), conv: g.id.clone() }).await?;
            let (last_id, last_time, last_sender) = match &last {
                Some(m) => (msg::msg_id(m), m.sent_us, m.sender.clone()),
                None => (String::new(), 0, String::new()),
            };
            Ok(Some(json!({
                "ConversationID": g.id,
                "LastMsgID": last_id,
                "LastSendTime": last_time,
                "IsDelete": g.deleted,
                "ConversationType": g.conv_type,
                "LastSendSession": last_sender,
                "IsArchive": g.archived,
            })))
        }
        .await,
    )
}

pub async fn lastone_msgid(
    state: web::Data<GatewayState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    reply(
        async {
            let sid = session_of(&state, &req)?;
            let p: ConversationRef = parse(&body)?;
            let g = member_of(&state, &p.conversation_id, &sid).await?;
            let last =
                state.core.last_message(&ConvKey { app: state.app.clone(), conv: g.id.clone() }).await?;
            let id = last.map(|m| msg::msg_id(&m)).unwrap_or_default();
            Ok(Some(json!({"MsgId": id})))
        }
        .await,
    )
}

pub async fn inner_create(
    state: web::Data<GatewayState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    reply(
        async {
            inner_allowed(&state, &req)?;
            let p: InnerCreate = parse(&body)?;
            let conv_type = check_type(p.conversation_type)?;
            check_sessions(&p.sessions)?;
            let mut sessions = p.sessions;
            let creator = sessions.remove(0);
            Ok(Some(create(&state, conv_type, creator, sessions).await?))
        }
        .await,
    )
}

pub async fn inner_kickout(
    state: web::Data<GatewayState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    reply(
        async {
            inner_allowed(&state, &req)?;
            let p: ConversationSessions = parse(&body)?;
            check_sessions(&p.sessions)?;
            gateway_managed(&existing(&state, &p.conversation_id).await?)?;
            state.core.remove_members(&GroupKey::new(&state.app, &p.conversation_id), p.sessions).await?;
            Ok(Some(json!({"ConversationId": p.conversation_id})))
        }
        .await,
    )
}

pub async fn inner_join(state: web::Data<GatewayState>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    reply(
        async {
            inner_allowed(&state, &req)?;
            let p: ConversationSessions = parse(&body)?;
            check_sessions(&p.sessions)?;
            gateway_managed(&existing(&state, &p.conversation_id).await?)?;
            state.core.add_members(&GroupKey::new(&state.app, &p.conversation_id), p.sessions).await?;
            Ok(Some(json!({"ConversationId": p.conversation_id})))
        }
        .await,
    )
}

pub async fn inner_set_archive(
    state: web::Data<GatewayState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    reply(
        async {
            inner_allowed(&state, &req)?;
            let p: SetArchive = parse(&body)?;
            if p.conversation_ids.is_empty() {
                return Err(GatewayError::InvalidParameter("conversation_ids".into()));
            }
            p.conversation_ids.iter().try_for_each(|id| check_id(id, "conversation_ids"))?;
            let n = state.core.set_archived(&state.app, p.conversation_ids, p.is_archive).await?;
            if n == 0 {
                return Err(GatewayError::NotFound);
            }
            Ok(None)
        }
        .await,
    )
}

#[derive(Deserialize)]
struct SendMsg {
    conversation_id: String,
    #[serde(default)]
    status: i32,
    #[serde(default, rename = "type")]
    msg_type: i64,
    #[serde(default)]
    content: String,
}

/// Largest `content` accepted by `/send_msg`, in bytes.
pub const MAX_CONTENT: usize = 64 * 1024;

pub async fn send_msg(state: web::Data<GatewayState>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    reply(
        async {
            let sid = session_of(&state, &req)?;
            let p: SendMsg = parse(&body)?;
            if p.content.len() > MAX_CONTENT {
                return Err(GatewayError::InvalidParameter("content too large".into()));
            }
            let g = member_of(&state, &p.conversation_id, &sid).await?;
            let draft = Draft {
                app: state.app.clone(),
                sender: sid,
                target: Target::Group(g.id.clone()),
                kind: msg::kind_of_type(p.msg_type),
                payload: p.content,
                extension: String::new(),
                status: p.status,
            };
            // Answered only once the message is stored.
            let stored = state.core.submit(draft, Origin::default()).await?;
            Ok(Some(json!({"MsgID": msg::msg_id(&stored)})))
        }
        .await,
    )
}

#[derive(Deserialize)]
struct History {
    conversation_id: String,
    #[serde(default)]
    msg_id: String,
    #[serde(default)]
    start_msg_id: String,
    #[serde(default)]
    end_msg_id: String,
    #[serde(default)]
    desc: bool,
}

/// Most messages one by-range query returns.
pub const RANGE_LIMIT: i64 = 1000;
const PAGE: i64 = 30;

/// Which history query.
#[derive(Debug, Clone, Copy)]
pub enum HistoryQuery {
    ByRange,
    Before,
    After,
    Last30,
    LastOne,
}

fn core_id(conv: &str, text: &str, field: &str) -> Result<i64, GatewayError> {
    let parts = msgid::decode(text).map_err(|_| GatewayError::InvalidParameter(field.to_string()))?;
    if !parts.is_for(conv) {
        return Err(GatewayError::InvalidParameter(format!("{field} is not of this conversation")));
    }
    msgid::message_id(&parts).ok_or_else(|| GatewayError::InvalidParameter(field.to_string()))
}

async fn history(
    state: &GatewayState,
    req: &HttpRequest,
    body: &[u8],
    q: HistoryQuery,
) -> Result<Option<Value>, GatewayError> {
    let sid = session_of(state, req)?;
    let p: History = parse(body)?;
    let g = member_of(state, &p.conversation_id, &sid).await?;
    let conv = g.id.as_str();
    let (lo, hi, end, limit) = match q {
        HistoryQuery::ByRange => {
            let a = core_id(conv, &p.start_msg_id, "start_msg_id")?;
            let b = core_id(conv, &p.end_msg_id, "end_msg_id")?;
            (Some(a.min(b)), Some(a.max(b)), HistoryEnd::Oldest, RANGE_LIMIT)
        }
        HistoryQuery::Before => (None, Some(core_id(conv, &p.msg_id, "msg_id")?), HistoryEnd::Newest, PAGE),
        HistoryQuery::After => (Some(core_id(conv, &p.msg_id, "msg_id")?), None, HistoryEnd::Oldest, PAGE),
        HistoryQuery::Last30 => (None, None, HistoryEnd::Newest, PAGE),
        HistoryQuery::LastOne => (None, None, HistoryEnd::Newest, 1),
    };
    let mut msgs = state
        .core
        .history_range(&ConvKey { app: state.app.clone(), conv: conv.to_string() }, lo, hi, end, limit)
        .await?;
    if p.desc {
        msgs.reverse();
    }
    let list: Vec<Value> = msgs.iter().map(msg::msg_data).collect();
    Ok(Some(json!({"Msg": list})))
}

/// A handler answering one kind of history query.
pub fn history_route(
    q: HistoryQuery,
) -> impl Fn(
    web::Data<GatewayState>,
    HttpRequest,
    web::Bytes,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = HttpResponse>>>
       + Clone
       + 'static {
    move |state, req, body| Box::pin(async move { reply(history(&state, &req, &body, q).await) })
}
