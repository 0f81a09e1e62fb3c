//! The byte stream under the AMQP client: plain TCP for `amqp://`, TLS (rustls with the ring
//! provider) for `amqps://`.
//!
//! The client reads and writes from two tasks, so the stream is split in halves. Plain TCP
//! keeps tokio's lock-free `into_split` (the publishing hot path pays nothing for TLS being
//! possible); a TLS session is one state machine for both directions, so its halves share it
//! through `tokio::io::split`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use lapin::uri::{AMQPScheme, AMQPUri};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use service_kit::amqp::AmqpTls;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::net::tcp;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use super::client::ConnectError;

/// Why a TLS session could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("AMQP_URL: {what} {path}: {reason}")]
    File {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("AMQP_URL: {0:?} is not a valid TLS server name")]
    ServerName(String),
    #[error("TLS configuration: {0}")]
    Config(rustls::Error),
    #[error(
        "TLS handshake with the broker failed: {0} (check amqps:// and its cacertfile, and that \
         the server's certificate names the host or server_name_indication)"
    )]
    Handshake(io::Error),
}

impl TlsError {
    /// Whether retrying cannot help: a setting is wrong or the certificate does not verify (as
    /// opposed to the connection dropping during the handshake).
    pub fn is_permanent(&self) -> bool {
        match self {
            TlsError::File { .. } | TlsError::ServerName(_) | TlsError::Config(_) => true,
            TlsError::Handshake(error) => service_kit::amqp::is_tls_rejection(error),
        }
    }
}

/// Connects to the URI's host and port, with TLS for `amqps://`.
pub async fn connect(
    uri: &AMQPUri,
    tls: &AmqpTls,
) -> Result<(StreamReader, StreamWriter), ConnectError> {
    let tcp = TcpStream::connect((uri.authority.host.as_str(), uri.authority.port)).await?;
    tcp.set_nodelay(true)?;
    if !matches!(uri.scheme, AMQPScheme::AMQPS) {
        let (read, write) = tcp.into_split();
        return Ok((StreamReader::Plain(read), StreamWriter::Plain(write)));
    }
    let name = tls
        .server_name
        .clone()
        .unwrap_or_else(|| uri.authority.host.clone());
    let server_name = ServerName::try_from(name.clone()).map_err(|_| TlsError::ServerName(name))?;
    let connector = TlsConnector::from(Arc::new(client_config(tls)?));
    let stream = connector
        .connect(server_name, tcp)
        .await
        .map_err(TlsError::Handshake)?;
    let (read, write) = tokio::io::split(stream);
    Ok((StreamReader::Tls(read), StreamWriter::Tls(write)))
}

/// The server is verified against the WebPKI roots plus `cacertfile` (as lapin does for the
/// shipment-service, so both clients trust the same), with the ring provider named explicitly:
/// rustls has two providers compiled in (a dependency enables aws-lc-rs), and then refuses to
/// guess.
fn client_config(tls: &AmqpTls) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = &tls.ca_certs {
        let certs = certificates("cacertfile", &ca.path, &ca.pem)?;
        let (_, rejected) = roots.add_parsable_certificates(certs);
        if rejected > 0 {
            return Err(file_error(
                "cacertfile",
                &ca.path,
                format!("{rejected} certificate(s) could not be used as a CA"),
            ));
        }
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_root_certificates(roots);
    match &tls.client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = certificates("certfile", &cert.path, &cert.pem)?;
            let key = PrivateKeyDer::from_pem_slice(&key.pem)
                .map_err(|error| file_error("keyfile", &key.path, error.to_string()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(TlsError::Config)
        }
    }
}

fn certificates(
    what: &'static str,
    path: &std::path::Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| file_error(what, path, error.to_string()))?;
    if certs.is_empty() {
        return Err(file_error(
            what,
            path,
            "holds no PEM certificate".to_owned(),
        ));
    }
    Ok(certs)
}

fn file_error(what: &'static str, path: &std::path::Path, reason: String) -> TlsError {
    TlsError::File {
        what,
        path: path.display().to_string(),
        reason,
    }
}

/// The reading half.
#[derive(Debug)]
pub enum StreamReader {
    Plain(tcp::OwnedReadHalf),
    Tls(ReadHalf<TlsStream<TcpStream>>),
}

/// The writing half.
#[derive(Debug)]
pub enum StreamWriter {
    Plain(tcp::OwnedWriteHalf),
    Tls(WriteHalf<TlsStream<TcpStream>>),
}

impl AsyncRead for StreamReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            StreamReader::Plain(read) => Pin::new(read).poll_read(cx, buf),
            StreamReader::Tls(read) => Pin::new(read).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for StreamWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            StreamWriter::Plain(write) => Pin::new(write).poll_write(cx, buf),
            StreamWriter::Tls(write) => Pin::new(write).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            StreamWriter::Plain(write) => Pin::new(write).poll_write_vectored(cx, bufs),
            StreamWriter::Tls(write) => Pin::new(write).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            StreamWriter::Plain(write) => write.is_write_vectored(),
            StreamWriter::Tls(write) => write.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            StreamWriter::Plain(write) => Pin::new(write).poll_flush(cx),
            StreamWriter::Tls(write) => Pin::new(write).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            StreamWriter::Plain(write) => Pin::new(write).poll_shutdown(cx),
            StreamWriter::Tls(write) => Pin::new(write).poll_shutdown(cx),
        }
    }
}
