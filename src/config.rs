//! Configuration: command-line flags, then `WSIM_*` environment variables, then a TOML file
//! (`--config`), then defaults — the first that sets a value wins.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

pub const DEFAULT_LISTEN: &str = "0.0.0.0:6060";
pub const DEFAULT_APP: &str = "default";

/// Command-line flags. Each one can also be set by the environment variable named in its help, or
/// in the TOML file given with `--config`.
#[derive(Debug, Default, Parser)]
#[command(
    name = "wsim",
    version,
    about = "wsim: an instant-messaging server (wsim /entry and group API, gateway /notify and conversations, media uploads)"
)]
pub struct Cli {
    /// TOML configuration file [env: WSIM_CONFIG]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on; repeat for several [env: WSIM_LISTEN, comma-separated] [default: 0.0.0.0:6060]
    #[arg(long = "listen", value_name = "ADDR")]
    pub listen: Vec<String>,
    /// Database: sqlite://PATH or mysql://USER:PASS@HOST:PORT/DB [env: WSIM_DATABASE_URL]
    /// [default: sqlite://<data-dir>/wsim.db]
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Directory for the SQLite database and media [env: WSIM_DATA_DIR] [default: ./data]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Base of the URLs the server hands out, e.g. http://im.example.com [env: WSIM_PUBLIC_URL]
    /// [default: http://127.0.0.1:<first listen port>]
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// This node's id (0-15), part of every message id [env: WSIM_NODE_ID] [default: 1]
    #[arg(long, value_name = "N")]
    pub node_id: Option<u16>,
    /// Seconds between server heartbeats on live connections [env: WSIM_HEARTBEAT_INTERVAL] [default: 30]
    #[arg(long, value_name = "SECS")]
    pub heartbeat_interval: Option<u64>,
    /// Seconds of silence after which a peer is dropped [env: WSIM_CLIENT_TIMEOUT] [default: 90]
    #[arg(long, value_name = "SECS")]
    pub client_timeout: Option<u64>,
    /// Success code of the wsim group API (1 as documented, 0 for the deployed Android clients)
    /// [env: WSIM_OK_CODE] [default: 1]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub ok_code: Option<i64>,
    /// Unsent bytes a connection may hold before it is dropped as a slow reader
    /// [env: WSIM_OUTBOUND_QUEUE_KIB] [default: 1024]
    #[arg(long, value_name = "KIB")]
    pub outbound_queue_kib: Option<u64>,
    /// Redis of a cluster of nodes (redis://HOST:PORT/DB); unset: a single node [env: WSIM_REDIS_URL]
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<Vec<String>>,
    pub database_url: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub public_url: Option<String>,
    pub node_id: Option<u16>,
    pub heartbeat_interval: Option<u64>,
    pub client_timeout: Option<u64>,
    pub outbound_queue_kib: Option<u64>,
    pub default_app: Option<String>,
    #[serde(default)]
    pub store: StoreFile,
    #[serde(default)]
    pub wsim: WsimFile,
    #[serde(default)]
    pub gateway: GatewayFile,
    #[serde(default)]
    pub uploads: UploadsFile,
    #[serde(default)]
    pub longweb: LongwebFile,
    #[serde(default)]
    pub gru: GruFile,
    #[serde(default)]
    pub cluster: ClusterFile,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// Redis shared by the nodes; unset: a single node.
    pub redis_url: Option<String>,
    /// Every key and channel starts with it (default `wsim`), so tenants and tests can share a Redis.
    pub key_prefix: Option<String>,
    /// How long a node that stops refreshing its entry still counts as alive (default 15 s).
    pub node_ttl_secs: Option<u64>,
}

/// The cluster's settings (several nodes on one Redis and one MySQL/MariaDB database).
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub redis_url: String,
    pub key_prefix: String,
    pub node_ttl: Duration,
}

