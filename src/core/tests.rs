//! Unit tests of the core actors' logic, each actor alone: its links to the rest of the core are stub
//! recipients that record what they get, its store a SQLite file of its own.
#![cfg(feature = "sqlite")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;

use super::group::{Group, GroupLinks, GroupSubmit, MembersChanged};
use super::registry::{AnnounceOnline, GroupGone, OnlineSessions, SessionIdle};
use super::rooms::{Audience, JoinRooms, Publish, Repoint, RoomMember, Rooms};
use super::session::{
    AttachConn, CatchUpSession, Delivered, DropDevice, FlushWatermarks, ReplayNext, SessionDeliver,
    SessionLinks, UserSession,
};
use super::writer::{Persist, Persisted, SaveWatermarks};
use super::{ConnEvent, ConnHandle, CoreError, Deliver, Origin, Presence};
use crate::domain::message::{ConnId, Draft, GroupKey, Message, SharedMessage, Target, UserKey};
use crate::store::groups::{create_group, NewGroup};
use crate::store::messages::write_batch;
use crate::store::Store;

const APP: &str = "app";

/// Records every message of type `M` it gets.
struct Recorder<M> {
    seen: Arc<Mutex<Vec<M>>>,
}

impl<M: 'static> Actor for Recorder<M> {
    type Context = Context<Self>;
}

impl<M> Handler<M> for Recorder<M>
where
    M: actix::Message<Result = ()> + Send + 'static,
{
    type Result = ();

    fn handle(&mut self, m: M, _: &mut Context<Self>) {
        self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(m);
    }
}

/// What a recorder got so far.
struct Seen<M>(Arc<Mutex<Vec<M>>>);

impl<M> Seen<M> {
    fn take(&self) -> Vec<M> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    fn len(&self) -> usize {
        self.0.lock().map(|v| v.len()).unwrap_or_default()
    }
}

fn recorder<M>() -> (Recipient<M>, Seen<M>)
where
    M: actix::Message<Result = ()> + Send + 'static,
{
    let seen = Arc::new(Mutex::new(Vec::new()));
    let addr = Recorder { seen: seen.clone() }.start();
    (addr.recipient(), Seen(seen))
}

/// Answers `SessionIdle` with "forgotten" and `OnlineSessions` with a fixed list.
struct RegistryStub {
    online: Vec<(String, Recipient<SessionDeliver>)>,
}

impl Actor for RegistryStub {
    type Context = Context<Self>;
}

impl Handler<SessionIdle> for RegistryStub {
    type Result = bool;
    fn handle(&mut self, _: SessionIdle, _: &mut Context<Self>) -> bool {
        true
    }
}

impl Handler<OnlineSessions> for RegistryStub {
    type Result = MessageResult<OnlineSessions>;
    fn handle(&mut self, m: OnlineSessions, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.online.iter().filter(|(u, _)| m.users.contains(u)).cloned().collect())
    }
}

/// Waits (bounded) until `check` holds.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not within 2 s");
}

/// A store of its own with group `g` (members u and s) and `n` messages from s in it.
async fn store_with_history(dir: &tempfile::TempDir, n: usize) -> (Store, Vec<Message>) {
    let url = format!("sqlite://{}", dir.path().join("core.db").display());
    let store =
        tokio::task::spawn_blocking(move || Store::connect(&url, 2)).await.expect("join").expect("store");
    let msgs: Vec<Message> = (0..n).map(|i| message(1 + i as i64, "s", &format!("m{i}"))).collect();
    let batch = msgs.clone();
    store
        .run(move |c| {
            let members = vec!["s".to_string()];
            create_group(
                c,
                &NewGroup {
                    app: APP,
                    id: Some("g"),
                    conv_type: 0,
                    creator: "u",
                    name: "g",
                    notice: "",
                    members: &members,
                    snap: "",
                },
            )?;
            let refs: Vec<&Message> = batch.iter().collect();
            write_batch(c, &refs, &[], &[])
        })
        .await
        .expect("history");
    (store, msgs)
}

fn message(id: i64, sender: &str, payload: &str) -> Message {
    Message {
        id,
        app: APP.into(),
        conv: "g".into(),
        sender: sender.into(),
        recipient: String::new(),
        kind: "text".into(),
        payload: payload.into(),
        extension: String::new(),
        sent_us: id,
        status: 0,
        conv_type: 0,
    }
}

