//! The `facematch` binary's allocator: the system's, except that blocks of 2 MiB and more are
//! mapped on their own, 2 MiB-aligned, and advised onto transparent huge pages.
//!
//! A resident dataset (`facematch serve`, `watch`; ARCHITECTURE.md) is read by every pass: a
//! million 128-d faces are 128 MB of int8 codes streamed through the integer kernel and 512 MB
//! of floats read at random by the f64 re-scoring. On 4 KiB pages the codes' stream misses the
//! TLB every two panels of 16 faces, and on a virtual machine a miss walks two page tables. On
//! 2 MiB pages (each resident batch's codes are one, `resident::RESIDENT_BATCH_FACES`) a
//! 100-search pass scans in 19 ms instead of 22 on this machine's two workers (`make
//! bench-serve`). Linux backs an advised block with huge pages when
//! `/sys/kernel/mm/transparent_hugepage/enabled` is `always` or `madvise` (most distributions'
//! default); otherwise the advice is ignored and the block is ordinary memory.
//!
//! Such blocks are mapped directly rather than taken from malloc, so a freed one goes back to the
//! system whole (aligned blocks carved out of malloc's heap left gaps that held ~200 MB more
//! after loading a million faces), and a zeroed one costs nothing more: fresh mappings are zero.

use std::alloc::{GlobalAlloc, Layout, System};

/// The allocator (see the module documentation).
pub struct HugePages;

/// The size of a huge page on x86-64 and the smallest block mapped on its own.
pub const HUGE_PAGE: usize = 2 << 20;

fn is_huge(layout: Layout) -> bool {
    layout.size() >= HUGE_PAGE && layout.align() <= HUGE_PAGE
}

// SAFETY: blocks below HUGE_PAGE (or aligned beyond it) are the system allocator's, with the
// same layouts; the others are whole private anonymous mappings of the layout's size rounded up
// to huge pages, which `dealloc` (given the same layout) unmaps exactly.
unsafe impl GlobalAlloc for HugePages {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_huge(layout) {
            map(layout.size())
        } else {
            // SAFETY: the caller's contract, passed on.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_huge(layout) {
            map(layout.size())
        } else {
            // SAFETY: the caller's contract, passed on.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_huge(layout) {
            // SAFETY: `ptr` is a mapping `map(layout.size())` returned.
            unsafe { unmap(ptr, layout.size()) }
        } else {
            // SAFETY: the caller's contract, passed on.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size`, rounded to `layout.align()`, fits an isize.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (is_huge(layout), is_huge(new_layout)) {
            // SAFETY: the caller's contract, passed on.
            (false, false) => unsafe { System.realloc(ptr, layout, new_size) },
            // The mapping already spans the new size.
            (true, true) if whole_pages(new_size) == whole_pages(layout.size()) => ptr,
            _ => {
                // SAFETY: `new_layout` is non-zero (a huge one, or resized from one); `ptr`
                // holds `layout.size()` bytes; the blocks are distinct.
                unsafe {
                    let new = self.alloc(new_layout);
                    if !new.is_null() {
                        std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    new
                }
            }
        }
    }
}

/// `size` in whole huge pages (None past the address space).
fn whole_pages(size: usize) -> Option<usize> {
    size.checked_next_multiple_of(HUGE_PAGE)
}

/// A fresh private mapping of `size` bytes (rounded up to huge pages) that starts on a huge
/// page, advised onto huge pages; null when there is no memory. One huge page more is mapped
/// and the unaligned ends unmapped again.
fn map(size: usize) -> *mut u8 {
    let Some(len) = whole_pages(size) else {
        return std::ptr::null_mut();
    };
    let Some(span) = len.checked_add(HUGE_PAGE) else {
        return std::ptr::null_mut();
    };
    // SAFETY: an anonymous private mapping touches no existing memory; the unmapped ends lie
    // inside it and outside the part returned; madvise only advises.
    unsafe {
        let mapped = libc::mmap(
            std::ptr::null_mut(),
            span,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if mapped == libc::MAP_FAILED {
            return std::ptr::null_mut();
        }
        let start = mapped as usize;
        let aligned = start.next_multiple_of(HUGE_PAGE);
        let (head, tail) = (aligned - start, start + span - (aligned + len));
        if head > 0 {
            libc::munmap(mapped, head);
        }
        if tail > 0 {
            libc::munmap((aligned + len) as *mut libc::c_void, tail);
        }
        libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
        aligned as *mut u8
    }
}

/// Unmaps a block [`map`]`(size)` returned.
///
/// # Safety
/// `ptr` must be that block, no longer used.
unsafe fn unmap(ptr: *mut u8, size: usize) {
    if let Some(len) = whole_pages(size) {
        // SAFETY: the caller's contract.
        unsafe { libc::munmap(ptr as *mut libc::c_void, len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, 8).unwrap()
    }

    #[test]
    fn small_blocks_are_the_systems_and_large_ones_start_on_huge_pages() {
        // SAFETY: every block is used within its size and freed with its layout.
        unsafe {
            let small = HugePages.alloc(layout(4096));
            assert!(!small.is_null());
            small.write_bytes(7, 4096);
            HugePages.dealloc(small, layout(4096));
            for size in [HUGE_PAGE, HUGE_PAGE + 1, 5 * HUGE_PAGE - 3] {
                let block = HugePages.alloc_zeroed(layout(size));
                assert!(!block.is_null());
                assert_eq!(block as usize % HUGE_PAGE, 0, "{size} bytes");
                let bytes = std::slice::from_raw_parts_mut(block, size);
                assert!(bytes.iter().all(|&b| b == 0), "{size} bytes zeroed");
                bytes.fill(0xa5);
                assert!(bytes.iter().all(|&b| b == 0xa5));
                HugePages.dealloc(block, layout(size));
            }
        }
    }

    #[test]
    fn realloc_keeps_the_contents_across_both_kinds() {
        // SAFETY: as above; each realloc's result replaces the block it was given.
        unsafe {
            let mut size = 1000;
            let mut block = HugePages.alloc(layout(size));
            let fill = |block: *mut u8, size: usize| {
                for i in 0..size {
                    *block.add(i) = (i % 251) as u8;
                }
            };
            fill(block, size);
            // Small → small → huge → huge in the same pages → huge in more → small.
            for next in [
                64 * 1024,
                3 * HUGE_PAGE,
                3 * HUGE_PAGE + 100,
                7 * HUGE_PAGE,
                100,
            ] {
                let kept = size.min(next);
                block = HugePages.realloc(block, layout(size), next);
                assert!(!block.is_null());
                for i in 0..kept {
                    assert_eq!(*block.add(i), (i % 251) as u8, "{size} → {next}, byte {i}");
                }
                if next >= HUGE_PAGE {
                    assert_eq!(block as usize % HUGE_PAGE, 0);
                }
                size = next;
                fill(block, size);
            }
            HugePages.dealloc(block, layout(size));
        }
    }
}
