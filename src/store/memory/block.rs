//! Where a peer list's block of memory comes from.
//!
//! Small blocks come from the global allocator. Blocks of a megabyte and
//! more (a swarm of some 37,000 peers with ids) are mapped from the kernel
//! directly, because growing one through the allocator copies it: 24 MB
//! for a swarm of 860,000 peers, 12 ms with the shard lock held, most of it
//! faulting in the fresh pages. `mremap` moves the pages instead of copying
//! them, and the pages added fault in one by one as peers arrive.
//!
//! Which kind a block is follows from its size alone, so the caller only
//! keeps the layout, as with the allocator.

use std::alloc::{self, Layout};

/// Blocks from this size on are mapped (where the kernel can move them).
const MAP_FROM: usize = if cfg!(target_os = "linux") {
    1 << 20
} else {
    usize::MAX
};

fn mapped(layout: Layout) -> bool {
    layout.size() >= MAP_FROM
}

/// The bytes a request for `size` really takes: mimalloc's size classes
/// (the binary's allocator), or whole pages for a mapping. A list's
/// capacity is chosen to fill its block, since the rounding is paid for
/// anyway; under another allocator this is only a close guess, and nothing
/// but the spare room depends on it.
pub const fn allocated_size(size: usize) -> usize {
    const WORD: usize = std::mem::size_of::<usize>();
    const PAGE: usize = 4096;
    /// mimalloc's largest size with a size class (as built here).
    const CLASSES_UP_TO: usize = 512 << 10;
    let words = size.div_ceil(WORD);
    if words <= 8 {
        // One word, then one class per two words up to eight.
        (if words <= 1 {
            1
        } else {
            words.next_multiple_of(2)
        }) * WORD
    } else if size <= CLASSES_UP_TO {
        // Then four classes per doubling, named by the top three bits of
        // `words - 1`; a class ends where those bits would change.
        let w = words - 1;
        let top = usize::BITS as usize - 1 - w.leading_zeros() as usize;
        let quarter = (w >> (top - 2)) & 3;
        ((5 + quarter) << (top - 2)) * WORD
    } else {
        size.div_ceil(PAGE) * PAGE
    }
}

/// Allocates a block for `layout` (non-zero size); null when out of memory.
///
/// # Safety
/// As [`alloc::alloc`]: `layout` has a non-zero size.
pub unsafe fn allocate(layout: Layout) -> *mut u8 {
    if mapped(layout) {
        map(layout.size())
    } else {
        // SAFETY: the caller's promise.
        unsafe { alloc::alloc(layout) }
    }
}

/// Resizes a block from `old` to `new_size` bytes (same alignment), keeping
/// its contents up to the smaller size; null when out of memory (the old
/// block is then still valid).
///
/// # Safety
/// `block` came from [`allocate`] or [`resize`] with layout `old`;
/// `new_size` is non-zero.
pub unsafe fn resize(block: *mut u8, old: Layout, new_size: usize) -> *mut u8 {
    let Ok(new) = Layout::from_size_align(new_size, old.align()) else {
        return std::ptr::null_mut();
    };
    match (mapped(old), mapped(new)) {
        // SAFETY: the caller's promises.
        (false, false) => unsafe { alloc::realloc(block, old, new_size) },
        // SAFETY: a mapping of `old.size()` bytes at `block`.
        (true, true) => unsafe { remap(block, old.size(), new_size) },
        _ => {
            // Across the threshold: a new block of the other kind, a copy
            // of at most a megabyte, and the old block given back.
            // SAFETY: `new` has a non-zero size.
            let moved = unsafe { allocate(new) };
            if !moved.is_null() {
                // SAFETY: both blocks hold at least the smaller size, and
                // they do not overlap (the new one is fresh).
                unsafe {
                    std::ptr::copy_nonoverlapping(block, moved, old.size().min(new_size));
                    free(block, old);
                }
            }
            moved
        }
    }
}

/// Gives a block back.
///
/// # Safety
/// `block` came from [`allocate`] or [`resize`] with `layout`, and is not
/// used again.
pub unsafe fn free(block: *mut u8, layout: Layout) {
    if mapped(layout) {
        // SAFETY: the caller's promise: a mapping of this size.
        unsafe { unmap(block, layout.size()) }
    } else {
        // SAFETY: the caller's promise.
        unsafe { alloc::dealloc(block, layout) }
    }
}

#[cfg(target_os = "linux")]
fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping touches no existing memory.
    let raw = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        return std::ptr::null_mut();
    }
    // Small pages, as the allocator is told to use: resident memory then
    // grows with the peers, not in 2 MB steps. Advice only; its failure
    // changes nothing else.
    // SAFETY: the range is the mapping just made.
    let _ = unsafe { libc::madvise(raw, size, libc::MADV_NOHUGEPAGE) };
    raw.cast()
}

#[cfg(target_os = "linux")]
unsafe fn remap(block: *mut u8, old_size: usize, new_size: usize) -> *mut u8 {
    // SAFETY: the caller's promise: a mapping of `old_size` bytes.
    let raw = unsafe { libc::mremap(block.cast(), old_size, new_size, libc::MREMAP_MAYMOVE) };
    if raw == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        raw.cast()
    }
}

#[cfg(target_os = "linux")]
unsafe fn unmap(block: *mut u8, size: usize) {
    // SAFETY: the caller's promise: a mapping of `size` bytes, unused from
    // here on. A failure would leave the pages mapped, nothing worse.
    let _ = unsafe { libc::munmap(block.cast(), size) };
}

// Elsewhere nothing is mapped (`MAP_FROM` is unreachable).
#[cfg(not(target_os = "linux"))]
fn map(_: usize) -> *mut u8 {
    std::ptr::null_mut()
}

#[cfg(not(target_os = "linux"))]
unsafe fn remap(_: *mut u8, _: usize, _: usize) -> *mut u8 {
    std::ptr::null_mut()
}

#[cfg(not(target_os = "linux"))]
unsafe fn unmap(_: *mut u8, _: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    /// `allocated_size` is what mimalloc itself says it hands out.
    #[test]
    fn allocated_sizes_are_mimallocs() {
        let sizes = (1..70_000).chain((70_000..MAP_FROM + 9000).step_by(61));
        for size in sizes {
            let theirs = unsafe { libmimalloc_sys::mi_good_size(size) };
            assert_eq!(allocated_size(size), theirs, "size {size}");
        }
    }

    /// A block keeps its bytes while it grows and shrinks across the
    /// threshold and within each kind.
    #[test]
    fn contents_survive_every_kind_of_resize() {
        let sizes = [
            64,
            4096,
            MAP_FROM.min(1 << 20) + 8,
            3 << 20,
            5 << 20,
            200_000,
            40,
        ];
        let mut layout = Layout::from_size_align(sizes[0], 8).unwrap();
        let mut block = unsafe { allocate(layout) };
        assert!(!block.is_null());
        unsafe { std::ptr::write_bytes(block, 0xA5, layout.size()) };
        for &size in &sizes[1..] {
            let kept = layout.size().min(size);
            block = unsafe { resize(block, layout, size) };
            assert!(!block.is_null(), "resize to {size}");
            let bytes = unsafe { std::slice::from_raw_parts(block, kept) };
            assert!(bytes.iter().all(|&b| b == 0xA5), "contents lost at {size}");
            layout = Layout::from_size_align(size, 8).unwrap();
            unsafe { std::ptr::write_bytes(block, 0xA5, size) };
        }
        unsafe { free(block, layout) };
    }
}
