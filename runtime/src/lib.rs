//! vmctl runtime: observing and changing a host ([`host`]: pools, volumes, bridges,
//! VLANs, taps, the host lock), reaching each host of a config through one interface
//! ([`hosts`]: this machine, or a remote host's agent), VMs as processes of the microVM
//! engine ([`vms`], [`vmm`], x86-64 Linux only), applying a plan ([`apply`]: observe,
//! lock, execute), and reaching remote hosts over OpenSSH ([`remote`]: the agent, its
//! protocol, shipping vmctl itself).
//! Nothing here prints to the terminal: functions return values and errors, and the CLI
//! presents them.

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub mod apply;
pub mod host;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub mod hosts;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub mod remote;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub mod vmm;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub mod vms;
