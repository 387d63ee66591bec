//! Coarse connection deadlines (idle, handshake, half-close), watched by one
//! sweeper thread instead of an async-io timer per connection.
//!
//! Why not `async_io::Timer`: every timer that fires is a reactor wakeup of
//! its own, and while timers are registered the reactor does timer
//! bookkeeping (and an allocation) on every turn. Here a connection only
//! publishes its next deadline (an atomic store, rounded up to a whole
//! second so that neighbours coalesce); the sweeper sleeps until the
//! earliest deadline of all, wakes the connections whose deadline passed,
//! and sleeps again. An idle proxy with no deadline due sleeps throughout.
//!
//! A slot keeps its connection's waker until the connection hands over
//! another one or drops its registration; firing a deadline wakes a clone.
//! (It used to take the waker out, while the connection skips handing over
//! a waker it already gave: after one wake-up that did not close it, a
//! connection was never woken by a deadline again.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::task::Waker;
use std::time::{Duration, Instant};

/// Longest the sweeper sleeps without looking, even with nothing due.
const MAX_SWEEP_SLEEP: Duration = Duration::from_secs(60);

/// Slots per chunk; chunks are allocated as connections grow and kept.
const CHUNK_SLOTS: usize = 256;

/// "No deadline".
const NEVER: u64 = u64::MAX;

/// One connection's slot: its deadline and how to wake it (32 bytes, in a
/// chunk that never moves, so a connection may hold a plain reference).
struct Slot {
    /// Milliseconds since [`Sweeper::epoch`], whole seconds; [`NEVER`] if none.
    due_ms: AtomicU64,
    waker: Mutex<Option<Waker>>,
}

type Chunk = [Slot; CHUNK_SLOTS];

/// Which slots exist and which are free.
struct Slots {
    chunks: Vec<&'static Chunk>,
    /// Slots handed out at least once (the sweeper looks at these).
    used: usize,
    free: Vec<usize>,
}

impl Slots {
    fn get(&self, index: usize) -> &'static Slot {
        &self.chunks[index / CHUNK_SLOTS][index % CHUNK_SLOTS]
    }
}

/// The process-wide sweeper.
struct Sweeper {
    epoch: Instant,
    slots: Mutex<Slots>,
    /// When the sweeper will look next (ms since epoch).
    planned_ms: AtomicU64,
    wake: Condvar,
}

fn sweeper() -> &'static Sweeper {
    static SWEEPER: OnceLock<&'static Sweeper> = OnceLock::new();
    SWEEPER.get_or_init(|| {
        let sweeper: &'static Sweeper = Box::leak(Box::new(Sweeper {
            epoch: Instant::now(),
            slots: Mutex::new(Slots {
                chunks: Vec::new(),
                used: 0,
                free: Vec::new(),
            }),
            planned_ms: AtomicU64::new(NEVER),
            wake: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("deadlines".into())
            .spawn(move || sweeper.run())
            .expect("spawn the deadline sweeper thread");
        sweeper
    })
}

