//! A team of helper threads that spin between the short parallel loops of decoding.
//!
//! Why not rayon there: one decoded token runs about a hundred products of 20-200 µs each
//! (Qwen2.5-0.5B: Q/K/V, output, gate/up and down per layer). Between two of them rayon's idle
//! worker goes to sleep on a futex, and waking it (an inter-processor interrupt to a halted
//! virtual CPU) took 10-20 µs a product on the 2-core VM: `perf stat` counted 1.75 of 2 CPUs
//! busy and one context switch per product. Helpers here spin on one atomic word between jobs,
//! yield after [`SPIN`], and park only after [`PARK_AFTER`] without work, so a prompt's
//! rayon-threaded products, which come later, find the CPUs free.
//!
//! One job runs at a time: [`Team::for_each`] hands out its items one by one to the calling
//! thread and to whichever helpers are awake, and returns when every item is done and no helper
//! still holds the job. A nested or concurrent call runs its items on the calling thread alone.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Condvar, Mutex, OnceLock, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle helper spins before it starts yielding its CPU.
const SPIN: Duration = Duration::from_micros(50);
/// How long an idle helper yields before it parks (decoding calls every few hundred µs).
const PARK_AFTER: Duration = Duration::from_millis(2);

/// `state` packs the job's epoch, the number of helpers inside the job and whether it is open
/// for helpers to join: `epoch << EPOCH_SHIFT | inside << 1 | open`.
const OPEN: u64 = 1;
const INSIDE_ONE: u64 = 2;
const EPOCH_SHIFT: u32 = 17;
const INSIDE_MASK: u64 = (1 << EPOCH_SHIFT) - 2;

/// One published job: `parts` calls of `f` with indices `0..parts`.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    parts: usize,
}

