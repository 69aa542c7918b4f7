//! Architecture-specific set-up. Only x86-64 is supported.

pub mod x86_64;
