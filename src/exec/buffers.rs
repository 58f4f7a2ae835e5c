//! Reuse of large byte buffers (result payloads, received frames).
//!
//! Each buffer of a block's size (64 MiB by default) that is freed goes back to the
//! system with glibc (anything over 32 MiB is its own mmap) and the next one is
//! faulted in and zeroed page by page: three such buffers per block (the worker's
//! result, the driver's received frame, the writer's conversion) made a large-output
//! run spend more time in page faults than in everything else. Buffers are handed
//! back here and taken again; a few are kept, so memory stays what the blocks in
//! flight need.

use std::sync::Mutex;

/// A few large buffers kept for reuse.
pub struct BufPool {
    bufs: Mutex<Vec<Vec<u8>>>,
    keep: usize,
}

/// Buffers smaller than this are left to the allocator.
const LARGE: usize = 1 << 20;

impl BufPool {
    pub const fn new(keep: usize) -> Self {
        Self {
            bufs: Mutex::new(Vec::new()),
            keep,
        }
    }

    /// A buffer of `len` bytes whose contents are unspecified (zero when new, stale
    /// when reused): the caller overwrites all of it.
    pub fn take(&self, len: usize) -> Vec<u8> {
        self.take_kept(len).unwrap_or_else(|| vec![0; len])
    }

    /// A kept buffer of `len` bytes (contents unspecified), if one is large enough;
    /// nothing is allocated.
    pub fn take_kept(&self, len: usize) -> Option<Vec<u8>> {
        if len < LARGE {
            return None;
        }
        let mut v = {
            let mut bufs = self.bufs.lock().expect("buffer pool");
            // The smallest kept buffer that is large enough.
            let best = bufs
                .iter()
                .enumerate()
                .filter(|(_, b)| b.capacity() >= len)
                .min_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i)?;
            bufs.swap_remove(best)
        };
        v.resize(len, 0);
        Some(v)
    }

    /// Hand a buffer back for reuse.
    pub fn give(&self, v: Vec<u8>) {
        if v.capacity() < LARGE {
            return;
        }
        let mut bufs = self.bufs.lock().expect("buffer pool");
        if bufs.len() < self.keep {
            bufs.push(v);
        }
    }
}

/// The process's pool of payload-sized buffers.
pub static PAYLOADS: BufPool = BufPool::new(2);

/// A buffer shared as [`bytes::Bytes`] that goes back to [`PAYLOADS`] once its last
/// share is dropped (a result payload handed to QUIC without a copy: dropped once the
/// driver has acknowledged it).
pub fn shared_payload(v: Vec<u8>) -> bytes::Bytes {
    shared_in(&PAYLOADS, v)
}

fn shared_in(pool: &'static BufPool, v: Vec<u8>) -> bytes::Bytes {
    bytes::Bytes::from_owner(Pooled(v, pool))
}

struct Pooled(Vec<u8>, &'static BufPool);

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.1.give(std::mem::take(&mut self.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_buffer_returns_to_its_pool_when_the_last_share_is_dropped() {
        static POOL: BufPool = BufPool::new(1);
        let v = vec![3u8; LARGE];
        let ptr = v.as_ptr();
        let whole = shared_in(&POOL, v);
        let part = whole.slice(10..20);
        drop(whole);
        assert!(POOL.take_kept(LARGE).is_none(), "a slice still shares it");
        assert_eq!(&part[..], &[3u8; 10]);
        drop(part);
        let back = POOL.take_kept(LARGE).expect("back in the pool");
        assert_eq!(back.as_ptr(), ptr, "the same buffer, not a copy");
    }

    #[test]
    fn buffers_are_reused_and_sized() {
        let pool = BufPool::new(1);
        let mut a = pool.take(2 << 20);
        assert_eq!(a.len(), 2 << 20);
        a[0] = 7;
        let ptr = a.as_ptr();
        pool.give(a);
        let b = pool.take(1 << 20);
        assert_eq!((b.len(), b.as_ptr()), (1 << 20, ptr), "the kept buffer, shortened");
        let c = pool.take(3 << 20);
        assert_eq!(c.len(), 3 << 20);
        pool.give(b);
        pool.give(c);
        assert_eq!(pool.bufs.lock().unwrap().len(), 1, "keeps at most `keep`");
        assert_eq!(pool.take(10).len(), 10);
    }
}
