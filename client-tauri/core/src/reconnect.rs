//! When a call gets its connection back: the reconnection policy, sans IO. The call's loop
//! tells it what it sees (the signaling socket lost, a peer connection down or failed, a
//! local address gone, a reconnection that worked or not) with the time, and asks it what to
//! do and when to ask again; tests run it on simulated time.
//!
//! A reconnection re-dials the signaling socket, joins again (the server keeps our place for
//! its grace period, so the others see "reconnecting", never a leave) and builds new peer
//! connections. New ones, not an ICE restart: webrtc-rs 0.17 gathers host candidates from the
//! interfaces it saw when the connection was made, so after a network change a restart would
//! offer only the addresses that are gone.

use std::time::{Duration, Instant};

/// How long a peer connection may stay `disconnected` (ICE saw nothing for its own timeout
/// already) before the call reconnects rather than wait for it to come back by itself.
pub const DOWN_PATIENCE: Duration = Duration::from_millis(1500);
/// A reconnection that has not brought the media back after this long is tried again.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(8);
/// Pauses between attempts: doubling from the first, up to the last.
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(4);

/// What the call saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The signaling socket closed or failed.
    SignalLost,
    /// A local address the call's connections use is gone (Wi-Fi off, cable out, VPN).
    AddressLost,
    /// A peer connection (`0`: publish, `1`: subscribe) is disconnected, or has failed.
    Down(usize),
    Failed(usize),
    /// A peer connection is connected (again).
    Up(usize),
    /// A reconnection failed (the server could not be reached, refused the join, ...).
    AttemptFailed,
    /// A reconnection re-joined the room; the call is back once its connections are up.
    Rejoined,
}

/// What the call should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Re-dial, re-join and build new peer connections (the `attempt`th time).
    Reconnect { attempt: u32 },
    /// The server has given our place away by now: end the call.
    GiveUp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connected,
    /// Lost at `since`; the next attempt (number `attempt`) is due at `at`.
    Waiting {
        since: Instant,
        attempt: u32,
        at: Instant,
    },
    /// Attempt `attempt` started at `started`; `rejoined` once the room has us back.
    Trying {
        since: Instant,
        attempt: u32,
        started: Instant,
        rejoined: bool,
    },
    Gone,
}

/// The policy. Starts connected (a call is made only once its join worked).
#[derive(Debug)]
pub struct Reconnect {
    /// How long the server keeps a dropped participant's place.
    grace: Duration,
    state: State,
    /// Per peer connection: down since (while disconnected), and whether it is up.
    down_since: [Option<Instant>; 2],
    up: [bool; 2],
    /// Peer connections the call has (the subscribe one comes with the first remote track).
    used: [bool; 2],
}

impl Reconnect {
    pub fn new(grace: Duration) -> Reconnect {
        Reconnect {
            grace,
            state: State::Connected,
            down_since: [None; 2],
            up: [false; 2],
            used: [false; 2],
        }
    }

    /// The call now has peer connection `pc` (new ones after each reconnection).
    pub fn using(&mut self, pc: usize) {
        self.used[pc] = true;
        self.up[pc] = false;
        self.down_since[pc] = None;
    }

    /// True while the call is trying to get its connection back.
    pub fn reconnecting(&self) -> bool {
        matches!(self.state, State::Waiting { .. } | State::Trying { .. })
    }

    pub fn handle(&mut self, seen: Seen, now: Instant) {
        match seen {
            Seen::Up(pc) => {
                self.up[pc] = true;
                self.down_since[pc] = None;
            }
            Seen::Down(pc) => {
                self.up[pc] = false;
                self.down_since[pc].get_or_insert(now);
            }
            _ => {}
        }
        self.state = match (self.state, seen) {
            (State::Gone, _) => State::Gone,
            (State::Connected, Seen::SignalLost | Seen::AddressLost | Seen::Failed(_)) => {
                State::Waiting {
                    since: now,
                    attempt: 1,
                    at: now,
                }
            }
            // While trying: losing the new socket or address, or a failure, ends this attempt.
            (
                State::Trying { since, attempt, .. },
                Seen::AttemptFailed | Seen::SignalLost | Seen::AddressLost | Seen::Failed(_),
            ) => State::Waiting {
                since,
                attempt: attempt + 1,
                at: now + backoff(attempt),
            },
            (
                State::Trying {
                    since,
                    attempt,
                    started,
                    ..
                },
                Seen::Rejoined,
            ) => State::Trying {
                since,
                attempt,
                started,
                rejoined: true,
            },
            (state, _) => state,
        };
        if let State::Trying { rejoined: true, .. } = self.state
            && self.all_up()
        {
            self.state = State::Connected;
        }
    }

    fn all_up(&self) -> bool {
        (0..2).all(|pc| !self.used[pc] || self.up[pc])
    }

    /// What to do now, if anything. Call after [`Reconnect::handle`] and at
    /// [`Reconnect::deadline`].
    pub fn poll(&mut self, now: Instant) -> Option<Action> {
        match self.state {
            State::Connected => {
                let stuck = self
                    .down_since
                    .iter()
                    .flatten()
                    .any(|since| now.duration_since(*since) >= DOWN_PATIENCE);
                if stuck {
                    self.state = State::Waiting {
                        since: now,
                        attempt: 1,
                        at: now,
                    };
                    return self.poll(now);
                }
                None
            }
            State::Waiting { since, .. } | State::Trying { since, .. }
                if now.duration_since(since) >= self.grace =>
            {
                self.state = State::Gone;
                Some(Action::GiveUp)
            }
            State::Waiting { since, attempt, at } if now >= at => {
                self.state = State::Trying {
                    since,
                    attempt,
                    started: now,
                    rejoined: false,
                };
                for pc in 0..2 {
                    self.up[pc] = false;
                    self.down_since[pc] = None;
                }
                Some(Action::Reconnect { attempt })
            }
            State::Trying {
                since,
                attempt,
                started,
                ..
            } if now.duration_since(started) >= ATTEMPT_TIMEOUT => {
                self.state = State::Waiting {
                    since,
                    attempt: attempt + 1,
                    at: now,
                };
                self.poll(now)
            }
            _ => None,
        }
    }

