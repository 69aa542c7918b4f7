//! vmctl runtime: observing and changing a host ([`host`]: pools, volumes, bridges,
//! VLANs, taps, the host lock) and the microVM engine ([`vmm`], x86-64 Linux only).
//! Nothing here prints to the terminal: functions return values and errors, and the CLI
//! presents them.

pub mod host;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub mod vmm;
