//! The clock of closure attempts on threads: one reading per attempt, as cheap as the machine
//! allows (issue 15).
//!
//! `Instant::now` goes through the vDSO's `clock_gettime`: an ordered read of the time stamp
//! counter, a sequence lock and a conversion, 23 ns on the reference machine, the dearest part
//! of a no-op closure's attempt. Where Linux itself keeps time with the time stamp counter
//! (`tsc` is the current clocksource: the kernel found it constant and in step across CPUs), a
//! [`Stamp`] is a raw counter reading instead (9 ns there), and only the difference of two
//! stamps is converted to nanoseconds.
//!
//! The conversion needs the counter's rate, which crates such as `quanta` and `minstant`
//! measure at start-up by spinning for 10-20 ms: every short run (and every worker process)
//! would pay that. Here the rate is the ratio of two pairs of readings of both clocks: one taken
//! when the clock is first used, one taken again whenever the process has run an eighth longer
//! than at the last one. A duration `d` converted at time `t` after the first pair is then off
//! by at most `d / t` times the skew of a pair (each pair is read between two counter readings
//! at most [`PAIR_TICKS`] apart), so by less than a microsecond, at no start-up cost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// One reading of the attempt clock: counter ticks, or nanoseconds since the clock's first use
/// where the counter is not the system's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stamp(u64);

impl Stamp {
    /// The clock now.
    #[inline]
    pub(crate) fn now() -> Stamp {
        clock().now()
    }

    /// The time from `self` to `later` (zero if `later` is not later).
    #[inline]
    pub(crate) fn until(self, later: Stamp) -> Duration {
        clock().between(self, later)
    }
}

/// A pair of readings farther apart than this (in counter ticks: about a microsecond) was
/// interrupted in between; it is read again.
const PAIR_TICKS: u64 = 4_000;

/// The process's attempt clock ([`clock`]).
struct Clock {
    /// The system clock's reading of the first pair.
    first: Instant,
    /// With a usable time stamp counter: its rate.
    tsc: Option<Rate>,
}

impl Clock {
    /// The time stamp counter where it is the system's clock, else the system clock.
    fn new() -> Clock {
        if counter_keeps_time() {
            Clock::counter()
        } else {
            Clock::system()
        }
    }

    fn counter() -> Clock {
        let (first, tick) = pair();
        Clock {
            first,
            tsc: Some(Rate {
                first_tick: tick,
                // Until the first conversion measures it.
                ns_per_tick: AtomicU64::new(0f64.to_bits()),
                measured_at: AtomicU64::new(tick),
            }),
        }
    }

    fn system() -> Clock {
        Clock {
            first: Instant::now(),
            tsc: None,
        }
    }

    #[inline]
    fn now(&self) -> Stamp {
        match self.tsc {
            Some(_) => Stamp(ticks()),
            None => Stamp(self.since_first(Instant::now())),
        }
    }

    #[inline]
    fn between(&self, from: Stamp, to: Stamp) -> Duration {
        let diff = to.0.saturating_sub(from.0);
        match &self.tsc {
            Some(rate) => Duration::from_nanos((diff as f64 * rate.ns_per_tick(self, to.0)) as u64),
            None => Duration::from_nanos(diff),
        }
    }

    fn since_first(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.first).as_nanos() as u64
    }
}

/// The process's attempt clock, chosen at its first use.
fn clock() -> &'static Clock {
    static CLOCK: OnceLock<Clock> = OnceLock::new();
    CLOCK.get_or_init(Clock::new)
}

/// The time stamp counter's rate, measured against the system clock as the process goes.
struct Rate {
    /// The counter's reading of the first pair.
    first_tick: u64,
    /// Nanoseconds per tick (`f64` bits), from the first pair and the last one.
    ns_per_tick: AtomicU64,
    /// The counter's reading of the last pair.
    measured_at: AtomicU64,
}

impl Rate {
    /// The rate at counter reading `now`, measured again first if the process has run an
    /// eighth longer since the last measure (so a few hundred times in a long run). Two threads
    /// measuring at once both store a valid rate.
    #[inline]
    fn ns_per_tick(&self, clock: &Clock, now: u64) -> f64 {
        let measured_at = self.measured_at.load(Ordering::Relaxed);
        let since_first = now.saturating_sub(self.first_tick);
        if now.saturating_sub(measured_at) > since_first / 8 {
            return self.measure(clock);
        }
        f64::from_bits(self.ns_per_tick.load(Ordering::Relaxed))
    }

