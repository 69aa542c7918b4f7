//! The state a VM's threads share: running, paused or stopped, why it stopped, the
//! exit counters, and the means to kick vCPU threads out of `KVM_RUN`.
//!
//! vCPU threads check the stop and pause flags before every `KVM_RUN`. To make a
//! thread that is inside `KVM_RUN` (possibly halted forever) look at them, the
//! controller sends it a signal with a no-op handler: `KVM_RUN` returns `EINTR`. A
//! signal that lands just before the thread enters `KVM_RUN` would be lost, so kicks
//! are repeated until every thread has acknowledged (parked or exited).
//!
//! A parked vCPU thread takes commands ([`VcpuCommand`]: save its state) through its
//! mailbox here: the controller posts one per vCPU ([`Lifecycle::ask_vcpus`]), each
//! parked thread runs its own and posts the reply, outside `KVM_RUN`, so the vCPU fds
//! never leave their threads.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::protocol::ExitCounts;
use super::snapshot::vcpu::{VcpuCommand, VcpuReply};
use super::threads::{ThreadError, ThreadKind, Threads};

/// Whether the guest runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// vCPUs run.
    Running,
    /// vCPUs are parked by `pause`.
    Paused,
    /// The VM has stopped (or is stopping) for good.
    Stopped,
}

/// Why a VM stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The guest powered off (i8042 reset, or a KVM system event).
    PowerOff,
    /// The VMM was told to kill the VM.
    Killed,
    /// The guest did something fatal: a triple fault, an emulation failure, a failed
    /// VM entry.
    Fault {
        /// The vCPU that faulted.
        vcpu: u32,
        /// What happened.
        reason: String,
    },
}

/// Exit counters, by kind.
#[derive(Debug, Default)]
pub struct ExitCounters {
    /// Every return from `KVM_RUN`.
    pub total: AtomicU64,
    /// Port I/O exits.
    pub io: AtomicU64,
    /// MMIO exits.
    pub mmio: AtomicU64,
    /// Port I/O no device claimed.
    pub unknown_io: AtomicU64,
    /// MMIO no device claimed.
    pub unknown_mmio: AtomicU64,
    /// `KVM_RUN` interrupted by a kick or a signal.
    pub interrupted: AtomicU64,
}

impl ExitCounters {
    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now, for `status`.
    pub fn snapshot(&self) -> ExitCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ExitCounts {
            total: get(&self.total),
            io: get(&self.io),
            mmio: get(&self.mmio),
            unknown_io: get(&self.unknown_io),
            unknown_mmio: get(&self.unknown_mmio),
            interrupted: get(&self.interrupted),
        }
    }
}

struct Inner {
    state: RunState,
    reason: Option<StopReason>,
    /// vCPU threads currently parked.
    parked: usize,
    /// Thread handle of each live vCPU thread (None once it has exited).
    threads: Vec<Option<libc::pthread_t>>,
    /// Control requests being answered.
    requests: usize,
    /// Per vCPU: a command for its parked thread, or that thread's reply.
    mailbox: Vec<Mail>,
}

/// One vCPU's mailbox.
enum Mail {
    Empty,
    Command(VcpuCommand),
    Reply(VcpuReply),
}

/// Errors of lifecycle operations.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The VM has already stopped.
    #[error("the VM has stopped")]
    Stopped,
    /// vCPUs did not park in time.
    #[error("the vCPUs did not pause within {0:?}")]
    PauseTimeout(Duration),
    /// vCPU commands need every vCPU parked.
    #[error("the VM is not paused with every vCPU parked")]
    NotParked,
    /// A parked vCPU did not answer its command in time.
    #[error("vCPU {0} did not answer within {1:?}")]
    CommandTimeout(u32, Duration),
    /// The kick signal's handler or the termination signals could not be set up.
    #[error("cannot set up signal handling: {0}")]
    Signals(std::io::Error),
    /// The signal thread could not be started.
    #[error(transparent)]
    Thread(#[from] ThreadError),
}

/// Shared by the vCPU threads, the control socket and the main thread.
pub struct Lifecycle {
    inner: Mutex<Inner>,
    cond: Condvar,
    stop: AtomicBool,
    pause: AtomicBool,
    started: Instant,
    /// Exit counters.
    pub counters: ExitCounters,
    /// vCPU count.
    pub vcpus: u32,
    /// Guest memory in bytes.
    pub memory: u64,
}

