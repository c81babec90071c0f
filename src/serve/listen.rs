//! The server's accept loop, bounded: a client must send its request
//! headers within a time limit, and at most so many connections are open
//! at once. `axum::serve` has neither, so a thousand half-open requests
//! (connected, headers never finished) took a server off the air once its
//! file descriptors ran out. Here a connection past the cap is closed at
//! once (it costs nothing to hold), and a slow header read ends the
//! connection: the slots a flood takes come back by themselves.

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// How much a client may hold of the server.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Connections open at once (at most what the open-file limit leaves
    /// room for); one past it is closed on accept.
    pub connections: usize,
    /// How long a client may take to send a request's headers.
    pub header_timeout: Duration,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            connections: 1024,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// The most connections this process can hold with room to spare: its
/// open-file limit less 64 (the journal, step logs, agents' pipes).
pub fn descriptor_room() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    (lim.rlim_cur as usize).saturating_sub(64).max(16)
}

/// Serves `router` on `listener` within `bounds`, until the future is
/// dropped. An error accepting (the process is out of descriptors) is
/// logged and waited out, never the end of the server.
pub async fn serve(listener: TcpListener, router: Router, bounds: Bounds) {
    let cap = bounds.connections.clamp(1, descriptor_room());
    let slots = Arc::new(Semaphore::new(cap));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("accepting a connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection refused: {cap} open already");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(bounds.header_timeout)
                .serve_connection(TokioIo::new(tcp), service);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
            drop(slot);
        });
    }
}
