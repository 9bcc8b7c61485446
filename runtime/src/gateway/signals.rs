//! Signals a running gateway answers: `SIGHUP` reloads the config,
//! `SIGUSR1` reopens the access log (after rotation). `SIGTERM` and Ctrl-C
//! are the binary's to handle: they stop the process.
//!
//! The handlers run on a thread of their own; they are registered before
//! [`handle`] returns, so a signal sent right after is never lost to the
//! default action (which would end the process).

use std::sync::{Arc, Weak};

use tokio::sync::oneshot;

use super::Inner;

/// Starts answering `SIGHUP` and `SIGUSR1` for the gateway; the thread ends
/// when `stop` fires or is dropped.
///
/// # Errors
///
/// The handlers cannot be registered, or the thread cannot start.
#[cfg(unix)]
pub(super) fn handle(inner: Weak<Inner>, stop: oneshot::Receiver<()>) -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    std::thread::Builder::new()
        .name("gatehouse-signals".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("cannot start the signal thread: {e}")));
                    return;
                }
            };
            rt.block_on(async move {
                let (mut hup, mut usr1) = match (
                    signal(SignalKind::hangup()),
                    signal(SignalKind::user_defined1()),
                ) {
                    (Ok(h), Ok(u)) => (h, u),
                    (Err(e), _) | (_, Err(e)) => {
                        let _ = ready_tx.send(Err(format!("cannot handle signals: {e}")));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let mut stop = stop;
                loop {
                    tokio::select! {
                        _ = &mut stop => return,
                        _ = hup.recv() => {
                            let Some(inner) = inner.upgrade() else { return };
                            tracing::info!("SIGHUP: reloading the config");
                            // A reload compiles and constructs: off this
                            // thread's event loop. The outcome (and every
                            // problem) is logged by the reload.
                            let _ = tokio::task::spawn_blocking(move || {
                                let _ = super::reload(&inner);
                            })
                            .await;
                        }
                        _ = usr1.recv() => {
                            let Some(inner) = inner.upgrade() else { return };
                            reopen(&inner);
                        }
                    }
                }
            });
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    ready_rx
        .recv()
        .map_err(|_| "the signal thread ended before it was ready".to_string())?
}

#[cfg(not(unix))]
pub(super) fn handle(_: Weak<Inner>, _: oneshot::Receiver<()>) -> Result<(), String> {
    Ok(())
}

/// Writes buffered access-log lines and opens the file again.
pub(super) fn reopen(inner: &Arc<Inner>) {
    if let Some(log) = &inner.live.load().access_log {
        match log.reopen() {
            Ok(()) => tracing::info!("access log reopened"),
            Err(e) => tracing::warn!("{e}"),
        }
    }
}
