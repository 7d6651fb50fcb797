//! Memory for large payloads, reused rather than fresh.
//!
//! Fresh memory costs more than its page faults: the kernel zeroes every page first,
//! and on a virtual machine the host may have to back it as well. In profiles of the
//! `bulk` benchmark (`bash bench/profile.sh quic server bulk count=4`) that zeroing
//! (`clear_page_erms`) took 42% of the server's samples, most of it under the copy of
//! each outgoing 64 MiB payload and the read of each incoming one. So the memory of
//! large payloads is kept for a moment once nothing refers to it ([`KEEP_FOR`]) and
//! reused by the next copy or received payload of a like size; the Node binding gives
//! back received payloads once JS has collected them.
//!
//! Asking for transparent huge pages (`madvise(MADV_HUGEPAGE)`) for such buffers was
//! tried and removed: it looked faster when one transport ran after another of its own
//! kind, but with other programs' memory use in between (as in `npm run bench`) the
//! kernel had to compact memory to find huge pages, and bulk echo was 198-215 instead
//! of 280-288 MB/s (`bash bench/ab.sh` runs interleaved with tcp-tls and http2).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

/// Buffers this large or larger are reused (the size of a huge page on x86-64: below
/// it, the allocator keeps and reuses freed memory itself).
pub(crate) const REUSED_FROM: usize = 2 << 20;

/// An empty buffer with room for `len` bytes. From [`REUSED_FROM`] bytes on, it is
/// memory given back earlier ([`give_back`]) when there is some of a like size.
pub(crate) fn with_capacity(len: usize) -> BytesMut {
    if len < REUSED_FROM {
        return BytesMut::with_capacity(len);
    }
    // Without a copy: the Bytes is the memory's only owner.
    BytesMut::from(Bytes::from(large(len)))
}

/// An empty Vec with room for `len` (at least [`REUSED_FROM`]) bytes: spare memory
/// when there is some of a like size, else fresh memory.
fn large(len: usize) -> Vec<u8> {
    reuse(len).unwrap_or_else(|| Vec::with_capacity(len))
}

/// How long the memory of a large copy is kept for reuse once nothing refers to it.
/// Long enough for a request/reply exchange of large payloads to reuse it, short enough
/// that a burst of them does not hold memory after it ends.
pub(crate) const KEEP_FOR: Duration = Duration::from_secs(1);

/// At most this many bytes of spare memory are kept, in at most [`KEEP_COUNT`] buffers.
const KEEP_BYTES: usize = 256 << 20;
const KEEP_COUNT: usize = 4;

/// A copy of `data`. From [`REUSED_FROM`] bytes on, the copy is written into memory
/// that an earlier copy has given back, when there is some of a like size.
#[cfg_attr(not(feature = "node"), allow(dead_code))] // used by the Node binding
pub(crate) fn copy(data: &[u8]) -> Bytes {
    if data.len() < REUSED_FROM {
        return Bytes::copy_from_slice(data);
    }
    let mut memory = large(data.len());
    memory.extend_from_slice(data);
    Bytes::from_owner(Recycled(memory))
}

/// Memory that goes back to [`SPARE`] when the last `Bytes` referring to it is dropped.
struct Recycled(Vec<u8>);

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        give_back(std::mem::take(&mut self.0));
    }
}

struct Spare {
    /// Empty buffers and when each was given back, oldest first.
    buffers: Vec<(Vec<u8>, Instant)>,
    /// A task is running that frees buffers older than [`KEEP_FOR`].
    trimming: bool,
}

static SPARE: Mutex<Spare> = Mutex::new(Spare {
    buffers: Vec::new(),
    trimming: false,
});

fn spare() -> std::sync::MutexGuard<'static, Spare> {
    SPARE.lock().unwrap_or_else(|e| e.into_inner())
}

/// The smallest spare buffer with room for `len` bytes and not more than four times
/// that (a small payload does not pin a large buffer).
fn reuse(len: usize) -> Option<Vec<u8>> {
    let mut spare = spare();
    let fits = |cap: usize| cap >= len && cap / 4 <= len;
    let (i, _) = spare
        .buffers
        .iter()
        .enumerate()
        .filter(|(_, (buf, _))| fits(buf.capacity()))
        .min_by_key(|(_, (buf, _))| buf.capacity())?;
    Some(spare.buffers.remove(i).0)
}