struct StubConn {
    handle: ConnHandle,
    delivered: Seen<Deliver>,
    events: Seen<ConnEvent>,
}

fn stub_conn(id: ConnId, held_limit: u64) -> StubConn {
    let (deliver, delivered) = recorder::<Deliver>();
    let (events_to, events) = recorder::<ConnEvent>();
    let handle = ConnHandle { id, deliver, events: events_to, device: None, resume: None, held_limit };
    StubConn { handle, delivered, events }
}

struct StubSessionLinks {
    links: SessionLinks,
    announced: Seen<AnnounceOnline>,
    watermarks: Seen<SaveWatermarks>,
}

fn session_links() -> StubSessionLinks {
    let (announce, announced) = recorder::<AnnounceOnline>();
    let (save, watermarks) = recorder::<SaveWatermarks>();
    let idle = RegistryStub { online: Vec::new() }.start().recipient();
    StubSessionLinks {
        links: SessionLinks { announce, idle, watermarks: save, presence: None, groups_online: None },
        announced,
        watermarks,
    }
}

fn payloads(d: &[Deliver]) -> Vec<String> {
    d.iter().map(|d| d.msg.payload.clone()).collect()
}

#[actix_rt::test]
async fn a_session_replays_in_pages_when_asked_and_then_goes_live() {
    let dir = tempfile::tempdir().expect("tmp");
    let (store, _) = store_with_history(&dir, 250).await;
    let links = session_links();
    let session = UserSession::new(UserKey::new(APP, "u"), links.links.clone(), store).start();
    let conn = stub_conn(7, 1 << 20);
    session.do_send(AttachConn { conn: conn.handle.clone() });

    // A page of 100, then the connection is told to ask for more.
    eventually("the first page", || conn.events.len() == 1).await;
    let page = conn.delivered.take();
    assert_eq!(page.len(), 100);
    assert!(page.iter().all(|d| d.replay), "replayed messages say so");
    assert_eq!(page[0].msg.payload, "m0");
    assert!(matches!(conn.events.take()[..], [ConnEvent::ReplayPaused]));
    let announced = links.announced.take();
    assert_eq!(announced.len(), 1);
    assert_eq!(announced[0].groups, ["g"], "the session is announced online in its groups");

    // Nothing more until asked.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(conn.delivered.len(), 0);
    session.do_send(ReplayNext { conn: 7 });
    eventually("the second page", || conn.events.len() == 1).await;
    assert_eq!(payloads(&conn.delivered.take()).first().map(String::as_str), Some("m100"));
    conn.events.take();
    session.do_send(ReplayNext { conn: 7 });
    eventually("the last page", || conn.delivered.len() == 50).await;
    let last = conn.delivered.take();
    assert_eq!(last[49].msg.payload, "m249");
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(conn.events.take().is_empty(), "the last page is not followed by a pause");

    // Live from now on.
    let live = Arc::new(message(1000, "s", "live"));
    session.do_send(SessionDeliver { msg: live, origin: None });
    eventually("the live message", || conn.delivered.len() == 1).await;
    let d = conn.delivered.take();
    assert!(!d[0].replay && d[0].msg.payload == "live");
}

#[actix_rt::test]
async fn live_messages_during_a_replay_come_after_it_once_each() {
    let dir = tempfile::tempdir().expect("tmp");
    let (store, history) = store_with_history(&dir, 150).await;
    let links = session_links();
    let session = UserSession::new(UserKey::new(APP, "u"), links.links.clone(), store).start();
    let conn = stub_conn(8, 1 << 20);
    session.do_send(AttachConn { conn: conn.handle.clone() });
    eventually("the first page", || conn.events.len() == 1).await;
    assert_eq!(conn.delivered.take().len(), 100);
    // Live copies arrive while the replay is half way: one already replayed, one still to be
    // replayed, one new.
    for m in [&history[10], &history[120]] {
        session.do_send(SessionDeliver { msg: Arc::new(m.clone()), origin: None });
    }
    session.do_send(SessionDeliver { msg: Arc::new(message(500, "s", "new")), origin: None });
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(conn.delivered.len(), 0, "held while the replay runs");
    session.do_send(ReplayNext { conn: 8 });
    eventually("the rest", || conn.delivered.len() >= 51).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    let rest = payloads(&conn.delivered.take());
    let mut want: Vec<String> = (100..150).map(|i| format!("m{i}")).collect();
    want.push("new".into());
    assert_eq!(rest, want, "each once, in order, the live one after the replay");
}

