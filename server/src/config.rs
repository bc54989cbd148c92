//! Configuration: command-line flags, each backed by an environment variable.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

/// Settings shared by `serve` and the admin commands.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Address and port the HTTP API listens on.
    #[arg(
        long,
        env = "CONVO_BIND",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub bind: SocketAddr,

    /// Directory for the SQLite database, uploads and recordings
    /// [default: the per-user data directory, e.g. ~/.local/share/convoconnect].
    #[arg(long, env = "CONVO_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,

    /// Database to use: a `postgres://…` URL selects PostgreSQL; otherwise (or when unset) the
    /// embedded SQLite file `convo.db` in the data directory (a `sqlite:` URL names another file).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,

    /// Public base URL of this server, used in join links and emails
    /// [default: http://<bind>].
    #[arg(long, env = "CONVO_PUBLIC_URL", global = true)]
    pub public_url: Option<String>,

    /// SMTP server for outgoing mail (password recovery), e.g. smtp://127.0.0.1:2525,
    /// smtps://user:pass@mail.example.com or smtp://host:587?tls=required. Unset: no mail is sent.
    #[arg(long, env = "CONVO_SMTP_URL", hide_env_values = true, global = true)]
    pub smtp_url: Option<String>,

    /// Sender address of outgoing mail [default: ConvoConnect <no-reply@<public host>>].
    #[arg(long, env = "CONVO_SMTP_FROM", global = true)]
    pub smtp_from: Option<String>,

    /// Secret that signs access tokens (at least 32 characters). Unset: a random secret is
    /// generated once and kept in `<data dir>/jwt_secret`.
    #[arg(long, env = "CONVO_JWT_SECRET", hide_env_values = true, global = true)]
    pub jwt_secret: Option<String>,

    /// Comma-separated origins allowed to call the API from a browser (CORS), e.g.
    /// http://localhost:5173. Unset: no cross-origin access.
    #[arg(long, env = "CONVO_CORS_ORIGINS", value_delimiter = ',', global = true)]
    pub cors_origins: Vec<String>,

    /// Comma-separated STUN/TURN URLs handed to clients for ICE, e.g.
    /// stun:stun.example.com:3478,turn:turn.example.com:3478?transport=udp.
    #[arg(long, env = "CONVO_ICE_SERVERS", value_delimiter = ',', global = true)]
    pub ice_servers: Vec<String>,

    /// Username and credential for the TURN servers in CONVO_ICE_SERVERS.
    #[arg(long, env = "CONVO_TURN_USERNAME", global = true)]
    pub turn_username: Option<String>,
    #[arg(
        long,
        env = "CONVO_TURN_CREDENTIAL",
        hide_env_values = true,
        global = true
    )]
    pub turn_credential: Option<String>,

    /// Seconds a participant whose connection dropped keeps their place in a room.
    #[arg(
        long,
        env = "CONVO_RECONNECT_GRACE_SECS",
        default_value_t = 15,
        global = true
    )]
    pub reconnect_grace_secs: u64,

    /// UDP port range for media, e.g. 40000-40999 (open it in the firewall). Unset: any port.
    #[arg(long, env = "CONVO_UDP_PORTS", global = true)]
    pub udp_ports: Option<String>,

    /// Public IP address to announce for media when the server sits behind 1:1 NAT.
    #[arg(long, env = "CONVO_PUBLIC_IP", global = true)]
    pub public_ip: Option<std::net::IpAddr>,

    /// Announce CONVO_PUBLIC_IP beside the server's own addresses (as a server-reflexive
    /// candidate), so clients on the server's network still reach it directly; unset: in
    /// their place.
    #[arg(long, env = "CONVO_PUBLIC_IP_ALONGSIDE", global = true)]
    pub public_ip_alongside: bool,

    /// Comma-separated local addresses ICE may offer for media, e.g. 10.0.0.5. Unset: every
    /// address of the machine (loopback included).
    #[arg(long, env = "CONVO_ICE_IPS", value_delimiter = ',', global = true)]
    pub ice_ips: Vec<std::net::IpAddr>,

    /// Comma-separated reverse proxies (CIDRs, e.g. 127.0.0.1/32,10.0.0.0/8) whose
    /// X-Forwarded-For names the client: sign-in limits per address then count the client's
    /// address, not the proxy's. Unset: the header is ignored and the peer address counts.
    #[arg(
        long,
        env = "CONVO_TRUSTED_PROXIES",
        value_delimiter = ',',
        global = true
    )]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Accounts one client address may create through the API in an hour (0: no limit).
    #[arg(
        long,
        env = "CONVO_REGISTRATIONS_PER_HOUR",
        default_value_t = 30,
        global = true
    )]
    pub registrations_per_hour: u32,
}