struct Shared {
    state: AtomicU64,
    /// The open job, valid while `state` is open or counts a helper inside.
    job: AtomicPtr<Job<'static>>,
    /// The next part to hand out.
    next: AtomicUsize,
    /// Set when a part panicked on a helper; the caller re-raises it.
    panicked: AtomicBool,
    stop: AtomicBool,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

/// Helper threads plus the thread that calls [`Team::for_each`].
pub struct Team {
    shared: Arc<Shared>,
    /// Held by the caller of the running job.
    caller: Mutex<()>,
    threads: Vec<JoinHandle<()>>,
}

impl Team {
    /// A team of `helpers` threads besides the caller (0: every job runs on the caller).
    pub fn new(helpers: usize) -> Team {
        let shared = Arc::new(Shared {
            state: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            next: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let threads = (0..helpers.min((INSIDE_MASK / INSIDE_ONE) as usize))
            .map_while(|i| {
                let s = shared.clone();
                std::thread::Builder::new()
                    .name(format!("qgguf-team-{i}"))
                    .spawn(move || helper(&s))
                    .ok()
            })
            .collect();
        Team {
            shared,
            caller: Mutex::new(()),
            threads,
        }
    }

    /// Helper threads running (besides the caller).
    pub fn helpers(&self) -> usize {
        self.threads.len()
    }

    /// Calls `f` once for each item, spread over the caller and the helpers; returns when all
    /// calls are done. A panic in `f` is re-raised here.
    pub fn for_each<T: Send>(&self, items: Vec<T>, f: impl Fn(T) + Sync) {
        let guard = match self.caller.try_lock() {
            Ok(g) => Some(g),
            Err(TryLockError::WouldBlock) => None,
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
        };
        if guard.is_none() || self.threads.is_empty() || items.len() <= 1 {
            items.into_iter().for_each(f);
            return;
        }
        // Each item is taken by exactly one part; the locks are never contended.
        let slots: Vec<Mutex<Option<T>>> = items.into_iter().map(|t| Mutex::new(Some(t))).collect();
        let part = |i: usize| {
            let item = slots[i].lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(t) = item {
                f(t)
            }
        };
        self.run(slots.len(), &part);
    }

    fn run(&self, parts: usize, f: &(dyn Fn(usize) + Sync)) {
        let s = &*self.shared;
        let job = Job { f, parts };
        s.next.store(0, Relaxed);
        s.panicked.store(false, Relaxed);
        // Lifetimes are erased: `Closer` below keeps `job` alive until no helper can reach it.
        s.job
            .store(&job as *const Job<'_> as *mut Job<'static>, Relaxed);
        let epoch = (s.state.load(Relaxed) >> EPOCH_SHIFT) + 1;
        s.state.store(epoch << EPOCH_SHIFT | OPEN, SeqCst);
        if s.sleepers.load(SeqCst) > 0 {
            let _g = s.lock.lock().unwrap_or_else(|p| p.into_inner());
            s.wake.notify_all();
        }
        {
            let _closer = Closer(s);
            take_parts(s, &job);
        }
        if s.panicked.load(Acquire) {
            panic!("a part of a parallel job panicked on a helper thread");
        }
    }
}

/// Runs parts of `job` until none are left.
fn take_parts(s: &Shared, job: &Job) {
    loop {
        let i = s.next.fetch_add(1, Relaxed);
        if i >= job.parts {
            return;
        }
        (job.f)(i);
    }
}

/// Closes the job and waits until no helper is inside it, also when a part panics on the
/// caller: the job lives in the caller's frame.
struct Closer<'a>(&'a Shared);

impl Drop for Closer<'_> {
    fn drop(&mut self) {
        let s = self.0;
        s.state.fetch_and(!OPEN, AcqRel);
        // A helper inside finishes within a part; yield now and then in case the system
        // descheduled it.
        let mut spins = 0u32;
        while s.state.load(Acquire) & INSIDE_MASK != 0 {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(4096) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        {
            let _g = self.shared.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.shared.wake.notify_all();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn helper(s: &Shared) {
    let mut seen = 0u64;
    let mut idle_since = Instant::now();
    let mut polls = 0u32;
    loop {
        if s.stop.load(Relaxed) {
            return;
        }
        let st = s.state.load(Acquire);
        let epoch = st >> EPOCH_SHIFT;
        if epoch != seen && st & OPEN != 0 {
            if s.state
                .compare_exchange_weak(st, st + INSIDE_ONE, Acquire, Relaxed)
                .is_ok()
            {
                seen = epoch;
                // SAFETY: joining succeeded while the job was open, so the caller's `Closer`
                // waits for this helper to leave before the job goes out of scope.
                let job = unsafe { &*s.job.load(Relaxed) };
                if catch_unwind(AssertUnwindSafe(|| take_parts(s, job))).is_err() {
                    s.panicked.store(true, Release);
                    // The caller's parts may still run; leave none for anyone.
                    s.next.store(usize::MAX / 2, Relaxed);
                }
                s.state.fetch_sub(INSIDE_ONE, Release);
                idle_since = Instant::now();
                polls = 0;
            }
            continue;
        }
        // Closed before this helper came: nothing to join.
        seen = epoch;
        polls = polls.wrapping_add(1);
        if !polls.is_multiple_of(64) {
            std::hint::spin_loop();
            continue;
        }
        let idle = idle_since.elapsed();
        if idle < SPIN {
            std::hint::spin_loop();
        } else if idle < PARK_AFTER {
            std::thread::yield_now();
        } else {
            park(s, seen);
            idle_since = Instant::now();
        }
    }
}

/// Sleeps until a job newer than `seen` opens or the team stops.
fn park(s: &Shared, seen: u64) {
    s.sleepers.fetch_add(1, SeqCst);
    let mut g = s.lock.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let st = s.state.load(SeqCst);
        if s.stop.load(SeqCst) || (st >> EPOCH_SHIFT != seen && st & OPEN != 0) {
            break;
        }
        g = match s.wake.wait_timeout(g, Duration::from_millis(100)) {
            Ok((g, _)) => g,
            Err(p) => p.into_inner().0,
        };
    }
    drop(g);
    s.sleepers.fetch_sub(1, SeqCst);
}

/// Set by [`disable`].
static DISABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Turns the decode team off for this process: every product then goes through rayon (for
/// A/B runs; `qrun --no-team`). Takes effect if called before the team's first use.
pub fn disable() {
    DISABLED.store(true, SeqCst);
}

/// The process's team for decoding: one helper per rayon thread beyond the caller, created on
/// first use from the rayon pool it is first called in; none after [`disable`].
pub fn global() -> Option<&'static Team> {
    static TEAM: OnceLock<Option<Team>> = OnceLock::new();
    TEAM.get_or_init(|| {
        if DISABLED.load(SeqCst) {
            return None;
        }
        let helpers = rayon::current_num_threads().saturating_sub(1);
        (helpers > 0).then(|| Team::new(helpers))
    })
    .as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_runs_once_across_many_jobs() {
        let team = Team::new(3);
        assert_eq!(team.helpers(), 3);
        let mut out = vec![0u64; 1000];
        for round in 1..=200u64 {
            let chunks: Vec<(usize, &mut [u64])> = out.chunks_mut(7).enumerate().collect();
            team.for_each(chunks, |(c, chunk)| {
                for (j, v) in chunk.iter_mut().enumerate() {
                    *v += (c * 7 + j) as u64 * round;
                }
            });
        }
        let rounds: u64 = (1..=200).sum();
        for (i, v) in out.iter().enumerate() {
            assert_eq!(*v, i as u64 * rounds, "item {i}");
        }
    }

    #[test]
    fn helpers_take_part_and_wake_after_parking() {
        let team = Team::new(1);
        let helper_ran = |team: &Team| {
            let ids = Mutex::new(std::collections::HashSet::new());
            // Parts slow enough that the caller cannot take them all before the helper comes,
            // and 60 ms in all, under the parked helper's 100 ms timeout: only the wake-up call
            // brings it in time.
            team.for_each((0..300).collect(), |_: i32| {
                ids.lock().unwrap().insert(std::thread::current().id());
                std::thread::sleep(Duration::from_micros(200));
            });
            ids.into_inner().unwrap().len()
        };
        assert_eq!(helper_ran(&team), 2);
        // Long enough for the helper to park; the next job must wake it.
        std::thread::sleep(PARK_AFTER * 5);
        assert_eq!(helper_ran(&team), 2);
    }

    #[test]
    fn nested_jobs_run_on_the_caller() {
        let team = Team::new(2);
        let total = AtomicUsize::new(0);
        team.for_each((0..8).collect(), |i: usize| {
            team.for_each((0..4).collect(), |j: usize| {
                total.fetch_add(i * 4 + j, Relaxed);
            });
        });
        assert_eq!(total.into_inner(), (0..32).sum::<usize>());
    }

    #[test]
    fn a_panic_on_any_thread_reaches_the_caller_and_the_team_goes_on() {
        let team = Team::new(2);
        let r = catch_unwind(AssertUnwindSafe(|| {
            team.for_each((0..64).collect(), |i: usize| {
                std::thread::sleep(Duration::from_micros(50));
                assert!(i != 40, "part 40");
            })
        }));
        assert!(r.is_err());
        let n = AtomicUsize::new(0);
        team.for_each((0..64).collect(), |_: usize| {
            n.fetch_add(1, Relaxed);
        });
        assert_eq!(n.into_inner(), 64);
    }

    #[test]
    fn a_team_without_helpers_runs_everything_on_the_caller() {
        let team = Team::new(0);
        let me = std::thread::current().id();
        team.for_each((0..16).collect(), |_: usize| {
            assert_eq!(std::thread::current().id(), me)
        });
    }
}