/// A node of the Gru cluster, as `/ticket` hands it out.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct GruNode {
    pub name: String,
    pub addr: String,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GruFile {
    pub nodes: Option<Vec<GruNode>>,
    pub token1_check: Option<String>,
    pub token1_salt: Option<String>,
    pub token1_callback: Option<String>,
    pub token2_secret: Option<String>,
    pub token2_ttl_secs: Option<u64>,
    /// `hmac` (default), `md5` (the original's, with `token2_salt`) or `off`.
    pub token2_check: Option<String>,
    pub token2_salt: Option<String>,
    /// Engine.IO handshakes a client address may open per second (a burst of three seconds' worth
    /// is allowed); 0: no limit.
    pub handshakes_per_ip_per_sec: Option<u32>,
    /// An extra address serving only `/ticket` (the original used port 30000).
    pub ticket_listen: Option<String>,
    /// Engine.IO heartbeat: how often the ping goes (v4: from the server, v3: from the client).
    pub ping_interval_ms: Option<u64>,
    /// Engine.IO heartbeat: how long past the interval a silent session is kept.
    pub ping_timeout_ms: Option<u64>,
    /// How long a socket may stay connected without a successful `auth`.
    pub auth_timeout_secs: Option<u64>,
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
    pub fn from_file(f: &GruFile) -> Result<GruSettings, ConfigError> {
        let token1 = match f.token1_check.as_deref().unwrap_or("off") {
            "off" => Token1Check::Off,
            "md5" => Token1Check::Md5(
                f.token1_salt
                    .clone()
                    .ok_or_else(|| ConfigError::Invalid("gru.token1_salt", "required for md5".into()))?,
            ),
            "callback" => Token1Check::Callback(f.token1_callback.clone().ok_or_else(|| {
                ConfigError::Invalid("gru.token1_callback", "required for callback".into())
            })?),
            other => return Err(ConfigError::Invalid("gru.token1_check", other.to_string())),
        };
        let token2 = match f.token2_check.as_deref().unwrap_or("hmac") {
            "hmac" => Token2Scheme::Hmac,
            "md5" => Token2Scheme::Md5(
                f.token2_salt
                    .clone()
                    .ok_or_else(|| ConfigError::Invalid("gru.token2_salt", "required for md5".into()))?,
            ),
            "off" => Token2Scheme::Off,
            other => return Err(ConfigError::Invalid("gru.token2_check", other.to_string())),
        };
        Ok(GruSettings {
            nodes: f.nodes.clone(),
            token1,
            token2_secret: f.token2_secret.clone().unwrap_or_default(),
            token2_ttl: Duration::from_secs(f.token2_ttl_secs.unwrap_or(86_400).max(1)),
            token2,
            handshakes_per_ip_per_sec: f.handshakes_per_ip_per_sec.unwrap_or(20),
            ticket_listen: f.ticket_listen.clone(),
            ping_interval: Duration::from_millis(f.ping_interval_ms.unwrap_or(25_000).max(100)),
            ping_timeout: Duration::from_millis(f.ping_timeout_ms.unwrap_or(20_000).max(100)),
            auth_timeout: Duration::from_secs(f.auth_timeout_secs.unwrap_or(30).max(1)),
        })
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongwebFile {
    pub allowips: Option<Vec<String>>,
    pub callback_timeout_secs: Option<u64>,
    pub callback_concurrency: Option<usize>,
    #[serde(default)]
    pub apps: Vec<LongwebApp>,
}

/// One business app of the longweb push framework.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
    pub fn from_file(f: &LongwebFile) -> Result<LongwebSettings, ConfigError> {
        let allow = f.allowips.clone().unwrap_or_else(|| vec!["127.0.0.1".into(), "::1".into()]);
        let allowips = allow
            .iter()
            .map(|s| parse_net(s).ok_or_else(|| ConfigError::Invalid("longweb.allowips", s.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        for app in &f.apps {
            if !crate::domain::message::valid_id(&app.appid) {
                return Err(ConfigError::Invalid("longweb.apps.appid", app.appid.clone()));
            }
        }
        Ok(LongwebSettings {
            allowips,
            callback_timeout: Duration::from_secs(f.callback_timeout_secs.unwrap_or(5).max(1)),
            callback_concurrency: f.callback_concurrency.unwrap_or(16).max(1),
            apps: f.apps.clone(),
        })
    }

    pub fn app(&self, appid: &str) -> Option<&LongwebApp> {
        self.apps.iter().find(|a| a.appid == appid)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadsFile {
    pub max_audio_mib: Option<u64>,
    pub max_image_mib: Option<u64>,
    pub max_video_mib: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    pub inner_allow: Option<Vec<String>>,
    pub jwt_key: Option<String>,
    pub token_ttl_secs: Option<u64>,
    pub poll_timeout_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreFile {
    pub pool_size: Option<u32>,
    pub max_batch: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WsimFile {
    pub ok_code: Option<i64>,
    pub avatar_fetch_timeout_secs: Option<u64>,
    pub avatar_max_kib: Option<usize>,
    pub default_avatar: Option<String>,
    pub default_group_snap: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("bad configuration file {0}: {1}")]
    Parse(PathBuf, toml::de::Error),
    #[error("bad value for {0}: {1}")]
    Invalid(&'static str, String),
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

/// Parses an address or network ("127.0.0.1", "10.0.0.0/8", "::1/128").
pub fn parse_net(s: &str) -> Option<ipnet::IpNet> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>().ok().or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
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
    pub wsim: WsimSettings,
    pub gateway: GatewaySettings,
    /// Upload size limits in bytes: audio, image, video.
    pub upload_limits: (u64, u64, u64),
    pub longweb: LongwebSettings,
    pub gru: GruSettings,
    /// `None`: a single node.
    pub cluster: Option<ClusterSettings>,
    /// The configuration file, re-read on SIGHUP.
    pub config_path: Option<PathBuf>,
}

fn env_parse<T: std::str::FromStr>(
    env: &dyn Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<Option<T>, ConfigError> {
    match env(name) {
        None => Ok(None),
        Some(v) if v.trim().is_empty() => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| ConfigError::Invalid(name, v)),
    }
}

impl Settings {
    /// Resolves flags, environment (through `env`), file and defaults.
    pub fn resolve(cli: Cli, env: &dyn Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let path =
            cli.config.clone().or_else(|| env("WSIM_CONFIG").filter(|s| !s.is_empty()).map(PathBuf::from));
        let file = match &path {
            Some(p) => Self::read_file(p)?,
            None => FileConfig::default(),
        };
        let mut s = Self::merge(cli, env, file)?;
        s.config_path = path;
        Ok(s)
    }

    pub fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.into(), e))?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse(path.into(), e))
    }

    pub fn merge(
        cli: Cli,
        env: &dyn Fn(&str) -> Option<String>,
        file: FileConfig,
    ) -> Result<Settings, ConfigError> {
        let listen = if !cli.listen.is_empty() {
            cli.listen
        } else if let Some(v) = env("WSIM_LISTEN").filter(|v| !v.trim().is_empty()) {
            v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
        } else {
            file.listen.unwrap_or_else(|| vec![DEFAULT_LISTEN.to_string()])
        };
        let data_dir = cli
            .data_dir
            .or(env_parse(env, "WSIM_DATA_DIR")?)
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./data"));
        let database_url = cli
            .database_url
            .or(env_parse(env, "WSIM_DATABASE_URL")?)
            .or(file.database_url)
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("wsim.db").display()));
        let public_url = cli
            .public_url
            .or(env_parse(env, "WSIM_PUBLIC_URL")?)
            .or(file.public_url)
            .map(|u: String| u.trim_end_matches('/').to_string());
        let node_id = cli.node_id.or(env_parse(env, "WSIM_NODE_ID")?).or(file.node_id).unwrap_or(1);
        if node_id > crate::domain::ids::MAX_NODE {
            return Err(ConfigError::Invalid(
                "node_id",
                format!("{node_id} (0-{})", crate::domain::ids::MAX_NODE),
            ));
        }
        let heartbeat = cli
            .heartbeat_interval
            .or(env_parse(env, "WSIM_HEARTBEAT_INTERVAL")?)
            .or(file.heartbeat_interval)
            .unwrap_or(30);
        let timeout = cli
            .client_timeout
            .or(env_parse(env, "WSIM_CLIENT_TIMEOUT")?)
            .or(file.client_timeout)
            .unwrap_or(90);
        if heartbeat == 0 || timeout == 0 {
            return Err(ConfigError::Invalid("heartbeat_interval/client_timeout", "must be > 0".into()));
        }
        let queue_kib = cli
            .outbound_queue_kib
            .or(env_parse(env, "WSIM_OUTBOUND_QUEUE_KIB")?)
            .or(file.outbound_queue_kib)
            .unwrap_or(1024)
            .max(64);
        let ok_code = cli.ok_code.or(env_parse(env, "WSIM_OK_CODE")?).or(file.wsim.ok_code).unwrap_or(1);
        if ok_code < 0 {
            return Err(ConfigError::Invalid("ok_code", format!("{ok_code} (errors use negative codes)")));
        }
        let inner_allow: Vec<String> = match env("WSIM_GATEWAY_INNER_ALLOW").filter(|v| !v.trim().is_empty())
        {
            Some(v) => v.split(',').map(str::to_string).collect(),
            None => file.gateway.inner_allow.unwrap_or_else(|| vec!["127.0.0.0/8".into(), "::1/128".into()]),
        };
        let inner_allow = inner_allow
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| parse_net(s).ok_or_else(|| ConfigError::Invalid("gateway.inner_allow", s.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        let gateway = GatewaySettings {
            inner_allow,
            jwt_key: env_parse(env, "WSIM_GATEWAY_JWT_KEY")?.or(file.gateway.jwt_key).unwrap_or_default(),
            token_ttl: Duration::from_secs(
                env_parse(env, "WSIM_GATEWAY_TOKEN_TTL_SECS")?
                    .or(file.gateway.token_ttl_secs)
                    .unwrap_or(86_400),
            ),
            poll_timeout: Duration::from_secs(
                env_parse(env, "WSIM_GATEWAY_POLL_TIMEOUT_SECS")?
                    .or(file.gateway.poll_timeout_secs)
                    .unwrap_or(30),
            ),
        };
        let redis_url = cli
            .redis_url
            .or(env_parse(env, "WSIM_REDIS_URL")?)
            .or(file.cluster.redis_url)
            .filter(|u| !u.is_empty());
        let cluster = match redis_url {
            None => None,
            Some(redis_url) => {
                if !redis_url.starts_with("redis://") {
                    return Err(ConfigError::Invalid(
                        "redis_url",
                        format!("{redis_url} (expected redis://…)"),
                    ));
                }
                if database_url.starts_with("sqlite://") {
                    return Err(ConfigError::Invalid(
                        "redis_url",
                        "a cluster shares one MySQL/MariaDB database (--database-url mysql://…); \
                         SQLite serves a single node"
                            .into(),
                    ));
                }
                let key_prefix = file.cluster.key_prefix.clone().unwrap_or_else(|| "wsim".into());
                if key_prefix.is_empty() || key_prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(ConfigError::Invalid("cluster.key_prefix", key_prefix));
                }
                let ttl = file.cluster.node_ttl_secs.unwrap_or(15);
                if ttl < 2 {
                    return Err(ConfigError::Invalid("cluster.node_ttl_secs", format!("{ttl} (at least 2)")));
                }
                Some(ClusterSettings { redis_url, key_prefix, node_ttl: Duration::from_secs(ttl) })
            }
        };
        let default_app = file.default_app.unwrap_or_else(|| DEFAULT_APP.to_string());
        if !crate::domain::message::valid_id(&default_app) {
            return Err(ConfigError::Invalid("default_app", default_app));
        }
        Ok(Settings {
            listen,
            database_url,
            data_dir,
            public_url,
            node_id,
            heartbeat_interval: Duration::from_secs(heartbeat),
            client_timeout: Duration::from_secs(timeout),
            outbound_queue_bytes: queue_kib * 1024,
            default_app,
            pool_size: file.store.pool_size.unwrap_or(8),
            max_batch: file.store.max_batch.unwrap_or(1000),
            wsim: WsimSettings {
                ok_code,
                default_avatar: file.wsim.default_avatar.unwrap_or_default(),
                default_group_snap: file.wsim.default_group_snap.unwrap_or_default(),
                avatar_fetch_timeout: Duration::from_secs(
                    file.wsim.avatar_fetch_timeout_secs.unwrap_or(3).max(1),
                ),
                avatar_max_bytes: file.wsim.avatar_max_kib.unwrap_or(2048).max(1) * 1024,
            },
            gateway,
            longweb: LongwebSettings::from_file(&file.longweb)?,
            gru: GruSettings::from_file(&file.gru)?,
            cluster,
            config_path: None,
            upload_limits: (
                file.uploads.max_audio_mib.unwrap_or(20) << 20,
                file.uploads.max_image_mib.unwrap_or(20) << 20,
                file.uploads.max_video_mib.unwrap_or(200) << 20,
            ),
        })
    }

    /// Reads the real process environment.
    pub fn from_process() -> Result<Settings, ConfigError> {
        Self::resolve(Cli::parse(), &|k| std::env::var(k).ok())
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

    fn file(text: &str) -> FileConfig {
        toml::from_str(text).expect("valid toml")
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let s = Settings::merge(Cli::default(), &env_of(&[]), FileConfig::default()).expect("settings");
        assert_eq!(s.listen, vec!["0.0.0.0:6060"]);
        assert_eq!(s.database_url, "sqlite://./data/wsim.db");
        assert_eq!(s.heartbeat_interval, Duration::from_secs(30));
        assert_eq!(s.client_timeout, Duration::from_secs(90));
        assert_eq!(s.wsim.ok_code, 1);
        assert_eq!(s.node_id, 1);
        assert!(s.public_url.is_none());
    }

    #[test]
    fn flags_beat_env_beat_file_beat_defaults() {
        let f = "listen = [\"127.0.0.1:1\"]\nnode_id = 3\nheartbeat_interval = 7\nclient_timeout = 8\n\
                 [wsim]\nok_code = 5\n";
        let env = env_of(&[
            ("WSIM_LISTEN", "127.0.0.1:2,127.0.0.1:3"),
            ("WSIM_NODE_ID", "4"),
            ("WSIM_OK_CODE", "0"),
        ]);
        let cli = Cli { node_id: Some(9), ..Cli::default() };
        let s = Settings::merge(cli, &env, file(f)).expect("settings");
        assert_eq!(s.node_id, 9, "flag wins");
        assert_eq!(s.listen, vec!["127.0.0.1:2", "127.0.0.1:3"], "env beats file");
        assert_eq!(s.wsim.ok_code, 0, "env beats file");
        assert_eq!(s.heartbeat_interval, Duration::from_secs(7), "file beats default");
        assert_eq!(s.client_timeout, Duration::from_secs(8));
    }

    #[test]
    fn flags_parse_from_the_command_line() {
        let cli = Cli::try_parse_from([
            "wsim",
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
        ])
        .expect("flags");
        let s =
            Settings::merge(cli, &env_of(&[("WSIM_DATABASE_URL", "sqlite://x.db")]), FileConfig::default())
                .expect("settings");
        assert_eq!(s.listen.len(), 2);
        assert_eq!(s.database_url, "mysql://root@127.0.0.1/test");
        assert_eq!(s.wsim.ok_code, 0);
        assert_eq!(s.public_url.as_deref(), Some("http://im.example.com"));
    }

    #[test]
    fn bad_values_are_reported() {
        assert!(Settings::merge(Cli::default(), &env_of(&[("WSIM_NODE_ID", "x")]), FileConfig::default())
            .is_err());
        assert!(Settings::merge(Cli::default(), &env_of(&[("WSIM_NODE_ID", "16")]), FileConfig::default())
            .is_err());
        assert!(toml::from_str::<FileConfig>("nonsense_key = 1").is_err());
    }

    #[test]
    fn gateway_section_and_env() {
        let f = "[gateway]\ninner_allow = [\"10.0.0.0/8\", \"192.168.1.7\"]\ntoken_ttl_secs = 60\n";
        let s = Settings::merge(Cli::default(), &env_of(&[]), file(f)).expect("settings");
        assert_eq!(s.gateway.inner_allow.len(), 2);
        assert!(s.gateway.inner_allow[1].contains(&"192.168.1.7".parse::<std::net::IpAddr>().expect("ip")));
        assert_eq!(s.gateway.token_ttl, Duration::from_secs(60));
        assert_eq!(s.gateway.poll_timeout, Duration::from_secs(30));
        let env = env_of(&[("WSIM_GATEWAY_INNER_ALLOW", "::1/128"), ("WSIM_GATEWAY_TOKEN_TTL_SECS", "5")]);
        let s = Settings::merge(Cli::default(), &env, file(f)).expect("settings");
        assert_eq!(s.gateway.inner_allow.len(), 1);
        assert_eq!(s.gateway.token_ttl, Duration::from_secs(5));
        let d = Settings::merge(Cli::default(), &env_of(&[]), FileConfig::default()).expect("defaults");
        assert!(d
            .gateway
            .inner_allow
            .iter()
            .any(|n| n.contains(&"127.0.0.1".parse::<std::net::IpAddr>().expect("ip"))));
        assert!(Settings::merge(
            Cli::default(),
            &env_of(&[("WSIM_GATEWAY_INNER_ALLOW", "nonsense")]),
            file("")
        )
        .is_err());
    }

    #[test]
    fn longweb_apps_parse() {
        let f = "[longweb]\nallowips = [\"127.0.0.1\", \"10.0.0.0/8\"]\ncallback_timeout_secs = 2\n\
                 [[longweb.apps]]\nappid = \"10000\"\nname = \"demo\"\nauthapi = \"http://127.0.0.1:9000/api/checktoken\"\n\
                 timeout = 20\n[[longweb.apps]]\nappid = \"10001\"\n";
        let s = Settings::merge(Cli::default(), &env_of(&[]), file(f)).expect("settings");
        assert_eq!(s.longweb.allowips.len(), 2);
        assert_eq!(s.longweb.callback_timeout, Duration::from_secs(2));
        assert_eq!(s.longweb.app("10000").map(|a| a.timeout), Some(20));
        assert_eq!(s.longweb.app("10001").map(|a| (a.timeout, a.authapi.is_none())), Some((30, true)));
        assert!(s.longweb.app("nope").is_none());
        assert!(
            Settings::merge(Cli::default(), &env_of(&[]), file("[longweb]\nallowips = [\"x\"]\n")).is_err()
        );
    }

    #[test]
    fn example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/wsim.example.toml");
        let f = Settings::read_file(&path).expect("example config parses");
        let s = Settings::merge(Cli::default(), &env_of(&[]), f).expect("example config is valid");
        assert!(!s.listen.is_empty());
        assert_eq!((s.gru.token2.clone(), s.gru.handshakes_per_ip_per_sec), (Token2Scheme::Hmac, 20));
    }

    #[test]
    fn a_cluster_needs_redis_and_a_shared_database() {
        let merge =
            |cli: Cli, env: &[(&str, &str)], text: &str| Settings::merge(cli, &env_of(env), file(text));
        let s = merge(Cli::default(), &[], "").expect("settings");
        assert!(s.cluster.is_none(), "a single node by default");
        let mysql = "database_url = \"mysql://root@127.0.0.1/x\"\n";
        let s =
            merge(Cli::default(), &[("WSIM_REDIS_URL", "redis://127.0.0.1:6379")], mysql).expect("cluster");
        let c = s.cluster.expect("cluster settings");
        assert_eq!((c.key_prefix.as_str(), c.node_ttl), ("wsim", Duration::from_secs(15)));
        let text = format!(
            "{mysql}[cluster]\nredis_url = \"redis://r:1\"\nkey_prefix = \"t1\"\nnode_ttl_secs = 3\n"
        );
        let cli = Cli { redis_url: Some("redis://flag:2".into()), ..Cli::default() };
        let c = merge(cli, &[], &text).expect("cluster").cluster.expect("cluster settings");
        assert_eq!((c.redis_url.as_str(), c.key_prefix.as_str()), ("redis://flag:2", "t1"), "the flag wins");
        for (env, text) in [
            (&[("WSIM_REDIS_URL", "redis://r:1")][..], ""),
            (&[("WSIM_REDIS_URL", "http://r:1")][..], mysql),
            (&[][..], &format!("{mysql}[cluster]\nredis_url = \"redis://r\"\nkey_prefix = \"a b\"\n")[..]),
            (&[][..], &format!("{mysql}[cluster]\nredis_url = \"redis://r\"\nnode_ttl_secs = 1\n")[..]),
        ] {
            assert!(merge(Cli::default(), env, text).is_err(), "{env:?} {text}");
        }
        let err = merge(Cli::default(), &[("WSIM_REDIS_URL", "redis://r:1")], "").expect_err("sqlite");
        assert!(err.to_string().contains("SQLite serves a single node"), "{err}");
    }

    #[test]
    fn token2_checks() {
        let gru = |text: &str| GruSettings::from_file(&toml::from_str::<GruFile>(text).expect("toml"));
        assert_eq!(gru("").expect("defaults").token2, Token2Scheme::Hmac);
        let md5 = gru("token2_check = \"md5\"\ntoken2_salt = \"s\"").expect("md5");
        assert_eq!(md5.token2, Token2Scheme::Md5("s".into()));
        assert_eq!(gru("token2_check = \"off\"").expect("off").token2, Token2Scheme::Off);
        assert!(gru("token2_check = \"md5\"").is_err(), "md5 needs its salt");
        assert!(gru("token2_check = \"rot13\"").is_err());
    }
}
