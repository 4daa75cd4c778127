//! Hints to the CPU's caches. Each is only a hint: it never faults and changes nothing the
//! program can see, whatever the address.

/// Asks the CPU to fetch the memory of `slot`, which the next small append writes, for writing.
/// A pending vector was last read by the fold thread on the other core: the appender waited for
/// each of the slot's cache lines to come over (at the pending lock's release, where the store
/// buffer drains); fetched now, they arrive while the next append is on its way. One-event
/// appends ran 4 % faster (`examples/append_cpu 3000 1`).
#[inline(always)]
pub(crate) fn prefetch_for_write<T>(slot: Option<&std::mem::MaybeUninit<T>>) {
    #[cfg(target_arch = "x86_64")]
    if let Some(slot) = slot {
        let at = slot.as_ptr() as usize;
        let first = at & !63;
        let p = first as *const i8;
        for line in (0..at + std::mem::size_of::<T>() - first).step_by(64) {
            // SAFETY: a prefetch is only a hint: it never faults, whatever the address, and
            // it changes no register or memory (`prefetchw`, a no-op on a CPU without it; the
            // intrinsic's hint for writing emits a plain `prefetcht0` without a target feature).
            unsafe { std::arch::asm!("prefetchw [{0}]", in(reg) p.wrapping_add(line), options(nostack, preserves_flags, readonly)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = slot;
}

/// Asks the CPU to fetch the memory at `p` for reading: an append asks for the strings of an
/// event a few ahead, which a batch fresh from a parser or a generator holds out of the cache
/// (each a heap allocation of its own); 3–5 % less appender time per event, as much with cold
/// caches (`append_cpu` with `TB_FRESH=1 TB_TRASH=64`) as with warm ones.
#[inline(always)]
pub(crate) fn prefetch_read(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint; it never faults.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
