//! Every thread of a VMM, started in one place with its kind.
//!
//! A VMM process has four kinds of thread ([`ThreadKind`]): its main thread, which
//! builds the VM and then waits for it to end; a vCPU thread per vCPU, which runs the
//! guest; the device thread, the virtio event loop; and the control threads, which
//! take commands from the host side (the control socket, the console socket, the
//! termination signals). Every thread but the main one is started by
//! [`Threads::spawn`], which names it, gives it its kind's stack, and is the one
//! place where a thread is confined before it runs its first line of VMM code: the
//! sandbox of a kind is applied in the new thread, before `f`.
//!
//! | kind | threads (their `comm`) | stack |
//! | --- | --- | --- |
//! | main | the process's first thread (`vmctl`) | the process's |
//! | vcpu | `vcpu0`, `vcpu1`, … | 256 KiB |
//! | device | `virtio` | 256 KiB |
//! | control | `control`, `console`, `signals` | 128 KiB |
//!
//! Stacks are reserved, not touched: a thread's resident stack is the few pages it uses.
//!
//! Confinement ([`Threads::confined`]): each thread installs its kind's seccomp filter
//! ([`super::seccomp`]) first thing, and [`Threads::spawn`] returns only once it has
//! (or with the reason it could not: the thread then ends without running `f`). The
//! main thread installs its own with [`Threads::confine_main`] once every other thread
//! is started — a filter is inherited by the threads a thread starts, so nothing is
//! spawned after that ([`ThreadError::MainConfined`]) — and the vCPUs wait at a
//! [`Gate`] until it has, so no guest instruction runs before every thread is
//! filtered. The process-wide part of the sandbox ([`super::jail`]: namespaces, uid,
//! capabilities) is entered before the first thread is started, where a change of
//! uid or capabilities still reaches every thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::probe::Probe;
use super::seccomp::{Action, Filters, SeccompError};

/// What a VMM thread does, which decides what it may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ThreadKind {
    /// The process's first thread: builds the VM, then waits for it to stop.
    Main,
    /// Runs one vCPU: `KVM_RUN` and the port I/O and MMIO exits it returns.
    Vcpu,
    /// The virtio event loop: queue notifications, disk I/O, tap traffic.
    Device,
    /// Commands from the host side: the control and console sockets, and the
    /// termination signals.
    Control,
}

impl ThreadKind {
    /// Every kind.
    pub const ALL: [ThreadKind; 4] = [Self::Main, Self::Vcpu, Self::Device, Self::Control];

    /// Its name (as in the filter files and in messages).
    pub fn name(self) -> &'static str {
        match self {
            Self::Main => "main",
            Self::Vcpu => "vcpu",
            Self::Device => "device",
            Self::Control => "control",
        }
    }

    /// The stack reserved for a thread of this kind (none for the main thread).
    fn stack_size(self) -> usize {
        match self {
            Self::Main => 0,
            Self::Vcpu | Self::Device => 256 * 1024,
            Self::Control => 128 * 1024,
        }
    }
}

impl std::fmt::Display for ThreadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors starting a thread.
#[derive(Debug, thiserror::Error)]
pub enum ThreadError {
    /// The main thread is the process's own; it is not started.
    #[error("the main thread cannot be spawned")]
    SpawnMain,
    /// The thread could not be created.
    #[error("cannot start thread {name}: {source}")]
    Spawn {
        /// The thread's name.
        name: String,
        /// Why.
        source: std::io::Error,
    },
    /// The thread could not be confined; it ended without running.
    #[error("thread {name}: {source}")]
    Confine {
        /// The thread's name.
        name: String,
        /// Why.
        source: SeccompError,
    },
    /// The thread ended before saying whether it is confined.
    #[error("thread {name} ended before it was confined")]
    Vanished {
        /// The thread's name.
        name: String,
    },
    /// The main thread is confined: a thread it started now would inherit its filter.
    #[error("thread {name} cannot be started once the main thread is confined")]
    MainConfined {
        /// The thread's name.
        name: String,
    },
    /// The main thread's filter could not be installed.
    #[error(transparent)]
    ConfineMain(SeccompError),
}

/// Starts the VMM's threads, each confined to its kind.
#[derive(Clone, Default)]
pub struct Threads {
    /// The filters; none when unconfined.
    filters: Option<Filters>,
    /// Set once the main thread is confined.
    main_confined: Arc<AtomicBool>,
    /// Debug builds: the thread that tries what a VMM must not once confined
    /// ([`super::probe`]).
    probe: Option<Probe>,
}

impl Threads {
    /// Threads with no sandbox (in-process tests, and `--no-seccomp`).
    pub fn unconfined() -> Self {
        Self::default()
    }

    /// Threads confined to their kind's seccomp filter; `action` for a call outside it;
    /// the filters of a jailed VMM or not. Compiles every filter now.
    pub fn confined(action: Action, jailed: bool) -> Result<Self, SeccompError> {
        let probe = Probe::from_env();
        Ok(Self {
            filters: Some(Filters::new(action, jailed)),
            main_confined: Arc::default(),
            probe,
        })
    }

