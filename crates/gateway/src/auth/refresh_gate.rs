//! When the key set may be fetched again: never two fetches started less than
//! `--jwks-min-refresh-s` apart, whatever asks (the periodic refresh, a retry after a
//! failure, or tokens naming unknown keys), so a flood of tokens with made-up `kid`s
//! costs the provider at most one request per interval.

use std::time::Duration;

use tokio::time::Instant;

/// What a token naming an unknown key may expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// A fetch is under way: its outcome is worth waiting for.
    InFlight,
    /// A fetch may start now.
    Now,
    /// The last fetch started too recently; the next may start at this instant.
    Later(Instant),
}

/// The fetch schedule's memory: when the last fetch started, whether it is still on.
#[derive(Debug)]
pub struct RefreshGate {
    /// Least time between the starts of two fetches.
    min_interval: Duration,
    /// When the last fetch started (`None`: never).
    last_start: Option<Instant>,
    /// Whether a fetch is under way.
    in_flight: bool,
}

impl RefreshGate {
    /// A gate that never saw a fetch.
    pub fn new(min_interval: Duration) -> Self {
        RefreshGate {
            min_interval,
            last_start: None,
            in_flight: false,
        }
    }

    /// Where a fetch stands at `now`.
    pub fn ask(&self, now: Instant) -> Ask {
        if self.in_flight {
            return Ask::InFlight;
        }
        match self.next_allowed() {
            Some(at) if at > now => Ask::Later(at),
            _ => Ask::Now,
        }
    }

    /// The earliest start of the next fetch (`None`: at once).
    pub fn next_allowed(&self) -> Option<Instant> {
        self.last_start.map(|t| t + self.min_interval)
    }

    /// Starts a fetch at `now` if one may start; whether it did.
    pub fn start(&mut self, now: Instant) -> bool {
        if self.ask(now) != Ask::Now {
            return false;
        }
        self.last_start = Some(now);
        self.in_flight = true;
        true
    }

    /// The fetch under way is over (whatever its outcome).
    pub fn finish(&mut self) {
        self.in_flight = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_one_fetch_per_interval() {
        let t0 = Instant::now();
        let min = Duration::from_secs(30);
        let mut gate = RefreshGate::new(min);
        assert_eq!(gate.ask(t0), Ask::Now);
        assert!(gate.start(t0));
        // While it runs, everyone waits for it; nobody starts another.
        assert_eq!(gate.ask(t0), Ask::InFlight);
        assert!(!gate.start(t0 + Duration::from_secs(60)));
        gate.finish();
        // A flood of asks within the interval: not one more start.
        let mut started = 0;
        for ms in (0..30_000).step_by(7) {
            let now = t0 + Duration::from_millis(ms);
            assert_eq!(gate.ask(now), Ask::Later(t0 + min));
            started += usize::from(gate.start(now));
        }
        assert_eq!(started, 0);
        assert_eq!(gate.next_allowed(), Some(t0 + min));
        // At the interval's end, exactly one.
        assert_eq!(gate.ask(t0 + min), Ask::Now);
        assert!(gate.start(t0 + min));
        assert!(!gate.start(t0 + min));
        gate.finish();
        assert_eq!(
            gate.ask(t0 + min + Duration::from_secs(29)),
            Ask::Later(t0 + min * 2)
        );
    }

    #[test]
    fn a_slow_fetch_counts_from_its_start() {
        let t0 = Instant::now();
        let mut gate = RefreshGate::new(Duration::from_secs(10));
        assert!(gate.start(t0));
        // Finished 12 s later: the next may start at once (12 s since the last start).
        gate.finish();
        assert_eq!(gate.ask(t0 + Duration::from_secs(12)), Ask::Now);
    }
}
