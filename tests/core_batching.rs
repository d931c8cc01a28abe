//! The core without a front-end: a burst of messages is stored in few transactions, in order, and
//! acknowledged only once stored.

mod common;

use common::Backend;
use wsim::core::service::CoreSettings;
use wsim::core::{ConvKey, Core, Draft, Origin, Target, UserKey};
use wsim::store::Store;

on_both_backends!(
    a_burst_costs_few_transactions,
    a_steady_trickle_shares_commits_within_the_gap,
    ids_compare_byte_for_byte_trailing_spaces_included
);

/// A direct message from a to b.
fn a_to_b(payload: String) -> Draft {
    Draft {
        app: "default".into(),
        sender: "a".into(),
        target: Target::User("b".into()),
        kind: "text".into(),
        payload,
        extension: String::new(),
        status: 0,
    }
}

/// A store of its own on `b` (and the database to drop with it).
async fn store_on(b: &Backend, dir: &tempfile::TempDir) -> (Store, Option<common::MysqlDb>) {
    let (url, db) = match b {
        Backend::Sqlite => (format!("sqlite://{}", dir.path().join("t.db").display()), None),
        Backend::Mysql(admin) => {
            let (db, url) = common::MysqlDb::create(admin);
            (url, Some(db))
        }
    };
    let store = actix_web::rt::task::spawn_blocking(move || Store::connect(&url, 4))
        .await
        .expect("join")
        .expect("store");
    (store, db)
}

async fn a_burst_costs_few_transactions(b: Backend) {
    let dir = tempfile::tempdir().expect("tmp");
    let (store, _db) = store_on(&b, &dir).await;
    let core = Core::start(
        store,
        &CoreSettings { node_id: 5, max_batch: 1000, commit_gap: std::time::Duration::ZERO },
    );
    let n = 2000;
    let acks: Vec<_> = (0..n)
        .map(|i| {
            let core = core.clone();
            async move { core.submit(a_to_b(format!("m{i}")), Origin::default()).await }
        })
        .collect();
    let stored = futures_util::future::join_all(acks).await;
    let ids: Vec<i64> = stored.into_iter().map(|r| r.expect("stored").id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids follow submission order");
    assert!(ids.iter().all(|&id| wsim::domain::ids::node_of(id) == 5));
    let stats = core.writer_stats().await;
    assert_eq!(stats.messages, n as u64);
    assert!(
        stats.batches * 10 <= stats.messages,
        "{} messages took {} transactions",
        stats.messages,
        stats.batches
    );
    let history = core
        .history_before(&ConvKey::direct(&UserKey::new("default", "b"), "a"), i64::MAX, 5000)
        .await
        .expect("history");
    assert_eq!(history.len(), n);
    assert_eq!(history[0].payload, "m0");
    assert_eq!(history[n - 1].payload, format!("m{}", n - 1));
}

/// Messages that come one at a time, each after the previous one is stored, go one per transaction
/// without a commit gap; with one, those that come within the gap of a transaction's start share
/// the next (and each is still stored, in order, before it is acknowledged).
async fn a_steady_trickle_shares_commits_within_the_gap(b: Backend) {
    let dir = tempfile::tempdir().expect("tmp");
    let (store, _db) = store_on(&b, &dir).await;
    let gap = std::time::Duration::from_millis(100);
    let core = Core::start(store, &CoreSettings { node_id: 1, max_batch: 1000, commit_gap: gap });
    // An idle writer starts at once: the first message is a transaction of its own.
    core.submit(a_to_b("first".into()), Origin::default()).await.expect("stored");
    assert_eq!(core.writer_stats().await.batches, 1);
    // 20 messages, 10 ms apart, over ~200 ms: about two gaps' worth of transactions.
    let mut acks = Vec::new();
    for i in 0..20 {
        acks.push(core.submit(a_to_b(format!("t{i}")), Origin::default()));
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let stored = futures_util::future::join_all(acks).await;
    let ids: Vec<i64> = stored.into_iter().map(|r| r.expect("stored").id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids follow submission order");
    let stats = core.writer_stats().await;
    assert_eq!(stats.messages, 21);
    assert!(stats.batches <= 1 + 6, "20 messages in 200 ms took {} transactions", stats.batches - 1);
}

/// SQLite's write-ahead log is emptied once it passes the bound, even while commits keep coming.
#[cfg(feature = "sqlite")]
#[actix_rt::test]
async fn the_sqlite_log_stays_bounded() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("t.db");
    let url = format!("sqlite://{}", db.display());
    let store = actix_web::rt::task::spawn_blocking(move || Store::connect(&url, 4))
        .await
        .expect("join")
        .expect("store");
    let core = Core::start(
        store.clone(),
        &CoreSettings { node_id: 1, max_batch: 50, commit_gap: std::time::Duration::ZERO },
    );
    let wal = dir.path().join("t.db-wal");
    let wal_len = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    let send = |i: usize| {
        let core = core.clone();
        async move { core.submit(a_to_b(format!("{i:0>400}")), Origin::default()).await.expect("stored") }
    };
    futures_util::future::join_all((0..1000).map(send)).await;
    // A passive checkpoint copies the log back but leaves the file as long as it was.
    store.checkpoint_bounded(i32::MAX).await;
    let grown = wal_len();
    assert!(grown > 100 * 4096, "the log grew: {grown} bytes");
    // Past the bound, the log is emptied (while more commits run alongside).
    let more = futures_util::future::join_all((1000..1200).map(send));
    let (_, ()) = futures_util::join!(more, store.checkpoint_bounded(10));
    store.checkpoint_bounded(10).await;
    assert!(wal_len() < grown / 4, "the log was emptied: {} of {grown} bytes", wal_len());
}

/// Under MariaDB's utf8mb4_bin (PAD SPACE) "bob " equals "bob"; the ids' collation must not pad.
async fn ids_compare_byte_for_byte_trailing_spaces_included(b: Backend) {
    let dir = tempfile::tempdir().expect("tmp");
    let (store, _db) = store_on(&b, &dir).await;
    let core = Core::start(
        store,
        &CoreSettings { node_id: 1, max_batch: 100, commit_gap: std::time::Duration::ZERO },
    );
    core.set_profile(UserKey::new("default", "bob"), Some("Bob".into()), None, "").await.expect("profile");
    let found =
        core.profiles("default", vec!["bob".into(), "bob ".into(), "bob  ".into()]).await.expect("profiles");
    let mut keys: Vec<&String> = found.keys().collect();
    keys.sort();
    assert_eq!(keys, ["bob"], "only bob himself");
    // The same for messages: bob's direct conversation is not "bob "'s.
    core.submit(
        Draft {
            app: "default".into(),
            sender: "alice".into(),
            target: Target::User("bob".into()),
            kind: "text".into(),
            payload: "for bob".into(),
            extension: String::new(),
            status: 0,
        },
        Origin::default(),
    )
    .await
    .expect("stored");
    let alice = UserKey::new("default", "alice");
    let to_bob = core.history_before(&ConvKey::direct(&alice, "bob"), i64::MAX, 10).await.expect("history");
    assert_eq!(to_bob.len(), 1);
    let padded =
        ConvKey { app: "default".into(), conv: format!("{}{}", ConvKey::direct(&alice, "bob").conv, " ") };
    let to_padded = core.history_before(&padded, i64::MAX, 10).await.expect("history");
    assert!(to_padded.is_empty(), "a padded conversation id finds nothing");
}
