//! Configuration: command-line flags, then `WSIM_*` environment variables, then a TOML file
//! (`--config`), then defaults — the first that sets a value wins. Every option is declared once, in
//! [`options`]; this module layers the sources, refuses invalid values and resolves the [`Settings`]
//! the server runs with.

pub mod options;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Arg, ArgAction, Command};
use serde::Deserialize;

pub use options::{Config, GruNode, LongwebApp, OptionInfo};
use options::{GruConfig, LongwebConfig};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("bad configuration file {0}: {1}")]
    Parse(PathBuf, String),
    #[error("bad value for {0}: {1}")]
    Invalid(String, String),
    #[error("{0}")]
    Flags(#[from] clap::Error),
}

fn invalid(name: &str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(name.to_string(), why.into())
}

/// `value` as a positive count of at least `min` (refused below it, never clamped).
fn at_least(name: &str, value: i64, min: i64) -> Result<u64, ConfigError> {
    if value < min {
        return Err(invalid(name, format!("{value} (at least {min})")));
    }
    u64::try_from(value).map_err(|_| invalid(name, value.to_string()))
}

/// How `/ticket` checks token1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token1Check {
    Off,
    /// token1 = md5("<userId>_<userName>_" + salt)
    Md5(String),
    /// GET <url>?userId=&userName=&userType=&token1= answering {"success":true}
    Callback(String),
}

/// How token2 is made and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token2Scheme {
    /// `<expiry>.<hex HMAC-SHA256 over id, name, type, expiry>.<type>`, issued by `/ticket`.
    Hmac,
    /// The original's: md5hex("<id>_<name>_<token1>_" + salt), which business apps compute themselves.
    Md5(String),
    /// Not checked (`/ticket` still issues an HMAC token).
    Off,
}

/// The Gru front-end's settings.
#[derive(Debug, Clone)]
pub struct GruSettings {
    /// `None`: this server alone (its public URL, known once it listens); an empty list: no node.
    pub nodes: Option<Vec<GruNode>>,
    pub token1: Token1Check,
    /// Empty: generated once and kept in the data directory.
    pub token2_secret: String,
    pub token2_ttl: Duration,
    pub token2: Token2Scheme,
    pub handshakes_per_ip_per_sec: u32,
    pub ticket_listen: Option<String>,
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    pub auth_timeout: Duration,
}

impl GruSettings {
    pub fn from_config(f: &GruConfig) -> Result<GruSettings, ConfigError> {
        let required = |value: &Option<String>, name: &str, why: &str| {
            value.clone().filter(|v| !v.is_empty()).ok_or_else(|| invalid(name, why))
        };
        let token1 = match f.token1_check.as_str() {
            "off" => Token1Check::Off,
            "md5" => Token1Check::Md5(required(&f.token1_salt, "gru.token1_salt", "required for md5")?),
            "callback" => Token1Check::Callback(required(
                &f.token1_callback,
                "gru.token1_callback",
                "required for callback",
            )?),
            other => return Err(invalid("gru.token1_check", format!("{other} (off, md5 or callback)"))),
        };
        let token2 = match f.token2_check.as_str() {
            "hmac" => Token2Scheme::Hmac,
            "md5" => Token2Scheme::Md5(required(&f.token2_salt, "gru.token2_salt", "required for md5")?),
            "off" => Token2Scheme::Off,
            other => return Err(invalid("gru.token2_check", format!("{other} (hmac, md5 or off)"))),
        };
        let handshakes = at_least("gru.handshakes_per_ip_per_sec", f.handshakes_per_ip_per_sec, 0)?;
        Ok(GruSettings {
            nodes: f.nodes.clone(),
            token1,
            token2_secret: f.token2_secret.clone().unwrap_or_default(),
            token2_ttl: Duration::from_secs(at_least("gru.token2_ttl_secs", f.token2_ttl_secs, 1)?),
            token2,
            handshakes_per_ip_per_sec: u32::try_from(handshakes)
                .map_err(|_| invalid("gru.handshakes_per_ip_per_sec", handshakes.to_string()))?,
            ticket_listen: f.ticket_listen.clone(),
            ping_interval: Duration::from_millis(at_least("gru.ping_interval_ms", f.ping_interval_ms, 100)?),
            ping_timeout: Duration::from_millis(at_least("gru.ping_timeout_ms", f.ping_timeout_ms, 100)?),
            auth_timeout: Duration::from_secs(at_least("gru.auth_timeout_secs", f.auth_timeout_secs, 1)?),
        })
    }
}

/// The longweb front-end's settings (reloaded on SIGHUP).
#[derive(Debug, Clone)]
pub struct LongwebSettings {
    /// Who may call `/sendmessage`.
    pub allowips: Vec<ipnet::IpNet>,
    pub callback_timeout: Duration,
    /// Most concurrent callbacks to one app.
    pub callback_concurrency: usize,
    pub apps: Vec<LongwebApp>,
}

