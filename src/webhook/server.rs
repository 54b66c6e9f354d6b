//! PLACEHOLDER until the TLS server lands from its branch.
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ServeError(String);

pub async fn serve(
    _listener: tokio::net::TcpListener,
    _tls: TlsFiles,
    _router: axum::Router,
    shutdown: impl Future<Output = ()> + Send,
    _grace: Duration,
) -> Result<(), ServeError> {
    shutdown.await;
    Ok(())
}
