//! A global allocator that counts the bytes live, for measuring what the engine really allocates
//! (its `heap_bytes` is an estimate: bitmaps by their serialized size, vectors by capacity). Used
//! by the benches' examples and a test; a program installs it with
//! `#[global_allocator] static A: CountingAlloc = CountingAlloc;`. It counts the bytes asked for,
//! without the system allocator's own overhead.

/// The system allocator, counting the bytes live.
pub struct CountingAlloc;

static ALLOCATED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Bytes live through `CountingAlloc` (0 where it is not the global allocator).
pub fn allocated_bytes() -> usize {
    ALLOCATED.load(std::sync::atomic::Ordering::Relaxed)
}

// SAFETY: every call is forwarded to `System` with the same arguments; the counter changes nothing.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let p = unsafe { std::alloc::System.alloc(layout) };
        if !p.is_null() {
            ALLOCATED.fetch_add(layout.size(), std::sync::atomic::Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) };
        ALLOCATED.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        let p = unsafe { std::alloc::System.alloc_zeroed(layout) };
        if !p.is_null() {
            ALLOCATED.fetch_add(layout.size(), std::sync::atomic::Ordering::Relaxed);
        }
        p
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { std::alloc::System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            ALLOCATED.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
            ALLOCATED.fetch_add(new_size, std::sync::atomic::Ordering::Relaxed);
        }
        p
    }
}
