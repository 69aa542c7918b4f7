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

use std::thread::JoinHandle;

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
}

/// Starts the VMM's threads, each confined to its kind.
#[derive(Clone, Default)]
pub struct Threads {}

impl Threads {
    /// Threads with no sandbox (in-process tests, and `--no-seccomp`).
    pub fn unconfined() -> Self {
        Self {}
    }

    /// Starts thread `name` of `kind` running `f`.
    pub fn spawn<F, T>(
        &self,
        kind: ThreadKind,
        name: &str,
        f: F,
    ) -> Result<JoinHandle<T>, ThreadError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        if kind == ThreadKind::Main {
            return Err(ThreadError::SpawnMain);
        }
        std::thread::Builder::new()
            .name(name.to_owned())
            .stack_size(kind.stack_size())
            .spawn(f)
            .map_err(|source| ThreadError::Spawn {
                name: name.to_owned(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_are_named_and_the_main_thread_is_not_spawned() {
        let threads = Threads::unconfined();
        let t = threads
            .spawn(ThreadKind::Control, "control", || {
                std::thread::current().name().map(str::to_owned)
            })
            .unwrap();
        assert_eq!(t.join().unwrap().as_deref(), Some("control"));
        assert!(matches!(
            threads.spawn(ThreadKind::Main, "main", || ()),
            Err(ThreadError::SpawnMain)
        ));
    }
}
