//! The wsim group API: creategrp, addmembers, delmembers, editgrp, querymygrps, grpinfo, refreshgrp and
//! setuserinfo. Parameters come from the query string or a POST form body (extra ones are ignored).
//! Answers are HTTP 200 with `{"code","message","data"}`: the configured ok code on success, negative
//! codes on errors (-1 bad argument, -2 no such group, -3 not allowed, -5 internal).
//!
//! With `[wsim] auth` on (an extension), every call takes `token=` (and `uid=`, the user it acts as,
//! where the call does not name it): only members read a group or add to it, only its creator (or
//! the admin token) removes others or edits it, users read their own groups and edit their own
//! profile; a missing or bad token is `-3`. `/inner/wsim_token?userid=` issues tokens (token mode,
//! from `[gateway] inner_allow`).

use std::collections::HashMap;

use actix_web::http::header::{self, ContentType};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use serde_json::{json, Value};

use super::auth::{Actor, AuthError};
use super::{snap, WsimState};
use crate::core::service::GroupSpec;
use crate::core::CoreError;
use crate::domain::group::Group;
use crate::domain::message::{valid_id, GroupKey, UserKey};
use crate::domain::user::Profile;

/// Most members one call may name.
pub const MAX_MEMBERS_PER_CALL: usize = 2000;
const MAX_TEXT: usize = 255;
const MAX_NOTICE: usize = 4096;
const MAX_URL: usize = 1024;

pub const ERR_ARGUMENT: i64 = -1;
pub const ERR_NO_GROUP: i64 = -2;
pub const ERR_NOT_ALLOWED: i64 = -3;
pub const ERR_INTERNAL: i64 = -5;

/// A refusal of the group API.
#[derive(Debug)]
pub struct ApiError {
    code: i64,
    message: String,
}

impl ApiError {
    fn arg(message: impl Into<String>) -> Self {
        ApiError { code: ERR_ARGUMENT, message: message.into() }
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::NoSuchGroup => ApiError { code: ERR_NO_GROUP, message: "no such group".into() },
            CoreError::NotMember => ApiError { code: ERR_NOT_ALLOWED, message: "not a member".into() },
            CoreError::BadId => ApiError::arg("bad id"),
            CoreError::Busy | CoreError::Storage => {
                ApiError { code: ERR_INTERNAL, message: "internal error".into() }
            }
        }
    }
}

fn not_allowed(message: impl Into<String>) -> ApiError {
    ApiError { code: ERR_NOT_ALLOWED, message: message.into() }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unavailable => ApiError { code: ERR_INTERNAL, message: e.to_string() },
            _ => not_allowed(e.to_string()),
        }
    }
}

/// Who a call acts as: decided from its own parameters (the group API), or known already (the
/// console's administration calls act as the admin).
#[derive(Debug, Clone)]
pub enum Caller {
    FromParams,
    Known(Actor),
}

/// The group API's operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    CreateGrp,
    AddMembers,
    DelMembers,
    EditGrp,
    QueryMyGrps,
    GrpInfo,
    RefreshGrp,
    SetUserInfo,
}

