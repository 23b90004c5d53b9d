//! The state record's writer: one thread writes the record whenever it changed, and the
//! changes made while a write is under way share the next write (group commit).
//!
//! Rewriting the record (1 MB at 1,000 workers, two fsyncs) on the runtime's thread at
//! every spawn and teardown cost a write per worker in a spawn storm or a recycle wave and
//! stalled the runtime meanwhile. Here a change takes a ticket ([`RecordWriter::request`]);
//! any write that starts after the ticket was taken covers the change, and a caller that
//! needs the change on disk (a spawn: the pool serves the worker only once a restarted
//! poold would find it) waits for its ticket ([`RecordWriter::written`]).

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tokio::sync::watch;

/// Runs a write function on its own thread whenever tickets are pending.
#[derive(Debug)]
pub(super) struct RecordWriter {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Progress {
    /// Tickets handed out so far (the last one's number).
    requested: u64,
    /// Set at drop: the thread ends once nothing is pending.
    stop: bool,
}

#[derive(Debug)]
struct Shared {
    progress: Mutex<Progress>,
    wake: Condvar,
    /// The highest ticket a finished write covers. A failed write counts as finished: the
    /// write function logs it, and waiting would not make the next one succeed.
    written: watch::Sender<u64>,
}

fn lock(progress: &Mutex<Progress>) -> MutexGuard<'_, Progress> {
    progress.lock().unwrap_or_else(|e| e.into_inner())
}

impl RecordWriter {
    /// Starts the thread; `write` writes everything there is to write at the moment it runs.
    pub(super) fn start(mut write: impl FnMut() + Send + 'static) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            progress: Mutex::default(),
            wake: Condvar::new(),
            written: watch::channel(0).0,
        });
        let thread = std::thread::Builder::new()
            .name("poold-record".to_owned())
            .spawn({
                let shared = shared.clone();
                move || loop {
                    let covers = {
                        let mut progress = lock(&shared.progress);
                        loop {
                            // Read before the write starts: every change whose ticket is at
                            // most this one was made before, so the write sees it.
                            if progress.requested > *shared.written.borrow() {
                                break progress.requested;
                            }
                            if progress.stop {
                                return;
                            }
                            progress = shared
                                .wake
                                .wait(progress)
                                .unwrap_or_else(|e| e.into_inner());
                        }
                    };
                    write();
                    shared.written.send_replace(covers);
                }
            })?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Asks for a write covering every change made before this call: its ticket.
    pub(super) fn request(&self) -> u64 {
        let mut progress = lock(&self.shared.progress);
        progress.requested += 1;
        self.shared.wake.notify_one();
        progress.requested
    }

    /// Waits until a write covering `ticket` has finished.
    pub(super) async fn written(&self, ticket: u64) {
        let mut written = self.shared.written.subscribe();
        // The sender lives as long as self: this cannot fail.
        let _ = written.wait_for(|covered| *covered >= ticket).await;
    }

    /// [`Self::written`] for synchronous callers (rare changes: the operator's state).
    pub(super) fn wait_blocking(&self, ticket: u64) {
        futures::executor::block_on(self.written(ticket));
    }

    /// Requests a write and waits for it.
    pub(super) async fn flush(&self) {
        let ticket = self.request();
        self.written(ticket).await;
    }
}

impl Drop for RecordWriter {
    /// Ends the thread after the writes still pending.
    fn drop(&mut self) {
        lock(&self.shared.progress).stop = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests;
