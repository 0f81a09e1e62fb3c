//! RabbitMQ connection settings: `AMQP_URL`, or the `RABBITMQ_*` parts with the original
//! system's defaults. The URL with its password is a [`Secret`]; what is logged is
//! [`AmqpSettings::display`], `amqp://user:***@host:port/vhost`.
//!
//! A cluster is several comma-separated URLs in `AMQP_URL` (or several hosts in
//! `RABBITMQ_HOST`, each `host` or `host:port`): [`AmqpSettings::connect_any`] tries them in
//! turn, starting with the one that last worked, so a client fails over to another node when
//! its node goes away. Each process starts at a different node (by process id), which spreads
//! a fleet's connections over the cluster.
//!
//! TLS is `amqps://` with RabbitMQ's URI query parameters
//! (<https://www.rabbitmq.com/docs/uri-query-parameters>): `cacertfile` (PEM CA certificates
//! trusted besides the WebPKI roots), `certfile` and `keyfile` (a client certificate),
//! `server_name_indication` (the name the server's certificate must carry, when not the URL's
//! host). The files are read once at start ([`AmqpTls`]), so a wrong path fails naming
//! `AMQP_URL`; the AMQP URI parser itself ignores these parameters.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lapin::uri::{AMQPAuthority, AMQPScheme, AMQPUri, AMQPUserInfo};

use crate::Secret;
use crate::env::{ConfigError, Vars};

pub const DEFAULT_HOST: &str = "127.0.0.1";
pub const DEFAULT_PORT: u16 = 5672;
pub const DEFAULT_USER: &str = "guest";
pub const DEFAULT_PASSWORD: &str = "guest";
pub const DEFAULT_VHOST: &str = "/";

/// Every variable [`AmqpSettings::from_vars`] reads.
pub const ENV_VARS: &[&str] = &[
    "AMQP_URL",
    "RABBITMQ_HOST",
    "RABBITMQ_PORT",
    "RABBITMQ_USER",
    "RABBITMQ_PASSWORD",
    "RABBITMQ_VHOST",
];

/// The parts of a connection when there is no URL.
#[derive(Debug, Clone)]
pub struct AmqpParts {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Secret,
    pub vhost: String,
}

/// How long one connection attempt to one node of several may take before the next is tried
/// (a node that drops packets would otherwise hold the client for the TCP timeout).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where RabbitMQ is: one node or the nodes of a cluster. `Debug` shows only
/// [`AmqpSettings::display`].
#[derive(Clone)]
pub struct AmqpSettings {
    /// The TLS parameters of `amqps://` URLs (the same for every node); shared, as the files'
    /// contents need not be copied with every clone of the settings.
    tls: Arc<AmqpTls>,
    /// The first node's full URL, with the password.
    pub url: Secret,
    /// The URLs without their password, comma-separated, safe to log.
    pub display: String,
    nodes: Vec<Node>,
    /// Index of the node the next connection tries first: the one that last worked.
    preferred: Arc<AtomicUsize>,
}

/// The TLS parameters of an `amqps://` URL, files read. `Debug` shows paths, never contents.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AmqpTls {
    /// `cacertfile`: CA certificates (PEM) trusted besides the WebPKI roots.
    pub ca_certs: Option<PemFile>,
    /// `certfile` and `keyfile`: a client certificate chain and its key (PEM).
    pub client_cert: Option<(PemFile, PemFile)>,
    /// `server_name_indication`: the name to ask for and verify instead of the URL's host.
    pub server_name: Option<String>,
}

impl fmt::Debug for AmqpTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpTls")
            .field("cacertfile", &self.ca_certs.as_ref().map(|file| &file.path))
            .field(
                "certfile",
                &self.client_cert.as_ref().map(|(cert, _)| &cert.path),
            )
            .field("server_name_indication", &self.server_name)
            .finish()
    }
}

/// A PEM file's path and contents, read at start.
#[derive(Clone, PartialEq, Eq)]
pub struct PemFile {
    pub path: PathBuf,
    pub pem: Vec<u8>,
}