impl LongwebSettings {
    pub fn from_config(f: &LongwebConfig) -> Result<LongwebSettings, ConfigError> {
        let allowips = parse_nets("longweb.allowips", &f.allowips)?;
        for app in &f.apps {
            if !crate::domain::message::valid_id(&app.appid) {
                return Err(invalid("longweb.apps.appid", app.appid.clone()));
            }
            if app.timeout == 0 {
                return Err(invalid("longweb.apps.timeout", format!("0 for app {} (at least 1)", app.appid)));
            }
        }
        let concurrency = at_least("longweb.callback_concurrency", f.callback_concurrency, 1)?;
        Ok(LongwebSettings {
            allowips,
            callback_timeout: Duration::from_secs(at_least(
                "longweb.callback_timeout_secs",
                f.callback_timeout_secs,
                1,
            )?),
            callback_concurrency: usize::try_from(concurrency)
                .map_err(|_| invalid("longweb.callback_concurrency", concurrency.to_string()))?,
            apps: f.apps.clone(),
        })
    }

    pub fn app(&self, appid: &str) -> Option<&LongwebApp> {
        self.apps.iter().find(|a| a.appid == appid)
    }
}

/// The wsim front-end's settings.
#[derive(Debug, Clone)]
pub struct WsimSettings {
    pub ok_code: i64,
    /// Avatar of users who never set one. Empty: `<public_url>/emopic/default_avatar.jpg`.
    pub default_avatar: String,
    /// Snap of new groups. Empty: `<public_url>/emovideo/default_group.jpg`.
    pub default_group_snap: String,
    /// Fetching member avatars for group snaps: timeout and size cap.
    pub avatar_fetch_timeout: Duration,
    pub avatar_max_bytes: usize,
    /// Origins avatars may be fetched from (`http(s)://host[:port]`).
    pub avatar_fetch_allow: Vec<String>,
    pub auth: WsimAuthSettings,
}

/// How the wsim front-end knows who its users are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsimAuthMode {
    /// Anyone is whoever they say (the original protocol).
    Off,
    /// HMAC tokens issued by `/inner/wsim_token`.
    Token,
    /// Tokens checked by a GET to this URL.
    Callback(String),
}

#[derive(Debug, Clone)]
pub struct WsimAuthSettings {
    pub mode: WsimAuthMode,
    /// Empty: generated once and kept in the data directory.
    pub secret: String,
    pub token_ttl: Duration,
    pub callback_timeout: Duration,
    pub callback_concurrency: usize,
    pub admin_token: Option<String>,
}

/// The gateway front-end's settings.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// Networks allowed to call `/inner/*`.
    pub inner_allow: Vec<ipnet::IpNet>,
    /// HS256 signing key; empty: generated once and kept in the data directory.
    pub jwt_key: String,
    pub token_ttl: Duration,
    pub poll_timeout: Duration,
}

/// Rate limits (0: none).
#[derive(Debug, Clone)]
pub struct LimitSettings {
    pub exempt: Vec<ipnet::IpNet>,
    /// Open requests per client address (0: no cap).
    pub connections_per_ip: usize,
    pub keep_alive: Duration,
    /// Minimum average rate of a request body once `body_grace` has passed (0: none).
    pub body_min_bytes_per_sec: u64,
    pub body_grace: Duration,
    pub http_requests_per_ip_per_sec: u32,
    pub messages_per_conn_per_sec: u32,
    pub uploads_per_min: u32,
}

/// A rate (0 or more, at most `u32::MAX`).
fn per(name: &str, value: i64) -> Result<u32, ConfigError> {
    u32::try_from(at_least(name, value, 0)?).map_err(|_| invalid(name, value.to_string()))
}

/// The cluster's settings (several nodes on one Redis and one MySQL/MariaDB database).
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub redis_url: String,
    pub key_prefix: String,
    pub node_ttl: Duration,
}

/// Offline push (`[push]`, set when a webhook is).
#[derive(Debug, Clone)]
pub struct PushSettings {
    pub webhook: String,
    pub secret: Option<String>,
    pub max_batch: usize,
    pub max_delay: Duration,
    pub queue: usize,
    pub timeout: Duration,
    pub retries: u32,
    pub quiet: Duration,
    pub preview_chars: usize,
}

/// Parses an address or network ("127.0.0.1", "10.0.0.0/8", "::1/128").
pub fn parse_net(s: &str) -> Option<ipnet::IpNet> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>().ok().or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

fn parse_nets(name: &str, list: &[String]) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    list.iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| parse_net(s).ok_or_else(|| invalid(name, s.clone())))
        .collect()
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: Vec<String>,
    pub database_url: String,
    pub data_dir: PathBuf,
    /// `None` until the server knows its port (then `http://127.0.0.1:<port>`).
    pub public_url: Option<String>,
    pub node_id: u16,
    pub heartbeat_interval: Duration,
    pub client_timeout: Duration,
    pub outbound_queue_bytes: u64,
    pub default_app: String,
    pub pool_size: u32,
    pub max_batch: usize,
    /// Least time between the starts of two store transactions.
    pub commit_gap: Duration,
    /// How long a request waits for the database.
    pub store_call_timeout: Duration,
    pub wsim: WsimSettings,
    pub gateway: GatewaySettings,
    /// Upload size limits in bytes: audio, image, video.
    pub upload_limits: (u64, u64, u64),
    pub longweb: LongwebSettings,
    pub gru: GruSettings,
    /// `None`: a single node.
    pub cluster: Option<ClusterSettings>,
    /// Who may read `/metrics` and longweb's `/state`.
    pub admin_allow: Vec<ipnet::IpNet>,
    pub push: Option<PushSettings>,
    /// `[console] admin_token` (empty counts as unset).
    pub console_admin_token: Option<String>,
    pub limits: LimitSettings,
    /// The configuration file, re-read on SIGHUP.
    pub config_path: Option<PathBuf>,
}

