//! Memory for large payloads, backed by huge pages where the OS offers them.
//!
//! A 64 MiB payload written into fresh memory takes 16,384 page faults at 4 KiB per
//! page; with transparent huge pages it takes 32. In profiles of the `bulk` benchmark
//! the faults were about a tenth of the receiver's samples
//! (`bash bench/profile.sh quic server bulk`).

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};

/// Buffers this large or larger ask for huge pages (the size of one on x86-64).
pub(crate) const HUGE_PAGES_FROM: usize = 2 << 20;

/// An empty buffer with room for `len` bytes.
pub(crate) fn with_capacity(len: usize) -> BytesMut {
    let mut buf = BytesMut::with_capacity(len);
    if len >= HUGE_PAGES_FROM {
        advise_huge_pages(buf.spare_capacity_mut());
    }
    buf
}

/// A copy of `data`.
#[cfg_attr(not(feature = "node"), allow(dead_code))] // used by the Node binding
pub(crate) fn copy(data: &[u8]) -> Bytes {
    if data.len() < HUGE_PAGES_FROM {
        return Bytes::copy_from_slice(data);
    }
    let mut buf = with_capacity(data.len());
    buf.extend_from_slice(data);
    buf.freeze()
}

/// Asks Linux to back the whole pages inside `memory` with huge pages (advice only: the
/// memory's contents and validity do not change, and a refusal costs nothing).
#[cfg(target_os = "linux")]
fn advise_huge_pages(memory: &mut [MaybeUninit<u8>]) {
    // SAFETY: sysconf only reads a system setting.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        size if size > 0 => size as usize,
        _ => return,
    };
    let start = (memory.as_mut_ptr() as usize).next_multiple_of(page);
    let end = (memory.as_mut_ptr() as usize + memory.len()) / page * page;
    if end > start {
        // SAFETY: [start, end) lies within `memory`, which the caller holds exclusively;
        // MADV_HUGEPAGE only changes how the kernel backs those pages.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_memory: &mut [MaybeUninit<u8>]) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_small_and_large_data_exactly() {
        for len in [0, 10, HUGE_PAGES_FROM - 1, HUGE_PAGES_FROM + 4097] {
            let data: Vec<u8> = (0..len).map(|i| (i * 13) as u8).collect();
            assert_eq!(&copy(&data)[..], &data[..]);
        }
        let buf = with_capacity(HUGE_PAGES_FROM * 2);
        assert!(buf.is_empty() && buf.capacity() >= HUGE_PAGES_FROM * 2);
    }
}
