//! The HTTPS serving layer of `countersign serve`: TLS 1.2/1.3 over tokio-rustls (ALPN `h2`
//! and `http/1.1`), HTTP/1.1 and HTTP/2 connections running an axum router, a serving
//! certificate that follows its files on disk, and a graceful shutdown.
//!
//! The router is built elsewhere and never sees a socket; this module knows nothing of
//! admission.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::version::{TLS12, TLS13};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use super::client_auth::{Caller, ClientAuth, ClientCaError, ReloadingClientVerifier};

/// How long a client may take over the TLS handshake, so a silent one cannot hold a task.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the certificate files are read again. Polling the contents, rather than
/// watching with inotify, follows a Secret volume's symlink swap and any other rewrite.
const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// The pause after a failed `accept` (e.g. out of file descriptors), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Where the serving certificate chain and its private key are, as PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (`tls.crt` of a Kubernetes TLS Secret).
    pub cert_path: PathBuf,
    /// The leaf's private key (`tls.key`), PKCS#8, PKCS#1 or SEC1.
    pub key_path: PathBuf,
}

/// Why `serve` could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The certificate files at start-up (later changes only warn).
    #[error("serving certificate: {0}")]
    Certificate(#[from] CertificateError),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The client CA file at start-up (later changes only warn).
    #[error("client CA: {0}")]
    ClientCa(#[from] ClientCaError),
}

/// Why the certificate files do not give a serving certificate; each names its file(s).
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    /// A file is missing or unreadable.
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    /// A file is not PEM, or holds no certificate or no private key.
    #[error("{}: {message}", path.display())]
    Pem { path: PathBuf, message: String },
    /// The key does not belong to the leaf, or rustls cannot use the key or certificate.
    #[error(
        "{} and {} do not make a serving certificate: {source}",
        cert_path.display(),
        key_path.display()
    )]
    Unusable {
        cert_path: PathBuf,
        key_path: PathBuf,
        source: rustls::Error,
    },
}

/// Serves `router` over HTTPS on `listener` until `shutdown` resolves, then stops accepting,
/// lets open connections finish for at most `grace`, closes the rest and returns.
///
/// Errors only when it cannot start (the certificate files or the TLS configuration); a
/// failed handshake or a broken connection is logged and the server carries on.
///
/// With `client_auth`, a client certificate is asked for (not required: probes need none)
/// and verified; each request carries its connection's [`Caller`] as an extension.
pub async fn serve(
    listener: TcpListener,
    tls: TlsFiles,
    client_auth: Option<ClientAuth>,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send,
    grace: Duration,
) -> Result<(), ServeError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (certificate, seen) = ReloadingCertificate::load(tls, provider.clone()).await?;
    let certificate = Arc::new(certificate);
    let _follower = AbortOnDrop(tokio::spawn(certificate.clone().follow_files(seen)));
    let (verifier, allowed_names) = match client_auth {
        Some(auth) => {
            let verifier = Arc::new(ReloadingClientVerifier::load(
                auth.ca_file,
                provider.clone(),
            )?);
            (Some(verifier), Arc::new(auth.allowed_names))
        }
        None => (None, Arc::new(Vec::new())),
    };
    let _ca_follower = verifier
        .clone()
        .map(|verifier| AbortOnDrop(tokio::spawn(verifier.follow_file())));
    let acceptor = TlsAcceptor::from(Arc::new(server_config(provider, certificate, verifier)?));

    let mut http = auto::Builder::new(TokioExecutor::new());
    // With a timer, hyper's 30 s limit on reading a request's headers applies.
    http.http1().timer(TokioTimer::new());
    let http = Arc::new(http);

    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(serve_connection(
                        stream,
                        peer,
                        acceptor.clone(),
                        http.clone(),
                        router.clone(),
                        allowed_names.clone(),
                        graceful.watcher(),
                    ));
                }
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
            Some(finished) = connections.join_next() => log_panic(finished),
        }
    }

    drop(listener);
    reap_finished(&mut connections);
    tracing::info!(
        open_connections = connections.len(),
        ?grace,
        "shutting down: no new connections, waiting for the open ones"
    );
    let drained = tokio::time::timeout(grace, async {
        graceful.shutdown().await;
        while let Some(finished) = connections.join_next().await {
            log_panic(finished);
        }
    })
    .await;
    if drained.is_err() {
        reap_finished(&mut connections);
        tracing::warn!(
            open_connections = connections.len(),
            ?grace,
            "grace period over, closing the connections still open"
        );
    }
    connections.shutdown().await;
    Ok(())
}

