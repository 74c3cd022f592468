//! One VM's guest memory: an anonymous host mapping that KVM maps at GPA 0.
//!
//! The guest writes its work counter and gap ring here while its vCPU threads run; the VMM
//! reads them concurrently from other threads, without exits. All VMM accesses go through
//! atomics on naturally aligned words, so they never tear and never race in Rust's sense.

use std::sync::atomic::{AtomicU64, Ordering};

use rustix::mm::{mmap_anonymous, munmap, MapFlags, ProtFlags};

/// An anonymous, zero-filled, page-aligned mapping that lives as long as this value.
pub struct GuestMemory {
    base: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; every access after construction
// goes through atomic word operations or happens before the vCPUs run, so sharing the
// pointer between threads is sound.
unsafe impl Send for GuestMemory {}
// SAFETY: see `Send`: shared access is atomic.
unsafe impl Sync for GuestMemory {}

impl GuestMemory {
    pub fn new(len: usize) -> std::io::Result<GuestMemory> {
        // SAFETY: an anonymous private mapping with no address hint touches no existing
        // memory; the result is checked before use.
        let base = unsafe {
            mmap_anonymous(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )
        }?;
        Ok(GuestMemory {
            base: base.cast(),
            len,
        })
    }

    pub fn host_addr(&self) -> u64 {
        self.base as u64
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn word(&self, gpa: u64) -> &AtomicU64 {
        assert!(
            gpa % 8 == 0 && gpa as usize + 8 <= self.len,
            "guest address {gpa:#x} outside memory or unaligned"
        );
        // SAFETY: in bounds and 8-byte aligned (checked above; the mapping is page-aligned),
        // and the memory lives as long as `self`. AtomicU64 has the layout of u64.
        unsafe { &*(self.base.add(gpa as usize) as *const AtomicU64) }
    }

    /// Reads a word the guest may be writing right now (acquire: a gap slot written before
    /// the head is visible once the head is).
    pub fn read_u64(&self, gpa: u64) -> u64 {
        self.word(gpa).load(Ordering::Acquire)
    }

    pub fn write_u64(&self, gpa: u64, value: u64) {
        self.word(gpa).store(value, Ordering::Release)
    }

    /// Copies bytes in before any vCPU runs.
    pub fn write_bytes(&self, gpa: u64, bytes: &[u8]) {
        assert!(
            gpa as usize + bytes.len() <= self.len,
            "guest range {gpa:#x}+{} outside memory",
            bytes.len()
        );
        // SAFETY: the destination range is inside the mapping (checked above) and does not
        // overlap `bytes`, which lives in Rust-owned memory.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.base.add(gpa as usize), bytes.len())
        }
    }
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly the mapping created in `new`, and no reference into
        // it outlives `self` (accessors borrow `self`).
        unsafe {
            let _ = munmap(self.base.cast(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        let m = GuestMemory::new(1 << 16).unwrap();
        assert_eq!(m.read_u64(0x100), 0);
        m.write_u64(0x100, 0xdead_beef);
        m.write_bytes(0x200, &[1, 0, 0, 0, 0, 0, 0, 2]);
        assert_eq!(m.read_u64(0x100), 0xdead_beef);
        assert_eq!(m.read_u64(0x200), 0x0200_0000_0000_0001);
    }
}
