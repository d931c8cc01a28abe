//! Group: one actor per active group. Knows the members (loaded from the store, kept in step with
//! membership changes) and which of them are online, checks that senders are members, and fans stored
//! messages out to the members' sessions.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use super::registry::{GroupGone, OnlineSessions};
use super::session::SessionDeliver;
use super::writer::{Persist, Persisted};
use super::{CoreError, Origin};
use crate::domain::message::{Draft, GroupKey, SharedMessage};
use crate::store::Store;

/// Send a message to the group.
pub struct GroupSubmit {
    pub draft: Draft,
    pub origin: Origin,
    pub ack: Option<oneshot::Sender<Result<SharedMessage, CoreError>>>,
}
impl actix::Message for GroupSubmit {
    type Result = ();
}

/// A member's session is online.
pub struct MemberOnline {
    pub user: String,
    pub session: Recipient<SessionDeliver>,
}
impl actix::Message for MemberOnline {
    type Result = ();
}

/// Membership changed in the store; `added` carries the sessions of added users that are online.
pub struct MembersChanged {
    pub added: Vec<(String, Option<Recipient<SessionDeliver>>)>,
    pub removed: Vec<String>,
}
impl actix::Message for MembersChanged {
    type Result = ();
}

/// A group with no online member and no traffic for this long is let go (the registry forgets it and
/// it stops once its mailbox is empty); the next message starts it again from the store.
const IDLE_AFTER: Duration = Duration::from_secs(120);
const IDLE_CHECK: Duration = Duration::from_secs(30);

/// Where a group sends what it has to say: to the registry (it is gone; which members are online)
/// and to the store writer.
#[derive(Clone)]
pub struct GroupLinks {
    pub gone: Recipient<GroupGone>,
    pub online: Recipient<OnlineSessions>,
    pub persist: Recipient<Persist>,
}

pub struct Group {
    key: GroupKey,
    last_active: Instant,
    links: GroupLinks,
    store: Store,
    exists: bool,
    conv_type: i32,
    members: HashSet<String>,
    online: HashMap<String, Recipient<SessionDeliver>>,
}

impl Group {
    pub fn new(key: GroupKey, links: GroupLinks, store: Store) -> Self {
        Group {
            key,
            last_active: Instant::now(),
            links,
            store,
            exists: false,
            conv_type: 0,
            members: HashSet::new(),
            online: HashMap::new(),
        }
    }
}

impl Actor for Group {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(IDLE_CHECK, |act, ctx| {
            act.online.retain(|_, s| s.connected());
            if act.online.is_empty() && act.last_active.elapsed() > IDLE_AFTER {
                act.links.gone.do_send(GroupGone { key: act.key.clone(), addr: ctx.address() });
            }
        });
        // Nothing else is handled until the members are loaded.
        let store = self.store.clone();
        let (app, id) = (self.key.app.clone(), self.key.group.clone());
        let online = self.links.online.clone();
        let load = async move {
            let group = store
                .run(
                    move |c| Ok(crate::store::groups::group(c, &app, &id)?.map(|g| (g.conv_type, g.members))),
                )
                .await;
            group
        };
        ctx.wait(load.into_actor(self).then(move |res, act, _| {
            let mut ask = None;
            match res {
                Ok(Some((conv_type, members))) => {
                    act.exists = true;
                    act.conv_type = conv_type;
                    act.members = members.iter().cloned().collect();
                    ask = Some(members);
                }
                Ok(None) => {}
                Err(e) => log::error!("group {}: loading members: {e}", act.key.group),
            }
            let app = act.key.app.clone();
            async move {
                match ask {
                    Some(users) => online.send(OnlineSessions { app, users }).await.unwrap_or_default(),
                    None => Vec::new(),
                }
            }
            .into_actor(act)
            .map(|online, act, ctx| {
                for (user, session) in online {
                    act.online.insert(user, session);
                }
                if !act.exists {
                    act.links.gone.do_send(GroupGone { key: act.key.clone(), addr: ctx.address() });
                }
            })
        }));
    }
}

impl Handler<GroupSubmit> for Group {
    type Result = ();

    fn handle(&mut self, msg: GroupSubmit, ctx: &mut Self::Context) {
        self.last_active = Instant::now();
        let refuse = |err: CoreError, msg: GroupSubmit| {
            msg.origin.reject(err.clone());
            if let Some(ack) = msg.ack {
                let _ = ack.send(Err(err));
            }
        };
        if !self.exists {
            return refuse(CoreError::NoSuchGroup, msg);
        }
        if !self.members.contains(&msg.draft.sender) {
            return refuse(CoreError::NotMember, msg);
        }
        let persist = Persist {
            scope: super::Scope::Group,
            draft: msg.draft,
            conv_type: self.conv_type,
            origin: msg.origin,
            notify: ctx.address().recipient(),
            ack: msg.ack,
        };
        if let Err(e) = self.links.persist.try_send(persist) {
            let p = match e {
                SendError::Full(p) | SendError::Closed(p) => p,
            };
            p.origin.reject(CoreError::Busy);
            if let Some(ack) = p.ack {
                let _ = ack.send(Err(CoreError::Busy));
            }
        }
    }
}

impl Handler<Persisted> for Group {
    type Result = ();

    fn handle(&mut self, msg: Persisted, _: &mut Self::Context) {
        let members = &self.members;
        self.online.retain(|user, session| {
            if !session.connected() {
                return false;
            }
            if members.contains(user) {
                session.do_send(SessionDeliver { msg: msg.msg.clone(), origin: msg.origin });
            }
            true
        });
    }
}

impl Handler<MemberOnline> for Group {
    type Result = ();

    fn handle(&mut self, msg: MemberOnline, _: &mut Self::Context) {
        self.online.insert(msg.user, msg.session);
    }
}

impl Handler<MembersChanged> for Group {
    type Result = ();

    fn handle(&mut self, msg: MembersChanged, _: &mut Self::Context) {
        for user in msg.removed {
            self.members.remove(&user);
            self.online.remove(&user);
        }
        for (user, session) in msg.added {
            if let Some(s) = session {
                self.online.insert(user.clone(), s);
            }
            self.members.insert(user);
        }
    }
}