impl AmqpTls {
    /// The parameters of `url`'s query string; errors name `variable`. `tls` says whether the
    /// scheme is `amqps`: the parameters are refused on `amqp://`, where they would be ignored.
    fn from_query(variable: &str, url: &str, tls: bool) -> Result<Self, ConfigError> {
        let param = |key: &str| -> Result<Option<String>, ConfigError> {
            query_value(url, key)
                .map_err(|reason| ConfigError::new(variable, format!("{key} {reason}")))
        };
        let file = |key: &str| -> Result<Option<PemFile>, ConfigError> {
            param(key)?
                .map(|path| PemFile::read(variable, key, Path::new(&path)))
                .transpose()
        };
        let ca_certs = file("cacertfile")?;
        if let Some(ca) = &ca_certs
            && !contains(&ca.pem, b"-----BEGIN CERTIFICATE-----")
        {
            return Err(ConfigError::new(
                variable,
                format!(
                    "cacertfile {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                    ca.path.display()
                ),
            ));
        }
        let client_cert = crate::env::both_or_neither(
            variable,
            ("certfile", file("certfile")?),
            ("keyfile", file("keyfile")?),
        )?;
        let server_name = param("server_name_indication")?.filter(|name| !name.is_empty());
        if let Some(verify) = param("verify")?
            && verify != "verify_peer"
        {
            return Err(ConfigError::new(
                variable,
                format!(
                    "verify={verify} is not supported: the server's certificate is always verified (verify_peer)"
                ),
            ));
        }
        let parsed = Self {
            ca_certs,
            client_cert,
            server_name,
        };
        if !tls && parsed != Self::default() {
            return Err(ConfigError::new(
                variable,
                "has TLS parameters (cacertfile, certfile, keyfile, server_name_indication) on an \
                 amqp:// URL: use amqps:// for TLS",
            ));
        }
        Ok(parsed)
    }
}

impl fmt::Debug for PemFile {
    /// The path only: a key file's contents are a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PemFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl PemFile {
    fn read(variable: &str, key: &str, path: &Path) -> Result<Self, ConfigError> {
        let pem = std::fs::read(path).map_err(|error| {
            ConfigError::new(
                variable,
                format!("{key} {} cannot be read: {error}", path.display()),
            )
        })?;
        Ok(Self {
            path: path.to_owned(),
            pem,
        })
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// The percent-decoded value of `key` in the URL's query string.
fn query_value(url: &str, key: &str) -> Result<Option<String>, &'static str> {
    let Some((_, query)) = url.split_once('?') else {
        return Ok(None);
    };
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name == key {
            return crate::postgres::percent_decode(value).map(Some);
        }
    }
    Ok(None)
}

#[derive(Clone)]
struct Node {
    uri: AMQPUri,
    display: String,
}

/// Every node refused or failed: the last node's failure, with where it was.
#[derive(Debug)]
pub struct AllNodesFailed<E> {
    /// The node tried last, without its password.
    pub address: String,
    pub failure: NodeFailure<E>,
}

/// Why one node did not give a connection.
#[derive(Debug)]
pub enum NodeFailure<E> {
    Refused(E),
    /// No answer within the attempt's time (only with several nodes).
    TimedOut(Duration),
}

impl<E: fmt::Display> fmt::Display for NodeFailure<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeFailure::Refused(error) => error.fmt(f),
            NodeFailure::TimedOut(after) => write!(f, "no answer within {after:?}"),
        }
    }
}

impl fmt::Debug for AmqpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpSettings")
            .field("url", &self.display)
            .finish()
    }
}

impl AmqpSettings {
    /// `AMQP_URL` when set, else `RABBITMQ_HOST`, `_PORT`, `_USER`, `_PASSWORD`, `_VHOST`.
    pub fn from_vars(vars: &Vars<'_>) -> Result<Self, ConfigError> {
        if let Some(url) = vars.get("AMQP_URL")? {
            return Self::from_url("AMQP_URL", &url);
        }
        let parts = AmqpParts {
            host: vars.string_or("RABBITMQ_HOST", DEFAULT_HOST)?,
            port: vars.port_or("RABBITMQ_PORT", DEFAULT_PORT)?,
            user: vars.string_or("RABBITMQ_USER", DEFAULT_USER)?,
            password: Secret::new(vars.string_or("RABBITMQ_PASSWORD", DEFAULT_PASSWORD)?),
            vhost: vars.string_or("RABBITMQ_VHOST", DEFAULT_VHOST)?,
        };
        Self::from_hosts("RABBITMQ_HOST", parts)
    }

