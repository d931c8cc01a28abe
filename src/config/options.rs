//! Every configuration option, declared once: its TOML key (section and name), type, default, help
//! and, for the few that have one, its command-line flag. The environment variable of an option is
//! derived from it (`WSIM_<FLAG>` for an option with a flag, `WSIM_<SECTION>_<KEY>` otherwise), the
//! `--help` text, the environment overlay and the checks of README.md and config/wsim.example.toml
//! are built from these declarations.

use serde::{Deserialize, Serialize};

/// What is known of one option.
#[derive(Debug, Clone, Copy)]
pub struct OptionInfo {
    /// The TOML section ("" for the top level).
    pub section: &'static str,
    pub key: &'static str,
    /// The long flag (without `--`), when there is one.
    pub flag: Option<&'static str>,
    pub help: &'static str,
}

impl OptionInfo {
    /// The option's environment variable.
    pub fn env(&self) -> String {
        let name = match (self.flag, self.section) {
            (Some(flag), _) => flag.to_string(),
            (None, "") => self.key.to_string(),
            (None, section) => format!("{section}_{}", self.key),
        };
        format!("WSIM_{}", name.replace('-', "_").to_uppercase())
    }

    /// `section.key`, or `key` at the top level.
    pub fn path(&self) -> String {
        if self.section.is_empty() {
            self.key.to_string()
        } else {
            format!("{}.{}", self.section, self.key)
        }
    }

