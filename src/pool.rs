//! The client's connection pool: one connection per (address, server name), shared by
//! every caller, with concurrent first uses sharing one handshake.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::connection::Conn;
use crate::error::Error;
use crate::stats::PoolStats;

/// How long a departed inbound peer is remembered, and how many at most.
const DEPARTED_MEMORY: Duration = Duration::from_secs(60);
const DEPARTED_CAPACITY: usize = 4096;

/// What the pool is keyed by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey {
    pub(crate) addr: SocketAddr,
    pub(crate) server_name: Arc<str>,
}

type Outcome = Option<Result<Arc<Conn>, Error>>;

enum Slot {
    /// A handshake in progress; every waiter watches the same one.
    Connecting(watch::Receiver<Outcome>),
    Ready(Arc<Conn>),
}

/// Pooled outbound connections, and the inbound ones peers opened to us (so that a
/// listener can push to a peer over the connection the peer dialled).
#[derive(Default)]
pub(crate) struct Pool {
    slots: Mutex<HashMap<PoolKey, Slot>>,
    inbound: Mutex<HashMap<SocketAddr, Arc<Conn>>>,
    /// Peers whose inbound connection closed recently, to explain a failed dial back.
    departed: Mutex<HashMap<SocketAddr, Instant>>,
    created: AtomicU64,
    closed: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Pool {
    /// The pooled connection for `key`, dialling with `dial` when there is none.
    ///
    /// Concurrent callers share one dial; the dial runs on its own task, so a caller that
    /// gives up does not cancel it for the others. A failed dial is not cached.
    pub(crate) async fn get<D, F>(
        self: &Arc<Self>,
        key: &PoolKey,
        tasks: &TaskTracker,
        dial: D,
    ) -> Result<Arc<Conn>, Error>
    where
        D: FnOnce() -> F,
        F: Future<Output = Result<Arc<Conn>, Error>> + Send + 'static,
    {
        if let Some(conn) = self.inbound_for(key.addr) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(conn);
        }
        let mut waiting = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            match slots.get(key) {
                Some(Slot::Ready(conn)) if conn.is_open() => {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(conn.clone());
                }
                Some(Slot::Connecting(rx)) => {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    rx.clone()
                }
                _ => {
                    self.misses.fetch_add(1, Ordering::Relaxed);
                    let (tx, rx) = watch::channel(None);
                    slots.insert(key.clone(), Slot::Connecting(rx.clone()));
                    let pool = self.clone();
                    let key = key.clone();
                    let dialing = dial();
                    tasks.spawn(async move {
                        let outcome = dialing.await;
                        pool.finish_dial(&key, &outcome);
                        let _ = tx.send(Some(outcome));
                    });
                    rx
                }
            }
        };
        let outcome = waiting
            .wait_for(Option::is_some)
            .await
            .map_err(|_| Error::Closed)?
            .clone();
        outcome.unwrap_or(Err(Error::Closed))
    }

    fn finish_dial(&self, key: &PoolKey, outcome: &Result<Arc<Conn>, Error>) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Ok(conn) => {
                self.created.fetch_add(1, Ordering::Relaxed);
                slots.insert(key.clone(), Slot::Ready(conn.clone()));
            }
            Err(_) => {
                slots.remove(key);
            }
        }
    }

    /// Drops a closed outbound connection from the pool.
    pub(crate) fn remove(&self, key: &PoolKey, conn: &Arc<Conn>) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(Slot::Ready(current)) = slots.get(key) {
            if Arc::ptr_eq(current, conn) {
                slots.remove(key);
            }
        }
        self.closed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_inbound(&self, conn: Arc<Conn>) {
        let mut inbound = self.inbound.lock().unwrap_or_else(|e| e.into_inner());
        inbound.insert(conn.address, conn);
    }

    pub(crate) fn remove_inbound(&self, conn: &Arc<Conn>) {
        let mut inbound = self.inbound.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(current) = inbound.get(&conn.address) {
            if Arc::ptr_eq(current, conn) {
                inbound.remove(&conn.address);
            }
        }
        drop(inbound);
        if conn.was_disconnected() {
            // This side closed it: nothing to explain to a later push.
            return;
        }
        let mut departed = self.departed.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if departed.len() >= DEPARTED_CAPACITY {
            departed.retain(|_, at| now.duration_since(*at) < DEPARTED_MEMORY);
        }
        if departed.len() < DEPARTED_CAPACITY {
            departed.insert(conn.address, now);
        }
    }

    /// Whether `addr` is a peer that dialled us and disconnected in the last minute.
    pub(crate) fn recently_departed(&self, addr: SocketAddr) -> bool {
        let departed = self.departed.lock().unwrap_or_else(|e| e.into_inner());
        departed
            .get(&addr)
            .is_some_and(|at| at.elapsed() < DEPARTED_MEMORY)
    }

    fn inbound_for(&self, addr: SocketAddr) -> Option<Arc<Conn>> {
        let inbound = self.inbound.lock().unwrap_or_else(|e| e.into_inner());
        inbound.get(&addr).filter(|c| c.is_open()).cloned()
    }

    /// Takes the open connections with `addr` out of the pool, the dialled ones (under
    /// any server name) and the one the peer opened; a dial still under way stays.
    pub(crate) fn take(&self, addr: SocketAddr) -> Vec<Arc<Conn>> {
        let mut taken = Vec::new();
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|key, slot| match slot {
                Slot::Ready(conn) if key.addr == addr => {
                    taken.push(conn.clone());
                    false
                }
                _ => true,
            });
        let inbound = self
            .inbound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&addr);
        taken.extend(inbound);
        taken.retain(|conn| conn.is_open());
        taken
    }

    /// Forgets every connection (at close, once they are closed).
    pub(crate) fn clear(&self) {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.inbound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Every open connection, outbound and inbound.
    pub(crate) fn connections(&self) -> Vec<Arc<Conn>> {
        let mut all: Vec<Arc<Conn>> = {
            let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots
                .values()
                .filter_map(|slot| match slot {
                    Slot::Ready(conn) if conn.is_open() => Some(conn.clone()),
                    _ => None,
                })
                .collect()
        };
        let inbound = self.inbound.lock().unwrap_or_else(|e| e.into_inner());
        all.extend(inbound.values().filter(|c| c.is_open()).cloned());
        all
    }

    pub(crate) fn stats(&self) -> PoolStats {
        let (mut active, mut idle) = (0, 0);
        {
            let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            for slot in slots.values() {
                if let Slot::Ready(conn) = slot {
                    if conn.is_open() {
                        if conn.is_busy() {
                            active += 1;
                        } else {
                            idle += 1;
                        }
                    }
                }
            }
        }
        PoolStats {
            active,
            idle,
            created: self.created.load(Ordering::Relaxed),
            closed: self.closed.load(Ordering::Relaxed),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }
}