    /// [`Self::from_parts`] for each comma-separated `host` or `host:port` of `parts.host`
    /// (`parts.port` where a host has none); errors name `variable`.
    pub fn from_hosts(variable: &str, parts: AmqpParts) -> Result<Self, ConfigError> {
        if !parts.host.contains(',') {
            return Ok(Self::from_parts(parts));
        }
        let mut nodes = Vec::new();
        for entry in parts.host.split(',').map(str::trim) {
            let (host, port) = match entry.rsplit_once(':') {
                Some((host, port)) => (
                    host,
                    port.parse::<u16>()
                        .ok()
                        .filter(|port| *port > 0)
                        .ok_or_else(|| {
                            ConfigError::new(
                                variable,
                                format!("'{entry}': the port is not 1-65535"),
                            )
                        })?,
                ),
                None => (entry, parts.port),
            };
            if host.is_empty() {
                return Err(ConfigError::new(variable, "has an empty host in its list"));
            }
            nodes.push(Self::from_parts(AmqpParts {
                host: host.to_owned(),
                port,
                ..parts.clone()
            }));
        }
        Ok(Self::cluster(nodes))
    }

    /// One setting for several nodes, tried in turn.
    fn cluster(settings: Vec<Self>) -> Self {
        let tls = settings
            .first()
            .map(|first| Arc::clone(&first.tls))
            .unwrap_or_default();
        let nodes: Vec<Node> = settings.iter().flat_map(|one| one.nodes.clone()).collect();
        let display = nodes
            .iter()
            .map(|node| node.display.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let url = settings
            .into_iter()
            .next()
            .map(|first| first.url)
            .unwrap_or_else(|| Secret::new(String::new()));
        // Different processes start at different nodes: a fleet spreads over the cluster.
        let start = std::process::id() as usize % nodes.len().max(1);
        Self {
            tls,
            url,
            display,
            nodes,
            preferred: Arc::new(AtomicUsize::new(start)),
        }
    }

    fn single(url: Secret, uri: AMQPUri, tls: AmqpTls) -> Self {
        let display = redacted(&uri);
        Self {
            tls: Arc::new(tls),
            url,
            display: display.clone(),
            nodes: vec![Node { uri, display }],
            preferred: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn from_parts(parts: AmqpParts) -> Self {
        let uri = AMQPUri {
            scheme: AMQPScheme::AMQP,
            authority: AMQPAuthority {
                userinfo: AMQPUserInfo {
                    username: parts.user,
                    password: parts.password.expose().to_owned(),
                },
                host: parts.host,
                port: parts.port,
            },
            vhost: parts.vhost,
            query: Default::default(),
        };
        let url = format!(
            "amqp://{}:{}@{}:{}/{}",
            percent_encode(&uri.authority.userinfo.username),
            percent_encode(&uri.authority.userinfo.password),
            uri.authority.host,
            uri.authority.port,
            percent_encode(&uri.vhost)
        );
        Self::single(Secret::new(url), uri, AmqpTls::default())
    }

    /// Parses `amqp[s]://user:password@host:port/vhost?query`, or several of them separated by
    /// commas (the nodes of a cluster), without echoing them; errors name `variable`.
    pub fn from_url(variable: &str, url: &str) -> Result<Self, ConfigError> {
        if !url.contains(',') {
            return Self::parse_one(variable, url);
        }
        let nodes = url
            .split(',')
            .map(|one| Self::parse_one(variable, one))
            .collect::<Result<Vec<_>, _>>()?;
        // One TLS configuration serves every connection attempt, whichever node it goes to.
        if nodes.windows(2).any(|pair| pair[0].tls != pair[1].tls) {
            return Err(ConfigError::new(
                variable,
                "the nodes' URLs differ in TLS (scheme or cacertfile, certfile, keyfile, \
                 server_name_indication): give every node the same",
            ));
        }
        Ok(Self::cluster(nodes))
    }

    fn parse_one(variable: &str, url: &str) -> Result<Self, ConfigError> {
        let url = url.trim();
        if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
            return Err(ConfigError::new(
                variable,
                "expected a URL starting with amqp:// or amqps://",
            ));
        }
        // The URI parser passes a malformed %-escape through as text, which would then fail
        // later as a wrong password or an unknown vhost.
        if !percent_escapes_are_valid(url) {
            return Err(ConfigError::new(
                variable,
                "has an invalid %-escape (a % must be followed by two hex digits)",
            ));
        }
        // The parser's message may quote the URL, password included: a generic reason only.
        let uri: AMQPUri = url.parse().map_err(|_| {
            ConfigError::new(
                variable,
                "not a valid AMQP URL (expected amqp://user:password@host:port/vhost)",
            )
        })?;
        let tls = AmqpTls::from_query(variable, url, matches!(uri.scheme, AMQPScheme::AMQPS))?;
        Ok(Self::single(Secret::new(url), uri, tls))
    }

    /// The TLS parameters (meaningful for `amqps://`; the same for every node).
    pub fn tls(&self) -> &AmqpTls {
        &self.tls
    }

    /// Whether the connections use TLS (`amqps://`).
    pub fn uses_tls(&self) -> bool {
        matches!(self.nodes[0].uri.scheme, AMQPScheme::AMQPS)
    }

    /// What lapin needs for `amqps://`: the `cacertfile` certificates and the client
    /// certificate. Refuses `server_name_indication`, which lapin cannot honour (it always
    /// verifies the URL's host), rather than ignore it.
    pub fn lapin_tls(&self) -> Result<lapin::tcp::OwnedTLSConfig, ConfigError> {
        if self.tls.server_name.is_some() {
            return Err(ConfigError::new(
                "AMQP_URL",
                "server_name_indication is not supported by this service's AMQP client (lapin): \
                 use a host name in the URL that the server's certificate names",
            ));
        }
        let text = |file: &PemFile| {
            String::from_utf8(file.pem.clone()).map_err(|_| {
                ConfigError::new(
                    "AMQP_URL",
                    format!("{} is not a PEM (text) file", file.path.display()),
                )
            })
        };
        Ok(lapin::tcp::OwnedTLSConfig {
            cert_chain: self.tls.ca_certs.as_ref().map(text).transpose()?,
            identity: self.tls.client_cert.as_ref().map(|(cert, key)| {
                lapin::tcp::OwnedIdentity::PKCS8 {
                    pem: cert.pem.clone(),
                    key: key.pem.clone(),
                }
            }),
        })
    }

    /// The first node's parsed URI, password included: pass it to a client only.
    pub fn uri(&self) -> &AMQPUri {
        &self.nodes[0].uri
    }

    /// How many nodes there are to try.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Connects with `connect` (given the node's URI, password included) to the first node that accepts, starting with the one that
    /// last worked; returns the connection and the node's address (without password). With
    /// one node this is one attempt; with several each attempt is bounded in time.
    pub async fn connect_any<T, E, F, Fut>(
        &self,
        mut connect: F,
    ) -> Result<(T, String), AllNodesFailed<E>>
    where
        F: FnMut(AMQPUri) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let count = self.nodes.len();
        let start = self.preferred.load(Ordering::Relaxed) % count.max(1);
        let mut last = None;
        for offset in 0..count {
            let index = (start + offset) % count;
            let node = &self.nodes[index];
            let attempt = if count == 1 {
                connect(node.uri.clone())
                    .await
                    .map_err(NodeFailure::Refused)
            } else {
                match tokio::time::timeout(ATTEMPT_TIMEOUT, connect(node.uri.clone())).await {
                    Ok(result) => result.map_err(NodeFailure::Refused),
                    Err(_) => Err(NodeFailure::TimedOut(ATTEMPT_TIMEOUT)),
                }
            };
            match attempt {
                Ok(connection) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok((connection, node.display.clone()));
                }
                Err(failure) => {
                    if count > 1 {
                        tracing::debug!(node = %node.display, "RabbitMQ node did not accept; trying the next");
                    }
                    last = Some(AllNodesFailed {
                        address: node.display.clone(),
                        failure,
                    });
                }
            }
        }
        // `nodes` is never empty (every constructor makes at least one), so `last` is set.
        Err(last.unwrap_or(AllNodesFailed {
            address: self.display.clone(),
            failure: NodeFailure::TimedOut(Duration::ZERO),
        }))
    }
}