/// What the command line set: the configuration file, and option values by option.
#[derive(Debug, Default)]
pub struct Flags {
    pub config: Option<PathBuf>,
    pub values: Vec<(OptionInfo, Vec<String>)>,
}

/// The option's default as TOML (absent for options unset by default).
fn default_value(opt: &OptionInfo) -> Option<toml::Value> {
    let defaults = toml::Value::try_from(Config::default()).ok()?;
    let section = if opt.section.is_empty() { Some(&defaults) } else { defaults.get(opt.section) };
    section?.get(opt.key).cloned()
}

/// The option's default as the README and `--help` show it.
pub fn default_text(opt: &OptionInfo) -> Option<String> {
    match default_value(opt)? {
        toml::Value::String(s) => Some(s),
        toml::Value::Array(a) if a.is_empty() => None,
        toml::Value::Array(a) => Some(
            a.iter()
                .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
                .collect::<Vec<_>>()
                .join(","),
        ),
        other => Some(other.to_string()),
    }
}

/// The command line: `--config` and a flag for every option declared with one.
pub fn command() -> Command {
    let mut cmd = Command::new("wsim")
        .version(env!("CARGO_PKG_VERSION"))
        .about(
            "wsim: an instant-messaging server (wsim /entry and group API, gateway /notify and \
             conversations, longweb push, Gru Socket.IO, media uploads)",
        )
        .after_help(
            "Every option can also be set in the TOML file (see config/wsim.example.toml) and by its \
             environment variable WSIM_<SECTION>_<KEY>; flags > environment > file > defaults.",
        )
        .arg(
            Arg::new("config")
                .long("config")
                .value_name("FILE")
                .help("TOML configuration file [env: WSIM_CONFIG]"),
        );
    for opt in options::all() {
        let Some(flag) = opt.flag else { continue };
        let default = default_text(&opt).map(|d| format!(" [default: {d}]")).unwrap_or_default();
        let mut arg = Arg::new(opt.path())
            .long(flag)
            .value_name(flag.rsplit('-').next().unwrap_or(flag).to_uppercase())
            .help(format!("{} [env: {}]{default}", opt.help_line(), opt.env()));
        match default_value(&opt) {
            Some(toml::Value::Array(_)) => arg = arg.action(ArgAction::Append),
            Some(toml::Value::Integer(_)) => arg = arg.allow_negative_numbers(true),
            _ => {}
        }
        cmd = cmd.arg(arg);
    }
    cmd
}

impl Flags {
    /// Parses a command line (the program name first).
    pub fn parse_from<I, T>(args: I) -> Result<Flags, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let matches = command().try_get_matches_from(args)?;
        let mut flags =
            Flags { config: matches.get_one::<String>("config").map(PathBuf::from), values: Vec::new() };
        for opt in options::all() {
            if opt.flag.is_none() {
                continue;
            }
            if let Some(values) = matches.get_many::<String>(&opt.path()) {
                flags.values.push((opt, values.cloned().collect()));
            }
        }
        Ok(flags)
    }
}

/// Puts `value` at the option's place in `table`.
fn set(table: &mut toml::Table, opt: &OptionInfo, value: toml::Value) {
    let section = if opt.section.is_empty() {
        table
    } else {
        let entry = table.entry(opt.section).or_insert_with(|| toml::Value::Table(Default::default()));
        if !entry.is_table() {
            *entry = toml::Value::Table(Default::default());
        }
        match entry {
            toml::Value::Table(t) => t,
            _ => return,
        }
    };
    section.insert(opt.key.to_string(), value);
}

/// An option's value given as text (environment or flags), typed as its default is; `source` names
/// where it came from, for errors. Lists from the environment are comma-separated.
fn typed(
    opt: &OptionInfo,
    source: &str,
    texts: &[String],
    from_env: bool,
) -> Result<toml::Value, ConfigError> {
    let last = texts.last().map(|t| t.trim().to_string()).unwrap_or_default();
    Ok(match default_value(opt) {
        Some(toml::Value::Array(_)) => {
            let items: Vec<toml::Value> = texts
                .iter()
                .flat_map(
                    |t| if from_env { t.split(',').map(str::to_string).collect() } else { vec![t.clone()] },
                )
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .map(toml::Value::String)
                .collect();
            toml::Value::Array(items)
        }
        Some(toml::Value::Integer(_)) => toml::Value::Integer(
            last.parse().map_err(|_| invalid(source, format!("{last:?} (a whole number)")))?,
        ),
        Some(toml::Value::Boolean(_)) => toml::Value::Boolean(
            last.parse().map_err(|_| invalid(source, format!("{last:?} (true or false)")))?,
        ),
        _ => toml::Value::String(last),
    })
}