/// The resolved configuration the server runs with.
#[derive(Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub public_url: String,
    /// `public_url` was not given: it is worked out from the address the server listens on
    /// once it does (a bind to port 0 gets its real port in join links).
    pub public_url_from_bind: bool,
    pub smtp_url: Option<String>,
    pub smtp_from: String,
    pub jwt_secret: Vec<u8>,
    pub cors_origins: Vec<String>,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub reset_token_ttl: Duration,
    /// Failed logins allowed per account (and, times four, per client address) in
    /// `login_window` before further attempts are refused.
    pub login_max_failures: u32,
    pub login_window: Duration,
    pub ice_servers: Vec<convo_shared::signal::IceServer>,
    pub reconnect_grace: Duration,
    /// Proxies whose X-Forwarded-For is believed (`CONVO_TRUSTED_PROXIES`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `CONVO_REGISTRATIONS_PER_HOUR` (0: no limit).
    pub registrations_per_hour: u32,
    pub sfu: crate::sfu::SfuConfig,
}

// Secrets stay out of logs and panics.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("bind", &self.bind)
            .field("data_dir", &self.data_dir)
            .field("database", &redact_url(&self.database_url))
            .field("public_url", &self.public_url)
            .field("smtp", &self.smtp_url.as_deref().map(redact_url))
            .field("cors_origins", &self.cors_origins)
            .finish_non_exhaustive()
    }
}

/// A URL with its password replaced, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no data directory: set CONVO_DATA_DIR")]
    NoDataDir,
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("CONVO_JWT_SECRET must be at least 32 characters")]
    WeakSecret,
    #[error("CONVO_PUBLIC_URL must start with http:// or https://")]
    PublicUrl,
    #[error("unsupported DATABASE_URL: use postgres://… or sqlite:…")]
    DatabaseUrl,
    #[error("CONVO_ICE_SERVERS entry {0:?} is not a stun:, stuns:, turn: or turns: URL")]
    IceServer(String),
    #[error("CONVO_UDP_PORTS {0:?} is not a range like 40000-40999")]
    UdpPorts(String),
}

