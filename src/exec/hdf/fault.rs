//! Read faults on mapped inputs become errors, not crashes.
//!
//! Reading a page of a mapped file beyond its end (the file was truncated after it was
//! mapped) raises SIGBUS, whose default action kills the process: every worker reading
//! that input would die in turn. Mapped inputs are registered here; a SIGBUS inside a
//! registered map replaces the faulting page with a page of zeros and lets the read go
//! on. The caller then finds the file changed ([`super::Reader::unchanged`]), or, when
//! it did not change, that a read of its pages failed (an I/O error of its file
//! system: the map counts its faults), and discards what it read. A SIGBUS anywhere else restores the default action, so the
//! fault repeats and ends the process as it would have.

use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use nix::libc;

/// Maps registered at once per process (inputs of a job); beyond it, maps are not
/// protected (a fault ends the process, as without this module).
const SLOTS: usize = 64;

/// Registered maps: `[start, end)` addresses; a free slot has start 0.
static RANGES: [(AtomicUsize, AtomicUsize); SLOTS] = [const { (AtomicUsize::new(0), AtomicUsize::new(0)) }; SLOTS];

/// Faults absorbed so far (for tests and logs).
static FAULTS: AtomicUsize = AtomicUsize::new(0);

/// Faults absorbed in each slot's map since it was registered.
static SLOT_FAULTS: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];

static INSTALL: Once = Once::new();

/// A registered map; dropping it unregisters the map (before the map is unmapped).
pub struct Guard {
    slot: usize,
}

impl Guard {
    /// Read faults absorbed in this map since it was registered.
    pub fn faults(&self) -> usize {
        SLOT_FAULTS[self.slot].load(Ordering::SeqCst)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let (start, end) = &RANGES[self.slot];
        end.store(0, Ordering::SeqCst);
        start.store(0, Ordering::SeqCst);
    }
}

/// Register `len` mapped bytes at `ptr`; `None` when every slot is taken or the handler
/// could not be installed.
pub fn register(ptr: *const u8, len: usize) -> Option<Guard> {
    if len == 0 || !install() {
        return None;
    }
    let start = ptr as usize;
    for (slot, (s, e)) in RANGES.iter().enumerate() {
        if s.compare_exchange(0, start, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            SLOT_FAULTS[slot].store(0, Ordering::SeqCst);
            e.store(start + len, Ordering::SeqCst);
            return Some(Guard { slot });
        }
    }
    None
}

/// How many read faults were turned into zero pages in this process.
pub fn faults() -> usize {
    FAULTS.load(Ordering::Relaxed)
}

fn install() -> bool {
    static OK: AtomicBool = AtomicBool::new(false);
    INSTALL.call_once(|| {
        // SAFETY: the handler only reads atomics and calls mmap/sigaction, which are
        // plain system calls safe to make from a signal handler on Linux.
        let action = unsafe {
            let mut a: libc::sigaction = std::mem::zeroed();
            a.sa_sigaction = on_sigbus as *const () as usize;
            a.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut a.sa_mask);
            libc::sigaction(libc::SIGBUS, &a, std::ptr::null_mut())
        };
        OK.store(action == 0, Ordering::SeqCst);
    });
    OK.load(Ordering::SeqCst)
}

extern "C" fn on_sigbus(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    let inside = RANGES.iter().position(|(s, e)| {
        let start = s.load(Ordering::SeqCst);
        start != 0 && addr >= start && addr < e.load(Ordering::SeqCst)
    });
    if let Some(slot) = inside {
        // SAFETY: sysconf is async-signal-safe in practice (a constant lookup).
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let at = addr & !(page - 1);
        // SAFETY: the page lies inside a read-only file map this process owns;
        // replacing it with private zeros changes only what readers of that map see,
        // and they discard it once they find the file changed.
        let p = unsafe {
            libc::mmap(
                at as *mut libc::c_void,
                page,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            FAULTS.fetch_add(1, Ordering::Relaxed);
            SLOT_FAULTS[slot].fetch_add(1, Ordering::SeqCst);
            return;
        }
    }
    // Not a mapped input (or the page could not be replaced): the default action, so
    // the fault repeats and ends the process.
    // SAFETY: resetting a disposition to SIG_DFL is async-signal-safe.
    unsafe {
        let mut a: libc::sigaction = std::mem::zeroed();
        a.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut a.sa_mask);
        libc::sigaction(libc::SIGBUS, &a, std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_past_a_truncated_end_sees_zeros_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("input");
        std::fs::write(&path, vec![7u8; 64 << 10]).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        // SAFETY: a private test file; truncating it under the map is the point.
        let map = unsafe { memmap2::Mmap::map(&f).unwrap() };
        let guard = register(map.as_ptr(), map.len()).expect("a free slot");
        assert_eq!(map[40 << 10], 7);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(8 << 10)
            .unwrap();
        let before = faults();
        // Past the new end: without the handler this read would end the test process.
        let tail = std::hint::black_box(&map[(16 << 10)..(48 << 10)]);
        assert!(tail.iter().all(|&b| b == 0), "pages past the end read as zeros");
        assert!(faults() > before, "the fault was counted");
        assert!(guard.faults() > 0, "in its map's count too");
        assert_eq!(map[100], 7, "pages before the end keep their bytes");
        drop(guard);
    }
}
