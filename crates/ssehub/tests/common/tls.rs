//! A client for a hub that serves HTTPS: a certificate of the test's own,
//! trusted by it alone, and requests over HTTP/2 or HTTP/1.1 as ALPN picks.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

/// A certificate and key for 127.0.0.1 and localhost, as PEM files in a
/// directory; written again by [`Pair::renew`].
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The certificate in use, DER.
    pub der: Vec<u8>,
}

impl Pair {
    pub fn new(dir: &Path) -> Pair {
        let mut pair = Pair {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            der: Vec::new(),
        };
        pair.renew();
        pair
    }

    /// A new certificate with a new key, each file replaced whole (written
    /// beside it, then renamed over it, as deployment tools do).
    pub fn renew(&mut self) {
        let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
            .unwrap();
        let replace = |path: &Path, text: String| {
            let next = path.with_extension("next");
            std::fs::write(&next, text).unwrap();
            std::fs::rename(&next, path).unwrap();
        };
        replace(&self.key, made.signing_key.serialize_pem());
        replace(&self.cert, made.cert.pem());
        self.der = made.cert.der().to_vec();
    }
}

/// What a TLS handshake with the hub came to.
pub struct Handshake {
    pub stream: tokio_rustls::client::TlsStream<TcpStream>,
    /// The certificate the hub presented, DER.
    pub presented: Vec<u8>,
    /// The protocol ALPN chose.
    pub alpn: Option<Vec<u8>>,
}

/// Connects to `addr` trusting only `trusted` (DER), offering `alpn`.
pub async fn connect(addr: std::net::SocketAddr, trusted: &[&[u8]], alpn: &[&[u8]]) -> Handshake {
    let mut roots = RootCertStore::empty();
    for der in trusted {
        roots.add(CertificateDer::from(der.to_vec())).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::IpAddress(addr.ip().into());
    let stream = tokio::time::timeout(super::PATIENCE, connector.connect(name, tcp))
        .await
        .expect("a handshake in time")
        .expect("the handshake succeeds");
    let (_, session) = stream.get_ref();
    let presented = session.peer_certificates().unwrap()[0].to_vec();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    Handshake {
        stream,
        presented,
        alpn,
    }
}

/// One HTTP/2 connection to a hub: many requests share it.
#[derive(Clone)]
pub struct H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>);

impl H2 {
    /// HTTP/2 over `io` (TLS with ALPN h2, or cleartext with prior
    /// knowledge).
    pub async fn over<I>(io: I) -> H2
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (send, connection) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .handshake(hyper_util::rt::TokioIo::new(io))
                .await
                .expect("an HTTP/2 connection");
        tokio::spawn(connection);
        H2(send)
    }

    /// Sends a request; returns the answer with its body still to read.
    pub async fn send(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> hyper::Response<hyper::body::Incoming> {
        let mut request = hyper::Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        let mut send = self.0.clone();
        send.ready().await.unwrap();
        send.send_request(request).await.expect("an answer")
    }
}

/// Reads a streaming body until `done` holds for what came; fails the test
/// after [`super::PATIENCE`].
pub async fn read_until(
    body: &mut hyper::body::Incoming,
    got: &mut String,
    done: impl Fn(&str) -> bool,
) {
    let deadline = tokio::time::Instant::now() + super::PATIENCE;
    while !done(got) {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .unwrap_or_else(|_| panic!("waited, got {got:?}"))
            .unwrap_or_else(|| panic!("the stream ended: {got:?}"))
            .expect("a frame");
        if let Ok(data) = frame.into_data() {
            got.push_str(std::str::from_utf8(&data).unwrap());
        }
    }
}
