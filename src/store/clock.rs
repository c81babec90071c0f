//! The one clock leases are judged on, for a store that lives on one
//! machine (SQLite): the kernel's boot clock, read with a raw system call.
//!
//! Wall clocks differ between processes (a skewed host, `libfaketime`, an
//! NTP step) and so can the C library's view of the monotonic clocks
//! (`libfaketime` shifts those too), so neither may decide whether another
//! process's lease has run out. `CLOCK_BOOTTIME` read straight from the
//! kernel is one clock for every process of the machine, never steps, and
//! counts time spent suspended (a lease lapses across a suspend, as it
//! should). It restarts at every boot, so a lease records the boot it was
//! taken in ([`boot_id`]): one from another boot has lapsed, since every
//! process of that boot is gone.

use std::sync::OnceLock;

/// Milliseconds since this machine booted, from the kernel itself.
pub fn boot_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`. Called as a raw
    // system call so that no preloaded library can shift what it returns.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clock_gettime,
            libc::CLOCK_BOOTTIME,
            &mut ts as *mut libc::timespec,
        )
    };
    if rc != 0 {
        // Not reachable on Linux >= 2.6.39; a monotonic stand-in keeps
        // leases working in this process if it ever is.
        static START: OnceLock<std::time::Instant> = OnceLock::new();
        return START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_millis() as u64;
    }
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// The boot clock as this process's C library reads it (through the
/// vDSO: tens of nanoseconds, no system call). Only for comparing this
/// process's own readings (an owner's window since its last renewal),
/// where a preloaded library's constant shift cancels out; never for a
/// lease another process judges ([`boot_ms`] is for that).
pub fn local_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        return boot_ms();
    }
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// This boot of this machine: a lease taken in another boot has lapsed.
pub fn boot_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown-boot".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boot_clock_moves_forward() {
        let a = boot_ms();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(boot_ms() >= a + 5);
        assert!(!boot_id().is_empty());
    }
}
