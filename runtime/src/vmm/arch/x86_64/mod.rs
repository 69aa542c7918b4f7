//! x86-64 specifics of the engine: the guest address layout and everything that sets a
//! vCPU up to enter a kernel as the Linux 64-bit boot protocol expects.

pub mod boot_params;
pub mod cpuid;
pub mod gdt;
pub mod irqchip;
pub mod layout;
pub mod loader;
pub mod mptable;
pub mod regs;