/// Whether an I/O error from a TLS client carries rustls's own error: the certificate did not
/// verify or the peers could not agree, which retrying will not change (a reset during the
/// handshake is an ordinary I/O error).
pub fn is_tls_rejection(error: &std::io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
}

fn redacted(uri: &AMQPUri) -> String {
    let scheme = match uri.scheme {
        AMQPScheme::AMQP => "amqp",
        AMQPScheme::AMQPS => "amqps",
    };
    format!(
        "{scheme}://{}:***@{}:{}/{}",
        percent_encode(&uri.authority.userinfo.username),
        uri.authority.host,
        uri.authority.port,
        percent_encode(&uri.vhost)
    )
}

fn percent_escapes_are_valid(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().all(|(index, &byte)| {
        byte != b'%'
            || bytes
                .get(index + 1..index + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    })
}

/// Percent-encodes all but unreserved characters (for URL parts).
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<AmqpSettings, ConfigError> {
        crate::env::with(vars, |vars| AmqpSettings::from_vars(&vars))
    }

    #[test]
    fn parts_and_url_are_redacted_alike() {
        let parts = settings(&[
            ("RABBITMQ_PASSWORD", "s3cr:t"),
            ("RABBITMQ_VHOST", "my vhost"),
        ])
        .unwrap();
        assert_eq!(
            parts.url.expose(),
            "amqp://guest:s3cr%3At@127.0.0.1:5672/my%20vhost"
        );
        assert_eq!(parts.display, "amqp://guest:***@127.0.0.1:5672/my%20vhost");
        assert_eq!(parts.uri().vhost, "my vhost");
        let url = settings(&[("AMQP_URL", "amqp://u:hunter2@h:1234/%2f?heartbeat=5")]).unwrap();
        assert_eq!(url.display, "amqp://u:***@h:1234/%2F");
        assert_eq!(url.uri().authority.userinfo.password, "hunter2");
        assert_eq!(url.url.expose(), "amqp://u:hunter2@h:1234/%2f?heartbeat=5");
        assert!(!format!("{url:?}").contains("hunter2"));
    }

    #[test]
    fn a_cluster_is_several_urls_or_several_hosts() {
        let urls = settings(&[(
            "AMQP_URL",
            "amqp://u:hunter2@a:5681/v, amqp://u:hunter2@b:5682/v",
        )])
        .unwrap();
        assert_eq!(urls.node_count(), 2);
        assert_eq!(urls.display, "amqp://u:***@a:5681/v,amqp://u:***@b:5682/v");
        assert!(!format!("{urls:?}").contains("hunter2"));
        let hosts = settings(&[("RABBITMQ_HOST", "a:5681,b"), ("RABBITMQ_PORT", "5699")]).unwrap();
        assert_eq!(
            hosts.display,
            "amqp://guest:***@a:5681/%2F,amqp://guest:***@b:5699/%2F"
        );
        for bad in ["a:0,b", "a,,b", "a:x,b"] {
            let error = settings(&[("RABBITMQ_HOST", bad)]).unwrap_err();
            assert_eq!(error.variable, "RABBITMQ_HOST", "{bad}");
        }
        let error = settings(&[("AMQP_URL", "amqp://u:hunter2@a:1/v,http://b")]).unwrap_err();
        assert_eq!(error.variable, "AMQP_URL");
        assert!(!error.to_string().contains("hunter2"));
    }

    #[tokio::test]
    async fn connect_any_fails_over_and_then_starts_with_the_node_that_worked() {
        let cluster = settings(&[(
            "AMQP_URL",
            "amqp://u:p@down:1/v,amqp://u:p@up:2/v,amqp://u:p@down2:3/v",
        )])
        .unwrap();
        let mut tried = Vec::new();
        let (host, address) = cluster
            .connect_any(|uri| {
                tried.push(uri.authority.host.clone());
                let host = uri.authority.host.clone();
                async move {
                    if host == "up" {
                        Ok(host)
                    } else {
                        Err("refused")
                    }
                }
            })
            .await
            .unwrap();
        assert_eq!(host, "up");
        assert_eq!(address, "amqp://u:***@up:2/v");
        assert!(tried.contains(&"up".to_owned()));
        tried.clear();
        let _ = cluster
            .connect_any(|uri| {
                tried.push(uri.authority.host.clone());
                async { Ok::<_, &str>(()) }
            })
            .await
            .unwrap();
        assert_eq!(tried, ["up"], "starts with the node that worked last");
        let failed = cluster
            .connect_any(|_| async { Err::<(), _>("refused") })
            .await
            .unwrap_err();
        assert_eq!(failed.failure.to_string(), "refused");
    }

    #[test]
    fn amqps_reads_rabbitmq_tls_parameters_and_refuses_unreadable_files() {
        let dir = std::env::temp_dir().join(format!("kit-amqp-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let ca = ca.display().to_string();
        let url =
            format!("amqps://u:hunter2@h:5671/v?cacertfile={ca}&server_name_indication=rabbit");
        let tls = settings(&[("AMQP_URL", &url)]).unwrap();
        assert!(tls.uses_tls());
        assert_eq!(
            tls.tls()
                .ca_certs
                .as_ref()
                .unwrap()
                .path
                .display()
                .to_string(),
            ca
        );
        assert_eq!(tls.tls().server_name.as_deref(), Some("rabbit"));
        assert!(
            tls.lapin_tls().is_err(),
            "lapin cannot honour server_name_indication"
        );
        let plain_name = format!("amqps://u:p@h:5671/v?cacertfile={ca}");
        let lapin = settings(&[("AMQP_URL", &plain_name)])
            .unwrap()
            .lapin_tls()
            .unwrap();
        assert!(lapin.cert_chain.unwrap().contains("BEGIN CERTIFICATE"));

        for (bad, says) in [
            (
                "amqps://u:hunter2@h/v?cacertfile=/nonexistent/ca.pem",
                "cacertfile /nonexistent/ca.pem cannot be read",
            ),
            (
                &format!("amqp://u:hunter2@h/v?cacertfile={ca}"),
                "use amqps://",
            ),
            (
                &format!("amqps://u:hunter2@h/v?certfile={ca}"),
                "certfile and keyfile",
            ),
            (
                "amqps://u:hunter2@h/v?verify=verify_none",
                "verify=verify_none",
            ),
            (
                &format!("amqps://u:hunter2@a/v?cacertfile={ca},amqps://u:hunter2@b/v"),
                "differ in TLS",
            ),
        ] {
            let error = settings(&[("AMQP_URL", bad)]).unwrap_err();
            assert_eq!(error.variable, "AMQP_URL");
            assert!(error.to_string().contains(says), "{bad}: {error}");
            assert!(!error.to_string().contains("hunter2"), "{error}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_urls_name_the_variable_and_never_the_password() {
        for url in [
            "http://user:hunter2@x",
            "amqp://user:hunter2%zz@x:5672/%2f",
            "amqp://user:hunter2@x:5672/vhost%2",
            "amqp://u:hunter2@host:notaport/%2f",
            "amqp://u:hunter2@host:99999/%2f",
        ] {
            let error = settings(&[("AMQP_URL", url)]).unwrap_err();
            assert_eq!(error.variable, "AMQP_URL", "{url}");
            assert!(!error.to_string().contains("hunter2"), "{error}");
        }
        assert_eq!(
            settings(&[("RABBITMQ_PORT", "five")]).unwrap_err().variable,
            "RABBITMQ_PORT"
        );
    }
}
