//! A worker's stdout and stderr: each line goes to poold's log, tagged with the service,
//! slot and worker (rate-limited, so a chatty worker cannot flood the log), and the last
//! few lines are kept so `poolctl status` can say why a worker died.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinHandle;

/// Lines kept per worker.
pub const TAIL_LINES: usize = 8;
/// Longer lines are cut (and a line without a newline is ended) at this many bytes.
pub const MAX_LINE_BYTES: usize = 2048;
/// Log lines a worker may write in a burst ...
const BURST_LINES: f64 = 100.0;
/// ... and per second after it; the rest is counted and reported as suppressed.
const LINES_PER_SEC: f64 = 20.0;

/// Who wrote the lines (the log's fields).
#[derive(Clone, Debug)]
pub struct Labels {
    pub service: String,
    /// Its slot; none for a warm spare.
    pub slot: Option<u32>,
    pub worker: String,
}

/// The last lines a worker wrote, both streams in arrival order.
#[derive(Debug, Default)]
pub struct Tail {
    lines: Mutex<VecDeque<String>>,
}

impl Tail {
    pub fn lines(&self) -> Vec<String> {
        self.lock().iter().cloned().collect()
    }

    /// The last non-empty line.
    pub fn last(&self) -> Option<String> {
        self.lock().back().cloned()
    }

    fn push(&self, line: String) {
        let mut lines = self.lock();
        if lines.len() == TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<String>> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A token bucket over log lines.
#[derive(Debug)]
struct RateLimit {
    tokens: f64,
    refilled: Instant,
    suppressed: u64,
}

impl RateLimit {
    fn new() -> Self {
        Self {
            tokens: BURST_LINES,
            refilled: Instant::now(),
            suppressed: 0,
        }
    }

    /// Whether a line may be logged now; if so, how many were suppressed before it.
    fn admit(&mut self, now: Instant) -> Option<u64> {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * LINES_PER_SEC).min(BURST_LINES);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

struct Sink {
    labels: Labels,
    tail: Arc<Tail>,
    limit: Mutex<RateLimit>,
}

impl Sink {
    fn line(&self, stream: &'static str, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        let text = text.trim_end_matches(['\r', '\n']);
        if text.trim().is_empty() {
            return;
        }
        self.tail.push(text.to_owned());
        let admitted = self
            .limit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(Instant::now());
        let l = &self.labels;
        match admitted {
            None => {}
            Some(0) => {
                tracing::info!(service = %l.service, worker.slot = l.slot, worker.spare = l.slot.is_none().then_some(true), worker.id = %l.worker, stream, "{text}");
            }
            Some(suppressed) => {
                tracing::warn!(service = %l.service, worker.slot = l.slot, worker.spare = l.slot.is_none().then_some(true), worker.id = %l.worker, suppressed, "worker output rate-limited: lines left out of the log");
                tracing::info!(service = %l.service, worker.slot = l.slot, worker.spare = l.slot.is_none().then_some(true), worker.id = %l.worker, stream, "{text}");
            }
        }
    }
}

/// Reading a worker's output until both streams end.
#[derive(Debug)]
pub struct Capture {
    pub tail: Arc<Tail>,
    readers: Vec<JoinHandle<()>>,
}

impl Capture {
    /// Starts reading `stdout` and `stderr` in tasks of the current runtime.
    pub fn start(
        labels: Labels,
        stdout: impl AsyncRead + Unpin + Send + 'static,
        stderr: impl AsyncRead + Unpin + Send + 'static,
    ) -> Self {
        let tail = Arc::new(Tail::default());
        let sink = Arc::new(Sink {
            labels,
            tail: tail.clone(),
            limit: Mutex::new(RateLimit::new()),
        });
        let readers = vec![
            tokio::spawn(read_lines(stdout, "stdout", sink.clone())),
            tokio::spawn(read_lines(stderr, "stderr", sink)),
        ];
        Self { tail, readers }
    }

    /// Stops reading (another process reads the streams now).
    pub fn abort(self) {
        for reader in self.readers {
            reader.abort();
        }
    }

    /// Waits until both streams have ended (every process of the worker closed them),
    /// at most `limit`: a process that escaped the worker's end must not hold up its exit.
    pub async fn finish(self, limit: Duration) {
        let all = futures::future::join_all(self.readers);
        let _ = tokio::time::timeout(limit, all).await;
    }
}

async fn read_lines(mut reader: impl AsyncRead + Unpin, stream: &'static str, sink: Arc<Sink>) {
    // Small: every worker has two of these waiting (a 4 KiB chunk and 1 KiB of pending
    // line cost 10 MiB resident at 1,000 workers); lines longer than a chunk still join up.
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        let n = match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&chunk[..n]);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            sink.line(stream, &line[..line.len().min(MAX_LINE_BYTES)]);
        }
        if pending.len() > MAX_LINE_BYTES {
            sink.line(stream, &pending[..MAX_LINE_BYTES]);
            pending.clear();
        }
    }
    if !pending.is_empty() {
        sink.line(stream, &pending);
    }
}

#[cfg(test)]
mod tests;
