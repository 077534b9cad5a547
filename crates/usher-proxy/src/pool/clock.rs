//! The pool's clock: whole milliseconds of the kernel's coarse monotonic clock.
//!
//! Every pick reads it (back-off deadlines decide who takes new work), so its cost is part of
//! the pick's. `Instant::now()` reads `CLOCK_MONOTONIC`, which the vDSO computes from the TSC:
//! 30 ns on this project's VM, a third of issue #2's 100 ns pick budget (`benches/pick.rs`,
//! `pool_pick_parts_100/clock`). `CLOCK_MONOTONIC_COARSE` is the same clock as of the last
//! scheduler tick, a plain read from the vDSO page. It runs behind by at most one tick
//! (1–10 ms, by kernel configuration) and never backwards, which is nothing next to what the
//! pool times with it: back-offs, drains and slow-start ramps of hundreds of milliseconds and
//! more.
//!
//! rustix is built with `use-libc`, so the read goes through glibc's `clock_gettime` (6.0 ns
//! here) rather than rustix's own vDSO parser (5.1 ns): that parser crashes the process under
//! valgrind (rustix issue #1559), and callgrind is how this project counts instructions per
//! request.

/// Milliseconds on a monotonic clock with an arbitrary origin.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(super) fn coarse_ms() -> u64 {
    use rustix::time::{ClockId, clock_gettime};
    let t = clock_gettime(ClockId::MonotonicCoarse);
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let ms = u64::try_from(t.tv_nsec).unwrap_or(0) / 1_000_000;
    secs.saturating_mul(1000).saturating_add(ms)
}

/// Milliseconds on a monotonic clock with an arbitrary origin (first call).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(super) fn coarse_ms() -> u64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX / 4)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::coarse_ms;

    #[test]
    fn runs_forward_with_real_time_within_a_tick() {
        let (t0, a) = (Instant::now(), coarse_ms());
        let mut last = a;
        // Bounded: until 60 ms of real time have passed, and the reading followed.
        let deadline = t0 + Duration::from_secs(5);
        while Instant::now() < deadline {
            let now = coarse_ms();
            assert!(now >= last, "went backwards: {last} → {now}");
            last = now;
            if t0.elapsed() >= Duration::from_millis(60) && now >= a + 40 {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let real = u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX);
        let seen = last - a;
        // At least 40 of the ≥ 60 real ms (ticks are ≤ 10 ms), never more than real time + a tick.
        assert!(
            seen >= 40 && seen <= real + 10,
            "coarse {seen} ms vs real {real} ms"
        );
    }
}
