//! Offline push (an extension): when a stored message waits for a recipient with no live connection
//! on any front-end (and, in a cluster, on any node), the business system's webhook is told, so it
//! can wake the phone. The node that stored the message pushes it, once.
//!
//! Two tasks, each behind a bounded queue: the resolver takes the stored direct and group messages
//! from the store writer and decides who is notified (members, not the sender, not muted, not
//! notified of that conversation within the quiet period, not online), with their unread counts;
//! the sender batches notifications into requests to the webhook and retries those that failed
//! with a 5xx or no answer. A full queue drops what does not fit (counted: `feed` for stored messages,
//! `queue` for notifications): a slow or dead webhook never slows delivery.

pub mod notification;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::config::PushSettings;
use crate::core::Core;
use crate::domain::message::{GroupKey, SharedMessage};
use crate::metrics::METRICS;
use crate::store::push as store;
use notification::{notification, Notification, Quiet, UNREAD_WINDOW};

/// Stored messages the resolver takes at once.
const RESOLVE_BATCH: usize = 1000;
/// First retry delay; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Starts offline push for `core` (on the current actix system).
pub fn start(core: Core, settings: PushSettings) {
    let settings = Arc::new(settings);
    let (feed, stored) = mpsc::channel::<SharedMessage>(settings.queue);
    let (queue, waiting) = mpsc::channel::<Notification>(settings.queue);
    core.attach_push(feed);
    actix_web::rt::spawn(resolve_loop(core, stored, queue, settings.clone()));
    actix_web::rt::spawn(send_loop(waiting, settings));
    log::info!("offline push to a webhook is on");
}

async fn resolve_loop(
    core: Core,
    mut stored: mpsc::Receiver<SharedMessage>,
    queue: mpsc::Sender<Notification>,
    settings: Arc<PushSettings>,
) {
    let mut quiet = Quiet::new(settings.quiet);
    while let Some(first) = stored.recv().await {
        let mut batch = vec![first];
        while batch.len() < RESOLVE_BATCH {
            match stored.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        for n in resolve(&core, &batch, &mut quiet, settings.preview_chars).await {
            if queue.try_send(n).is_err() {
                METRICS.push_dropped("queue");
            }
        }
    }
}

/// (app, user, conversation): what the quiet period is kept by.
type QuietKey = (String, String, String);

/// What the store says of one app's candidates: muted (user, conversation) pairs, watermarks, and
/// each conversation's newest messages.
struct AppReading {
    muted: HashSet<(String, String)>,
    marks: HashMap<(String, String), i64>,
    recent: HashMap<String, Vec<(i64, String)>>,
}

/// One store round trip for one app's candidates.
async fn read_app(
    core: &Core,
    app: &str,
    keys: &[&QuietKey],
) -> Result<AppReading, crate::store::StoreError> {
    let mut users: Vec<String> = keys.iter().map(|k| k.1.clone()).collect();
    let mut convs: Vec<String> = keys.iter().map(|k| k.2.clone()).collect();
    users.sort();
    users.dedup();
    convs.sort();
    convs.dedup();
    let app = app.to_string();
    core.store
        .run(move |db| {
            let muted = store::muted_pairs(db, &app, &users, &convs)?.into_iter().collect();
            let marks = store::watermark_pairs(db, &app, &users, &convs)?
                .into_iter()
                .map(|(u, c, w)| ((u, c), w))
                .collect();
            let mut recent = HashMap::new();
            for conv in convs {
                let newest = store::recent_senders(db, &app, &conv, UNREAD_WINDOW)?;
                recent.insert(conv, newest);
            }
            Ok(AppReading { muted, marks, recent })
        })
        .await
}

/// Who is notified of `batch`, the newest message per conversation: its recipients (members but the
/// sender) not notified of the conversation within the quiet period, then those
/// offline (in memory, and one Redis round trip in a cluster), then those who did not mute it (one
/// store round trip per app, with the unread counts).
async fn resolve(
    core: &Core,
    batch: &[SharedMessage],
    quiet: &mut Quiet,
    preview_chars: usize,
) -> Vec<Notification> {
    let now = Instant::now();
    // The newest message of each conversation speaks for the batch (a busy group is looked at once):
    // its recipients are told of it, with their unread counts covering the others.
    let mut latest: HashMap<(&str, &str), &SharedMessage> = HashMap::new();
    for m in batch {
        latest.insert((m.app.as_str(), m.conv.as_str()), m);
    }
    let mut newest: HashMap<QuietKey, SharedMessage> = HashMap::new();
    for m in latest.into_values() {
        let recipients: Vec<String> = if !m.recipient.is_empty() {
            vec![m.recipient.clone()]
        } else {
            match core.group(&GroupKey::new(&m.app, &m.conv)).await {
                Ok(Some(g)) => g.members,
                Ok(None) => Vec::new(),
                Err(e) => {
                    log::warn!("push: group {} unreadable: {e}", m.conv);
                    Vec::new()
                }
            }
        };
        for r in recipients.into_iter().filter(|r| *r != m.sender) {
            let key = (m.app.clone(), r, m.conv.clone());
            if quiet.allows(&key, now) {
                newest.insert(key, m.clone());
            }
        }
    }
    let mut by_app: HashMap<String, Vec<&QuietKey>> = HashMap::new();
    for key in newest.keys() {
        by_app.entry(key.0.clone()).or_default().push(key);
    }
    let mut out = Vec::new();
    for (app, keys) in by_app {
        let mut users: Vec<String> = keys.iter().map(|k| k.1.clone()).collect();
        users.sort();
        users.dedup();
        let online: HashSet<String> = core.online_among(&app, users).await.into_iter().collect();
        let keys: Vec<&QuietKey> = keys.into_iter().filter(|k| !online.contains(&k.1)).collect();
        if keys.is_empty() {
            continue;
        }
        let reading = match read_app(core, &app, &keys).await {
            Ok(r) => r,
            Err(e) => {
                log::warn!("push: mutes and unread counts unreadable: {e}");
                METRICS.push_dropped_n("store", keys.len() as u64);
                continue;
            }
        };
        for key in keys {
            let (user, conv) = (key.1.clone(), key.2.clone());
            let Some(m) = newest.get(key) else { continue };
            if reading.muted.contains(&(user.clone(), conv.clone())) {
                continue;
            }
            let mark = reading.marks.get(&(user.clone(), conv.clone())).copied().unwrap_or(0);
            let recent = reading.recent.get(&conv).map(Vec::as_slice).unwrap_or_default();
            let unread = notification::unread(recent, mark, &user).max(1);
            out.push(notification(m, &user, unread, preview_chars));
            quiet.sent(key.clone(), now);
        }
    }
    out.sort_by(|a, b| a.message_id.cmp(&b.message_id).then_with(|| a.recipient.cmp(&b.recipient)));
    out
}

async fn send_loop(mut waiting: mpsc::Receiver<Notification>, settings: Arc<PushSettings>) {
    let client = awc::Client::builder().timeout(settings.timeout).finish();
    while let Some(first) = waiting.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + settings.max_delay;
        while batch.len() < settings.max_batch {
            match tokio::time::timeout_at(deadline, waiting.recv()).await {
                Ok(Some(n)) => batch.push(n),
                Ok(None) | Err(_) => break,
            }
        }
        deliver(&client, &settings, &batch).await;
    }
}