/// The signal that kicks vCPU threads out of `KVM_RUN`.
pub fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN()
}

extern "C" fn noop_handler(_: libc::c_int) {}

/// Installs the no-op kick handler (without `SA_RESTART`, so `KVM_RUN` returns `EINTR`).
pub fn install_kick_handler() -> Result<(), LifecycleError> {
    // SAFETY: a zeroed sigaction is valid; we set a handler that does nothing, which is
    // async-signal-safe, and pass valid pointers.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = noop_handler as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(kick_signal(), &sa, std::ptr::null_mut()) != 0 {
            return Err(LifecycleError::Signals(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Makes SIGTERM, SIGINT and SIGHUP stop the VM (as `kill` does) instead of ending the
/// process abruptly, so the VMM still removes its control socket and pid file. Blocks
/// them in the calling thread, whose mask threads spawned later inherit, and waits for
/// them on a thread of its own: call before starting any other thread.
pub fn stop_on_termination_signals(
    life: Arc<Lifecycle>,
    threads: &Threads,
) -> Result<(), LifecycleError> {
    // SAFETY: sigset operations on a local, zeroed set; pthread_sigmask with valid
    // pointers.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(LifecycleError::Signals(std::io::Error::from_raw_os_error(
                rc,
            )));
        }
        set
    };
    threads.spawn(ThreadKind::Control, "signals", move || loop {
        let mut sig = 0;
        // SAFETY: sigwait with a valid set and out-pointer.
        if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
            life.request_stop(StopReason::Killed);
        }
    })?;
    Ok(())
}

impl Lifecycle {
    /// A running VM of `vcpus` vCPUs and `memory` bytes.
    pub fn new(vcpus: u32, memory: u64) -> Self {
        Self {
            inner: Mutex::new(Inner {
                state: RunState::Running,
                reason: None,
                parked: 0,
                threads: vec![None; vcpus as usize],
                requests: 0,
                mailbox: (0..vcpus).map(|_| Mail::Empty).collect(),
            }),
            cond: Condvar::new(),
            stop: AtomicBool::new(false),
            pause: AtomicBool::new(false),
            started: Instant::now(),
            counters: ExitCounters::default(),
            vcpus,
            memory,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait_timeout<'a>(&self, g: MutexGuard<'a, Inner>, t: Duration) -> MutexGuard<'a, Inner> {
        match self.cond.wait_timeout(g, t) {
            Ok((g, _)) => g,
            Err(p) => p.into_inner().0,
        }
    }

    /// The current state.
    pub fn state(&self) -> RunState {
        self.lock().state
    }