/// TLS 1.3 and 1.2 with the ring provider (no process-wide default needed), client
/// certificates asked for and verified when `verifier` is given, the certificate from
/// `certificate` at each handshake.
fn server_config(
    provider: Arc<CryptoProvider>,
    certificate: Arc<ReloadingCertificate>,
    verifier: Option<Arc<ReloadingClientVerifier>>,
) -> Result<ServerConfig, rustls::Error> {
    let builder =
        ServerConfig::builder_with_provider(provider).with_protocol_versions(&[&TLS13, &TLS12])?;
    let builder = match verifier {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(certificate);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// One connection: the TLS handshake (bounded in time), then HTTP/1.1 or HTTP/2 until the
/// client leaves or the graceful shutdown closes it. Failures are the client's business and
/// are logged at debug: probes and scanners make them routine.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    http: Arc<auto::Builder<TokioExecutor>>,
    router: axum::Router,
    allowed_names: Arc<Vec<String>>,
    watcher: Watcher,
) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%peer, %error, "setting TCP_NODELAY failed");
    }
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, timeout = ?HANDSHAKE_TIMEOUT, "TLS handshake timed out");
            return;
        }
    };
    let caller = Caller::of(tls.get_ref().1.peer_certificates(), &allowed_names);
    let router = router.layer(axum::Extension(caller));
    let connection = http.serve_connection(TokioIo::new(tls), TowerToHyperService::new(router));
    if let Err(error) = watcher.watch(connection).await {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

/// Takes the finished connection tasks out of the set, so its length counts open ones.
fn reap_finished(connections: &mut JoinSet<()>) {
    while let Some(finished) = connections.try_join_next() {
        log_panic(finished);
    }
}

/// A connection task that panicked is a bug worth an error line; a cancelled one is not.
fn log_panic(finished: Result<(), JoinError>) {
    if let Err(error) = finished
        && error.is_panic()
    {
        tracing::error!(%error, "a connection task panicked");
    }
}

/// Aborts a background task when its owner goes away, so the certificate follower stops
/// with `serve` even if `serve`'s future is dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The serving certificate, handed to rustls as its resolver: each new handshake takes the
/// current one, so a swap reaches new connections while open ones keep what they have.
#[derive(Debug)]
struct ReloadingCertificate {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

/// The file contents the follower last acted on, so it parses (and warns) once per change.
struct FilesSeen {
    contents: PemFiles,
    read_failing: bool,
}

impl ReloadingCertificate {
    /// The first load, where any failure is the caller's error.
    async fn load(
        files: TlsFiles,
        provider: Arc<CryptoProvider>,
    ) -> Result<(ReloadingCertificate, FilesSeen), CertificateError> {
        let contents = PemFiles::read(&files).await?;
        let key = contents.certified_key(&files, &provider)?;
        let certificate = ReloadingCertificate {
            files,
            provider,
            current: RwLock::new(Arc::new(key)),
        };
        let seen = FilesSeen {
            contents,
            read_failing: false,
        };
        Ok((certificate, seen))
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads the files every `RELOAD_INTERVAL`, for as long as the task runs.
    async fn follow_files(self: Arc<Self>, mut seen: FilesSeen) {
        loop {
            tokio::time::sleep(RELOAD_INTERVAL).await;
            self.reload_if_changed(&mut seen).await;
        }
    }

    /// Swaps in the certificate when the files changed and make a good one; otherwise keeps
    /// the current one and warns, once per change (unreadable, half-written, mismatched).
    async fn reload_if_changed(&self, seen: &mut FilesSeen) {
        let contents = match PemFiles::read(&self.files).await {
            Ok(contents) => contents,
            Err(error) => {
                if !seen.read_failing {
                    tracing::warn!(%error, "keeping the current serving certificate");
                    seen.read_failing = true;
                }
                return;
            }
        };
        seen.read_failing = false;
        if contents == seen.contents {
            return;
        }
        match contents.certified_key(&self.files, &self.provider) {
            Ok(key) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
                tracing::info!(
                    cert = %self.files.cert_path.display(),
                    "serving the certificate read from changed files"
                );
            }
            Err(error) => tracing::warn!(%error, "keeping the current serving certificate"),
        }
        seen.contents = contents;
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The raw contents of the two PEM files, read together.
#[derive(PartialEq, Eq)]
struct PemFiles {
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl PemFiles {
    async fn read(files: &TlsFiles) -> Result<PemFiles, CertificateError> {
        Ok(PemFiles {
            cert: read_file(&files.cert_path).await?,
            key: read_file(&files.key_path).await?,
        })
    }

    /// Parses the chain and key and checks that the key belongs to the leaf.
    fn certified_key(
        &self,
        files: &TlsFiles,
        provider: &CryptoProvider,
    ) -> Result<CertifiedKey, CertificateError> {
        let pem_error = |path: &Path, message: String| CertificateError::Pem {
            path: path.to_owned(),
            message,
        };
        let chain = CertificateDer::pem_slice_iter(&self.cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| pem_error(&files.cert_path, error.to_string()))?;
        if chain.is_empty() {
            return Err(pem_error(
                &files.cert_path,
                "no CERTIFICATE block".to_owned(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(&self.key)
            .map_err(|error| pem_error(&files.key_path, format!("private key: {error}")))?;
        CertifiedKey::from_der(chain, key, provider).map_err(|source| CertificateError::Unusable {
            cert_path: files.cert_path.clone(),
            key_path: files.key_path.clone(),
            source,
        })
    }
}

async fn read_file(path: &Path) -> Result<Vec<u8>, CertificateError> {
    tokio::fs::read(path)
        .await
        .map_err(|source| CertificateError::Read {
            path: path.to_owned(),
            source,
        })
}

// The Secret-volume layout of the tests is made of symlinks.
#[cfg(test)]
#[cfg(unix)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicU32, Ordering};

    use axum::routing::get;
    use http_body_util::{BodyExt, Empty};
    use hyper::body::{Bytes, Incoming};
    use hyper::client::conn::{http1, http2};
    use hyper::{Request, Response, StatusCode};
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ProtocolVersion, RootCertStore, SupportedProtocolVersion};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::{Notify, oneshot};
    use tokio_rustls::TlsConnector;
    use tokio_rustls::client::TlsStream;

    type Error = Box<dyn std::error::Error + Send + Sync>;

    /// A CA that issues serving certificates for `localhost` and `127.0.0.1`.
    struct TestCa {
        issuer: CertifiedIssuer<'static, KeyPair>,
    }

    /// A serving certificate as PEM files hold it, and its DER to compare with the peer's.
    struct Leaf {
        cert_pem: String,
        key_pem: String,
        der: CertificateDer<'static>,
    }

    impl TestCa {
        fn new(name: &str) -> TestCa {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            let issuer =
                CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
            TestCa { issuer }
        }

        fn leaf(&self) -> Leaf {
            let key = KeyPair::generate().unwrap();
            let params =
                CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                    .unwrap();
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            Leaf {
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
                der: cert.der().clone(),
            }
        }
    }

    /// A Kubernetes Secret volume as the kubelet writes it: `tls.crt` and `tls.key` link
    /// through `..data` to a generation directory, and an update renames a new `..data`
    /// link over the old one.
    struct SecretVolume {
        dir: PathBuf,
        generation: u32,
    }

    impl SecretVolume {
        fn new(cert_pem: &str, key_pem: &str) -> SecretVolume {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "countersign-server-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let mut volume = SecretVolume { dir, generation: 0 };
            volume.update(cert_pem, key_pem);
            for name in ["tls.crt", "tls.key"] {
                std::os::unix::fs::symlink(format!("..data/{name}"), volume.dir.join(name))
                    .unwrap();
            }
            volume
        }

        fn files(&self) -> TlsFiles {
            TlsFiles {
                cert_path: self.dir.join("tls.crt"),
                key_path: self.dir.join("tls.key"),
            }
        }

        fn update(&mut self, cert_pem: &str, key_pem: &str) {
            self.generation += 1;
            let generation = format!("..generation-{}", self.generation);
            let data = self.dir.join(&generation);
            std::fs::create_dir(&data).unwrap();
            std::fs::write(data.join("tls.crt"), cert_pem).unwrap();
            std::fs::write(data.join("tls.key"), key_pem).unwrap();
            let staged = self.dir.join("..data_tmp");
            std::os::unix::fs::symlink(&generation, &staged).unwrap();
            std::fs::rename(&staged, self.dir.join("..data")).unwrap();
        }
    }

    impl Drop for SecretVolume {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// `serve` on a free loopback port in a task; dropping `shutdown` stops it too.
    struct RunningServer {
        address: SocketAddr,
        shutdown: oneshot::Sender<()>,
        task: JoinHandle<Result<(), ServeError>>,
    }

    async fn start(files: TlsFiles, router: axum::Router, grace: Duration) -> RunningServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (shutdown, fired) = oneshot::channel();
        let task = tokio::spawn(serve(
            listener,
            files,
            None,
            router,
            async {
                let _ = fired.await;
            },
            grace,
        ));
        RunningServer {
            address,
            shutdown,
            task,
        }
    }

    /// `/version` answers with the request's HTTP version.
    fn version_router() -> axum::Router {
        axum::Router::new().route(
            "/version",
            get(
                |request: axum::extract::Request| async move { format!("{:?}", request.version()) },
            ),
        )
    }

    fn client_config(
        cas: &[&TestCa],
        versions: &[&'static SupportedProtocolVersion],
        alpn: &[u8],
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for ca in cas {
            roots.add(ca.issuer.der().clone()).unwrap();
        }
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(versions)
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        Arc::new(config)
    }

    async fn connect(
        address: SocketAddr,
        config: Arc<ClientConfig>,
    ) -> Result<TlsStream<TcpStream>, Error> {
        let tcp = TcpStream::connect(address).await?;
        let name = ServerName::try_from("localhost")?;
        Ok(TlsConnector::from(config).connect(name, tcp).await?)
    }

    fn peer_leaf(tls: &TlsStream<TcpStream>) -> CertificateDer<'static> {
        tls.get_ref().1.peer_certificates().unwrap()[0].clone()
    }

    async fn http1_client(tls: TlsStream<TcpStream>) -> http1::SendRequest<Empty<Bytes>> {
        let (sender, connection) = http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(connection);
        sender
    }

    async fn http1_get(
        sender: &mut http1::SendRequest<Empty<Bytes>>,
        path: &str,
    ) -> Result<(StatusCode, String), Error> {
        sender.ready().await?;
        let request = Request::get(path)
            .header(hyper::header::HOST, "localhost")
            .body(Empty::new())?;
        read(sender.send_request(request).await?).await
    }

    async fn read(response: Response<Incoming>) -> Result<(StatusCode, String), Error> {
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8(body.to_vec())?))
    }

    /// Reads until the server closes the connection.
    async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
        let mut reply = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply))
            .await
            .unwrap()
            .unwrap();
        reply
    }

    /// Connects until the server presents `expected`, for up to five seconds.
    async fn wait_for_leaf(
        address: SocketAddr,
        config: Arc<ClientConfig>,
        expected: &CertificateDer<'_>,
    ) {
        for _ in 0..50 {
            if peer_leaf(&connect(address, config.clone()).await.unwrap()) == *expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the server did not switch to the new certificate within 5 s");
    }

    #[tokio::test]
    async fn serves_http1_and_http2_over_tls_12_and_13() {
        let ca = TestCa::new("test CA");
        let leaf = ca.leaf();
        let volume = SecretVolume::new(&leaf.cert_pem, &leaf.key_pem);
        let server = start(volume.files(), version_router(), Duration::from_secs(1)).await;

        let tls = connect(
            server.address,
            client_config(&[&ca], &[&TLS13], b"http/1.1"),
        )
        .await
        .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        assert_eq!(peer_leaf(&tls), leaf.der);
        let mut sender = http1_client(tls).await;
        for _ in 0..2 {
            let (status, body) = http1_get(&mut sender, "/version").await.unwrap();
            assert_eq!((status, body.as_str()), (StatusCode::OK, "HTTP/1.1"));
        }

        let tls = connect(server.address, client_config(&[&ca], &[&TLS13], b"h2"))
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(connection);
        let request = Request::get("https://localhost/version")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let (status, body) = read(sender.send_request(request).await.unwrap())
            .await
            .unwrap();
        assert_eq!((status, body.as_str()), (StatusCode::OK, "HTTP/2.0"));

        let tls = connect(
            server.address,
            client_config(&[&ca], &[&TLS12], b"http/1.1"),
        )
        .await
        .unwrap();
        assert_eq!(
            tls.get_ref().1.protocol_version(),
            Some(ProtocolVersion::TLSv1_2)
        );
        let (status, _) = http1_get(&mut http1_client(tls).await, "/version")
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn garbage_old_protocols_and_silent_clients_do_not_stop_the_server() {
        let ca = TestCa::new("test CA");
        let leaf = ca.leaf();
        let volume = SecretVolume::new(&leaf.cert_pem, &leaf.key_pem);
        let server = start(volume.files(), version_router(), Duration::from_secs(1)).await;

        // A client that connects and never speaks: its handshake waits in its own task.
        let _silent = TcpStream::connect(server.address).await.unwrap();

        let mut plain = TcpStream::connect(server.address).await.unwrap();
        plain
            .write_all(b"GET /version HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        read_to_close(&mut plain).await;

        // A TLS 1.1 ClientHello that is acceptable in every other respect: a suite and a
        // signature_algorithms extension rustls supports, so only the version is refused.
        let mut hello = vec![0x16, 0x03, 0x01, 0x00, 0x39]; // record: handshake, 57 bytes
        hello.extend([0x01, 0x00, 0x00, 0x35, 0x03, 0x02]); // ClientHello, 53 bytes, TLS 1.1
        hello.extend([0x11; 32]); // random
        hello.push(0x00); // no session id
        hello.extend([0x00, 0x02, 0xc0, 0x2b]); // TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        hello.extend([0x01, 0x00]); // null compression
        hello.extend([
            0x00, 0x0a, 0x00, 0x0d, 0x00, 0x06, 0x00, 0x04, 0x04, 0x03, 0x08, 0x04,
        ]);
        let mut old = TcpStream::connect(server.address).await.unwrap();
        old.write_all(&hello).await.unwrap();
        let reply = read_to_close(&mut old).await;
        // An alert record whose description is protocol_version (70).
        assert_eq!(reply.first(), Some(&0x15), "{reply:?}");
        assert_eq!(reply.get(6), Some(&70), "{reply:?}");

        let tls = connect(
            server.address,
            client_config(&[&ca], &[&TLS13], b"http/1.1"),
        )
        .await
        .unwrap();
        let (status, body) = http1_get(&mut http1_client(tls).await, "/version")
            .await
            .unwrap();
        assert_eq!((status, body.as_str()), (StatusCode::OK, "HTTP/1.1"));
    }

    #[tokio::test]
    async fn a_start_without_usable_certificate_files_names_the_file() {
        let ca = TestCa::new("test CA");
        let leaf = ca.leaf();
        let other = ca.leaf();
        let volume = SecretVolume::new(&leaf.cert_pem, &other.key_pem);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let files = volume.files();
        let error = serve(
            listener,
            files.clone(),
            None,
            version_router(),
            std::future::pending(),
            Duration::ZERO,
        )
        .await
        .unwrap_err();
        let message = error.to_string();
        assert!(message.contains("tls.crt and "), "{message}");
        assert!(message.contains("tls.key"), "{message}");

        let missing = TlsFiles {
            cert_path: volume.dir.join("missing.crt"),
            ..files
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let error = serve(
            listener,
            missing,
            None,
            version_router(),
            std::future::pending(),
            Duration::ZERO,
        )
        .await
        .unwrap_err();
        assert!(error.to_string().contains("missing.crt"), "{error}");
    }

    #[tokio::test]
    async fn a_rotated_certificate_reaches_new_connections_and_bad_files_are_ignored() {
        let old_ca = TestCa::new("old CA");
        let new_ca = TestCa::new("new CA");
        let old = old_ca.leaf();
        let new = new_ca.leaf();
        let mut volume = SecretVolume::new(&old.cert_pem, &old.key_pem);
        let server = start(volume.files(), version_router(), Duration::from_secs(1)).await;
        let both = client_config(&[&old_ca, &new_ca], &[&TLS13], b"http/1.1");

        let kept = connect(server.address, both.clone()).await.unwrap();
        assert_eq!(peer_leaf(&kept), old.der);
        let mut kept = http1_client(kept).await;
        assert_eq!(
            http1_get(&mut kept, "/version").await.unwrap().0,
            StatusCode::OK
        );

        // A garbage certificate, then a certificate with another's key: both ignored.
        volume.update("-----BEGIN CERTIFICATE-----\nnot base64\n", &new.key_pem);
        tokio::time::sleep(RELOAD_INTERVAL + Duration::from_millis(500)).await;
        assert_eq!(
            peer_leaf(&connect(server.address, both.clone()).await.unwrap()),
            old.der
        );
        volume.update(&new.cert_pem, &old.key_pem);
        tokio::time::sleep(RELOAD_INTERVAL + Duration::from_millis(500)).await;
        assert_eq!(
            peer_leaf(&connect(server.address, both.clone()).await.unwrap()),
            old.der
        );

        volume.update(&new.cert_pem, &new.key_pem);
        wait_for_leaf(server.address, both, &new.der).await;
        let only_new = client_config(&[&new_ca], &[&TLS13], b"http/1.1");
        let tls = connect(server.address, only_new).await.unwrap();
        let (status, _) = http1_get(&mut http1_client(tls).await, "/version")
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);

        // The keep-alive connection from before the swap still serves requests.
        assert_eq!(
            http1_get(&mut kept, "/version").await.unwrap().0,
            StatusCode::OK
        );
    }

    /// `/slow` notifies `started`, then takes 500 ms.
    fn slow_router(started: Arc<Notify>) -> axum::Router {
        axum::Router::new().route(
            "/slow",
            get(move || async move {
                started.notify_one();
                tokio::time::sleep(Duration::from_millis(500)).await;
                "done"
            }),
        )
    }

    #[tokio::test]
    async fn shutdown_finishes_requests_in_flight_and_refuses_new_connections() {
        let ca = TestCa::new("test CA");
        let leaf = ca.leaf();
        let volume = SecretVolume::new(&leaf.cert_pem, &leaf.key_pem);
        let started = Arc::new(Notify::new());
        let server = start(
            volume.files(),
            slow_router(started.clone()),
            Duration::from_secs(5),
        )
        .await;
        let config = client_config(&[&ca], &[&TLS13], b"http/1.1");
        let mut sender = http1_client(connect(server.address, config).await.unwrap()).await;
        // The client keeps its side open after the response: only the server's graceful
        // shutdown of the keep-alive connection lets `serve` return before the grace is over.
        let in_flight = tokio::spawn(async move {
            let response = http1_get(&mut sender, "/slow").await.unwrap();
            (response, sender)
        });
        started.notified().await;

        server.shutdown.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let refused = TcpStream::connect(server.address).await.unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);

        let ((status, body), mut sender) = in_flight.await.unwrap();
        assert_eq!((status, body.as_str()), (StatusCode::OK, "done"));
        tokio::time::timeout(Duration::from_secs(2), server.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(
            sender.ready().await.is_err(),
            "the server closed the connection"
        );
    }

    #[tokio::test]
    async fn shutdown_returns_when_the_grace_runs_out() {
        let ca = TestCa::new("test CA");
        let leaf = ca.leaf();
        let volume = SecretVolume::new(&leaf.cert_pem, &leaf.key_pem);
        let started = Arc::new(Notify::new());
        let server = start(
            volume.files(),
            slow_router(started.clone()),
            Duration::from_millis(100),
        )
        .await;
        let config = client_config(&[&ca], &[&TLS13], b"http/1.1");
        let mut sender = http1_client(connect(server.address, config).await.unwrap()).await;
        let in_flight = tokio::spawn(async move { http1_get(&mut sender, "/slow").await });
        started.notified().await;

        server.shutdown.send(()).unwrap();
        tokio::time::timeout(Duration::from_millis(400), server.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(
            in_flight.await.unwrap().is_err(),
            "the connection was closed"
        );
    }
}