impl Op {
    /// Every operation with its route name.
    pub const ALL: [(&'static str, Op); 8] = [
        ("creategrp", Op::CreateGrp),
        ("addmembers", Op::AddMembers),
        ("delmembers", Op::DelMembers),
        ("editgrp", Op::EditGrp),
        ("querymygrps", Op::QueryMyGrps),
        ("grpinfo", Op::GrpInfo),
        ("refreshgrp", Op::RefreshGrp),
        ("setuserinfo", Op::SetUserInfo),
    ];

    pub fn from_name(name: &str) -> Option<Op> {
        Op::ALL.iter().find(|(n, _)| *n == name).map(|(_, op)| *op)
    }
}

/// Runs `op` with the request's parameters, as `who`, and answers in the group API's envelope.
pub async fn answer(state: &WsimState, op: Op, req: &HttpRequest, body: &[u8], who: &Caller) -> HttpResponse {
    let result = async {
        let p = Params::from_request(req, body)?;
        match op {
            Op::CreateGrp => creategrp(state, &p, who).await,
            Op::AddMembers => addmembers(state, &p, who).await,
            Op::DelMembers => delmembers(state, &p, who).await,
            Op::EditGrp => editgrp(state, &p, who).await,
            Op::QueryMyGrps => querymygrps(state, &p, who).await,
            Op::GrpInfo => grpinfo(state, &p, who).await,
            Op::RefreshGrp => refreshgrp(state, &p, who).await,
            Op::SetUserInfo => setuserinfo(state, &p, who).await,
        }
    }
    .await;
    reply(state, result)
}

/// Who calls: known already, or `token=` for the user `uid=` (or `claim`, the user the call
/// names) with auth on; anyone with it off.
async fn caller(state: &WsimState, p: &Params, who: &Caller, claim: Option<&str>) -> Result<Actor, ApiError> {
    if let Caller::Known(actor) = who {
        return Ok(actor.clone());
    }
    if !state.auth.enabled() {
        return Ok(Actor::Anyone);
    }
    let uid = match p.0.get("uid").filter(|u| !u.is_empty()) {
        Some(u) if valid_id(u) => Some(u.as_str()),
        Some(_) => return Err(ApiError::arg("bad uid")),
        None => claim,
    };
    Ok(state.auth.actor(&state.app, uid, p.get("token")).await?)
}

/// Whether `actor` may read `g` (members, and the unrestricted).
fn reads(actor: &Actor, g: &Group) -> bool {
    match actor {
        Actor::User(u) => g.members.contains(u),
        Actor::Anyone | Actor::Admin => true,
    }
}

fn json_response(body: &Value) -> HttpResponse {
    HttpResponse::Ok().insert_header(ContentType::json()).body(body.to_string())
}

fn reply(state: &WsimState, result: Result<Option<Value>, ApiError>) -> HttpResponse {
    match result {
        Ok(None) => json_response(&json!({"code": state.ok_code, "message": "OK"})),
        Ok(Some(data)) => json_response(&json!({"code": state.ok_code, "message": "OK", "data": data})),
        Err(e) => json_response(&json!({"code": e.code, "message": e.message})),
    }
}

/// Query-string and form parameters, the form winning.
pub struct Params(HashMap<String, String>);

impl Params {
    pub fn from_request(req: &HttpRequest, body: &[u8]) -> Result<Params, ApiError> {
        let mut map: HashMap<String, String> = HashMap::new();
        let query: Vec<(String, String)> =
            serde_urlencoded::from_str(req.query_string()).map_err(|_| ApiError::arg("bad query string"))?;
        map.extend(query);
        let is_form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if is_form && !body.is_empty() {
            let form: Vec<(String, String)> =
                serde_urlencoded::from_bytes(body).map_err(|_| ApiError::arg("bad form body"))?;
            map.extend(form);
        }
        Ok(Params(map))
    }

    /// A parameter, trimmed; `None` when absent or empty.
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|s| s.trim()).filter(|s| !s.is_empty())
    }

    /// An id parameter as given: one with leading or trailing whitespace is refused, not trimmed
    /// into somebody else's.
    fn id(&self, name: &str) -> Result<String, ApiError> {
        match self.0.get(name).map(String::as_str).filter(|v| !v.is_empty()) {
            None => Err(ApiError::arg(format!("{name} is required"))),
            Some(v) if valid_id(v) => Ok(v.to_string()),
            Some(_) => Err(ApiError::arg(format!("bad {name}"))),
        }
    }

    fn text(&self, name: &str, max: usize) -> Result<Option<String>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) if v.chars().count() <= max => Ok(Some(v.to_string())),
            Some(_) => Err(ApiError::arg(format!("{name} too long"))),
        }
    }

    /// A comma-separated id list (empty entries skipped, duplicates removed, order kept).
    fn ids(&self, name: &str) -> Result<Vec<String>, ApiError> {
        let mut out: Vec<String> = Vec::new();
        for part in self.get(name).unwrap_or("").split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            if !valid_id(part) {
                return Err(ApiError::arg(format!("bad id in {name}")));
            }
            if !out.iter().any(|o| o == part) {
                out.push(part.to_string());
            }
        }
        if out.len() > MAX_MEMBERS_PER_CALL {
            return Err(ApiError::arg(format!("too many ids in {name}")));
        }
        Ok(out)
    }
}

#[derive(Serialize)]
struct MemberView<'a> {
    userid: &'a str,
    nickname: &'a str,
    snap: &'a str,
}

fn group_json(g: &Group, members: Value) -> Value {
    json!({
        "groupid": g.id,
        "creator": g.creator,
        "name": g.name,
        "notice": g.notice,
        "snap": g.snap,
        "members": members,
    })
}