#[actix_rt::test]
async fn a_connection_that_holds_up_its_replay_is_told_it_is_too_slow() {
    let dir = tempfile::tempdir().expect("tmp");
    let (store, _) = store_with_history(&dir, 150).await;
    let links = session_links();
    let session = UserSession::new(UserKey::new(APP, "u"), links.links.clone(), store).start();
    let conn = stub_conn(9, 1000);
    session.do_send(AttachConn { conn: conn.handle.clone() });
    eventually("the first page", || conn.events.len() == 1).await;
    conn.events.take();
    // The connection never asks for the next page while live traffic keeps coming.
    for i in 0..20 {
        let m = Message { payload: "x".repeat(100), ..message(1000 + i, "s", "") };
        session.do_send(SessionDeliver { msg: Arc::new(m), origin: None });
    }
    eventually("TooSlow", || conn.events.len() == 1).await;
    assert!(matches!(conn.events.take()[..], [ConnEvent::TooSlow]));
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(conn.events.take().is_empty(), "told once");
}

#[actix_rt::test]
async fn delivered_reports_move_watermarks_forward_only() {
    let dir = tempfile::tempdir().expect("tmp");
    let (store, _) = store_with_history(&dir, 0).await;
    let links = session_links();
    let session = UserSession::new(UserKey::new(APP, "u"), links.links.clone(), store).start();
    let conn = stub_conn(10, 1 << 20);
    session.do_send(AttachConn { conn: conn.handle.clone() });
    session.do_send(Delivered { conn: 10, delivered: vec![("g".into(), 40), ("d".into(), 7)] });
    session.do_send(Delivered { conn: 10, delivered: vec![("g".into(), 30)] });
    // (The recorder keeps the writer's answer channel: a flush is not waited for.)
    session.do_send(FlushWatermarks);
    eventually("the watermarks are written", || links.watermarks.len() == 1).await;
    let saved = links.watermarks.take();
    let mut marks: Vec<(String, i64)> =
        saved.iter().flat_map(|s| s.watermarks.iter().map(|w| (w.conv.clone(), w.upto))).collect();
    marks.sort();
    assert_eq!(marks, [("d".to_string(), 7), ("g".to_string(), 40)]);
    assert!(saved.iter().flat_map(|s| &s.watermarks).all(|w| w.user == "u" && w.app == APP));
    // Nothing moved since: nothing to write.
    session.do_send(Delivered { conn: 10, delivered: vec![("g".into(), 12)] });
    session.do_send(FlushWatermarks);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(links.watermarks.take().iter().all(|s| s.watermarks.is_empty()));
}