    /// When to poll next, if the state can change with time alone.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Connected => self
                .down_since
                .iter()
                .flatten()
                .min()
                .map(|s| *s + DOWN_PATIENCE),
            State::Waiting { since, at, .. } => Some(at.min(since + self.grace)),
            State::Trying { since, started, .. } => {
                Some((started + ATTEMPT_TIMEOUT).min(since + self.grace))
            }
            State::Gone => None,
        }
    }
}

fn backoff(attempt: u32) -> Duration {
    BACKOFF_FIRST
        .saturating_mul(1 << attempt.saturating_sub(1).min(8))
        .min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(15);

    fn connected(now: Instant) -> Reconnect {
        let mut r = Reconnect::new(GRACE);
        r.using(0);
        r.using(1);
        r.handle(Seen::Up(0), now);
        r.handle(Seen::Up(1), now);
        r
    }

    /// Polls every 10 ms from `from` until an action or `until`; the action and its time.
    fn run(r: &mut Reconnect, from: Instant, until: Instant) -> Option<(Action, Instant)> {
        let mut now = from;
        while now <= until {
            if let Some(a) = r.poll(now) {
                return Some((a, now));
            }
            now += Duration::from_millis(10);
        }
        None
    }

    #[test]
    fn a_lost_socket_or_address_reconnects_at_once() {
        for seen in [Seen::SignalLost, Seen::AddressLost, Seen::Failed(1)] {
            let t0 = Instant::now();
            let mut r = connected(t0);
            r.handle(seen, t0);
            assert!(r.reconnecting());
            assert_eq!(
                r.poll(t0),
                Some(Action::Reconnect { attempt: 1 }),
                "{seen:?}"
            );
        }
    }

    #[test]
    fn a_disconnected_connection_gets_a_moment_to_come_back() {
        let t0 = Instant::now();
        let mut r = connected(t0);
        r.handle(Seen::Down(1), t0);
        assert_eq!(r.poll(t0 + Duration::from_millis(500)), None);
        r.handle(Seen::Up(1), t0 + Duration::from_millis(600));
        assert_eq!(run(&mut r, t0, t0 + Duration::from_secs(10)), None);
        assert!(!r.reconnecting());
        // Down for good this time.
        let t1 = t0 + Duration::from_secs(20);
        r.handle(Seen::Down(0), t1);
        assert_eq!(r.deadline(), Some(t1 + DOWN_PATIENCE));
        let (action, at) = run(&mut r, t1, t1 + Duration::from_secs(5)).expect("a reconnection");
        assert_eq!(action, Action::Reconnect { attempt: 1 });
        assert_eq!(at, t1 + DOWN_PATIENCE);
    }

    #[test]
    fn back_once_rejoined_and_every_connection_is_up() {
        let t0 = Instant::now();
        let mut r = connected(t0);
        r.handle(Seen::SignalLost, t0);
        assert_eq!(r.poll(t0), Some(Action::Reconnect { attempt: 1 }));
        let t = t0 + Duration::from_millis(300);
        r.using(0);
        r.handle(Seen::Up(0), t);
        assert!(r.reconnecting(), "not rejoined yet");
        r.handle(Seen::Rejoined, t);
        assert!(r.reconnecting(), "the subscribe connection is not up yet");
        r.using(1);
        r.handle(Seen::Up(1), t + Duration::from_millis(100));
        assert!(!r.reconnecting());
        assert_eq!(run(&mut r, t, t + Duration::from_secs(30)), None);
    }

    #[test]
    fn failed_attempts_back_off_then_give_up_when_the_place_is_gone() {
        let t0 = Instant::now();
        let mut r = connected(t0);
        r.handle(Seen::SignalLost, t0);
        let mut now = t0;
        let mut attempts = Vec::new();
        loop {
            let Some((action, at)) = run(&mut r, now, t0 + Duration::from_secs(60)) else {
                panic!("no action after {attempts:?}");
            };
            match action {
                Action::Reconnect { attempt } => {
                    attempts.push((attempt, at.duration_since(t0).as_millis()));
                    r.handle(Seen::AttemptFailed, at);
                    now = at;
                }
                Action::GiveUp => {
                    assert_eq!(at, t0 + GRACE);
                    break;
                }
            }
        }
        // At once, then after 250 ms, 500 ms, 1 s, 2 s, 4 s, 4 s, ...
        let times: Vec<u128> = attempts.iter().map(|a| a.1).collect();
        assert_eq!(&times[..7], &[0, 250, 750, 1750, 3750, 7750, 11750]);
        assert_eq!(r.poll(t0 + Duration::from_secs(100)), None, "gone for good");
    }

    #[test]
    fn an_attempt_that_hangs_is_tried_again() {
        let t0 = Instant::now();
        let mut r = connected(t0);
        r.handle(Seen::AddressLost, t0);
        assert_eq!(r.poll(t0), Some(Action::Reconnect { attempt: 1 }));
        r.using(0);
        r.handle(Seen::Rejoined, t0 + Duration::from_millis(200));
        // The new connection never comes up.
        let (action, at) = run(&mut r, t0, t0 + Duration::from_secs(14)).expect("a second attempt");
        assert_eq!(action, Action::Reconnect { attempt: 2 });
        assert_eq!(at, t0 + ATTEMPT_TIMEOUT);
    }
}
