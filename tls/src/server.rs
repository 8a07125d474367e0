//! A listener for axum and tonic that serves plain TCP or TLS. With TLS, TCP
//! connections are accepted at once, their handshakes run beside each other
//! (a slow or silent client holds up no one, and is dropped after
//! [`HANDSHAKE_TIMEOUT`]), and connections are handed over once their
//! handshake is done.
//!
//! The certificate, key and client CA are read again on SIGHUP and when
//! their files change ([`Acceptor::watch`]): new handshakes use the new
//! files, open connections keep theirs. Files that do not make a
//! configuration are reported and the previous one is kept.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::{Connected, TcpConnectInfo};
use vigil_config::ServerTlsConfig;
use vigil_domain::shutdown;
use vigil_domain::yaml::Watch;

use crate::{TlsError, certificates, private_key, provider, roots_from};

/// How long a client may take to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once on one listener; connections over it are
/// closed at once.
const MAX_HANDSHAKES: usize = 1024;

/// ALPN protocol ids.
pub const H2: &[u8] = b"h2";
pub const HTTP_1_1: &[u8] = b"http/1.1";

/// The current server configuration of one listener, reloadable.
pub struct Acceptor {
    files: ServerTlsConfig,
    alpn: Vec<Vec<u8>>,
    current: RwLock<TlsAcceptor>,
    failed_handshakes: AtomicU64,
}

impl Acceptor {
    /// Reads the files; `alpn` lists the protocols offered, preferred first.
    pub fn new(files: &ServerTlsConfig, alpn: &[&[u8]]) -> Result<Arc<Acceptor>, TlsError> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = build(files, &alpn)?;
        Ok(Arc::new(Acceptor {
            files: files.clone(),
            alpn,
            current: RwLock::new(acceptor),
            failed_handshakes: AtomicU64::new(0),
        }))
    }

    /// Reads the files again; on error the previous configuration stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let acceptor = build(&self.files, &self.alpn)?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = acceptor;
        Ok(())
    }

    /// Handshakes that failed or timed out (a client that does not trust the
    /// certificate, has no client certificate, or is not speaking TLS).
    pub fn failed_handshakes(&self) -> u64 {
        self.failed_handshakes.load(Ordering::Relaxed)
    }

    fn current(&self) -> TlsAcceptor {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Reads the files again on SIGHUP and once a change to them has settled
    /// (looked for every `watch_interval_ms`), for as long as the acceptor
    /// is in use.
    pub fn watch(self: &Arc<Self>) {
        let acceptor = Arc::downgrade(self);
        let interval = Duration::from_millis(self.files.watch_interval_ms);
        let mut watch = Watch::new(&self.files.files());
        let mut hangups = shutdown::hangups();
        tokio::spawn(async move {
            loop {
                let hangup = tokio::select! {
                    Some(()) = hangups.recv() => true,
                    () = sleep_or_never(interval) => false,
                };
                let Some(acceptor) = Weak::upgrade(&acceptor) else {
                    return;
                };
                if hangup || watch.settled_change() {
                    watch.read();
                    let cert_file = acceptor.files.cert_file.display().to_string();
                    match acceptor.reload() {
                        Ok(()) => tracing::info!(%cert_file, "TLS certificate read again"),
                        Err(error) => tracing::error!(
                            %cert_file, %error,
                            "TLS files not read again; the previous certificate is still served"
                        ),
                    }
                }
            }
        });
    }
}

async fn sleep_or_never(interval: Duration) {
    if interval.is_zero() {
        std::future::pending().await
    } else {
        tokio::time::sleep(interval).await
    }
}

