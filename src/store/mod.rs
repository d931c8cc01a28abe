//! Storage: the one door to the database.
//!
//! Owns the diesel schema, the connection pools of both backends (SQLite, MySQL/MariaDB), the embedded
//! migrations and the query functions. Everything here is blocking: callers run it through
//! [`Store::run`], which moves the work to the blocking thread pool. Must not import the core actors or
//! any front-end.

pub mod groups;
pub mod messages;
pub mod models;
pub mod push;
pub mod schema;
pub mod users;

use std::time::Duration;

use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool, PooledConnection};
use diesel::Connection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

#[cfg(not(any(feature = "sqlite", feature = "mysql")))]
compile_error!("enable at least one of the `sqlite` and `mysql` features");

#[cfg(feature = "sqlite")]
use diesel::sqlite::SqliteConnection;

#[cfg(feature = "mysql")]
use diesel::mysql::MysqlConnection;

#[cfg(feature = "sqlite")]
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
#[cfg(feature = "mysql")]
const MYSQL_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/mysql");

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database url (expected sqlite://PATH or mysql://…): {0}")]
    BadUrl(String),
    #[error("database connection failed: {0}")]
    Connect(String),
    #[error("database pool: {0}")]
    Pool(#[from] diesel::r2d2::PoolError),
    #[error("database query: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("database migration: {0}")]
    Migration(String),
    #[error("blocking task was cancelled")]
    Cancelled,
    #[error("a storage task panicked: {0}")]
    Panicked(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the database did not answer within {0:?}")]
    TimedOut(Duration),
}

/// Which backend a pool talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Mysql,
}

/// A pooled connection of either backend. Storage functions match on it with [`db_run!`].
pub enum DbConn {
    #[cfg(feature = "sqlite")]
    Sqlite(PooledConnection<ConnectionManager<SqliteConnection>>),
    #[cfg(feature = "mysql")]
    Mysql(PooledConnection<ConnectionManager<MysqlConnection>>),
}

/// Runs the same diesel code against whichever backend `$conn` holds; the body is compiled once per
/// backend, so backend-specific query builder features (insert-or-ignore, …) are available in it.
#[macro_export]
macro_rules! db_run {
    ($conn:ident: $body:block) => {
        match $conn {
            #[cfg(feature = "sqlite")]
            $crate::store::DbConn::Sqlite($conn) => {
                #[allow(unused_variables)]
                let $conn: &mut diesel::sqlite::SqliteConnection = &mut *$conn;
                $body
            }
            #[cfg(feature = "mysql")]
            $crate::store::DbConn::Mysql($conn) => {
                #[allow(unused_variables)]
                let $conn: &mut diesel::mysql::MysqlConnection = &mut *$conn;
                $body
            }
        }
    };
}

/// A transaction that will write. On SQLite it starts with `BEGIN IMMEDIATE`, so it waits for the
/// write lock up front (honouring the busy timeout) instead of failing when a read has to be upgraded
/// after another writer committed.
pub trait WriteTransaction: Connection {
    fn write_transaction<T, F>(&mut self, f: F) -> Result<T, StoreError>
    where
        F: FnMut(&mut Self) -> Result<T, StoreError>;
}

/// Attempts of a MySQL transaction that InnoDB rolled back as a deadlock victim or lock wait timeout
/// (concurrent group creations on a fresh database race for the counter row's gap lock).
#[cfg(feature = "mysql")]
const TRANSACTION_ATTEMPTS: u32 = 4;

/// Whether InnoDB rolled the whole transaction back for a lock conflict (so it may run again).
#[cfg(feature = "mysql")]
fn lock_conflict(e: &StoreError) -> bool {
    match e {
        StoreError::Query(diesel::result::Error::DatabaseError(_, info)) => {
            let m = info.message();
            m.contains("Deadlock found") || m.contains("Lock wait timeout")
        }
        _ => false,
    }
}

#[cfg(feature = "sqlite")]
impl WriteTransaction for SqliteConnection {
    fn write_transaction<T, F>(&mut self, f: F) -> Result<T, StoreError>
    where
        F: FnMut(&mut Self) -> Result<T, StoreError>,
    {
        self.immediate_transaction(f)
    }
}

#[cfg(feature = "mysql")]
impl WriteTransaction for MysqlConnection {
    /// Runs again (a few times, a few ms apart) a transaction InnoDB rolled back for a lock conflict.
    fn write_transaction<T, F>(&mut self, mut f: F) -> Result<T, StoreError>
    where
        F: FnMut(&mut Self) -> Result<T, StoreError>,
    {
        let mut attempt = 1;
        loop {
            match self.transaction(&mut f) {
                Err(e) if attempt < TRANSACTION_ATTEMPTS && lock_conflict(&e) => {
                    log::debug!(
                        "transaction rolled back ({e}); attempt {} of {TRANSACTION_ATTEMPTS}",
                        attempt + 1
                    );
                    std::thread::sleep(Duration::from_millis(5 << attempt));
                    attempt += 1;
                }
                res => return res,
            }
        }
    }
}

#[derive(Clone)]
enum DbPool {
    #[cfg(feature = "sqlite")]
    Sqlite(Pool<ConnectionManager<SqliteConnection>>),
    #[cfg(feature = "mysql")]
    Mysql(Pool<ConnectionManager<MysqlConnection>>),
}

/// Per-connection setup for SQLite: a busy timeout so concurrent writers wait instead of failing,
/// `synchronous = NORMAL` (durable across process crashes; in WAL mode only a power loss may drop the
/// last commits), foreign keys on, a 2 MiB page cache (it is process memory, per pooled connection;
/// 32 MiB each let a burst of traffic grow the process by tens of MB), memory-mapped reads, and no automatic
/// checkpoints: those would run inside a commit and stall the writer; [`Store::checkpoint`] runs them
/// in the background instead.
#[cfg(feature = "sqlite")]
#[derive(Debug)]
struct SqliteSetup;

#[cfg(feature = "sqlite")]
impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for SqliteSetup {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        use diesel::connection::SimpleConnection;
        conn.batch_execute(
            "PRAGMA busy_timeout = 10000; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
             PRAGMA cache_size = -2048; PRAGMA mmap_size = 268435456; PRAGMA temp_store = MEMORY; \
             PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 67108864;",
        )
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// Frames (4 KiB pages) in the SQLite write-ahead log past which the store writer runs a checkpoint
/// between two transactions, so the log starts over.
pub const WAL_RESET_FRAMES: i32 = 16_384;
/// Frames past which that checkpoint also waits for readers and empties the log.
pub const WAL_TRUNCATE_FRAMES: i32 = 65_536;

/// A passive checkpoint, then a truncating one when the log is longer than `max_frames`; returns the
/// frames the log held.
#[cfg(feature = "sqlite")]
fn sqlite_checkpoint(conn: &mut SqliteConnection, max_frames: i32) -> Result<i32, StoreError> {
    use diesel::connection::SimpleConnection;
    use diesel::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct WalState {
        /// Frames in the log.
        #[diesel(sql_type = diesel::sql_types::Integer)]
        log: i32,
    }
    let wal: WalState = diesel::sql_query("PRAGMA wal_checkpoint(PASSIVE)").get_result(conn)?;
    if wal.log > max_frames {
        conn.batch_execute("PRAGMA wal_checkpoint(TRUNCATE)")?;
    }
    Ok(wal.log)
}

/// Per-connection setup for MySQL/MariaDB: utf8mb4 so Chinese text and emoji round-trip.
#[cfg(feature = "mysql")]
#[derive(Debug)]
struct MysqlSetup;

#[cfg(feature = "mysql")]
impl CustomizeConnection<MysqlConnection, diesel::r2d2::Error> for MysqlSetup {
    fn on_acquire(&self, conn: &mut MysqlConnection) -> Result<(), diesel::r2d2::Error> {
        use diesel::connection::SimpleConnection;
        conn.batch_execute("SET NAMES utf8mb4 COLLATE utf8mb4_bin; SET time_zone = '+00:00';")
            .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// A handle on the database: cheap to clone, shared by every actor and handler.
#[derive(Clone)]
pub struct Store {
    pool: DbPool,
    /// Frames in the SQLite write-ahead log at the last checkpoint.
    wal_frames: std::sync::Arc<std::sync::atomic::AtomicI64>,
    workers: Workers,
    /// How long [`Store::run`] waits for an answer before it gives up (the database hangs).
    call_timeout: Duration,
    /// What the last health probe found (see [`Store::watch_health`]).
    healthy: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// The default of [`Store::with_call_timeout`].
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often, and with how much patience, the health probe asks the database.
const PROBE_EVERY: Duration = Duration::from_millis(250);
const PROBE_TIMEOUT: Duration = Duration::from_millis(700);

/// Storage work waiting for a thread.
type Job = Box<dyn FnOnce() + Send>;

/// The threads that run storage work: as many as the pool has connections (more would only wait for
/// one). A fixed set rather than the runtime's blocking pool, which grows to hundreds of threads under
/// load: with glibc's malloc each thread that allocates query results may get an arena of its own
/// that keeps what was freed (a burst of history queries grew the process by 35 MB that way).
#[derive(Clone)]
struct Workers {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl Workers {
    fn start(n: u32) -> Workers {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = std::sync::Arc::new(std::sync::Mutex::new(queue));
        for i in 0..n.max(1) {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new().name(format!("wsim-store-{i}")).spawn(move || loop {
                let job = match queue.lock() {
                    Ok(q) => q.recv(),
                    Err(_) => return,
                };
                match job {
                    Ok(job) => job(),
                    Err(_) => return,
                }
            });
            if let Err(e) = spawned {
                log::error!("cannot start a storage thread: {e}");
            }
        }
        Workers { jobs }
    }
}

impl Store {
    /// Connects to `url` (`sqlite://PATH` or `mysql://…`), runs the embedded migrations and returns the
    /// pooled store.
    pub fn connect(url: &str, pool_size: u32) -> Result<Store, StoreError> {
        let store = if let Some(path) = url.strip_prefix("sqlite://") {
            Self::connect_sqlite(path, pool_size)?
        } else if url.starts_with("mysql://") {
            Self::connect_mysql(url, pool_size)?
        } else {
            return Err(StoreError::BadUrl(url.to_string()));
        };
        store.migrate()?;
        Ok(store)
    }

    #[cfg(feature = "sqlite")]
    fn connect_sqlite(path: &str, pool_size: u32) -> Result<Store, StoreError> {
        if let Some(parent) = std::path::Path::new(path).parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| StoreError::Connect(format!("{}: {e}", parent.display())))?;
            }
        }
        // Probe once so a bad path fails with a clear message rather than a pool timeout, and switch
        // the file to WAL (a persistent setting) before the pool opens its connections.
        {
            use diesel::connection::SimpleConnection;
            let mut probe =
                SqliteConnection::establish(path).map_err(|e| StoreError::Connect(e.to_string()))?;
            probe
                .batch_execute("PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL;")
                .map_err(|e| StoreError::Connect(e.to_string()))?;
        }
        let pool = Pool::builder()
            .max_size(pool_size.max(2))
            .connection_timeout(Duration::from_secs(10))
            .connection_customizer(Box::new(SqliteSetup))
            .build(ConnectionManager::<SqliteConnection>::new(path))
            .map_err(|e| StoreError::Connect(e.to_string()))?;
        Ok(Store {
            pool: DbPool::Sqlite(pool),
            wal_frames: Default::default(),
            workers: Workers::start(pool_size.max(2)),
            call_timeout: CALL_TIMEOUT,
            healthy: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
        })
    }

    #[cfg(not(feature = "sqlite"))]
    fn connect_sqlite(_path: &str, _pool_size: u32) -> Result<Store, StoreError> {
        Err(StoreError::BadUrl("this build has no sqlite support".into()))
    }

    #[cfg(feature = "mysql")]
    fn connect_mysql(url: &str, pool_size: u32) -> Result<Store, StoreError> {
        MysqlConnection::establish(url).map_err(|e| StoreError::Connect(e.to_string()))?;
        let pool = Pool::builder()
            .max_size(pool_size.max(2))
            .connection_timeout(Duration::from_secs(10))
            .connection_customizer(Box::new(MysqlSetup))
            .build(ConnectionManager::<MysqlConnection>::new(url))
            .map_err(|e| StoreError::Connect(e.to_string()))?;
        Ok(Store {
            pool: DbPool::Mysql(pool),
            wal_frames: Default::default(),
            workers: Workers::start(pool_size.max(2)),
            call_timeout: CALL_TIMEOUT,
            healthy: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
        })
    }

    #[cfg(not(feature = "mysql"))]
    fn connect_mysql(_url: &str, _pool_size: u32) -> Result<Store, StoreError> {
        Err(StoreError::BadUrl("this build has no mysql support".into()))
    }

    pub fn backend(&self) -> Backend {
        match &self.pool {
            #[cfg(feature = "sqlite")]
            DbPool::Sqlite(_) => Backend::Sqlite,
            #[cfg(feature = "mysql")]
            DbPool::Mysql(_) => Backend::Mysql,
        }
    }

    /// Takes a connection from the pool (blocking).
    pub fn conn(&self) -> Result<DbConn, StoreError> {
        Ok(match &self.pool {
            #[cfg(feature = "sqlite")]
            DbPool::Sqlite(p) => DbConn::Sqlite(p.get()?),
            #[cfg(feature = "mysql")]
            DbPool::Mysql(p) => DbConn::Mysql(p.get()?),
        })
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let conn = &mut conn;
        match conn {
            #[cfg(feature = "sqlite")]
            DbConn::Sqlite(c) => c
                .run_pending_migrations(SQLITE_MIGRATIONS)
                .map(|_| ())
                .map_err(|e| StoreError::Migration(e.to_string())),
            #[cfg(feature = "mysql")]
            DbConn::Mysql(c) => c
                .run_pending_migrations(MYSQL_MIGRATIONS)
                .map(|_| ())
                .map_err(|e| StoreError::Migration(e.to_string())),
        }
    }

    /// Runs blocking storage work on the store's own threads, never on an actor's thread.
    /// Waits for an answer at most [`Store::with_call_timeout`] (5 s by default): while the database
    /// hangs, callers get [`StoreError::TimedOut`] instead of hanging with it. The work itself may
    /// still run when the database comes back (unless it had not started: abandoned work is
    /// skipped), so writes whose outcome matters use [`Store::run_unbounded`].
    pub async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConn) -> Result<T, StoreError> + Send + 'static,
    {
        match tokio::time::timeout(self.call_timeout, self.run_unbounded(f)).await {
            Ok(res) => res,
            Err(_) => Err(StoreError::TimedOut(self.call_timeout)),
        }
    }

    /// Runs `f` on a storage thread and waits for its outcome however long it takes (the store
    /// writer's commits: an acknowledgement must follow the commit, never a guess).
    pub async fn run_unbounded<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConn) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            if tx.is_closed() {
                // The caller gave up (timed out) before a thread was free: nothing to do.
                return;
            }
            let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                let mut conn = store.conn()?;
                f(&mut conn)
            }));
            let _ = tx.send(done.map_err(|panic| {
                panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default()
            }));
        });
        self.workers.jobs.send(job).map_err(|_| StoreError::Cancelled)?;
        match rx.await {
            Ok(Ok(res)) => res,
            Ok(Err(text)) => Err(StoreError::Panicked(text)),
            Err(_) => Err(StoreError::Cancelled),
        }
    }

    /// Copies the SQLite write-ahead log back into the database file without blocking writers (a
    /// no-op on MySQL); run in the background every 250 ms. It also notes how long the log is: under
    /// a steady stream of commits a checkpoint running beside them never reaches the last frame, so
    /// SQLite never starts the log over (it reached 2.7 GB in 40 s of benchmark load). The store
    /// writer therefore calls [`Store::complete_checkpoint`] between two transactions once
    /// [`Store::wal_too_long`] says so.
    pub async fn checkpoint(&self) {
        self.checkpoint_bounded(i32::MAX).await;
    }

    /// Whether the log has grown past [`WAL_RESET_FRAMES`] (SQLite).
    pub fn wal_too_long(&self) -> bool {
        self.wal_frames.load(std::sync::atomic::Ordering::Relaxed) > i64::from(WAL_RESET_FRAMES)
    }

    /// A checkpoint with no commit in progress (the writer calls it between transactions): it copies
    /// the whole log back, so the next commit starts the log over. Should readers still hold the log
    /// past [`WAL_TRUNCATE_FRAMES`], it waits for them and empties the log.
    pub async fn complete_checkpoint(&self) {
        self.checkpoint_bounded(WAL_TRUNCATE_FRAMES).await;
        // The next commit starts the log over; the next background checkpoint measures it again.
        self.wal_frames.store(0, std::sync::atomic::Ordering::Relaxed);
    }

    /// A passive checkpoint, then a truncating one if the log is longer than `max_frames` frames.
    pub async fn checkpoint_bounded(&self, max_frames: i32) {
        if self.backend() != Backend::Sqlite {
            return;
        }
        let frames = self.wal_frames.clone();
        let res = self
            .run(move |conn| match conn {
                #[cfg(feature = "sqlite")]
                DbConn::Sqlite(c) => sqlite_checkpoint(c, max_frames),
                #[allow(unreachable_patterns)]
                _ => {
                    let _ = max_frames;
                    Ok(0)
                }
            })
            .await;
        match res {
            Ok(log) => frames.store(i64::from(log), std::sync::atomic::Ordering::Relaxed),
            Err(e) => log::warn!("checkpoint: {e}"),
        }
    }

    /// True when a connection can be had and the schema answers a query.
    pub async fn healthy(&self) -> bool {
        let probe = self.run_unbounded(|conn| {
            use diesel::connection::SimpleConnection;
            db_run!(conn: {
                conn.batch_execute("SELECT COUNT(*) FROM counters").map_err(StoreError::from)
            })
        });
        probe.await.is_ok()
    }

    /// How long [`Store::run`] waits.
    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// The same store, whose [`Store::run`] waits at most `timeout`.
    pub fn with_call_timeout(mut self, timeout: Duration) -> Store {
        self.call_timeout = timeout;
        self
    }

    /// What the health probe found last (at most [`PROBE_EVERY`] + [`PROBE_TIMEOUT`] ago): answered
    /// at once, however the database is doing.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Probes the database every [`PROBE_EVERY`] on a task of its own, for [`Store::is_healthy`]: a
    /// probe that gets no answer within [`PROBE_TIMEOUT`] marks the database unhealthy, and no other
    /// starts until it ends (a hung database holds one storage thread for the probe, not more).
    pub fn watch_health(&self) {
        let store = self.clone();
        actix_rt::spawn(async move {
            loop {
                let s = store.clone();
                let mut probe = actix_rt::spawn(async move { s.healthy().await });
                let ok = loop {
                    match tokio::time::timeout(PROBE_TIMEOUT, &mut probe).await {
                        Ok(done) => break done.unwrap_or(false),
                        Err(_) => store.set_healthy(false),
                    }
                };
                store.set_healthy(ok);
                tokio::time::sleep(PROBE_EVERY).await;
            }
        });
    }

    fn set_healthy(&self, ok: bool) {
        if self.healthy.swap(ok, std::sync::atomic::Ordering::Relaxed) != ok {
            if ok {
                log::info!("the database answers again");
            } else {
                log::warn!("the database does not answer");
            }
        }
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn a_panicking_task_is_reported_as_a_panic() {
        let dir = tempfile::tempdir().expect("tmp");
        let url = format!("sqlite://{}", dir.path().join("p.db").display());
        let store =
            tokio::task::spawn_blocking(move || Store::connect(&url, 1)).await.expect("join").expect("store");
        let res = store.run(|_| -> Result<(), StoreError> { panic!("boom") }).await;
        assert!(matches!(res, Err(StoreError::Panicked(ref m)) if m == "boom"), "{res:?}");
        assert_eq!(store.run(|_| Ok(1)).await.ok(), Some(1), "the store goes on");
    }
}
