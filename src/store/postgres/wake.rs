//! Wake-ups across nodes, by `LISTEN`/`NOTIFY`: a write another node must
//! act on (an answer, a cancel request, a change of the work queue) is
//! followed by `NOTIFY swarm_wake, '<run>'` (or `'*work'`), and every
//! node keeps one connection listening on that channel. A run's owner
//! waits on [`Wakes::waiter`] instead of polling the database, so an
//! answer or a cancel given at another node reaches it at once, and a
//! waiting run costs the database nothing but a look every [`safety`]
//! (for a notification lost while the listener was reconnecting).
//!
//! A waiter subscribes before it is returned, so a wake that comes before
//! it is first polled is not lost.

use super::runtime;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// The channel every node listens on.
pub(super) const CHANNEL: &str = "swarm_wake";

/// The payload that wakes the work queue's waiters.
pub(super) const WORK: &str = "*work";

/// How long a waiter waits without a notification before its owner looks
/// anyway (`$SWARM_PG_SAFETY_POLL_MS`, default 5 s).
pub(super) fn safety() -> Duration {
    let ms = std::env::var("SWARM_PG_SAFETY_POLL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    Duration::from_millis(ms)
}

/// This process's waiters, by run.
#[derive(Default)]
pub(super) struct Wakes {
    runs: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl Wakes {
    fn runs(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<u64>>> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves at the next wake of `run` after this call, or after
    /// [`safety`].
    pub(super) fn waiter(&self, run: &str) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = {
            let mut runs = self.runs();
            if runs.len() > 1024 {
                runs.retain(|_, tx| tx.receiver_count() > 0);
            }
            runs.entry(run.to_string())
                .or_insert_with(|| watch::channel(0).0)
                .subscribe()
        };
        async move {
            let _ = tokio::time::timeout(safety(), rx.changed()).await;
        }
    }

    /// Wakes `run`'s waiters.
    fn wake(&self, run: &str) {
        let mut runs = self.runs();
        if let Some(tx) = runs.get(run) {
            tx.send_modify(|n| *n += 1);
            if tx.receiver_count() == 0 {
                runs.remove(run);
            }
        }
    }

    /// Wakes every waiter (notifications may have been missed).
    fn wake_all(&self) {
        let mut runs = self.runs();
        for tx in runs.values() {
            tx.send_modify(|n| *n += 1);
        }
        runs.retain(|_, tx| tx.receiver_count() > 0);
    }
}

/// Keeps one connection listening on [`CHANNEL`] for as long as the
/// process lives, reconnecting after a second when it breaks (and then
/// waking everyone, since notifications may have been missed).
pub(super) fn listen(config: tokio_postgres::Config, wakes: Arc<Wakes>, work: Arc<Notify>) {
    runtime().spawn(async move {
        loop {
            if let Err(e) = listen_once(&config, &wakes, &work).await {
                tracing::warn!("the Postgres wake-up listener broke ({e}); reconnecting");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            wakes.wake_all();
            work.notify_waiters();
        }
    });
}

async fn listen_once(
    config: &tokio_postgres::Config,
    wakes: &Wakes,
    work: &Notify,
) -> Result<(), tokio_postgres::Error> {
    match config.get_ssl_mode() {
        tokio_postgres::config::SslMode::Require => {
            let (client, conn) = config.connect(super::config::tls()).await?;
            relay(client, conn, wakes, work).await
        }
        _ => {
            let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
            relay(client, conn, wakes, work).await
        }
    }
}

/// Listens on `conn` and hands each notification to its waiters until
/// the connection ends.
async fn relay<S, T>(
    client: tokio_postgres::Client,
    mut conn: tokio_postgres::Connection<S, T>,
    wakes: &Wakes,
    work: &Notify,
) -> Result<(), tokio_postgres::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::StreamExt;
    use tokio_postgres::AsyncMessage;
    let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
    // The connection must be driven (by reading its messages) for LISTEN
    // to complete.
    let statement = format!("LISTEN {CHANNEL}");
    let listening = client.batch_execute(&statement);
    tokio::pin!(listening);
    let mut listened = false;
    loop {
        tokio::select! {
            done = &mut listening, if !listened => {
                done?;
                listened = true;
            }
            m = messages.next() => match m {
                Some(Ok(AsyncMessage::Notification(n))) => match n.payload() {
                    WORK => work.notify_waiters(),
                    run => wakes.wake(run),
                },
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            },
        }
    }
}
