//! A hook's circuit breaker, as a state machine with the clock passed in: closed
//! (calls go through; consecutive failures are counted), open (calls fail at once,
//! without reaching the back end, for the cool-down), half-open (one probe call goes
//! through: its success closes the breaker, its failure opens it again).
//!
//! Why: a back end that is down or drowning would otherwise get every call of a
//! reconnect storm, each waiting out its timeout; open, the breaker answers those calls
//! with the hook's failure policy at once, and one probe per cool-down finds out when
//! the back end is back.

use std::time::{Duration, Instant};

/// Where the breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Calls go through; `failures` consecutive ones have failed.
    Closed {
        /// Consecutive failures so far.
        failures: u32,
    },
    /// Calls fail at once until `until`.
    Open {
        /// When the next call may probe.
        until: Instant,
    },
    /// One probe call is in flight; every other call fails at once.
    HalfOpen,
}

/// What a call let through is: an ordinary call (of the closed breaker of generation
/// `closed_at`), or the probe of a half-open one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ticket {
    /// A call of the closed breaker; its result counts only while the breaker is still
    /// closed in the same generation (a late failure of a call started before the
    /// breaker opened and closed again says nothing about the back end now).
    Normal {
        /// The generation it was admitted in.
        generation: u64,
    },
    /// The one call of a half-open breaker.
    Probe,
}

/// The breaker of one hook.
#[derive(Debug)]
pub struct Breaker {
    /// Consecutive failures that open it.
    threshold: u32,
    /// How long it stays open.
    cooldown: Duration,
    /// Where it is.
    state: State,
    /// Bumped each time it closes again.
    generation: u64,
}

impl Breaker {
    /// A closed breaker that opens after `threshold` (at least 1) consecutive failures
    /// and stays open for `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Breaker {
            threshold: threshold.max(1),
            cooldown,
            state: State::Closed { failures: 0 },
            generation: 0,
        }
    }

    /// Where it is.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether calls are being held back (open or half-open).
    pub fn is_open(&self) -> bool {
        !matches!(self.state, State::Closed { .. })
    }

    /// Whether a call may go to the back end now, and as what; `None`: it fails at once.
    pub fn admit(&mut self, now: Instant) -> Option<Ticket> {
        match self.state {
            State::Closed { .. } => Some(Ticket::Normal {
                generation: self.generation,
            }),
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen;
                Some(Ticket::Probe)
            }
            State::Open { .. } | State::HalfOpen => None,
        }
    }

    /// The result of a call let through with `ticket`. Returns whether the breaker
    /// changed between closed and not closed (worth a log line).
    pub fn report(&mut self, ticket: Ticket, ok: bool, now: Instant) -> bool {
        let was_open = self.is_open();
        match (ticket, self.state) {
            (Ticket::Normal { generation }, State::Closed { failures })
                if generation == self.generation =>
            {
                let failures = if ok { 0 } else { failures + 1 };
                self.state = if failures >= self.threshold {
                    State::Open {
                        until: now + self.cooldown,
                    }
                } else {
                    State::Closed { failures }
                };
            }
            (Ticket::Probe, State::HalfOpen) => {
                if ok {
                    self.generation += 1;
                    self.state = State::Closed { failures: 0 };
                } else {
                    self.state = State::Open {
                        until: now + self.cooldown,
                    };
                }
            }
            // A late result of a call from before the breaker last changed.
            _ => {}
        }
        was_open != self.is_open()
    }

    /// A call let through with `ticket` ended without a result (its caller went
    /// away): a probe's turn passes to the next call.
    pub fn abandon(&mut self, ticket: Ticket, now: Instant) {
        if ticket == Ticket::Probe && self.state == State::HalfOpen {
            self.state = State::Open { until: now };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOL: Duration = Duration::from_secs(5);

    fn fail(b: &mut Breaker, now: Instant) -> bool {
        let t = b.admit(now).expect("admitted");
        b.report(t, false, now)
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3, COOL);
        assert!(!fail(&mut b, t0));
        assert!(!fail(&mut b, t0));
        // A success in between starts the count again.
        let t = b.admit(t0).unwrap();
        assert!(!b.report(t, true, t0));
        assert!(!fail(&mut b, t0));
        assert!(!fail(&mut b, t0));
        assert_eq!(b.state(), State::Closed { failures: 2 });
        assert!(fail(&mut b, t0), "the third consecutive failure opens it");
        assert!(b.is_open());
        assert_eq!(b.admit(t0 + COOL - Duration::from_millis(1)), None);
    }

    #[test]
    fn one_probe_after_the_cooldown_closes_or_reopens() {
        let t0 = Instant::now();
        let mut b = Breaker::new(1, COOL);
        assert!(fail(&mut b, t0));
        let t1 = t0 + COOL;
        let probe = b.admit(t1).unwrap();
        assert_eq!(probe, Ticket::Probe);
        assert_eq!(b.state(), State::HalfOpen);
        assert_eq!(b.admit(t1), None, "one probe at a time");
        // The probe fails: open for another cool-down from then.
        assert!(!b.report(probe, false, t1 + Duration::from_secs(1)));
        assert_eq!(
            b.state(),
            State::Open {
                until: t1 + Duration::from_secs(1) + COOL
            }
        );
        let t2 = t1 + Duration::from_secs(1) + COOL;
        let probe = b.admit(t2).unwrap();
        assert!(b.report(probe, true, t2), "a good probe closes it");
        assert_eq!(b.state(), State::Closed { failures: 0 });
        assert!(matches!(b.admit(t2), Some(Ticket::Normal { .. })));
    }

    #[test]
    fn late_results_and_abandoned_probes() {
        let t0 = Instant::now();
        let mut b = Breaker::new(2, COOL);
        let early = b.admit(t0).unwrap();
        assert!(!fail(&mut b, t0));
        assert!(fail(&mut b, t0));
        // The call admitted before the breaker opened fails late: nothing changes.
        assert!(!b.report(early, false, t0));
        let probe = b.admit(t0 + COOL).unwrap();
        // Its caller went away: the next call probes at once.
        b.abandon(probe, t0 + COOL);
        let probe = b.admit(t0 + COOL).unwrap();
        assert_eq!(probe, Ticket::Probe);
        assert!(b.report(probe, true, t0 + COOL));
        // A failure of a call from the previous closed period does not count.
        assert!(!b.report(early, false, t0 + COOL));
        assert_eq!(b.state(), State::Closed { failures: 0 });
        // Abandoning an ordinary call changes nothing.
        let normal = b.admit(t0 + COOL).unwrap();
        b.abandon(normal, t0 + COOL);
        assert_eq!(b.state(), State::Closed { failures: 0 });
    }
}
