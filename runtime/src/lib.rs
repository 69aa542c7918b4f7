//! vmctl runtime: observing and changing a host, and the microVM engine. Filled by issues 3, 4 and 6.

#[cfg(target_arch = "x86_64")]
pub mod vmm;