/// What the webhook made of a request.
enum Answer {
    Accepted,
    /// A 4xx: the request itself is wrong; sending it again would not help.
    Rejected(u16),
    /// A 5xx, or no answer: worth another try.
    Failed(String),
}

async fn post(client: &awc::Client, settings: &PushSettings, body: &str) -> Answer {
    let mut req = client
        .post(&settings.webhook)
        .insert_header(("Content-Type", "application/json"))
        .insert_header(("User-Agent", concat!("wsim-push/", env!("CARGO_PKG_VERSION"))));
    if let Some(secret) = &settings.secret {
        req = req.insert_header(("X-Wsim-Signature", notification::signature(secret, body)));
    }
    match req.send_body(body.to_string()).await {
        Ok(res) if res.status().is_success() => Answer::Accepted,
        Ok(res) if res.status().is_client_error() => Answer::Rejected(res.status().as_u16()),
        Ok(res) => Answer::Failed(format!("status {}", res.status().as_u16())),
        Err(e) => Answer::Failed(e.to_string()),
    }
}

/// Sends one request, retrying 5xx answers and failures with backoff.
async fn deliver(client: &awc::Client, settings: &PushSettings, batch: &[Notification]) {
    let body = notification::body(batch);
    let n = batch.len() as u64;
    let mut backoff = FIRST_BACKOFF;
    for attempt in 0..=settings.retries {
        match post(client, settings, &body).await {
            Answer::Accepted => {
                METRICS.push_sent.inc_by(n);
                return;
            }
            Answer::Rejected(status) => {
                log::warn!("push: the webhook refused {n} notification(s) with {status}; not retried");
                METRICS.push_dropped_n("rejected", n);
                return;
            }
            Answer::Failed(why) => {
                log::warn!("push: webhook attempt {} of {}: {why}", attempt + 1, settings.retries + 1);
                if attempt < settings.retries {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
    METRICS.push_dropped_n("failed", n);
}