fn member_objects(state: &WsimState, ids: &[String], profiles: &HashMap<String, Profile>) -> Value {
    let list: Vec<MemberView<'_>> = ids
        .iter()
        .map(|id| match profiles.get(id) {
            Some(p) => MemberView { userid: id, nickname: &p.nickname, snap: &p.avatar },
            None => MemberView { userid: id, nickname: id, snap: &state.default_avatar },
        })
        .collect();
    serde_json::to_value(list).unwrap_or_else(|_| json!([]))
}

async fn with_profiles(state: &WsimState, groups: Vec<Group>) -> Result<Vec<Value>, ApiError> {
    let mut ids: Vec<String> = groups.iter().flat_map(|g| g.members.iter().cloned()).collect();
    ids.sort();
    ids.dedup();
    let profiles = state.core.profiles(&state.app, ids).await?;
    Ok(groups.iter().map(|g| group_json(g, member_objects(state, &g.members, &profiles))).collect())
}

/// Draws a group's snap from its members' avatars and stores its URL; on failure the group keeps its
/// current snap. Returns the snap URL now in force.
async fn redraw_snap(state: &WsimState, g: &Group) -> String {
    let profiles = match state.core.profiles(&state.app, g.members.iter().take(9).cloned().collect()).await {
        Ok(p) => p,
        Err(_) => return g.snap.clone(),
    };
    let urls: Vec<String> = g
        .members
        .iter()
        .take(9)
        .map(|m| profiles.get(m).map(|p| p.avatar.clone()).unwrap_or_else(|| state.default_avatar.clone()))
        .collect();
    match snap::render_group_snap(&state.snaps, &g.id, &urls).await {
        Ok(url) => match state.core.set_group_snap(&GroupKey::new(&state.app, &g.id), &url).await {
            Ok(()) => url,
            Err(_) => g.snap.clone(),
        },
        Err(e) => {
            log::warn!("group {}: drawing the snap failed: {e}", g.id);
            g.snap.clone()
        }
    }
}

/// Redraws the snap of a group after a membership change.
async fn redraw_group(state: &WsimState, id: &str) {
    if let Ok(Some(g)) = state.core.group(&GroupKey::new(&state.app, id)).await {
        redraw_snap(state, &g).await;
    }
}

async fn existing_group(state: &WsimState, id: &str) -> Result<Group, ApiError> {
    state.core.group(&GroupKey::new(&state.app, id)).await?.ok_or(ApiError::from(CoreError::NoSuchGroup))
}

async fn creategrp(state: &WsimState, p: &Params, who: &Caller) -> Result<Option<Value>, ApiError> {
    let creator = p.id("creator")?;
    if !caller(state, p, who, Some(&creator)).await?.is(&creator) {
        return Err(not_allowed("a group is created by the token's user"));
    }
    let members = p.ids("members")?;
    let name = p.text("name", MAX_TEXT)?.unwrap_or_default();
    let notice = p.text("notice", MAX_NOTICE)?.unwrap_or_default();
    let spec = GroupSpec {
        creator,
        name,
        notice,
        members,
        snap: state.default_group_snap.clone(),
        ..GroupSpec::default()
    };
    let mut g = state.core.create_group(&state.app, spec).await?;
    g.snap = redraw_snap(state, &g).await;
    Ok(Some(group_json(&g, json!(g.members))))
}

async fn addmembers(state: &WsimState, p: &Params, who: &Caller) -> Result<Option<Value>, ApiError> {
    let group = p.id("groupid")?;
    let members = p.ids("members")?;
    if members.is_empty() {
        return Err(ApiError::arg("members is required"));
    }
    let actor = caller(state, p, who, None).await?;
    if !reads(&actor, &existing_group(state, &group).await?) {
        return Err(ApiError::from(CoreError::NotMember));
    }
    let added = state.core.add_members(&GroupKey::new(&state.app, &group), members).await?;
    if !added.is_empty() {
        redraw_group(state, &group).await;
    }
    Ok(None)
}

async fn delmembers(state: &WsimState, p: &Params, who: &Caller) -> Result<Option<Value>, ApiError> {
    let group = p.id("groupid")?;
    let members = p.ids("members")?;
    if members.is_empty() {
        return Err(ApiError::arg("members is required"));
    }
    let actor = caller(state, p, who, None).await?;
    let g = existing_group(state, &group).await?;
    // The creator removes anyone; a member only itself.
    let leaving = matches!(&actor, Actor::User(u) if members.len() == 1 && members[0] == *u);
    if !actor.is(&g.creator) && !leaving {
        return Err(not_allowed("only the group's creator removes members"));
    }
    if members.contains(&g.creator) {
        return Err(ApiError { code: ERR_NOT_ALLOWED, message: "the creator cannot be removed".into() });
    }
    let removed = state.core.remove_members(&GroupKey::new(&state.app, &group), members).await?;
    if !removed.is_empty() {
        redraw_group(state, &group).await;
    }
    Ok(None)
}