impl Sweeper {
    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn run(&self) {
        let mut slots = self.lock();
        loop {
            let now = self.now_ms();
            let mut earliest = NEVER;
            for index in 0..slots.used {
                let slot = slots.get(index);
                let due = slot.due_ms.load(Ordering::Relaxed);
                if due <= now {
                    // Fired once; the connection publishes its next deadline.
                    // The waker stays in the slot: the connection hands it
                    // over only when it changes, so taking it here lost
                    // every later wake-up of a connection that stayed open.
                    slot.due_ms.store(NEVER, Ordering::Relaxed);
                    let waker = slot.waker.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    if let Some(waker) = waker {
                        waker.wake();
                    }
                } else {
                    earliest = earliest.min(due);
                }
            }
            let sleep_ms = earliest
                .saturating_sub(now)
                .min(MAX_SWEEP_SLEEP.as_millis() as u64);
            self.planned_ms.store(now + sleep_ms, Ordering::Relaxed);
            slots = self
                .wake
                .wait_timeout(slots, Duration::from_millis(sleep_ms))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// A connection's registration with the sweeper; its slot is freed on drop.
pub(crate) struct Deadline {
    slot: &'static Slot,
    index: u32,
    /// The deadline last published, in whole seconds since the epoch
    /// (`u32::MAX`: none); 32 bits each keep every connection's copy small.
    published_s: u32,
    /// The waker last handed over, to skip locking for the same one.
    waker: Option<Waker>,
}

impl Deadline {
    /// Registers a connection with no deadline yet.
    pub(crate) fn new() -> Deadline {
        let mut slots = sweeper().lock();
        let index = match slots.free.pop() {
            Some(index) => index,
            None => {
                if slots.used == slots.chunks.len() * CHUNK_SLOTS {
                    // Kept for the process's life and reused: bounded by the
                    // most connections ever open at once.
                    let chunk: &'static Chunk =
                        Box::leak(Box::new(std::array::from_fn(|_| Slot {
                            due_ms: AtomicU64::new(NEVER),
                            waker: Mutex::new(None),
                        })));
                    slots.chunks.push(chunk);
                }
                slots.used += 1;
                slots.used - 1
            }
        };
        Deadline {
            // Fewer than 2^32 connections are ever open at once.
            index: index as u32,
            slot: slots.get(index),
            published_s: u32::MAX,
            waker: None,
        }
    }

    /// Asks to be woken with `waker` once `at` has passed (within a second
    /// after it: deadlines are rounded up to whole seconds to coalesce).
    pub(crate) fn wake_at(&mut self, at: Instant, waker: &Waker) {
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *self.slot.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(waker.clone());
            self.waker = Some(waker.clone());
        }
        let sweeper = sweeper();
        let since = at.saturating_duration_since(sweeper.epoch);
        let due_ms = (since.as_secs() + u64::from(since.subsec_nanos() > 0)) * 1000;
        let current = self.slot.due_ms.load(Ordering::Relaxed);
        if due_ms == current {
            return;
        }
        let earlier = current == NEVER || due_ms < u64::from(self.published_s) * 1000;
        self.published_s = (due_ms / 1000).min(u64::from(u32::MAX - 1)) as u32;
        if !earlier {
            // Later than before (activity moved it): the sweeper may look
            // too early, find nothing due and look again. No lock needed.
            self.slot.due_ms.store(due_ms, Ordering::Relaxed);
            return;
        }
        // Earlier (a new connection, a half-close, or after firing): publish
        // under the lock, so the sweeper cannot be between scanning this slot
        // and choosing how long to sleep.
        let _slots = sweeper.lock();
        self.slot.due_ms.store(due_ms, Ordering::Relaxed);
        if due_ms < sweeper.planned_ms.load(Ordering::Relaxed) {
            sweeper.planned_ms.store(due_ms, Ordering::Relaxed);
            sweeper.wake.notify_one();
        }
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        let mut slots = sweeper().lock();
        self.slot.due_ms.store(NEVER, Ordering::Relaxed);
        *self.slot.waker.lock().unwrap_or_else(|e| e.into_inner()) = None;
        slots.free.push(self.index as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::task::Wake;

    struct Flag(AtomicBool, Mutex<()>, Condvar);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
            let _g = self.1.lock().unwrap();
            self.2.notify_all();
        }
    }

    #[test]
    fn wakes_after_the_deadline_and_not_before() {
        let flag = Arc::new(Flag(AtomicBool::new(false), Mutex::new(()), Condvar::new()));
        let waker = Waker::from(flag.clone());
        let mut deadline = Deadline::new();
        let at = Instant::now() + Duration::from_millis(300);
        deadline.wake_at(at, &waker);
        let mut guard = flag.1.lock().unwrap();
        let limit = Instant::now() + Duration::from_secs(10);
        while !flag.0.load(Ordering::SeqCst) && Instant::now() < limit {
            guard = flag
                .2
                .wait_timeout(guard, Duration::from_millis(50))
                .unwrap()
                .0;
        }
        assert!(flag.0.load(Ordering::SeqCst), "never woken");
        assert!(Instant::now() >= at, "woken before the deadline");
    }

    impl Flag {
        fn new() -> Arc<Flag> {
            Arc::new(Flag(AtomicBool::new(false), Mutex::new(()), Condvar::new()))
        }

        /// Waits (at most ten seconds) until woken; whether it was. Clears it.
        fn wait(&self) -> bool {
            let mut guard = self.1.lock().unwrap();
            let limit = Instant::now() + Duration::from_secs(10);
            while !self.0.load(Ordering::SeqCst) && Instant::now() < limit {
                guard = self
                    .2
                    .wait_timeout(guard, Duration::from_millis(50))
                    .unwrap()
                    .0;
            }
            self.0.swap(false, Ordering::SeqCst)
        }
    }

    /// Regression: once the sweeper had fired for a connection that then
    /// stayed open (data arrived in between, so it only moved its deadline),
    /// no later deadline woke it again: the sweeper took the waker out of
    /// the slot, and the connection, holding the same waker, skipped
    /// handing it over again. An idle connection then lived forever.
    #[test]
    fn a_connection_that_survives_a_wakeup_is_woken_at_its_next_deadline() {
        let flag = Flag::new();
        let waker = Waker::from(flag.clone());
        let mut deadline = Deadline::new();
        deadline.wake_at(Instant::now() + Duration::from_millis(200), &waker);
        assert!(flag.wait(), "first deadline never woke the connection");
        // Data arrived: the connection is still open and publishes its next
        // deadline with the same waker, as a task polled again does.
        for round in 2..=3 {
            deadline.wake_at(Instant::now() + Duration::from_millis(200), &waker);
            assert!(flag.wait(), "deadline {round} never woke the connection");
        }
    }

    #[test]
    fn dropped_registration_frees_its_slot_for_reuse() {
        let deadline = Deadline::new();
        let index = deadline.index as usize;
        assert!(!sweeper().lock().free.contains(&index));
        drop(deadline);
        assert!(sweeper().lock().free.contains(&index));
    }
}
