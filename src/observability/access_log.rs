//! The JSON access log: one line per request, and one per closed tunnel.
//!
//! Lines are formatted on the request's task and written by a dedicated thread through a
//! bounded channel, so a slow disk or terminal never stalls the proxy. When the channel is
//! full a line is dropped and counted rather than blocking the request.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use crate::config::model::AccessLogTarget;

/// How many lines may wait for the writer before new ones are dropped.
const QUEUE_LINES: usize = 65_536;

#[derive(Clone)]
pub struct AccessLog {
    sender: Option<SyncSender<String>>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// Starts the writer thread for `target`.
    pub fn start(target: &AccessLogTarget) -> std::io::Result<AccessLog> {
        let dropped = Arc::new(AtomicU64::new(0));
        let sink: Box<dyn Write + Send> = match target {
            AccessLogTarget::Off => {
                return Ok(AccessLog {
                    sender: None,
                    dropped,
                })
            }
            AccessLogTarget::Stdout => Box::new(std::io::stdout()),
            AccessLogTarget::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        let (sender, receiver) = sync_channel::<String>(QUEUE_LINES);
        std::thread::Builder::new()
            .name("portico-access-log".into())
            .spawn(move || write_lines(receiver, sink))?;
        Ok(AccessLog {
            sender: Some(sender),
            dropped,
        })
    }

    /// Queues one record (any `Serialize` value, written as one JSON line).
    pub fn write(&self, record: &impl serde::Serialize) {
        let Some(sender) = &self.sender else { return };
        let Ok(mut line) = serde_json::to_string(record) else {
            return;
        };
        line.push('\n');
        if let Err(TrySendError::Full(_)) = sender.try_send(line) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether lines are written at all (`access_log: off` says no).
    pub fn is_on(&self) -> bool {
        self.sender.is_some()
    }

    /// Lines dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Writes through a buffer and flushes whenever the queue runs dry, so lines appear promptly
/// without a syscall per line under load.
fn write_lines(receiver: std::sync::mpsc::Receiver<String>, sink: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, sink);
    loop {
        match receiver.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                if out.write_all(line.as_bytes()).is_err() {
                    return;
                }
                while let Ok(line) = receiver.try_recv() {
                    if out.write_all(line.as_bytes()).is_err() {
                        return;
                    }
                }
                let _ = out.flush();
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                let _ = out.flush();
                return;
            }
        }
    }
}