    /// The help text on one line.
    pub fn help_line(&self) -> String {
        self.help.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

/// Declares a section: a struct whose fields are its options (each with its help, optional flag and
/// default), its `Default`, and its [`OptionInfo`]s. Sections nested in it come after `;`.
macro_rules! options {
    (
        $(#[doc = $sdoc:literal])*
        pub struct $name:ident in $section:literal {
            $(
                $(#[doc = $doc:literal])*
                $(#[flag = $flag:literal])?
                pub $field:ident : $ty:ty = $default:expr,
            )*
            $(; $(
                $(#[doc = $ndoc:literal])*
                pub $nested:ident : $nty:ty,
            )*)?
        }
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            $( $(#[doc = $doc])* pub $field: $ty, )*
            $($( $(#[doc = $ndoc])* pub $nested: $nty, )*)?
        }

        impl Default for $name {
            fn default() -> Self {
                $name {
                    $( $field: $default, )*
                    $($( $nested: <$nty>::default(), )*)?
                }
            }
        }

        impl $name {
            /// This section's own options (not those of the sections nested in it).
            pub const OPTIONS: &'static [OptionInfo] = &[
                $( OptionInfo {
                    section: $section,
                    key: stringify!($field),
                    flag: options!(@flag $($flag)?),
                    help: concat!($($doc, "\n"),*),
                }, )*
            ];
        }
    };
    (@flag) => { None };
    (@flag $flag:literal) => { Some($flag) };
}

options! {
    /// The whole configuration (the top level of the TOML file).
    pub struct Config in "" {
        /// Addresses to listen on (the flag repeats; the environment variable is comma-separated).
        #[flag = "listen"]
        pub listen: Vec<String> = vec!["0.0.0.0:6060".into()],
        /// Database: sqlite://PATH (embedded) or mysql://USER:PASS@HOST:PORT/DB.
        /// Unset: sqlite://<data_dir>/wsim.db.
        #[flag = "database-url"]
        pub database_url: Option<String> = None,
        /// Directory of the SQLite database and the uploaded media.
        #[flag = "data-dir"]
        pub data_dir: String = "./data".into(),
        /// Base of the URLs the server hands out (group snaps, media, /ticket nodes).
        /// Unset: http://127.0.0.1:<first listen port>.
        #[flag = "public-url"]
        pub public_url: Option<String> = None,
        /// This node's id (0-15), part of every message id: each node of a cluster has its own.
        #[flag = "node-id"]
        pub node_id: i64 = 1,
        /// Seconds between server heartbeats on live connections.
        #[flag = "heartbeat-interval"]
        pub heartbeat_interval: i64 = 30,
        /// Seconds of silence after which a peer is dropped.
        #[flag = "client-timeout"]
        pub client_timeout: i64 = 90,
        /// KiB a connection may have queued but unsent before it is dropped as a slow reader (at
        /// least 64).
        #[flag = "outbound-queue-kib"]
        pub outbound_queue_kib: i64 = 1024,
        /// The app (tenant) of the front-ends that have no notion of apps.
        pub default_app: String = "default".into(),
        ;
        pub store: StoreConfig,
        pub wsim: WsimConfig,
        pub gateway: GatewayConfig,
        pub uploads: UploadsConfig,
        pub longweb: LongwebConfig,
        pub gru: GruConfig,
        pub cluster: ClusterConfig,
        pub admin: AdminConfig,
        pub console: ConsoleConfig,
        pub push: PushConfig,
        pub limits: LimitsConfig,
    }
}

options! {
    /// `[limits]`: rate limits against abuse (0: none).
    pub struct LimitsConfig in "limits" {
        /// HTTP requests one client address may make per second (a burst of three seconds' worth);
        /// beyond, 429.
        pub http_requests_per_ip_per_sec: i64 = 500,
        /// Messages one connection may send per second (/entry, Gru sockets; a burst of three seconds'
        /// worth); beyond, each protocol's error and the message is not stored.
        pub messages_per_conn_per_sec: i64 = 50,
        /// Uploads one client address (and, with [wsim] auth on, one user) may make per minute (a burst
        /// of three minutes' worth).
        pub uploads_per_min: i64 = 60,
        /// Request bodies (POST, uploads) must arrive at this many bytes a second on average once
        /// body_grace_secs have passed; slower ones are cut off (a body dripped a byte a second would
        /// hold its connection for ever). 0: no minimum.
        pub body_min_bytes_per_sec: i64 = 1024,
        /// Seconds a request body may take before its average rate is checked.
        pub body_grace_secs: i64 = 10,
        /// Requests one client address may have open at once, WebSocket sessions, SSE streams and
        /// long-polls included (beyond, 429); 0: no cap.
        pub connections_per_ip: i64 = 0,
        /// Seconds an idle keep-alive HTTP connection stays open.
        pub keep_alive_secs: i64 = 5,
        /// Client networks the limits do not apply to (addresses or CIDRs): by default loopback, where
        /// a reverse proxy or the load generator connects from.
        pub exempt: Vec<String> = vec!["127.0.0.0/8".into(), "::1/128".into()],
    }
}

options! {
    /// `[admin]`
    pub struct AdminConfig in "admin" {
        /// Networks allowed to read /metrics and longweb's /state (addresses or CIDRs); the others get 403.
        pub allow: Vec<String> = vec!["127.0.0.0/8".into(), "::1/128".into()],
    }
}

options! {
    /// `[push]`: offline push to the business system (an extension).
    pub struct PushConfig in "push" {
        /// URL wsim POSTs notifications to when a stored message waits for a recipient with no live
        /// connection anywhere (JSON, see the README). Unset: no push.
        pub webhook: Option<String> = None,
        /// Key of the X-Wsim-Signature header (sha256=<hex HMAC of the body>). Unset: no signature.
        pub secret: Option<String> = None,
        /// Most notifications in one request.
        pub max_batch: i64 = 100,
        /// Longest a notification waits for others to share its request, milliseconds.
        pub max_delay_ms: i64 = 500,
        /// Notifications waiting for the webhook (and stored messages waiting to be looked at); beyond,
        /// new ones are dropped (counted in wsim_push_dropped_total{why="feed"|"queue"}).
        pub queue: i64 = 10_000,
        /// Seconds a webhook request may take.
        pub timeout_secs: i64 = 5,
        /// Attempts after the first for a request that failed with a 5xx or no answer (backoff from
        /// 0.5 s, doubling, at most 30 s); a 4xx is not retried.
        pub retries: i64 = 5,
        /// At most one notification per recipient and conversation in this many seconds.
        pub quiet_secs: i64 = 60,
        /// Characters of a text message the preview keeps (at most 1000).
        pub preview_chars: i64 = 100,
    }
}

options! {
    /// `[console]`: the web console served at `/`.
    pub struct ConsoleConfig in "console" {
        /// Token the console's administration calls must present (header X-Admin-Token). Unset:
        /// administration from loopback addresses only, without a token.
        pub admin_token: Option<String> = None,
    }
}

options! {
    /// `[store]`
    pub struct StoreConfig in "store" {
        /// Database connections in the pool (and threads running storage work).
        pub pool_size: i64 = 8,
        /// Most messages written in one transaction.
        pub max_batch: i64 = 1000,
        /// Least time, in microseconds, from the start of one message transaction to the start of
        /// the next: under a steady light load messages wait up to this long and share a commit
        /// (each commit costs its WAL pages or its log flush whatever it carries); an idle server
        /// commits at once. 0: every transaction starts as soon as the previous one ends.
        pub commit_gap_us: i64 = 2000,
        /// Seconds a request waits for the database before it is answered with its protocol's error
        /// (the database hangs); commits of messages are never given up.
        pub call_timeout_secs: i64 = 5,
    }
}

options! {
    /// `[wsim]`
    pub struct WsimConfig in "wsim" {
        /// Success code of the group API: 1 as documented, 0 for the deployed Android clients.
        #[flag = "ok-code"]
        pub ok_code: i64 = 1,
        /// Avatar of users who never set one. Unset: <public_url>/emopic/default_avatar.jpg.
        pub default_avatar: Option<String> = None,
        /// Snap of a group before it is drawn. Unset: <public_url>/emovideo/default_group.jpg.
        pub default_group_snap: Option<String> = None,
        /// Seconds to wait for a member's avatar when a group snap is drawn.
        pub avatar_fetch_timeout_secs: i64 = 3,
        /// Largest member avatar accepted for a group snap, KiB.
        pub avatar_max_kib: i64 = 2048,
        /// Origins (scheme://host[:port]) member avatars may be fetched from to draw group snaps,
        /// redirects included; this server's own media is always read. Empty: no other.
        pub avatar_fetch_allow: Vec<String> = Vec::new(),
        /// Who users are (an extension; the original trusted every client): "off" (anyone is whoever
        /// they say), "token" (HMAC tokens from /inner/wsim_token, bound to the user, with expiry) or
        /// "callback" (each token checked by GET auth_callback?userid=&token= answering
        /// {"success":true}).
        pub auth: String = "off".into(),
        /// Key of the tokens /inner/wsim_token issues. Unset: generated once and kept in the data dir.
        pub auth_secret: Option<String> = None,
        /// Lifetime of an issued token, seconds.
        pub auth_token_ttl_secs: i64 = 604_800,
        /// URL that checks a token in "callback" mode.
        pub auth_callback: Option<String> = None,
        /// Timeout of a token check by callback, seconds.
        pub auth_callback_timeout_secs: i64 = 3,
        /// Most token checks by callback at once (the others wait).
        pub auth_callback_concurrency: i64 = 16,
        /// With auth on: a token that may do anything in the group API (remove members, edit any group,
        /// act for any user). Unset: nobody.
        pub admin_token: Option<String> = None,
    }
}

options! {
    /// `[gateway]`
    pub struct GatewayConfig in "gateway" {
        /// Networks allowed to call the gateway's /inner/* endpoints (addresses or CIDRs).
        pub inner_allow: Vec<String> = vec!["127.0.0.0/8".into(), "::1/128".into()],
        /// HS256 key signing the gateway's tokens. Unset: generated once and kept in the data dir.
        pub jwt_key: Option<String> = None,
        /// Lifetime of a gateway token, seconds.
        pub token_ttl_secs: i64 = 86_400,
        /// How long a long-poll /notify waits for a message, seconds.
        pub poll_timeout_secs: i64 = 30,
    }
}

options! {
    /// `[uploads]`
    pub struct UploadsConfig in "uploads" {
        /// Largest accepted audio upload, MiB (checked while the file streams in).
        pub max_audio_mib: i64 = 20,
        /// Largest accepted image upload, MiB.
        pub max_image_mib: i64 = 20,
        /// Largest accepted video upload, MiB.
        pub max_video_mib: i64 = 200,
    }
}

/// One business app of the longweb push framework.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongwebApp {
    pub appid: String,
    #[serde(default)]
    pub name: String,
    /// checktoken URL.
    pub authapi: Option<String>,
    /// querymessage URL.
    pub messageapi: Option<String>,
    /// Long-poll wait, seconds.
    #[serde(default = "default_poll_wait")]
    pub timeout: u64,
}

fn default_poll_wait() -> u64 {
    30
}

options! {
    /// `[longweb]`
    pub struct LongwebConfig in "longweb" {
        /// Who may call /sendmessage: addresses or CIDRs.
        pub allowips: Vec<String> = vec!["127.0.0.1".into(), "::1".into()],
        /// Timeout of a checktoken / querymessage call, seconds.
        pub callback_timeout_secs: i64 = 5,
        /// Most concurrent checktoken / querymessage calls to one app.
        pub callback_concurrency: i64 = 16,
        /// The business apps ([[longweb.apps]] tables: appid, name, authapi, messageapi, timeout);
        /// reloaded on SIGHUP without dropping connections.
        pub apps: Vec<LongwebApp> = Vec::new(),
    }
}

/// A node of the Gru cluster, as `/ticket` hands it out.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GruNode {
    pub name: String,
    pub addr: String,
}

options! {
    /// `[gru]`
    pub struct GruConfig in "gru" {
        /// Nodes handed out by /ticket without a cluster ([{ name, addr }]). Unset: this server alone.
        pub nodes: Option<Vec<GruNode>> = None,
        /// How /ticket checks token1: "off", "md5" (with token1_salt) or "callback" (token1_callback).
        pub token1_check: String = "off".into(),
        /// Salt of the md5 token1 check.
        pub token1_salt: Option<String> = None,
        /// URL of the token1 callback (GET ?userId=&userName=&userType=&token1=, answering
        /// {"success":true}).
        pub token1_callback: Option<String> = None,
        /// Key of the HMAC token2 that /ticket issues. Unset: generated once and kept in the data dir.
        pub token2_secret: Option<String> = None,
        /// Lifetime of an HMAC token2, seconds.
        pub token2_ttl_secs: i64 = 86_400,
        /// How `auth` checks token2: "hmac" (issued by /ticket), "md5" (the original's, with
        /// token2_salt) or "off".
        pub token2_check: String = "hmac".into(),
        /// Salt of the md5 token2.
        pub token2_salt: Option<String> = None,
        /// Engine.IO handshakes one client address may open per second (a burst of three seconds'
        /// worth); 0: no limit.
        pub handshakes_per_ip_per_sec: i64 = 20,
        /// An extra address serving only /ticket (the original used port 30000).
        pub ticket_listen: Option<String> = None,
        /// Engine.IO ping interval, ms (v4: the server pings, v3: the client does); at least 100.
        pub ping_interval_ms: i64 = 25_000,
        /// How long past the ping interval a silent Engine.IO session is kept, ms; at least 100.
        pub ping_timeout_ms: i64 = 20_000,
        /// Seconds a socket may stay connected without a successful `auth`.
        pub auth_timeout_secs: i64 = 30,
    }
}

options! {
    /// `[cluster]`
    pub struct ClusterConfig in "cluster" {
        /// Redis shared by the nodes of a cluster (redis://HOST:PORT/DB); unset: a single node.
        #[flag = "redis-url"]
        pub redis_url: Option<String> = None,
        /// Every Redis key and channel starts with this (tenants and tests can share a Redis).
        pub key_prefix: String = "wsim".into(),
        /// Seconds a node that stops refreshing its entry still counts as alive (at least 2).
        pub node_ttl_secs: i64 = 15,
    }
}

/// Every option, in the order of the file: the top level, then each section.
pub fn all() -> Vec<OptionInfo> {
    [
        Config::OPTIONS,
        StoreConfig::OPTIONS,
        WsimConfig::OPTIONS,
        GatewayConfig::OPTIONS,
        UploadsConfig::OPTIONS,
        LongwebConfig::OPTIONS,
        GruConfig::OPTIONS,
        ClusterConfig::OPTIONS,
        AdminConfig::OPTIONS,
        ConsoleConfig::OPTIONS,
        PushConfig::OPTIONS,
        LimitsConfig::OPTIONS,
    ]
    .concat()
}
