//! Link options of the `vmctl` binary, which is also every VM's VMM process (see
//! bench/boot.md for what they save per VM).
//!
//! - `-z pack-relative-relocs` (DT_RELR): the binary's relative relocations as a bitmap
//!   of a few KiB instead of a `.rela.dyn` table of ~280 KiB that the loader reads at
//!   every start, so every process (every VMM) kept those pages resident. Needs
//!   glibc ≥ 2.36 at run time and a linker that knows the option (binutils ≥ 2.38,
//!   lld ≥ 15).

fn main() {
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
}