#[actix_rt::test]
async fn a_catch_up_hands_over_what_the_store_has_beyond_what_each_connection_got() {
    let dir = tempfile::tempdir().expect("tmp");
    let (store, _) = store_with_history(&dir, 5).await;
    let links = session_links();
    let session = UserSession::new(UserKey::new(APP, "u"), links.links.clone(), store.clone()).start();
    let conn = stub_conn(11, 1 << 20);
    session.do_send(AttachConn { conn: conn.handle.clone() });
    eventually("the replay", || conn.delivered.len() == 5).await;
    conn.delivered.take();
    // 6 comes live; 7 and 8 are stored but their live copies are lost (another node's publish).
    let stored = |m: Message| {
        let store = store.clone();
        async move { store.run(move |c| write_batch(c, &[&m], &[], &[])).await.expect("stored") }
    };
    let six = message(6, "s", "m5");
    stored(six.clone()).await;
    session.do_send(SessionDeliver { msg: Arc::new(six), origin: None });
    eventually("the live one", || conn.delivered.len() == 1).await;
    conn.delivered.take();
    stored(message(7, "s", "m6")).await;
    stored(message(8, "s", "m7")).await;

    session.do_send(CatchUpSession { after: 0 });
    // 8's live copy turns up during the catch-up after all: still once.
    session.do_send(SessionDeliver { msg: Arc::new(message(8, "s", "m7")), origin: None });
    eventually("the missed ones", || conn.delivered.len() >= 2).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(payloads(&conn.delivered.take()), ["m6", "m7"], "only what the connection missed, once");

    // A catch-up with nothing missed hands over nothing.
    session.do_send(CatchUpSession { after: 0 });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(conn.delivered.len(), 0);

    // Ids name the node that stored them: node 2's later message came live, node 1's earlier one was
    // lost on its way. The catch-up finds it although a later id of the conversation was handed over.
    let from_node = |ms: i64, node: i64, p: &str| message((ms << 12) | (node << 8), "s", p);
    stored(from_node(1000, 1, "lost")).await;
    let later = from_node(1001, 2, "later");
    stored(later.clone()).await;
    session.do_send(SessionDeliver { msg: Arc::new(later), origin: None });
    eventually("node 2's message", || conn.delivered.len() == 1).await;
    assert_eq!(payloads(&conn.delivered.take()), ["later"]);
    session.do_send(CatchUpSession { after: 0 });
    eventually("node 1's message", || conn.delivered.len() == 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(payloads(&conn.delivered.take()), ["lost"]);
}

#[actix_rt::test]
async fn a_catch_up_hands_a_new_member_nothing_from_before_it_joined() {
    use crate::domain::ids::{min_id_at, now_ms};
    let dir = tempfile::tempdir().expect("tmp");
    let (store, _) = store_with_history(&dir, 0).await;
    let links = session_links();
    // x is online, not yet a member of g.
    let session = UserSession::new(UserKey::new(APP, "x"), links.links.clone(), store.clone()).start();
    let conn = stub_conn(12, 1 << 20);
    session.do_send(AttachConn { conn: conn.handle.clone() });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let write = |m: Message| {
        let store = store.clone();
        async move { store.run(move |c| write_batch(c, &[&m], &[], &[])).await.expect("stored") }
    };
    let now = now_ms();
    write(message(min_id_at(now - 2_000), "s", "before x joined")).await;
    store.run(|c| crate::store::groups::add_members(c, APP, "g", &["x".to_string()])).await.expect("x joins");
    write(message(min_id_at(now + 2_000), "s", "after x joined")).await;
    // A catch-up from well before (a node's channel dropped): only what x may see.
    session.do_send(CatchUpSession { after: min_id_at(now - 15_000) });
    eventually("the catch-up", || conn.delivered.len() >= 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(payloads(&conn.delivered.take()), ["after x joined"]);
}

#[actix_rt::test]
async fn a_device_logged_in_elsewhere_replaces_this_one_and_a_login_waits_for_presence() {
    let dir = tempfile::tempdir().expect("tmp");
    let (store, _) = store_with_history(&dir, 3).await;
    // A presence that answers only when let go.
    struct SlowPresence(Option<tokio::sync::oneshot::Receiver<()>>);
    impl Actor for SlowPresence {
        type Context = Context<Self>;
    }
    impl Handler<Presence> for SlowPresence {
        type Result = ResponseFuture<()>;
        fn handle(&mut self, _: Presence, _: &mut Context<Self>) -> Self::Result {
            let wait = self.0.take();
            Box::pin(async move {
                if let Some(w) = wait {
                    let _ = w.await;
                }
            })
        }
    }
    let (release, wait) = tokio::sync::oneshot::channel();
    let mut links = session_links();
    links.links.presence = Some(SlowPresence(Some(wait)).start().recipient());
    let session = UserSession::new(UserKey::new(APP, "u"), links.links.clone(), store).start();
    let mut phone = stub_conn(12, 1 << 20);
    phone.handle.device = Some("android".into());
    let web = stub_conn(13, 1 << 20);
    session.do_send(AttachConn { conn: phone.handle.clone() });
    session.do_send(AttachConn { conn: web.handle.clone() });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(phone.delivered.len() + web.delivered.len(), 0, "no replay before the cluster knows");
    let _ = release.send(());
    eventually("the replays", || phone.delivered.len() == 3 && web.delivered.len() == 3).await;

    session.do_send(DropDevice { device: "android".into() });
    eventually("the phone is told", || phone.events.len() == 1).await;
    assert!(matches!(phone.events.take()[..], [ConnEvent::Replaced]));
    session.do_send(SessionDeliver { msg: Arc::new(message(50, "s", "after")), origin: None });
    eventually("the web connection still gets messages", || web.delivered.len() == 4).await;
    assert_eq!(phone.delivered.len(), 3, "the replaced one gets nothing more");
}

#[actix_rt::test]
async fn a_group_takes_messages_from_members_only_and_fans_them_out() {
    let dir = tempfile::tempdir().expect("tmp");
    let (store, _) = store_with_history(&dir, 0).await;
    let (u_session, u_got) = recorder::<SessionDeliver>();
    let registry = RegistryStub { online: vec![("u".into(), u_session)] }.start();
    let (persist, persisted) = recorder::<Persist>();
    let (gone, gone_seen) = recorder::<GroupGone>();
    let links = GroupLinks { gone, online: registry.recipient(), persist };
    let group = Group::new(GroupKey::new(APP, "g"), links.clone(), store.clone()).start();

    let (events, refusals) = recorder::<ConnEvent>();
    let origin = Origin { conn: Some(3), events: Some(events) };
    let draft = |sender: &str| Draft {
        app: APP.into(),
        sender: sender.into(),
        target: Target::Group("g".into()),
        kind: "text".into(),
        payload: "hi".into(),
        extension: String::new(),
        status: 0,
    };
    let (ack, refused) = tokio::sync::oneshot::channel();
    group.do_send(GroupSubmit { draft: draft("stranger"), origin: origin.clone(), ack: Some(ack) });
    assert_eq!(refused.await.expect("answered").map(|_| ()), Err(CoreError::NotMember));
    eventually("the refusal", || refusals.len() == 1).await;
    assert!(matches!(refusals.take()[..], [ConnEvent::Rejected(CoreError::NotMember)]));

    group.do_send(GroupSubmit { draft: draft("s"), origin: origin.clone(), ack: None });
    eventually("the member's message goes to the writer", || persisted.len() == 1).await;
    let p = persisted.take().pop().expect("persist");
    assert_eq!((p.draft.sender.as_str(), p.conv_type), ("s", 0));

    // Stored: every online member's session gets it, with the sending connection named.
    let stored: SharedMessage = Arc::new(message(77, "s", "hi"));
    group.do_send(Persisted { msg: stored, origin: Some(3) });
    eventually("the fan-out", || u_got.len() == 1).await;
    let d = u_got.take().pop().expect("delivered");
    assert_eq!((d.msg.id, d.origin), (77, Some(3)));

    // A member removed gets nothing more; one added and online does.
    let (x_session, x_got) = recorder::<SessionDeliver>();
    group.do_send(MembersChanged { added: vec![("x".into(), Some(x_session))], removed: vec!["u".into()] });
    group.do_send(Persisted { msg: Arc::new(message(78, "s", "again")), origin: None });
    eventually("the new member", || x_got.len() == 1).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(u_got.len(), 0, "removed members get nothing");

    // A group that does not exist refuses and says it is gone.
    let nowhere = Group::new(GroupKey::new(APP, "nowhere"), links, store).start();
    let (ack, refused) = tokio::sync::oneshot::channel();
    nowhere.do_send(GroupSubmit { draft: draft("s"), origin, ack: Some(ack) });
    assert_eq!(refused.await.expect("answered").map(|_| ()), Err(CoreError::NoSuchGroup));
    eventually("gone", || gone_seen.len() == 1).await;
}

#[actix_rt::test]
async fn repointed_room_members_get_what_is_published_at_their_new_address() {
    let (persist, persisted) = recorder::<Persist>();
    let rooms = Rooms::new(persist).start();
    let (old, old_got) = recorder::<Deliver>();
    let (new, new_got) = recorder::<Deliver>();
    let member = RoomMember { conn: 5, user: "u".into(), verified: true, deliver: old };
    rooms.do_send(JoinRooms { app: APP.into(), rooms: vec!["r".into()], member });
    rooms.send(Repoint { conn: 5, deliver: new }).await.expect("repointed");
    let publish = Publish {
        app: APP.into(),
        sender: "s".into(),
        room: "r".into(),
        user: None,
        audience: Audience::All,
        kind: "1".into(),
        payload: "p".into(),
        extension: String::new(),
        origin: None,
    };
    let stored = rooms.send(publish);
    eventually("the publish goes to the writer", || persisted.len() == 1).await;
    let p = persisted.take().pop().expect("persist");
    let mut m = message(90, "s", "p");
    m.conv = "r".into();
    let m = Arc::new(m);
    if let Some(ack) = p.ack {
        let _ = ack.send(Ok(m.clone()));
    }
    assert_eq!(stored.await.expect("answered").map(|m| m.id), Ok(90));
    rooms.do_send(Persisted { msg: m, origin: None });
    eventually("delivered at the new address", || new_got.len() == 1).await;
    assert_eq!(old_got.len(), 0, "nothing at the old one");
}
