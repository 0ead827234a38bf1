//! Accepting TLS connections for tonic. The accept loop only accepts: each
//! handshake runs in its own task under a deadline, so a caller that
//! connects and then stalls, or a slow network, cannot hold up anyone else.
//! Each connection is accepted with the configuration current at that
//! moment, so a rotated certificate reaches new connections while
//! established ones carry on undisturbed.
//!
//! Completed streams go to tonic, which reads the caller's address and
//! verified certificates from them (`Request::remote_addr`,
//! `Request::peer_certs`). When tonic stops accepting it drops the stream,
//! and the accept loop ends with it, closing the listening socket.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

/// How long a caller has to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once; past this, new connections wait in the
/// kernel's backlog, so a flood of idle connections costs bounded memory.
const MAX_HANDSHAKES: usize = 512;

/// After an accept error such as running out of file descriptors, retrying
/// at once would spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Connections on `listener` that completed a handshake with the latest
/// configuration from `configs`.
pub(super) fn accept(
    listener: TcpListener,
    configs: watch::Receiver<Arc<ServerConfig>>,
) -> ReceiverStream<Result<TlsStream<TcpStream>, Infallible>> {
    let (handshaken, incoming) = mpsc::channel(64);
    tokio::spawn(accept_loop(listener, configs, handshaken));
    ReceiverStream::new(incoming)
}

async fn accept_loop(
    listener: TcpListener,
    configs: watch::Receiver<Arc<ServerConfig>>,
    handshaken: mpsc::Sender<Result<TlsStream<TcpStream>, Infallible>>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let permit = tokio::select! {
            () = handshaken.closed() => return,
            permit = handshakes.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let (tcp, peer) = tokio::select! {
            () = handshaken.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(error = %error, "could not accept a connection");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        // gRPC exchanges small frames; Nagle's algorithm would delay them.
        let _ = tcp.set_nodelay(true);
        let acceptor = TlsAcceptor::from(configs.borrow().clone());
        let handshaken = handshaken.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    // Fails only once tonic has stopped accepting.
                    let _ = handshaken.send(Ok(stream)).await;
                }
                Ok(Err(error)) => log_refused(peer, &error),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// A refused client certificate is worth an operator's attention; anything
/// else (port scanners, plaintext clients, dropped connections) is noise.
fn log_refused(peer: SocketAddr, error: &io::Error) {
    let tls_error = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls_error {
        Some(rustls::Error::NoCertificatesPresented | rustls::Error::InvalidCertificate(_)) => {
            tracing::info!(%peer, error = %error, "TLS handshake refused: client certificate missing or not trusted");
        }
        _ => tracing::debug!(%peer, error = %error, "TLS handshake failed"),
    }
}