impl Settings {
    /// Resolves flags, environment (through `env`), file and defaults.
    pub fn resolve(flags: Flags, env: &dyn Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let path =
            flags.config.clone().or_else(|| env("WSIM_CONFIG").filter(|s| !s.is_empty()).map(PathBuf::from));
        let file = match &path {
            Some(p) => Self::read_table(p)?,
            None => toml::Table::new(),
        };
        let mut s = Self::merge(&flags, env, file)?;
        s.config_path = path;
        Ok(s)
    }

    /// A configuration file's table, checked against the declared options.
    fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.into(), e))?;
        let table: toml::Table =
            toml::from_str(&text).map_err(|e| ConfigError::Parse(path.into(), e.to_string()))?;
        Config::deserialize(toml::Value::Table(table.clone()))
            .map_err(|e| ConfigError::Parse(path.into(), e.to_string()))?;
        Ok(table)
    }

    /// A configuration file alone (the SIGHUP reload).
    pub fn read_file(path: &Path) -> Result<Config, ConfigError> {
        let table = Self::read_table(path)?;
        Config::deserialize(toml::Value::Table(table))
            .map_err(|e| ConfigError::Parse(path.into(), e.to_string()))
    }

    /// Layers flags over the environment over `file` over the defaults, and resolves the result.
    pub fn merge(
        flags: &Flags,
        env: &dyn Fn(&str) -> Option<String>,
        file: toml::Table,
    ) -> Result<Settings, ConfigError> {
        let mut table = file;
        for opt in options::all() {
            let name = opt.env();
            if let Some(v) = env(&name).filter(|v| !v.trim().is_empty()) {
                set(&mut table, &opt, typed(&opt, &name, &[v], true)?);
            }
        }
        for (opt, values) in &flags.values {
            let flag = format!("--{}", opt.flag.unwrap_or(opt.key));
            set(&mut table, opt, typed(opt, &flag, values, false)?);
        }
        let config = Config::deserialize(toml::Value::Table(table))
            .map_err(|e| ConfigError::Invalid("configuration".into(), e.to_string()))?;
        Self::from_config(config)
    }

    /// Checks the values and resolves what depends on others.
    pub fn from_config(c: Config) -> Result<Settings, ConfigError> {
        if c.listen.is_empty() {
            return Err(invalid("listen", "no address"));
        }
        let data_dir = PathBuf::from(&c.data_dir);
        let database_url = c
            .database_url
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("wsim.db").display()));
        let public_url = c.public_url.filter(|u| !u.is_empty()).map(|u| u.trim_end_matches('/').to_string());
        let max_node = i64::from(crate::domain::ids::MAX_NODE);
        if !(0..=max_node).contains(&c.node_id) {
            return Err(invalid("node_id", format!("{} (0-{max_node})", c.node_id)));
        }
        let node_id = u16::try_from(c.node_id).map_err(|_| invalid("node_id", c.node_id.to_string()))?;
        let heartbeat = at_least("heartbeat_interval", c.heartbeat_interval, 1)?;
        let timeout = at_least("client_timeout", c.client_timeout, 1)?;
        let queue_kib = at_least("outbound_queue_kib", c.outbound_queue_kib, 64)?;
        if !crate::domain::message::valid_id(&c.default_app) {
            return Err(invalid("default_app", c.default_app));
        }
        if c.wsim.ok_code < 0 {
            return Err(invalid("wsim.ok_code", format!("{} (errors use negative codes)", c.wsim.ok_code)));
        }
        let gateway = GatewaySettings {
            inner_allow: parse_nets("gateway.inner_allow", &c.gateway.inner_allow)?,
            jwt_key: c.gateway.jwt_key.clone().unwrap_or_default(),
            token_ttl: Duration::from_secs(at_least("gateway.token_ttl_secs", c.gateway.token_ttl_secs, 1)?),
            poll_timeout: Duration::from_secs(at_least(
                "gateway.poll_timeout_secs",
                c.gateway.poll_timeout_secs,
                1,
            )?),
        };
        let cluster = match c.cluster.redis_url.clone().filter(|u| !u.is_empty()) {
            None => None,
            Some(redis_url) => {
                if !redis_url.starts_with("redis://") {
                    return Err(invalid("redis_url", format!("{redis_url} (expected redis://…)")));
                }
                if database_url.starts_with("sqlite://") {
                    return Err(invalid(
                        "redis_url",
                        "a cluster shares one MySQL/MariaDB database (--database-url mysql://…); \
                         SQLite serves a single node",
                    ));
                }
                let key_prefix = c.cluster.key_prefix.clone();
                if key_prefix.is_empty() || key_prefix.chars().any(|ch| ch.is_whitespace() || ch.is_control())
                {
                    return Err(invalid("cluster.key_prefix", key_prefix));
                }
                let ttl = at_least("cluster.node_ttl_secs", c.cluster.node_ttl_secs, 2)?;
                Some(ClusterSettings { redis_url, key_prefix, node_ttl: Duration::from_secs(ttl) })
            }
        };
        let push = match c.push.webhook.clone().filter(|u| !u.trim().is_empty()) {
            None => None,
            Some(webhook) => {
                if !(webhook.starts_with("http://") || webhook.starts_with("https://")) {
                    return Err(invalid("push.webhook", format!("{webhook} (expected http(s)://…)")));
                }
                let p = &c.push;
                let count = |name: &str, v: i64, min: i64| {
                    at_least(name, v, min).map(|n| usize::try_from(n).unwrap_or(usize::MAX))
                };
                Some(PushSettings {
                    webhook,
                    secret: p.secret.clone().filter(|s| !s.is_empty()),
                    max_batch: count("push.max_batch", p.max_batch, 1)?,
                    max_delay: Duration::from_millis(at_least("push.max_delay_ms", p.max_delay_ms, 0)?),
                    queue: count("push.queue", p.queue, 1)?,
                    timeout: Duration::from_secs(at_least("push.timeout_secs", p.timeout_secs, 1)?),
                    retries: u32::try_from(at_least("push.retries", p.retries, 0)?).unwrap_or(u32::MAX),
                    quiet: Duration::from_secs(at_least("push.quiet_secs", p.quiet_secs, 0)?),
                    preview_chars: match count("push.preview_chars", p.preview_chars, 1)? {
                        n if n > 1000 => {
                            return Err(invalid("push.preview_chars", format!("{n} (at most 1000)")))
                        }
                        n => n,
                    },
                })
            }
        };
        let pool_size = at_least("store.pool_size", c.store.pool_size, 1)?;
        let max_batch = at_least("store.max_batch", c.store.max_batch, 1)?;
        let avatar_kib = at_least("wsim.avatar_max_kib", c.wsim.avatar_max_kib, 1)?;
        let mib = |name: &str, v: i64| at_least(name, v, 1).map(|m| m << 20);
        Ok(Settings {
            listen: c.listen,
            database_url,
            data_dir,
            public_url,
            node_id,
            heartbeat_interval: Duration::from_secs(heartbeat),
            client_timeout: Duration::from_secs(timeout),
            outbound_queue_bytes: queue_kib * 1024,
            default_app: c.default_app,
            store_call_timeout: Duration::from_secs(at_least(
                "store.call_timeout_secs",
                c.store.call_timeout_secs,
                1,
            )?),
            pool_size: u32::try_from(pool_size)
                .map_err(|_| invalid("store.pool_size", pool_size.to_string()))?,
            max_batch: usize::try_from(max_batch)
                .map_err(|_| invalid("store.max_batch", max_batch.to_string()))?,
            commit_gap: Duration::from_micros(
                u64::try_from(c.store.commit_gap_us)
                    .ok()
                    .filter(|&us| us <= 1_000_000)
                    .ok_or_else(|| invalid("store.commit_gap_us", c.store.commit_gap_us.to_string()))?,
            ),
            wsim: WsimSettings {
                ok_code: c.wsim.ok_code,
                default_avatar: c.wsim.default_avatar.unwrap_or_default(),
                default_group_snap: c.wsim.default_group_snap.unwrap_or_default(),
                avatar_fetch_timeout: Duration::from_secs(at_least(
                    "wsim.avatar_fetch_timeout_secs",
                    c.wsim.avatar_fetch_timeout_secs,
                    1,
                )?),
                avatar_max_bytes: usize::try_from(avatar_kib * 1024)
                    .map_err(|_| invalid("wsim.avatar_max_kib", avatar_kib.to_string()))?,
                avatar_fetch_allow: {
                    let bad = c.wsim.avatar_fetch_allow.iter().find(|o| {
                        !(o.starts_with("http://") || o.starts_with("https://"))
                            || o.trim_end_matches('/').matches('/').count() != 2
                    });
                    if let Some(bad) = bad {
                        return Err(invalid(
                            "wsim.avatar_fetch_allow",
                            format!("{bad} (scheme://host[:port])"),
                        ));
                    }
                    c.wsim.avatar_fetch_allow.clone()
                },
                auth: WsimAuthSettings {
                    mode: match c.wsim.auth.as_str() {
                        "off" => WsimAuthMode::Off,
                        "token" => WsimAuthMode::Token,
                        "callback" => WsimAuthMode::Callback(
                            c.wsim
                                .auth_callback
                                .clone()
                                .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
                                .ok_or_else(|| {
                                    invalid("wsim.auth_callback", "an http(s) URL is required for callback")
                                })?,
                        ),
                        other => {
                            return Err(invalid("wsim.auth", format!("{other} (off, token or callback)")))
                        }
                    },
                    secret: c.wsim.auth_secret.clone().unwrap_or_default(),
                    token_ttl: Duration::from_secs(at_least(
                        "wsim.auth_token_ttl_secs",
                        c.wsim.auth_token_ttl_secs,
                        1,
                    )?),
                    callback_timeout: Duration::from_secs(at_least(
                        "wsim.auth_callback_timeout_secs",
                        c.wsim.auth_callback_timeout_secs,
                        1,
                    )?),
                    callback_concurrency: at_least(
                        "wsim.auth_callback_concurrency",
                        c.wsim.auth_callback_concurrency,
                        1,
                    )? as usize,
                    admin_token: c.wsim.admin_token.clone().filter(|t| !t.is_empty()),
                },
            },
            gateway,
            upload_limits: (
                mib("uploads.max_audio_mib", c.uploads.max_audio_mib)?,
                mib("uploads.max_image_mib", c.uploads.max_image_mib)?,
                mib("uploads.max_video_mib", c.uploads.max_video_mib)?,
            ),
            longweb: LongwebSettings::from_config(&c.longweb)?,
            gru: GruSettings::from_config(&c.gru)?,
            cluster,
            admin_allow: parse_nets("admin.allow", &c.admin.allow)?,
            push,
            console_admin_token: c.console.admin_token.clone().filter(|t| !t.trim().is_empty()),
            limits: LimitSettings {
                exempt: parse_nets("limits.exempt", &c.limits.exempt)?,
                connections_per_ip: at_least("limits.connections_per_ip", c.limits.connections_per_ip, 0)?
                    as usize,
                keep_alive: Duration::from_secs(at_least(
                    "limits.keep_alive_secs",
                    c.limits.keep_alive_secs,
                    1,
                )?),
                body_min_bytes_per_sec: at_least(
                    "limits.body_min_bytes_per_sec",
                    c.limits.body_min_bytes_per_sec,
                    0,
                )?,
                body_grace: Duration::from_secs(at_least(
                    "limits.body_grace_secs",
                    c.limits.body_grace_secs,
                    1,
                )?),
                http_requests_per_ip_per_sec: per(
                    "limits.http_requests_per_ip_per_sec",
                    c.limits.http_requests_per_ip_per_sec,
                )?,
                messages_per_conn_per_sec: per(
                    "limits.messages_per_conn_per_sec",
                    c.limits.messages_per_conn_per_sec,
                )?,
                uploads_per_min: per("limits.uploads_per_min", c.limits.uploads_per_min)?,
            },
            config_path: None,
        })
    }

    /// Reads the real command line and process environment; `--help` and `--version` print and exit.
    pub fn from_process() -> Result<Settings, ConfigError> {
        let flags = match Flags::parse_from(std::env::args_os()) {
            Ok(f) => f,
            Err(e) => e.exit(),
        };
        Self::resolve(flags, &|k| std::env::var(k).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    fn file(text: &str) -> toml::Table {
        toml::from_str(text).expect("valid toml")
    }

    fn flags(args: &[&str]) -> Flags {
        Flags::parse_from(std::iter::once("wsim").chain(args.iter().copied())).expect("flags")
    }

    fn merge(args: &[&str], env: &[(&str, &str)], text: &str) -> Result<Settings, ConfigError> {
        Settings::merge(&flags(args), &env_of(env), file(text))
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let s = merge(&[], &[], "").expect("settings");
        assert_eq!(s.listen, vec!["0.0.0.0:6060"]);
        assert_eq!(s.database_url, "sqlite://./data/wsim.db");
        assert_eq!(s.heartbeat_interval, Duration::from_secs(30));
        assert_eq!(s.client_timeout, Duration::from_secs(90));
        assert_eq!(s.wsim.ok_code, 1);
        assert_eq!(s.node_id, 1);
        assert_eq!((s.pool_size, s.max_batch, s.outbound_queue_bytes), (8, 1000, 1024 * 1024));
        assert!(s.public_url.is_none());
        assert!(s.cluster.is_none());
    }

    #[test]
    fn flags_beat_env_beat_file_beat_defaults() {
        let f = "listen = [\"127.0.0.1:1\"]\nnode_id = 3\nheartbeat_interval = 7\nclient_timeout = 8\n\
                 [wsim]\nok_code = 5\n[store]\npool_size = 2\n";
        let env = [
            ("WSIM_LISTEN", "127.0.0.1:2, 127.0.0.1:3"),
            ("WSIM_NODE_ID", "4"),
            ("WSIM_OK_CODE", "0"),
            ("WSIM_STORE_POOL_SIZE", "5"),
        ];
        let s = merge(&["--node-id", "9"], &env, f).expect("settings");
        assert_eq!(s.node_id, 9, "flag wins");
        assert_eq!(s.listen, vec!["127.0.0.1:2", "127.0.0.1:3"], "env beats file");
        assert_eq!(s.wsim.ok_code, 0, "env beats file");
        assert_eq!(s.pool_size, 5, "every option has its environment variable");
        assert_eq!(s.heartbeat_interval, Duration::from_secs(7), "file beats default");
        assert_eq!(s.client_timeout, Duration::from_secs(8));
    }

    #[test]
    fn flags_parse_from_the_command_line() {
        let args = [
            "--listen",
            "127.0.0.1:1",
            "--listen",
            "127.0.0.1:2",
            "--database-url",
            "mysql://root@127.0.0.1/test",
            "--ok-code",
            "0",
            "--public-url",
            "http://im.example.com/",
        ];
        let s = merge(&args, &[("WSIM_DATABASE_URL", "sqlite://x.db")], "").expect("settings");
        assert_eq!(s.listen, vec!["127.0.0.1:1", "127.0.0.1:2"]);
        assert_eq!(s.database_url, "mysql://root@127.0.0.1/test");
        assert_eq!(s.wsim.ok_code, 0);
        assert_eq!(s.public_url.as_deref(), Some("http://im.example.com"));
        assert!(Flags::parse_from(["wsim", "--no-such-flag"]).is_err());
        let help = command().render_help().to_string();
        assert!(help.contains("--redis-url") && help.contains("[env: WSIM_REDIS_URL]"), "{help}");
    }

    #[test]
    fn invalid_values_are_refused_not_clamped() {
        // (flags, environment, file, the option named in the error)
        type Row<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str, &'a str);
        let table: [Row; 16] = [
            (&[], &[("WSIM_NODE_ID", "x")], "", "WSIM_NODE_ID"),
            (&[], &[("WSIM_NODE_ID", "16")], "", "node_id"),
            (&["--node-id", "-1"], &[], "", "node_id"),
            (&["--outbound-queue-kib", "10"], &[], "", "outbound_queue_kib"),
            (&[], &[("WSIM_STORE_POOL_SIZE", "0")], "", "store.pool_size"),
            (&[], &[], "heartbeat_interval = 0\n", "heartbeat_interval"),
            (&[], &[], "[gru]\nping_interval_ms = 50\n", "gru.ping_interval_ms"),
            (&[], &[], "[gru]\nauth_timeout_secs = 0\n", "gru.auth_timeout_secs"),
            (&[], &[], "[longweb]\ncallback_concurrency = 0\n", "longweb.callback_concurrency"),
            (&[], &[], "[wsim]\navatar_max_kib = 0\n", "wsim.avatar_max_kib"),
            (&[], &[], "[uploads]\nmax_video_mib = -5\n", "uploads.max_video_mib"),
            (&[], &[], "[gru]\ntoken1_check = \"rot13\"\n", "gru.token1_check"),
            (&["--ok-code", "-1"], &[], "", "wsim.ok_code"),
            (&[], &[], "node_id = \"one\"\n", "node_id"),
            (&[], &[], "[store]\ncommit_gap_us = -1\n", "store.commit_gap_us"),
            (&[], &[], "[store]\ncommit_gap_us = 1000001\n", "store.commit_gap_us"),
        ];
        for (args, env, text, named) in table {
            let err = merge(args, env, text).expect_err(&format!("{args:?} {env:?} {text:?}"));
            assert!(err.to_string().contains(named), "{args:?} {env:?} {text:?}: {err}");
        }
        assert!(toml::from_str::<Config>("nonsense_key = 1").is_err());
        assert!(toml::from_str::<Config>("[gru]\nnonsense = 1").is_err());
    }

    #[test]
    fn gateway_section_and_env() {
        let f = "[gateway]\ninner_allow = [\"10.0.0.0/8\", \"192.168.1.7\"]\ntoken_ttl_secs = 60\n";
        let s = merge(&[], &[], f).expect("settings");
        assert_eq!(s.gateway.inner_allow.len(), 2);
        assert!(s.gateway.inner_allow[1].contains(&"192.168.1.7".parse::<std::net::IpAddr>().expect("ip")));
        assert_eq!(s.gateway.token_ttl, Duration::from_secs(60));
        assert_eq!(s.gateway.poll_timeout, Duration::from_secs(30));
        let env = [("WSIM_GATEWAY_INNER_ALLOW", "::1/128"), ("WSIM_GATEWAY_TOKEN_TTL_SECS", "5")];
        let s = merge(&[], &env, f).expect("settings");
        assert_eq!(s.gateway.inner_allow.len(), 1);
        assert_eq!(s.gateway.token_ttl, Duration::from_secs(5));
        let d = merge(&[], &[], "").expect("defaults");
        let loopback = "127.0.0.1".parse::<std::net::IpAddr>().expect("ip");
        assert!(d.gateway.inner_allow.iter().any(|n| n.contains(&loopback)));
        assert!(merge(&[], &[("WSIM_GATEWAY_INNER_ALLOW", "nonsense")], "").is_err());
    }

    #[test]
    fn longweb_apps_parse() {
        let f = "[longweb]\nallowips = [\"127.0.0.1\", \"10.0.0.0/8\"]\ncallback_timeout_secs = 2\n\
                 [[longweb.apps]]\nappid = \"10000\"\nname = \"demo\"\nauthapi = \"http://127.0.0.1:9000/api/checktoken\"\n\
                 timeout = 20\n[[longweb.apps]]\nappid = \"10001\"\n";
        let s = merge(&[], &[], f).expect("settings");
        assert_eq!(s.longweb.allowips.len(), 2);
        assert_eq!(s.longweb.callback_timeout, Duration::from_secs(2));
        assert_eq!(s.longweb.app("10000").map(|a| a.timeout), Some(20));
        assert_eq!(s.longweb.app("10001").map(|a| (a.timeout, a.authapi.is_none())), Some((30, true)));
        assert!(s.longweb.app("nope").is_none());
        assert!(merge(&[], &[], "[longweb]\nallowips = [\"x\"]\n").is_err());
        assert!(merge(&[], &[], "[[longweb.apps]]\nappid = \"1\"\ntimeout = 0\n").is_err());
    }

    #[test]
    fn options_have_distinct_names_and_environment_variables() {
        let all = options::all();
        let mut envs: Vec<String> = all.iter().map(OptionInfo::env).collect();
        envs.push("WSIM_CONFIG".into());
        let n = envs.len();
        envs.sort();
        envs.dedup();
        assert_eq!(envs.len(), n, "{envs:?}");
        for opt in &all {
            assert!(!opt.help_line().is_empty(), "{} has no help", opt.path());
        }
        let by_env: Vec<(String, String)> =
            all.iter().filter(|o| o.section == "gru").map(|o| (o.path(), o.env())).take(1).collect();
        assert_eq!(by_env, [("gru.nodes".to_string(), "WSIM_GRU_NODES".to_string())]);
    }

    /// The example configuration documents every option (set or commented out, in its section),
    /// and what it sets is the declared default.
    #[test]
    fn the_example_config_documents_every_option_with_its_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/wsim.example.toml");
        let text = std::fs::read_to_string(&path).expect("example config");
        let example = Settings::read_file(&path).expect("example config parses");
        Settings::from_config(example).expect("example config is valid");
        // Which section each line of the file is in.
        let mut section = String::new();
        let mut lines: Vec<(String, String)> = Vec::new();
        for line in text.lines() {
            let t = line.trim();
            if let Some(name) = t.strip_prefix("[[").and_then(|r| r.strip_suffix("]]")) {
                section = name.to_string();
            } else if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
                section = name.to_string();
            }
            lines.push((section.clone(), t.trim_start_matches('#').trim().to_string()));
        }
        let raw: toml::Table = toml::from_str(&text).expect("example config is TOML");
        for opt in options::all() {
            let documented = lines.iter().any(|(s, l)| {
                (s == opt.section && l.starts_with(&format!("{} =", opt.key)))
                    || (s == &opt.path() && l.starts_with(&format!("[[{}]]", opt.path())))
            });
            assert!(documented, "config/wsim.example.toml does not document {}", opt.path());
            let set = if opt.section.is_empty() {
                Some(&raw)
            } else {
                raw.get(opt.section).and_then(|s| s.as_table())
            }
            .and_then(|s| s.get(opt.key));
            // The apps are an example, not a default.
            if let Some(value) = set.filter(|_| opt.key != "apps") {
                assert_eq!(
                    Some(value),
                    default_value(&opt).as_ref(),
                    "{} in the example is not its default",
                    opt.path()
                );
            }
        }
    }

    /// README.md's table of flags matches the declarations: every flag, its variable and default.
    #[test]
    fn the_readme_lists_every_flag_with_its_variable_and_default() {
        let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .expect("README.md");
        for opt in options::all() {
            let Some(flag) = opt.flag else { continue };
            let row = readme
                .lines()
                .find(|l| l.starts_with(&format!("| `--{flag} ")) || l.starts_with(&format!("| `--{flag}`")))
                .unwrap_or_else(|| panic!("README.md has no row for --{flag}"));
            assert!(row.contains(&format!("`{}`", opt.env())), "{row}: not {}", opt.env());
            if let Some(d) = default_text(&opt) {
                assert!(row.contains(&format!("`{d}`")), "{row}: default is {d}");
            }
        }
        assert!(readme.contains("WSIM_<SECTION>_<KEY>"), "README.md explains the other variables");
    }

    #[test]
    fn a_cluster_needs_redis_and_a_shared_database() {
        let s = merge(&[], &[], "").expect("settings");
        assert!(s.cluster.is_none(), "a single node by default");
        let mysql = "database_url = \"mysql://root@127.0.0.1/x\"\n";
        let s = merge(&[], &[("WSIM_REDIS_URL", "redis://127.0.0.1:6379")], mysql).expect("cluster");
        let c = s.cluster.expect("cluster settings");
        assert_eq!((c.key_prefix.as_str(), c.node_ttl), ("wsim", Duration::from_secs(15)));
        let text = format!(
            "{mysql}[cluster]\nredis_url = \"redis://r:1\"\nkey_prefix = \"t1\"\nnode_ttl_secs = 3\n"
        );
        let c = merge(&["--redis-url", "redis://flag:2"], &[], &text)
            .expect("cluster")
            .cluster
            .expect("settings");
        assert_eq!((c.redis_url.as_str(), c.key_prefix.as_str()), ("redis://flag:2", "t1"), "the flag wins");
        for (env, text) in [
            (&[("WSIM_REDIS_URL", "redis://r:1")][..], ""),
            (&[("WSIM_REDIS_URL", "http://r:1")][..], mysql),
            (&[][..], &format!("{mysql}[cluster]\nredis_url = \"redis://r\"\nkey_prefix = \"a b\"\n")[..]),
            (&[][..], &format!("{mysql}[cluster]\nredis_url = \"redis://r\"\nnode_ttl_secs = 1\n")[..]),
        ] {
            assert!(merge(&[], env, text).is_err(), "{env:?} {text}");
        }
        let err = merge(&[], &[("WSIM_REDIS_URL", "redis://r:1")], "").expect_err("sqlite");
        assert!(err.to_string().contains("SQLite serves a single node"), "{err}");
    }

    #[test]
    fn token2_checks() {
        let gru = |text: &str| GruSettings::from_config(&toml::from_str::<GruConfig>(text).expect("toml"));
        assert_eq!(gru("").expect("defaults").token2, Token2Scheme::Hmac);
        let md5 = gru("token2_check = \"md5\"\ntoken2_salt = \"s\"").expect("md5");
        assert_eq!(md5.token2, Token2Scheme::Md5("s".into()));
        assert_eq!(gru("token2_check = \"off\"").expect("off").token2, Token2Scheme::Off);
        assert!(gru("token2_check = \"md5\"").is_err(), "md5 needs its salt");
        assert!(gru("token2_check = \"rot13\"").is_err());
    }
}
