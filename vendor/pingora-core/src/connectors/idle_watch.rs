// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//! PORTICO PATCH (idle connections without a task each): one sweeper per connector watches
//! the connections in its keep-alive pool.
//!
//! As published, every connection released to the pool got a task of its own
//! (`ConnectionPool::idle_poll`): spawned on release, woken and ended on reuse. For a proxy
//! that reuses one upstream connection per request, that is a task spawned, polled, woken
//! and freed on every request, about 4% of a pass-through request's instructions. Here a
//! released connection only leaves a weak pointer in a list, and one task per connector
//! walks the list every [`SWEEP_EVERY`]: a connection the server closed (or that received
//! data it never asked for), or idle past its timeout, is taken out of the pool and
//! closed. A reuse checks the connection as before (`test_reusable_stream`), so a
//! connection closed between two sweeps is never used; the sweep only bounds how long its
//! socket stays open (at most [`SWEEP_EVERY`] after the close is seen) and makes the idle
//! timeout exact to within [`SWEEP_EVERY`].
//!
//! PORTICO PATCH (idle buffers released): a connection a sweep finds still idle a second
//! time (so idle for at least one [`SWEEP_EVERY`]) frees its buffers while it waits
//! (`IdleBuffers`: over TLS, rustls' record buffer), as a server connection idling between
//! requests does; a connection reused within a sweep period never pays for it.

use super::test_reusable_stream;
use crate::protocols::Stream;
use parking_lot::Mutex as SyncMutex;
use pingora_pool::{ConnectionMeta, ConnectionPool};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How often the pool's idle connections are checked.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(1);

type Pool = ConnectionPool<Arc<Mutex<Stream>>>;

/// A connection released to the pool.
struct Idle {
    /// Dead once the connection is taken for reuse or dropped by the pool.
    stream: Weak<Mutex<Stream>>,
    meta: ConnectionMeta,
    expires: Option<Instant>,
    /// A sweep has found it idle before (see the module's doc).
    swept: bool,
}

/// The connections released to one connector's pool, and its sweeper.
pub(crate) struct IdleWatch {
    idle: SyncMutex<Vec<Idle>>,
    /// Entries the list may hold before the dead ones are dropped on release (the live
    /// ones are at most the pool's size, plus those being reused right now).
    compact_at: usize,
    sweeping: AtomicBool,
}

impl IdleWatch {
    pub(crate) fn new(pool_size: usize) -> Self {
        IdleWatch {
            idle: SyncMutex::new(Vec::new()),
            compact_at: pool_size.saturating_mul(2).saturating_add(64),
            sweeping: AtomicBool::new(false),
        }
    }

    /// Watches `stream`, just released to `pool` under `meta`.
    pub(crate) fn watch(
        self: &Arc<Self>,
        stream: Weak<Mutex<Stream>>,
        meta: ConnectionMeta,
        idle_timeout: Option<Duration>,
        pool: &Arc<Pool>,
        unexpected_data: &Arc<AtomicU64>,
    ) {
        let idle = Idle {
            stream,
            meta,
            expires: idle_timeout.map(|timeout| Instant::now() + timeout),
            swept: false,
        };
        {
            let mut list = self.idle.lock();
            if list.len() >= self.compact_at {
                list.retain(|idle| idle.stream.strong_count() > 0);
            }
            list.push(idle);
        }
        if !self.sweeping.swap(true, Ordering::Relaxed) {
            self.start_sweeper(pool, unexpected_data);
        }
    }

    /// One task for the connector's life: it ends once the connector is dropped.
    fn start_sweeper(self: &Arc<Self>, pool: &Arc<Pool>, unexpected_data: &Arc<AtomicU64>) {
        let (watch, pool) = (Arc::downgrade(self), Arc::downgrade(pool));
        let unexpected_data = unexpected_data.clone();
        pingora_runtime::current_handle().spawn(async move {
            loop {
                tokio::time::sleep(SWEEP_EVERY).await;
                let (Some(watch), Some(pool)) = (watch.upgrade(), pool.upgrade()) else {
                    return;
                };
                watch.sweep(&pool, &unexpected_data, Instant::now());
            }
        });
    }

    /// Closes each pooled connection that is broken or idle past its timeout at `now`, and
    /// drops the pool's empty nodes (see `ConnectionPool::get_keeping_node`).
    pub(crate) fn sweep(&self, pool: &Pool, unexpected_data: &AtomicU64, now: Instant) {
        self.close_broken(pool, unexpected_data, now);
        pool.remove_empty_nodes();
    }

    fn close_broken(&self, pool: &Pool, unexpected_data: &AtomicU64, now: Instant) {
        self.idle.lock().retain_mut(|idle| {
            let Some(stream) = idle.stream.upgrade() else {
                return false; // reused or evicted
            };
            // Locked: a reuse has it right now, and checks it itself.
            let Ok(mut locked) = stream.try_lock() else {
                return true;
            };
            let expired = idle.expires.is_some_and(|at| now >= at);
            if expired || !test_reusable_stream(&mut locked, unexpected_data) {
                // Out of the pool while still locked: a reuse that took it from the pool
                // a moment ago finds it locked, then shared, and drops it.
                pool.pop_closed(&idle.meta);
                return false;
            }
            if idle.swept {
                locked.release_idle_buffers();
            }
            idle.swept = true;
            true
        });
    }
}