async fn editgrp(state: &WsimState, p: &Params, who: &Caller) -> Result<Option<Value>, ApiError> {
    let group = p.id("groupid")?;
    let name = p.text("name", MAX_TEXT)?;
    let notice = p.text("notice", MAX_NOTICE)?;
    if name.is_none() && notice.is_none() {
        return Err(ApiError::arg("name or notice is required"));
    }
    let actor = caller(state, p, who, None).await?;
    if !actor.is(&existing_group(state, &group).await?.creator) {
        return Err(not_allowed("only the group's creator edits it"));
    }
    state.core.edit_group(&GroupKey::new(&state.app, &group), name, notice).await?;
    Ok(None)
}

async fn querymygrps(state: &WsimState, p: &Params, who: &Caller) -> Result<Option<Value>, ApiError> {
    let user = p.id("userid")?;
    if !caller(state, p, who, Some(&user)).await?.is(&user) {
        return Err(not_allowed("a user reads its own groups"));
    }
    let groups = state.core.groups_of(&UserKey::new(&state.app, &user)).await?;
    Ok(Some(Value::Array(with_profiles(state, groups).await?)))
}

async fn grpinfo(state: &WsimState, p: &Params, who: &Caller) -> Result<Option<Value>, ApiError> {
    let group = p.id("groupid")?;
    let actor = caller(state, p, who, None).await?;
    let g = existing_group(state, &group).await?;
    if !reads(&actor, &g) {
        return Err(ApiError::from(CoreError::NotMember));
    }
    Ok(with_profiles(state, vec![g]).await?.pop())
}

/// Redraws a group's snap and answers with the group's current info.
async fn refreshgrp(state: &WsimState, p: &Params, who: &Caller) -> Result<Option<Value>, ApiError> {
    let group = p.id("groupid")?;
    let actor = caller(state, p, who, None).await?;
    let mut g = existing_group(state, &group).await?;
    if !reads(&actor, &g) {
        return Err(ApiError::from(CoreError::NotMember));
    }
    g.snap = redraw_snap(state, &g).await;
    Ok(with_profiles(state, vec![g]).await?.pop())
}

async fn setuserinfo(state: &WsimState, p: &Params, who: &Caller) -> Result<Option<Value>, ApiError> {
    let user = p.id("userid")?;
    if !caller(state, p, who, Some(&user)).await?.is(&user) {
        return Err(not_allowed("a user edits its own profile"));
    }
    let nickname = p.text("nickname", MAX_TEXT)?;
    let avatar = match p.text("snap", MAX_URL)? {
        Some(a) => Some(a),
        None => p.text("avatar", MAX_URL)?,
    };
    let avatar_changed = avatar.is_some();
    let row = state
        .core
        .set_profile(UserKey::new(state.app.clone(), user.clone()), nickname, avatar, &state.default_avatar)
        .await?;
    if avatar_changed {
        // Among the first nine members, the avatar shows on the snap: redraw those groups.
        for g in state.core.groups_of(&UserKey::new(&state.app, &user)).await? {
            if g.members.iter().take(9).any(|m| *m == user) {
                redraw_snap(state, &g).await;
            }
        }
    }
    Ok(Some(json!({"userid": row.id, "nickname": row.nickname, "snap": row.avatar})))
}

/// `/inner/wsim_token?userid=`: a token for the user (token mode; from `[gateway] inner_allow` only).
pub async fn inner_wsim_token(
    state: web::Data<WsimState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let result = async {
        let allowed = req.peer_addr().is_some_and(|a| state.inner_allow.iter().any(|n| n.contains(&a.ip())));
        if !allowed {
            return Err(not_allowed("not allowed from this address"));
        }
        let p = Params::from_request(&req, &body)?;
        let user = p.id("userid")?;
        let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
        let (token, expires) = state
            .auth
            .issue(&state.app, &user, now)
            .ok_or_else(|| not_allowed("tokens are issued in [wsim] auth = \"token\" mode only"))?;
        Ok(Some(json!({"userid": user, "token": token, "expires": expires})))
    }
    .await;
    reply(&state, result)
}
