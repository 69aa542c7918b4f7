//! vmctl runtime: observing and changing a host ([`host`]: pools, volumes, bridges,
//! VLANs, taps, the host lock), reaching each host of a config through one interface
//! ([`hosts`]), VMs as processes of the microVM engine ([`vms`],
//! [`vmm`], x86-64 Linux only), and applying a plan ([`apply`]: observe, lock, execute).
//! Nothing here prints to the terminal: functions return values and errors, and the CLI
//! presents them.

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub mod apply;
pub mod host;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub mod hosts;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub mod vmm;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub mod vms;
