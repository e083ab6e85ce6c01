//! HTTPS for the hub measured: a self-signed certificate made for the run,
//! and clients that hold streams over TLS with HTTP/1.1 or HTTP/2.

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, pki_types};

/// A certificate for 127.0.0.1 in a directory of its own, removed when
/// dropped; the hub's flags to serve it.
pub struct Certificate {
    dir: tempfile::TempDir,
    der: Vec<u8>,
}

impl Certificate {
    pub fn new() -> std::io::Result<Certificate> {
        let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()])
            .map_err(std::io::Error::other)?;
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("cert.pem"), made.cert.pem())?;
        std::fs::write(dir.path().join("key.pem"), made.signing_key.serialize_pem())?;
        Ok(Certificate {
            der: made.cert.der().to_vec(),
            dir,
        })
    }

    /// `--tls-cert FILE --tls-key FILE`.
    pub fn flags(&self) -> Vec<String> {
        let file = |name: &str| self.dir.path().join(name).display().to_string();
        vec![
            "--tls-cert".into(),
            file("cert.pem"),
            "--tls-key".into(),
            file("key.pem"),
        ]
    }

    /// A client that trusts this certificate alone, offering `alpn`.
    pub fn connector(&self, alpn: &[u8]) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(pki_types::CertificateDer::from(self.der.clone()))
            .expect("a certificate rcgen made");
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("default versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }
}

/// What holds an open stream; dropping it closes the stream.
pub type Held = Box<dyn Send>;

/// Opens a stream at `path` over TLS with HTTP/1.1 and waits for its
/// answer's head and first bytes.
pub async fn open_tls(
    addr: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
    path: &str,
) -> std::io::Result<Held> {
    let tcp = TcpStream::connect(addr).await?;
    let name = pki_types::ServerName::IpAddress(addr.ip().into());
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| std::io::Error::other(format!("TLS handshake: {e}")))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: hub\r\nAccept: text/event-stream\r\n\r\n");
    tls.write_all(request.as_bytes()).await?;
    tls.flush().await?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    // The head, and bytes after it.
    while seen
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .is_none_or(|end| seen.len() <= end + 4)
    {
        let n = tls.read(&mut buf).await.map_err(|e| {
            std::io::Error::other(format!("reading the answer after {seen:?}: {e}"))
        })?;
        if n == 0 {
            return Err(std::io::Error::other("hub closed a connection"));
        }
        seen.extend_from_slice(&buf[..n]);
    }
    Ok(Box::new(tls))
}

/// Opens `per_connection` streams at `path{i}` on one HTTP/2 connection
/// over TLS, and waits for each one's first bytes.
pub async fn open_h2(
    addr: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
    path: &str,
    first: usize,
    per_connection: usize,
) -> std::io::Result<Held> {
    let tcp = TcpStream::connect(addr).await?;
    let name = pki_types::ServerName::IpAddress(addr.ip().into());
    let tls = connector.connect(name, tcp).await?;
    let (send, connection) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake::<_, Empty<bytes::Bytes>>(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(std::io::Error::other)?;
    let driver = tokio::spawn(connection);
    let mut bodies = Vec::with_capacity(per_connection);
    for i in first..first + per_connection {
        let request = hyper::Request::get(format!("{path}{i}"))
            .body(Empty::new())
            .map_err(std::io::Error::other)?;
        let mut send = send.clone();
        send.ready().await.map_err(std::io::Error::other)?;
        let mut body = send
            .send_request(request)
            .await
            .map_err(std::io::Error::other)?
            .into_body();
        // The stream's first bytes (its retry hint and position).
        body.frame()
            .await
            .ok_or_else(|| std::io::Error::other("hub ended a stream"))?
            .map_err(std::io::Error::other)?;
        bodies.push(body);
    }
    /// Aborts the connection's task when the streams are let go.
    struct Connection(tokio::task::JoinHandle<Result<(), hyper::Error>>);
    impl Drop for Connection {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    Ok(Box::new((send, bodies, Connection(driver))))
}
