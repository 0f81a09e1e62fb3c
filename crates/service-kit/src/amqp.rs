//! RabbitMQ connection settings: `AMQP_URL`, or the `RABBITMQ_*` parts with the original
//! system's defaults. The URL with its password is a [`Secret`]; what is logged is
//! [`AmqpSettings::display`], `amqp://user:***@host:port/vhost`.

use std::fmt;

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

/// Where RabbitMQ is. `Debug` shows only [`AmqpSettings::display`].
#[derive(Clone)]
pub struct AmqpSettings {
    /// The full URL, with the password (for `lapin::Connection::connect`).
    pub url: Secret,
    /// The URL without its password, safe to log.
    pub display: String,
    uri: AMQPUri,
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
        Ok(Self::from_parts(AmqpParts {
            host: vars.string_or("RABBITMQ_HOST", DEFAULT_HOST)?,
            port: vars.port_or("RABBITMQ_PORT", DEFAULT_PORT)?,
            user: vars.string_or("RABBITMQ_USER", DEFAULT_USER)?,
            password: Secret::new(vars.string_or("RABBITMQ_PASSWORD", DEFAULT_PASSWORD)?),
            vhost: vars.string_or("RABBITMQ_VHOST", DEFAULT_VHOST)?,
        }))
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
        Self {
            url: Secret::new(url),
            display: redacted(&uri),
            uri,
        }
    }

    /// Parses `amqp[s]://user:password@host:port/vhost?query` without echoing it; errors name
    /// `variable`.
    pub fn from_url(variable: &str, url: &str) -> Result<Self, ConfigError> {
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
        Ok(Self {
            url: Secret::new(url),
            display: redacted(&uri),
            uri,
        })
    }

    /// The parsed URI, password included: pass it to lapin only.
    pub fn uri(&self) -> &AMQPUri {
        &self.uri
    }
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
