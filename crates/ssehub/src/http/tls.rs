//! HTTPS: the certificate and key from PEM files, ALPN offering `h2` and
//! `http/1.1`, and a certificate that can be replaced while the hub runs.
//!
//! The pair is read again on SIGHUP and when either file changes (checked
//! every [`CHECK_EVERY`]: a poll of two `stat`s, which also sees a
//! Kubernetes secret's symlink swap, where change notifications do not).
//! Connections already open keep the certificate they were made with; new
//! handshakes get the new one. A pair that does not load (a half-written
//! file, a key that does not match) is logged and the old one kept.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_util::sync::CancellationToken;

/// How often the files are checked for a change.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// The certificate in use, replaced on reload.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// The hub's TLS: what accepts connections, and where its files are.
pub struct Tls {
    acceptor: TlsAcceptor,
    current: Arc<Current>,
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl Tls {
    /// Loads the pair; an error says which file and why.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Tls>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certified = load_pair(cert, key, &provider)?;
        let current = Arc::new(Current(RwLock::new(Arc::new(certified))));
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            current,
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider,
        }))
    }

    /// What performs the handshakes.
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Reads the pair again; on success new handshakes use it.
    pub fn reload(&self) -> Result<(), String> {
        let certified = load_pair(&self.cert, &self.key, &self.provider)?;
        *self.current.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(certified);
        Ok(())
    }

    /// Reloads on SIGHUP and when a file changes, until `stop`.
    pub fn watch(self: Arc<Self>, stop: CancellationToken) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = signal(SignalKind::hangup())?;
        tokio::spawn(async move {
            let mut seen = self.stamps();
            let mut every = tokio::time::interval(CHECK_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let why = tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = hangup.recv() => "SIGHUP",
                    _ = every.tick() => {
                        let now = self.stamps();
                        if now == seen {
                            continue;
                        }
                        seen = now;
                        "a changed file"
                    }
                };
                match self.reload() {
                    Ok(()) => {
                        tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded ({why})")
                    }
                    Err(err) => {
                        tracing::error!(%err, "TLS certificate not reloaded ({why}): keeping the one in use")
                    }
                }
            }
        });
        Ok(())
    }

    /// When and how the two files were last changed, as far as `stat` says.
    fn stamps(&self) -> [Option<(SystemTime, u64)>; 2] {
        let stamp = |path: &Path| {
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        };
        [stamp(&self.cert), stamp(&self.key)]
    }
}

/// The chain and key of two PEM files, checked to belong together.
fn load_pair(
    cert: &Path,
    key: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "--tls-cert {}: no certificate in it",
            cert.display()
        ));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
    CertifiedKey::from_der(chain, private, provider).map_err(|e| {
        format!(
            "--tls-cert {} with --tls-key {}: {e}",
            cert.display(),
            key.display()
        )
    })
}
