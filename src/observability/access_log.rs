//! The JSON access log: one line per request, and one per closed tunnel.
//!
//! Lines are formatted on the request's task and written by a dedicated thread through a
//! bounded channel, so a slow disk or terminal never stalls the proxy. When the channel is
//! full a line is dropped and counted rather than blocking the request.
//!
//! A reload may point the log elsewhere ([`AccessLog::retarget`]): every clone writes to the
//! new target from then on, and the old writer thread ends once it has written what it had.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;

use crate::config::model::AccessLogTarget;

/// How many lines may wait for the writer before new ones are dropped.
const QUEUE_LINES: usize = 65_536;

/// What the writer thread receives.
enum Line {
    Text(String),
    /// Answered once every line queued before it is written and flushed.
    Flush(std::sync::mpsc::Sender<()>),
}

#[derive(Clone)]
pub struct AccessLog {
    inner: Arc<Inner>,
}

struct Inner {
    sender: ArcSwapOption<SyncSender<Line>>,
    target: parking_lot::Mutex<AccessLogTarget>,
    dropped: AtomicU64,
}

impl AccessLog {
    /// Starts the writer thread for `target`.
    pub fn start(target: &AccessLogTarget) -> std::io::Result<AccessLog> {
        let sender = writer_for(target)?;
        Ok(AccessLog {
            inner: Arc::new(Inner {
                sender: ArcSwapOption::new(sender.map(Arc::new)),
                target: parking_lot::Mutex::new(target.clone()),
                dropped: AtomicU64::new(0),
            }),
        })
    }

    /// Points every clone of this log at `target` (a reload); nothing happens when it is
    /// the current one. On error the log keeps its current target.
    pub fn retarget(&self, target: &AccessLogTarget) -> std::io::Result<()> {
        let mut current = self.inner.target.lock();
        if *current == *target {
            return Ok(());
        }
        let sender = writer_for(target)?;
        self.inner.sender.store(sender.map(Arc::new));
        *current = target.clone();
        Ok(())
    }

    /// Queues one record (any `Serialize` value, written as one JSON line).
    pub fn write(&self, record: &impl serde::Serialize) {
        let sender = self.inner.sender.load();
        let Some(sender) = sender.as_deref() else {
            return;
        };
        let Ok(mut line) = serde_json::to_string(record) else {
            return;
        };
        line.push('\n');
        if let Err(TrySendError::Full(_)) = sender.try_send(Line::Text(line)) {
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether lines are written at all (`access_log: off` says no).
    pub fn is_on(&self) -> bool {
        self.inner.sender.load().is_some()
    }

    /// Lines dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Waits (up to `timeout`) until every line queued so far is written: before the
    /// process exits.
    pub fn flush(&self, timeout: Duration) {
        let sender = self.inner.sender.load();
        let Some(sender) = sender.as_deref() else {
            return;
        };
        let (done, written) = std::sync::mpsc::channel();
        if sender.send(Line::Flush(done)).is_ok() {
            let _ = written.recv_timeout(timeout);
        }
    }
}

/// A writer thread for `target`, or `None` when the log is off.
fn writer_for(target: &AccessLogTarget) -> std::io::Result<Option<SyncSender<Line>>> {
    let sink: Box<dyn Write + Send> = match target {
        AccessLogTarget::Off => return Ok(None),
        AccessLogTarget::Stdout => Box::new(std::io::stdout()),
        AccessLogTarget::File(path) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ),
    };
    let (sender, receiver) = sync_channel::<Line>(QUEUE_LINES);
    std::thread::Builder::new()
        .name("portico-access-log".into())
        .spawn(move || write_lines(receiver, sink))?;
    Ok(Some(sender))
}

/// Writes through a buffer and flushes whenever the queue runs dry, so lines appear promptly
/// without a syscall per line under load.
fn write_lines(receiver: std::sync::mpsc::Receiver<Line>, sink: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, sink);
    let mut waiting = Vec::new();
    loop {
        match receiver.recv_timeout(Duration::from_millis(200)) {
            Ok(first) => {
                let mut next = Some(first);
                while let Some(line) = next.take() {
                    match line {
                        Line::Text(text) => {
                            if out.write_all(text.as_bytes()).is_err() {
                                return;
                            }
                        }
                        Line::Flush(done) => waiting.push(done),
                    }
                    next = receiver.try_recv().ok();
                }
                let _ = out.flush();
                for done in waiting.drain(..) {
                    let _ = done.send(());
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                let _ = out.flush();
                return;
            }
        }
    }
}
