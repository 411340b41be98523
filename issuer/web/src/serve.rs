//! The listeners. Plain HTTP runs one single-threaded runtime per core, each accepting on
//! a socket of its own bound to the same port (SO_REUSEPORT: the kernel hands each
//! connection to one of them), so a connection lives on one thread with no cross-thread
//! wake-up per request (on the OCSP hot path that wake-up was the largest cost after the
//! kernel's TCP). HTTPS runs rustls. Both give a client 10 s for its request headers (and
//! for the TLS handshake), back off when accepting fails (out of file descriptors), and on
//! shutdown stop accepting and let requests in flight finish.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long a client has for its request headers, and for the TLS handshake.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests get after shutdown begins.
pub const DRAIN: Duration = Duration::from_secs(10);

fn http1() -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    b
}

/// Accepts connections until `stopped`, serving `router` on each (through `tls` when
/// given); then drains.
async fn accept_loop(
    listener: TcpListener,
    router: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stopped: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopped.wait_for(|s| *s) => break,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => {
                backoff = Duration::from_millis(5);
                tcp
            }
            Err(e) => {
                // EMFILE and friends: wait rather than spin, and say so.
                tracing::warn!(error = %e, retry_in = ?backoff, "accepting a connection failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        match &tls {
            None => {
                let service = TowerToHyperService::new(router.clone());
                let conn = http1().serve_connection(TokioIo::new(tcp), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let service_router = router.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    // A slow or failed handshake concerns that client only.
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(tcp)).await
                    else {
                        return;
                    };
                    // The client's certificate, which the TLS configuration's verifier
                    // has chained to its roots (when it asked for one), as the handlers
                    // see it.
                    let peer = PeerCertificate(
                        stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .map(|c| bytes::Bytes::copy_from_slice(c.as_ref())),
                    );
                    // Added to each request (not a layer over every route per connection).
                    let service = TowerToHyperService::new(tower::ServiceExt::map_request(
                        service_router,
                        move |mut req: hyper::Request<hyper::body::Incoming>| {
                            req.extensions_mut().insert(peer.clone());
                            req
                        },
                    ));
                    let conn = http1().serve_connection(TokioIo::new(stream), service);
                    let _ = watcher.watch(conn).await;
                });
            }
        }
    }
    let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
}

/// Serves `router` on `addr` from one single-threaded runtime per core (see the module
/// docs). Returns the bound address and the worker threads, which stop when `stopped`
/// turns true.
pub fn plain_per_core(
    addr: std::net::SocketAddr,
    router: Router,
    stopped: &watch::Receiver<bool>,
) -> Result<(std::net::SocketAddr, Vec<std::thread::JoinHandle<()>>)> {
    // SO_REUSEPORT would let a second issuer on the same port silently share the
    // connections; an ordinary bind first refuses a port anyone holds (and resolves port 0).
    let addr = std::net::TcpListener::bind(addr)
        .and_then(|probe| probe.local_addr())
        .with_context(|| format!("listening on {addr}"))?;
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let mut workers = Vec::with_capacity(threads);
    for i in 0..threads {
        let (router, stopped) = (router.clone(), stopped.clone());
        let (ready, bound) = std::sync::mpsc::channel();
        let worker = std::thread::Builder::new()
            .name(format!("http-{i}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready.send(Err(anyhow::Error::from(e)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match reuseport_listener(addr) {
                        Ok(listener) => {
                            let _ = ready.send(Ok(()));
                            accept_loop(listener, router, None, stopped).await;
                        }
                        Err(e) => {
                            let _ = ready.send(Err(e));
                        }
                    }
                });
            })
            .context("starting an HTTP worker")?;
        bound
            .recv()
            .context("an HTTP worker ended before listening")?
            .with_context(|| format!("listening on {addr}"))?;
        workers.push(worker);
    }
    Ok((addr, workers))
}

fn reuseport_listener(addr: std::net::SocketAddr) -> Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    Ok(socket.listen(1024)?)
}

/// The certificate a TLS client presented (DER), verified by the listener's client
/// verifier; `None` without one. Every request over HTTPS carries it as an extension.
#[derive(Debug, Clone)]
pub struct PeerCertificate(pub Option<bytes::Bytes>);

/// Serves `router` over HTTPS on `listener` until `stopped` (run it on a multi-threaded
/// runtime).
pub async fn tls(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    router: Router,
    stopped: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let router = router.layer(axum::Extension(crate::scim::Https));
    accept_loop(listener, router, Some(acceptor), stopped).await;
}
