//! Stopping: the first SIGINT or SIGTERM stops accepting miners and drains
//! the open relays for up to the grace period (`shutdown_grace`); a second
//! one during the drain exits at once (the operator, or a script repeating
//! Ctrl-C, does not want to wait), with [`EXIT_SECOND_SIGNAL`].

use std::time::{Duration, Instant};

use async_signal::{Signal, Signals};
use log::warn;
use smol::Executor;
use smol::channel::Receiver;
use smol::stream::StreamExt;

use crate::logging;

/// Exit code when a second SIGINT/SIGTERM cut the drain short.
pub const EXIT_SECOND_SIGNAL: u8 = 1;

/// How often the drain checks whether the last relay has finished.
pub const DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Watches SIGINT and SIGTERM from now on: the receiver gets the first
/// one's name; a second one ends the process at once.
pub fn watch_stop_signals(executor: &Executor<'static>) -> std::io::Result<Receiver<&'static str>> {
    let mut signals = Signals::new([Signal::Int, Signal::Term])?;
    let (stop_tx, stop_rx) = smol::channel::bounded(1);
    executor
        .spawn(async move {
            if let Some(Ok(signal)) = signals.next().await {
                let _ = stop_tx.send(signal_name(signal)).await;
            }
            if let Some(Ok(signal)) = signals.next().await {
                warn!(
                    "second {}: exiting at once, open relays are cut",
                    signal_name(signal)
                );
                logging::flush();
                std::process::exit(EXIT_SECOND_SIGNAL.into());
            }
        })
        .detach();
    Ok(stop_rx)
}

/// The name a log line gives a signal.
pub fn signal_name(signal: Signal) -> &'static str {
    match signal {
        Signal::Int => "SIGINT",
        Signal::Term => "SIGTERM",
        Signal::Hup => "SIGHUP",
        _ => "signal",
    }
}

/// Waits until `active()` is 0 or `grace` is over; returns how many
/// connections are still open then (the caller closes them).
pub async fn drain(active: impl Fn() -> usize, grace: Duration) -> usize {
    let deadline = Instant::now() + grace;
    loop {
        let now = Instant::now();
        if active() == 0 || now >= deadline {
            return active();
        }
        smol::Timer::after(DRAIN_POLL_INTERVAL.min(deadline - now)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn a_drain_ends_when_the_last_connection_closes() {
        let open = Cell::new(3usize);
        let left = smol::block_on(drain(
            || {
                let n = open.get();
                open.set(n.saturating_sub(1));
                n
            },
            Duration::from_secs(3600),
        ));
        assert_eq!(left, 0);
        assert_eq!(open.get(), 0);
    }

    #[test]
    fn a_drain_ends_with_the_grace_period_and_says_how_many_are_left() {
        let polls = Cell::new(0u32);
        let left = smol::block_on(drain(
            || {
                polls.set(polls.get() + 1);
                7
            },
            Duration::from_millis(120),
        ));
        assert_eq!(left, 7);
        // Polled more than once before the end: it waited, not gave up.
        assert!(polls.get() >= 3, "{} polls", polls.get());
    }

    #[test]
    fn no_grace_period_returns_at_once() {
        assert_eq!(smol::block_on(drain(|| 2, Duration::ZERO)), 2);
    }

    #[test]
    fn signals_are_named_for_the_log() {
        assert_eq!(signal_name(Signal::Int), "SIGINT");
        assert_eq!(signal_name(Signal::Term), "SIGTERM");
        assert_eq!(signal_name(Signal::Hup), "SIGHUP");
    }
}