/// Keeps `memory` for reuse, when it is large ([`REUSED_FROM`]) and a tokio runtime
/// is at hand to free it later; otherwise (or beyond the bounds) it is freed now.
pub(crate) fn give_back(mut memory: Vec<u8>) {
    if memory.capacity() < REUSED_FROM {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    memory.clear();
    let (freed, start_trimming) = {
        let mut spare = spare();
        spare.buffers.push((memory, Instant::now()));
        let mut freed = Vec::new();
        while spare.buffers.len() > KEEP_COUNT
            || spare
                .buffers
                .iter()
                .map(|(b, _)| b.capacity())
                .sum::<usize>()
                > KEEP_BYTES
        {
            freed.push(spare.buffers.remove(0));
        }
        let start_trimming = !std::mem::replace(&mut spare.trimming, true);
        (freed, start_trimming)
    };
    // Outside the lock: unmapping large buffers takes a while, and a runtime that is
    // shutting down drops the task (which then takes the lock) at once.
    drop(freed);
    if start_trimming {
        runtime.spawn(trim());
    }
}

/// Frees spare buffers once they are [`KEEP_FOR`] old; ends when none are left. If its
/// runtime shuts down first (even before the task first ran), the spare buffers are
/// freed then.
fn trim() -> impl std::future::Future<Output = ()> + Send + 'static {
    /// Frees what is left when the task is dropped before it ends on its own.
    struct OnShutdown {
        ended: bool,
    }
    impl Drop for OnShutdown {
        fn drop(&mut self) {
            if !self.ended {
                let freed = {
                    let mut spare = spare();
                    spare.trimming = false;
                    std::mem::take(&mut spare.buffers)
                };
                drop(freed);
            }
        }
    }
    let guard = OnShutdown { ended: false };
    async move {
        // Moved in whole (not just the field the loop sets), so that it is dropped with
        // the task rather than when this function returns.
        let mut guard = guard;
        loop {
            tokio::time::sleep(KEEP_FOR).await;
            let freed: Vec<_> = {
                let mut spare = spare();
                let now = Instant::now();
                let expired = spare
                    .buffers
                    .extract_if(.., |(_, at)| now.duration_since(*at) >= KEEP_FOR)
                    .collect();
                if spare.buffers.is_empty() {
                    spare.trimming = false;
                    guard.ended = true;
                }
                expired
            };
            drop(freed);
            if guard.ended {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Held by each test that takes or gives back large memory: the spare memory is
    /// shared by the whole process, and tests run in parallel threads (one taking a
    /// spare buffer another had just given back failed a count there).
    static SPARE_USERS: Mutex<()> = Mutex::new(());

    fn alone() -> std::sync::MutexGuard<'static, ()> {
        SPARE_USERS.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[test]
    fn copies_small_and_large_data_exactly() {
        let _alone = alone();
        for len in [0, 10, REUSED_FROM - 1, REUSED_FROM + 4097] {
            let data: Vec<u8> = (0..len).map(|i| (i * 13) as u8).collect();
            assert_eq!(&copy(&data)[..], &data[..]);
        }
        let buf = with_capacity(REUSED_FROM * 2);
        assert!(buf.is_empty() && buf.capacity() >= REUSED_FROM * 2);
    }

    fn pattern(len: usize, seed: usize) -> Vec<u8> {
        (0..len).map(|i| (i * seed) as u8).collect()
    }

    fn spare_count() -> usize {
        spare().buffers.len()
    }

    /// One test, as the spare memory is shared by the whole process.
    #[test]
    fn large_copies_reuse_memory_given_back_and_free_it_later() {
        let _alone = alone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            let first = pattern(REUSED_FROM + 10, 3);
            let copied = copy(&first);
            assert_eq!(&copied[..], &first[..]);
            let memory = copied.as_ptr();
            // Given back only once nothing refers to it.
            let part = copied.slice(5..);
            drop(copied);
            assert_eq!(spare_count(), 0);
            drop(part);
            assert_eq!(spare_count(), 1);

            // The next copy of a like size is written there, exactly.
            let second = pattern(REUSED_FROM + 5, 7);
            let copied = copy(&second);
            assert_eq!(copied.as_ptr(), memory);
            assert_eq!(&copied[..], &second[..]);
            assert_eq!(spare_count(), 0);
            drop(copied);

            // A payload under a quarter of the spare buffer gets memory of its own.
            let big = copy(&pattern(4 * REUSED_FROM + 64, 5));
            drop(big);
            assert_eq!(spare_count(), 2);
            let small = copy(&pattern(REUSED_FROM, 11));
            assert_eq!(small.as_ptr(), memory);
            drop(small);

            // A payload being received is read into spare memory too, and given back
            // by its reader.
            let mut received = with_capacity(REUSED_FROM + 2);
            assert_eq!(received.as_ptr(), memory);
            assert_eq!(spare_count(), 1);
            received.extend_from_slice(&pattern(REUSED_FROM + 2, 13));
            let payload = Vec::from(received.freeze());
            assert_eq!(payload, pattern(REUSED_FROM + 2, 13));
            give_back(payload);
            assert_eq!(spare_count(), 2);
            // Small memory is not kept.
            give_back(Vec::with_capacity(REUSED_FROM - 1));
            assert_eq!(spare_count(), 2);

            // Freed once KEEP_FOR has passed.
            tokio::time::sleep(KEEP_FOR * 2 + Duration::from_millis(200)).await;
            assert_eq!(spare_count(), 0);
        });

        // Without a runtime to free it later, nothing is kept.
        drop(copy(&pattern(REUSED_FROM, 1)));
        assert_eq!(spare_count(), 0);

        // When the runtime ends first, what it kept is freed with it.
        runtime.block_on(async { drop(copy(&pattern(REUSED_FROM, 1))) });
        assert_eq!(spare_count(), 1);
        drop(runtime);
        assert_eq!(spare_count(), 0);
    }
}