    /// Starts thread `name` of `kind` running `f`, once the thread is confined.
    pub fn spawn<F>(
        &self,
        kind: ThreadKind,
        name: &str,
        f: F,
    ) -> Result<JoinHandle<()>, ThreadError>
    where
        F: FnOnce() + Send + 'static,
    {
        if kind == ThreadKind::Main {
            return Err(ThreadError::SpawnMain);
        }
        if self.main_confined.load(Ordering::Acquire) {
            return Err(ThreadError::MainConfined {
                name: name.to_owned(),
            });
        }
        let builder = std::thread::Builder::new()
            .name(name.to_owned())
            .stack_size(kind.stack_size());
        let spawn_err = |source| ThreadError::Spawn {
            name: name.to_owned(),
            source,
        };
        // One way to start a thread, confined or not, so that an unconfined VMM (the
        // code-layout profile runs one: valgrind cannot run seccomp) runs the same code.
        let filters = self.filters;
        let probe = self.probe.clone().filter(|p| p.kind == kind);
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let handle = builder
            .spawn(move || {
                let installed = filters.map_or(Ok(()), |filters| filters.install(kind));
                let ok = installed.is_ok();
                let _ = tx.send(installed);
                drop(tx);
                if ok {
                    if let Some(probe) = &probe {
                        probe.run();
                    }
                    f();
                }
            })
            .map_err(spawn_err)?;
        match rx.recv() {
            Ok(Ok(())) => Ok(handle),
            Ok(Err(source)) => {
                let _ = handle.join();
                Err(ThreadError::Confine {
                    name: name.to_owned(),
                    source,
                })
            }
            Err(_) => Err(ThreadError::Vanished {
                name: name.to_owned(),
            }),
        }
    }

    /// Installs the main thread's filter on the calling thread (the main thread, once
    /// it has started every other thread). Nothing can be spawned after this.
    pub fn confine_main(&self) -> Result<(), ThreadError> {
        let Some(filters) = &self.filters else {
            return Ok(());
        };
        self.main_confined.store(true, Ordering::Release);
        filters
            .install(ThreadKind::Main)
            .map_err(ThreadError::ConfineMain)?;
        if let Some(probe) = self.probe.as_ref().filter(|p| p.kind == ThreadKind::Main) {
            probe.run();
        }
        Ok(())
    }
}

/// Where vCPU threads wait, confined, until the main thread is confined too: then
/// [`Gate::open`] lets them run the guest, or tells them not to (start-up failed).
#[derive(Default)]
pub struct Gate {
    state: Mutex<Option<bool>>,
    cond: Condvar,
}

impl Gate {
    /// Waits until the gate is opened; true to go on, false to end.
    pub fn wait(&self) -> bool {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(go) = *g {
                return go;
            }
            g = self.cond.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Opens the gate (the first time only): waiting threads go on when `go`, end
    /// otherwise.
    pub fn open(&self, go: bool) {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        g.get_or_insert(go);
        self.cond.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_are_named_and_the_main_thread_is_not_spawned() {
        let threads = Threads::unconfined();
        let (tx, rx) = std::sync::mpsc::channel();
        let t = threads
            .spawn(ThreadKind::Control, "control", move || {
                let _ = tx.send(std::thread::current().name().map(str::to_owned));
            })
            .unwrap();
        t.join().unwrap();
        assert_eq!(rx.recv().unwrap().as_deref(), Some("control"));
        assert!(matches!(
            threads.spawn(ThreadKind::Main, "main", || ()),
            Err(ThreadError::SpawnMain)
        ));
    }

    /// A confined thread shows `Seccomp: 2` in its status; its spawner does not. (The
    /// filter logs instead of killing: reading the status opens a file, which no
    /// device thread does; the log is in `dmesg`.)
    #[test]
    fn a_confined_thread_is_filtered_before_it_runs() {
        let threads = Threads::confined(Action::Log, true).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        threads
            .spawn(ThreadKind::Device, "device", move || {
                let status = std::fs::read_to_string("/proc/thread-self/status");
                let _ = tx.send(status.unwrap_or_default());
            })
            .unwrap()
            .join()
            .unwrap();
        let status = rx.recv().unwrap();
        assert!(status.lines().any(|l| l == "Seccomp:\t2"), "{status}");
        let me = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        assert!(me.lines().any(|l| l == "Seccomp:\t0"), "{me}");
    }

    #[test]
    fn a_gate_lets_through_or_ends() {
        for go in [true, false] {
            let gate = Arc::new(Gate::default());
            let g = gate.clone();
            let t = std::thread::spawn(move || g.wait());
            gate.open(go);
            gate.open(!go);
            assert_eq!(t.join().unwrap(), go);
        }
    }
}