fn build(files: &ServerTlsConfig, alpn: &[Vec<u8>]) -> Result<TlsAcceptor, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let builder = match &files.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca) => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots_from(ca)?), provider())
                .build()?,
        ),
    };
    let mut config = builder.with_single_cert(
        certificates(&files.cert_file)?,
        private_key(&files.key_file)?,
    )?;
    config.alpn_protocols = alpn.to_vec();
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A connection accepted by a [`Listener`]: plain TCP, or TLS with its
/// handshake done.
pub enum Connection {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// Where connections come from: the TCP listener itself, or the tasks that
/// finish TLS handshakes.
enum Accepting {
    Plain(TcpListener),
    Tls(mpsc::Receiver<(Connection, SocketAddr)>),
}

/// A bound listener that serves plain TCP, or TLS when configured: one type
/// for axum (an `axum::serve::Listener`) and tonic ([`Listener::into_incoming`]).
pub struct Listener {
    accepting: Accepting,
    local: SocketAddr,
}

impl Listener {
    /// Serves `tcp` as it is, or with TLS when `tls` is set, offering the
    /// `alpn` protocols. TLS files are read now, and again on SIGHUP or a
    /// change ([`Acceptor::watch`]); the handshakes run in their own tasks,
    /// which stop when the listener is dropped.
    pub fn new(
        tcp: TcpListener,
        tls: Option<&ServerTlsConfig>,
        alpn: &[&[u8]],
    ) -> Result<Listener, TlsError> {
        let local = tcp
            .local_addr()
            .map_err(|e| TlsError::Listen(e.to_string()))?;
        let accepting = match tls {
            None => Accepting::Plain(tcp),
            Some(files) => {
                let acceptor = Acceptor::new(files, alpn)?;
                acceptor.watch();
                Accepting::Tls(handshakes(tcp, acceptor))
            }
        };
        Ok(Listener { accepting, local })
    }

    /// The connections as tonic's `serve_with_incoming` takes them.
    pub fn into_incoming(self) -> impl Stream<Item = io::Result<Connection>> + Send {
        futures_util::stream::unfold(self, |mut listener| async move {
            let (connection, _) = axum::serve::Listener::accept(&mut listener).await;
            Some((Ok(connection), listener))
        })
    }
}

/// Accepts on `tcp` and hands over each connection once its handshake is
/// done, until the receiver is dropped.
fn handshakes(
    tcp: TcpListener,
    acceptor: Arc<Acceptor>,
) -> mpsc::Receiver<(Connection, SocketAddr)> {
    let (sender, connections) = mpsc::channel(MAX_HANDSHAKES);
    let in_progress = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                () = sender.closed() => return,
                accepted = accept(&tcp) => accepted,
            };
            let Ok(permit) = Arc::clone(&in_progress).try_acquire_owned() else {
                acceptor.failed_handshakes.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let tls = acceptor.current();
            let acceptor = Arc::clone(&acceptor);
            let sender = sender.clone();
            tokio::spawn(async move {
                let result = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await;
                drop(permit);
                match result {
                    Ok(Ok(stream)) => {
                        let _ = sender.send((Connection::Tls(Box::new(stream)), peer)).await;
                    }
                    Ok(Err(error)) => {
                        acceptor.failed_handshakes.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%peer, %error, "TLS handshake failed");
                    }
                    Err(_) => {
                        acceptor.failed_handshakes.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%peer, "TLS handshake timed out");
                    }
                }
            });
        }
    });
    connections
}

/// The next TCP connection, with Nagle's delay off. An error (out of file
/// descriptors and the like) is logged and waited out, as axum does.
async fn accept(tcp: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match tcp.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                return (stream, peer);
            }
            Err(error) => {
                tracing::warn!(%error, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

impl axum::serve::Listener for Listener {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Connection, SocketAddr) {
        match &mut self.accepting {
            Accepting::Plain(tcp) => {
                let (stream, peer) = accept(tcp).await;
                (Connection::Plain(stream), peer)
            }
            Accepting::Tls(connections) => match connections.recv().await {
                Some(connection) => connection,
                // The accepting task ended: no connection will come again.
                None => std::future::pending().await,
            },
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

impl Connection {
    fn tcp(&self) -> &TcpStream {
        match self {
            Connection::Plain(stream) => stream,
            Connection::Tls(stream) => stream.get_ref().0,
        }
    }
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        TcpConnectInfo {
            local_addr: self.tcp().local_addr().ok(),
            remote_addr: self.tcp().peer_addr().ok(),
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut *self {
            Connection::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Connection::Tls(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut *self {
            Connection::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Connection::Tls(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut *self {
            Connection::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Connection::Tls(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut *self {
            Connection::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Connection::Tls(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut *self {
            Connection::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Connection::Tls(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Connection::Plain(stream) => stream.is_write_vectored(),
            Connection::Tls(stream) => stream.is_write_vectored(),
        }
    }
}