    /// Milliseconds since the VM was built.
    pub fn uptime_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Why the VM stopped, once it has.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.lock().reason.clone()
    }

    /// Whether vCPU threads must leave their loop.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Stops the VM for `reason`; the first reason given wins.
    pub fn request_stop(&self, reason: StopReason) {
        let mut g = self.lock();
        if g.reason.is_none() {
            g.reason = Some(reason);
        }
        g.state = RunState::Stopped;
        self.stop.store(true, Ordering::Release);
        self.cond.notify_all();
    }

    /// Waits until the VM stops or `timeout` passes; true if it stopped.
    pub fn wait_stopped(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut g = self.lock();
        while g.state != RunState::Stopped {
            let wait = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) => left,
                    None => return false,
                },
                None => Duration::from_secs(3600),
            };
            g = self.wait_timeout(g, wait);
        }
        true
    }

    /// Called by vCPU thread `id` when it starts.
    pub fn register_vcpu_thread(&self, id: u32) {
        let mut g = self.lock();
        if let Some(slot) = g.threads.get_mut(id as usize) {
            // SAFETY: pthread_self has no preconditions.
            *slot = Some(unsafe { libc::pthread_self() });
        }
    }

    /// Called by vCPU thread `id` just before it exits: no more kicks for it.
    pub fn unregister_vcpu_thread(&self, id: u32) {
        let mut g = self.lock();
        if let Some(slot) = g.threads.get_mut(id as usize) {
            *slot = None;
        }
        self.cond.notify_all();
    }

    /// Number of live vCPU threads.
    pub fn live_vcpu_threads(&self) -> usize {
        self.lock().threads.iter().flatten().count()
    }

    fn kick(g: &Inner) {
        for t in g.threads.iter().flatten() {
            // SAFETY: the thread is live: it removes itself from `threads` (under the
            // lock we hold) before exiting.
            unsafe {
                libc::pthread_kill(*t, kick_signal());
            }
        }
    }

    /// Kicks vCPU threads until every one has exited, or `timeout` passes.
    pub fn kick_until_exited(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut g = self.lock();
        loop {
            if g.threads.iter().all(Option::is_none) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            Self::kick(&g);
            g = self.wait_timeout(g, Duration::from_millis(5));
        }
    }

    /// Parks every vCPU thread.
    pub fn pause(&self, timeout: Duration) -> Result<(), LifecycleError> {
        let deadline = Instant::now() + timeout;
        let mut g = self.lock();
        if g.state == RunState::Stopped {
            return Err(LifecycleError::Stopped);
        }
        g.state = RunState::Paused;
        self.pause.store(true, Ordering::Release);
        loop {
            let live = g.threads.iter().flatten().count();
            if g.parked >= live || g.state == RunState::Stopped {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LifecycleError::PauseTimeout(timeout));
            }
            Self::kick(&g);
            g = self.wait_timeout(g, Duration::from_millis(5));
        }
    }

    /// Lets parked vCPU threads run again.
    pub fn resume(&self) -> Result<(), LifecycleError> {
        let mut g = self.lock();
        if g.state == RunState::Stopped {
            return Err(LifecycleError::Stopped);
        }
        g.state = RunState::Running;
        self.pause.store(false, Ordering::Release);
        self.cond.notify_all();
        Ok(())
    }

    /// Called by vCPU thread `id` before `KVM_RUN`: parks while the VM is paused,
    /// running the commands posted to it with `serve` (without the lock held).
    pub fn park_if_paused(&self, id: u32, serve: &mut dyn FnMut(VcpuCommand) -> VcpuReply) {
        if !self.pause.load(Ordering::Acquire) {
            return;
        }
        let mut g = self.lock();
        g.parked += 1;
        self.cond.notify_all();
        while self.pause.load(Ordering::Acquire) && !self.stopping() {
            let slot = g.mailbox.get_mut(id as usize);
            if let Some(slot @ Mail::Command(_)) = slot {
                let Mail::Command(cmd) = std::mem::replace(slot, Mail::Empty) else {
                    continue;
                };
                drop(g);
                let reply = serve(cmd);
                g = self.lock();
                if let Some(slot) = g.mailbox.get_mut(id as usize) {
                    *slot = Mail::Reply(reply);
                }
                self.cond.notify_all();
                continue;
            }
            g = self.wait_timeout(g, Duration::from_secs(1));
        }
        g.parked -= 1;
    }

    /// Posts `command(id)` to every vCPU, parked by [`Lifecycle::pause`], and waits up
    /// to `timeout` for every reply; the replies in vCPU order.
    pub fn ask_vcpus(
        &self,
        command: impl Fn(u32) -> VcpuCommand,
        timeout: Duration,
    ) -> Result<Vec<VcpuReply>, LifecycleError> {
        let deadline = Instant::now() + timeout;
        let mut g = self.lock();
        let live = g.threads.iter().flatten().count();
        if g.state != RunState::Paused || live != g.threads.len() || g.parked < live {
            return Err(LifecycleError::NotParked);
        }
        for (id, slot) in g.mailbox.iter_mut().enumerate() {
            *slot = Mail::Command(command(id as u32));
        }
        self.cond.notify_all();
        loop {
            let waiting = g.mailbox.iter().position(|m| !matches!(m, Mail::Reply(_)));
            let Some(id) = waiting else {
                break;
            };
            if Instant::now() >= deadline || g.state != RunState::Paused {
                g.mailbox.fill_with(|| Mail::Empty);
                return Err(LifecycleError::CommandTimeout(id as u32, timeout));
            }
            g = self.wait_timeout(g, Duration::from_millis(5));
        }
        Ok(g.mailbox
            .iter_mut()
            .filter_map(|m| match std::mem::replace(m, Mail::Empty) {
                Mail::Reply(r) => Some(r),
                _ => None,
            })
            .collect())
    }

    /// Marks a control request in flight (the VMM waits for it before exiting).
    pub fn request_started(&self) {
        self.lock().requests += 1;
    }

    /// Marks a control request answered.
    pub fn request_done(&self) {
        let mut g = self.lock();
        g.requests = g.requests.saturating_sub(1);
        self.cond.notify_all();
    }

    /// Waits up to `timeout` for control requests in flight to be answered.
    pub fn drain_requests(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut g = self.lock();
        while g.requests > 0 {
            match deadline.checked_duration_since(Instant::now()) {
                Some(left) => g = self.wait_timeout(g, left),
                None => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_stop_reason_wins() {
        let l = Lifecycle::new(1, 1 << 20);
        assert_eq!(l.state(), RunState::Running);
        l.request_stop(StopReason::PowerOff);
        l.request_stop(StopReason::Killed);
        assert_eq!(l.stop_reason(), Some(StopReason::PowerOff));
        assert_eq!(l.state(), RunState::Stopped);
        assert!(l.stopping());
        assert!(l.wait_stopped(Some(Duration::ZERO)));
        assert!(matches!(l.resume(), Err(LifecycleError::Stopped)));
    }

    #[test]
    fn pause_parks_a_looping_thread_and_resume_releases_it() {
        use std::sync::atomic::AtomicU64;
        install_kick_handler().unwrap();
        let l = Arc::new(Lifecycle::new(1, 1 << 20));
        let spins = Arc::new(AtomicU64::new(0));
        let t = {
            let (l, spins) = (l.clone(), spins.clone());
            std::thread::spawn(move || {
                l.register_vcpu_thread(0);
                while !l.stopping() {
                    l.park_if_paused(0, &mut |_| VcpuReply::Failed("no vCPU".into()));
                    // Stand-in for KVM_RUN: sleep, interrupted by kicks.
                    std::thread::sleep(Duration::from_millis(1));
                    spins.fetch_add(1, Ordering::SeqCst);
                }
                l.unregister_vcpu_thread(0);
            })
        };
        let wait_spin = |from: u64| {
            let deadline = Instant::now() + Duration::from_secs(5);
            while spins.load(Ordering::SeqCst) <= from && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            spins.load(Ordering::SeqCst)
        };
        assert!(wait_spin(0) > 0);
        l.pause(Duration::from_secs(5)).unwrap();
        assert_eq!(l.state(), RunState::Paused);
        let parked_at = spins.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            spins.load(Ordering::SeqCst) <= parked_at + 1,
            "parked thread ran"
        );
        l.resume().unwrap();
        assert_eq!(l.state(), RunState::Running);
        assert!(wait_spin(parked_at + 1) > parked_at + 1);
        l.request_stop(StopReason::Killed);
        assert!(l.kick_until_exited(Duration::from_secs(5)));
        t.join().unwrap();
        assert_eq!(l.live_vcpu_threads(), 0);
    }

    #[test]
    fn a_parked_vcpu_thread_answers_commands_and_only_when_parked() {
        install_kick_handler().unwrap();
        let l = Arc::new(Lifecycle::new(1, 1 << 20));
        assert!(matches!(
            l.ask_vcpus(|_| VcpuCommand::Save, Duration::from_millis(10)),
            Err(LifecycleError::NotParked)
        ));
        let t = {
            let l = l.clone();
            std::thread::spawn(move || {
                l.register_vcpu_thread(0);
                while !l.stopping() {
                    l.park_if_paused(0, &mut |_| VcpuReply::Failed("served by vcpu0".into()));
                    std::thread::sleep(Duration::from_millis(1));
                }
                l.unregister_vcpu_thread(0);
            })
        };
        while l.live_vcpu_threads() == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        l.pause(Duration::from_secs(5)).unwrap();
        let replies = l
            .ask_vcpus(|_| VcpuCommand::Save, Duration::from_secs(5))
            .unwrap();
        assert!(
            matches!(&replies[..], [VcpuReply::Failed(why)] if why == "served by vcpu0"),
            "{replies:?}"
        );
        l.request_stop(StopReason::Killed);
        assert!(l.kick_until_exited(Duration::from_secs(5)));
        t.join().unwrap();
    }
}