    #[cold]
    fn measure(&self, clock: &Clock) -> f64 {
        let (at, tick) = pair();
        let ticks = tick.saturating_sub(self.first_tick);
        // No tick yet (a counter that stands still): keep the last rate.
        if ticks == 0 {
            return f64::from_bits(self.ns_per_tick.load(Ordering::Relaxed));
        }
        let rate = clock.since_first(at) as f64 / ticks as f64;
        self.ns_per_tick.store(rate.to_bits(), Ordering::Relaxed);
        self.measured_at.store(tick, Ordering::Relaxed);
        rate
    }
}

/// A reading of the system clock and of the counter at the same moment: the counter halfway
/// between two readings around the system clock's, read again (a few times) while they are far
/// apart.
fn pair() -> (Instant, u64) {
    let mut best: Option<(Instant, u64, u64)> = None;
    for _ in 0..8 {
        let before = ticks();
        let at = Instant::now();
        let after = ticks();
        let spread = after.saturating_sub(before);
        let mid = before + spread / 2;
        if spread <= PAIR_TICKS {
            return (at, mid);
        }
        if best.is_none_or(|(_, _, s)| spread < s) {
            best = Some((at, mid, spread));
        }
    }
    best.map_or_else(|| (Instant::now(), ticks()), |(at, mid, _)| (at, mid))
}

/// Whether the time stamp counter is the system's clock: Linux on x86-64 with `tsc` as its
/// current clocksource (the kernel checked that it runs at a constant rate, in step on every
/// CPU, and keeps checking).
fn counter_keeps_time() -> bool {
    cfg!(all(target_os = "linux", target_arch = "x86_64"))
        && std::fs::read_to_string(
            "/sys/devices/system/clocksource/clocksource0/current_clocksource",
        )
        .is_ok_and(|s| s.trim() == "tsc")
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn ticks() -> u64 {
    // SAFETY: `rdtsc` reads a register; it has no precondition (every x86-64 CPU has it).
    unsafe { std::arch::x86_64::_rdtsc() }
}

/// Never read: `counter_keeps_time` is false on other architectures.
#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn ticks() -> u64 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The clocks to check: each kind this machine can run.
    fn clocks() -> Vec<(&'static str, Clock)> {
        let mut clocks = vec![("system", Clock::system())];
        if counter_keeps_time() {
            clocks.push(("counter", Clock::counter()));
        }
        clocks
    }

    /// Durations measured with stamps agree with the system clock's, sleeps included.
    #[test]
    fn stamps_measure_what_the_system_clock_does() {
        for (kind, clock) in clocks() {
            for ms in [0u64, 2, 20] {
                let (a, sys_a) = (clock.now(), Instant::now());
                std::thread::sleep(Duration::from_millis(ms));
                let (sys_b, b) = (Instant::now(), clock.now());
                let ours = clock.between(a, b);
                let system = sys_b - sys_a;
                // Ours is the system clock's reading of the same interval, within a pair's
                // skew and the rounding of a conversion.
                let slack = Duration::from_micros(50) + system / 100;
                assert!(
                    ours + slack >= system && ours <= system + slack,
                    "{kind}, {ms} ms: stamps {ours:?}, system clock {system:?}"
                );
            }
        }
    }

    /// Back-to-back intervals add up to the whole, and a stamp before another never measures
    /// a negative time.
    #[test]
    fn intervals_add_up_and_never_go_backwards() {
        for (kind, clock) in clocks() {
            let first = clock.now();
            let mut last = first;
            let mut sum = Duration::ZERO;
            for _ in 0..10_000 {
                let now = clock.now();
                sum += clock.between(last, now);
                last = now;
            }
            let whole = clock.between(first, last);
            assert!(
                whole.abs_diff(sum) <= whole / 50 + Duration::from_micros(50),
                "{kind}: {sum:?} against {whole:?}"
            );
            assert_eq!(clock.between(Stamp(10), Stamp(5)), Duration::ZERO);
            assert_eq!(clock.between(last, first), Duration::ZERO);
        }
    }

    /// The process's clock is the counter exactly where the system keeps time with it.
    #[test]
    fn the_counter_is_used_where_it_is_the_system_clock() {
        assert_eq!(clock().tsc.is_some(), counter_keeps_time());
    }
}