impl Config {
    /// Resolves flags into a configuration: creates the data directory and, if needed, the
    /// persistent signing secret.
    pub fn from_args(args: &ServerArgs) -> Result<Self, ConfigError> {
        let data_dir = match &args.data_dir {
            Some(dir) => dir.clone(),
            None => dirs::data_dir()
                .ok_or(ConfigError::NoDataDir)?
                .join("convoconnect"),
        };
        let existed = data_dir.exists();
        std::fs::create_dir_all(&data_dir).map_err(|source| ConfigError::DataDir {
            path: data_dir.clone(),
            source,
        })?;
        // The database holds password hashes and sessions: a new data dir is the owner's alone.
        #[cfg(unix)]
        if !existed {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700)).map_err(
                |source| ConfigError::DataDir {
                    path: data_dir.clone(),
                    source,
                },
            )?;
        }

        let database_url = match args.database_url.as_deref().filter(|u| !u.is_empty()) {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                url.to_string()
            }
            Some(url) if url.starts_with("sqlite:") => url.to_string(),
            Some(_) => return Err(ConfigError::DatabaseUrl),
            None => sqlite_url(&data_dir.join("convo.db")),
        };

        let public_url = match &args.public_url {
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                url.trim_end_matches('/').to_string()
            }
            Some(_) => return Err(ConfigError::PublicUrl),
            None => format!("http://{}", args.bind),
        };

        let smtp_from = args.smtp_from.clone().unwrap_or_else(|| {
            let host = public_url
                .split("://")
                .nth(1)
                .unwrap_or("localhost")
                .split([':', '/'])
                .next()
                .filter(|h| h.contains('.'))
                .unwrap_or("localhost.localdomain");
            format!("ConvoConnect <no-reply@{host}>")
        });

        let jwt_secret = match &args.jwt_secret {
            Some(s) if s.chars().count() >= 32 => s.as_bytes().to_vec(),
            Some(_) => return Err(ConfigError::WeakSecret),
            None => load_or_create_secret(&data_dir.join("jwt_secret"))?,
        };

        Ok(Config {
            bind: args.bind,
            data_dir,
            database_url,
            public_url_from_bind: args.public_url.is_none(),
            public_url,
            smtp_url: args.smtp_url.clone().filter(|u| !u.is_empty()),
            smtp_from,
            jwt_secret,
            cors_origins: args.cors_origins.clone(),
            access_token_ttl: Duration::from_secs(15 * 60),
            refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
            reset_token_ttl: Duration::from_secs(3600),
            login_max_failures: 5,
            login_window: Duration::from_secs(15 * 60),
            ice_servers: ice_servers(args)?,
            reconnect_grace: Duration::from_secs(args.reconnect_grace_secs.clamp(1, 600)),
            trusted_proxies: args.trusted_proxies.clone(),
            registrations_per_hour: args.registrations_per_hour,
            sfu: crate::sfu::SfuConfig {
                udp_ports: args.udp_ports.as_deref().map(parse_ports).transpose()?,
                public_ip: args.public_ip.map(|ip| ip.to_string()),
                public_ip_alongside: args.public_ip_alongside,
                ice_ips: args.ice_ips.clone(),
            },
        })
    }

    pub fn avatars_dir(&self) -> PathBuf {
        self.data_dir.join("uploads").join("avatars")
    }
}

fn ice_servers(args: &ServerArgs) -> Result<Vec<convo_shared::signal::IceServer>, ConfigError> {
    let mut stun = Vec::new();
    let mut turn = Vec::new();
    for url in args
        .ice_servers
        .iter()
        .map(|u| u.trim())
        .filter(|u| !u.is_empty())
    {
        if url.starts_with("stun:") || url.starts_with("stuns:") {
            stun.push(url.to_string());
        } else if url.starts_with("turn:") || url.starts_with("turns:") {
            turn.push(url.to_string());
        } else {
            return Err(ConfigError::IceServer(url.to_string()));
        }
    }
    let mut out = Vec::new();
    if !stun.is_empty() {
        out.push(convo_shared::signal::IceServer {
            urls: stun,
            username: None,
            credential: None,
        });
    }
    if !turn.is_empty() {
        out.push(convo_shared::signal::IceServer {
            urls: turn,
            username: args.turn_username.clone(),
            credential: args.turn_credential.clone(),
        });
    }
    Ok(out)
}

fn parse_ports(s: &str) -> Result<(u16, u16), ConfigError> {
    let bad = || ConfigError::UdpPorts(s.to_string());
    let (lo, hi) = s.split_once('-').ok_or_else(bad)?;
    let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
    let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
    if lo == 0 || lo > hi {
        return Err(bad());
    }
    Ok((lo, hi))
}

fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

fn load_or_create_secret(path: &Path) -> Result<Vec<u8>, ConfigError> {
    let io_err = |source| ConfigError::DataDir {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(s) if s.trim().len() >= 32 => return Ok(s.trim().as_bytes().to_vec()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    let secret = crate::auth::tokens::random_token(48);
    write_private(path, secret.as_bytes()).map_err(io_err)?;
    Ok(secret.into_bytes())
}

/// Writes a file only the owner can read.
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(contents)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://bob:hunter2@db:5432/x"),
            "postgres://bob:***@db:5432/x"
        );
        assert_eq!(redact_url("sqlite:///tmp/a.db"), "sqlite:///tmp/a.db");
    }
}
