//! Links the guest as a freestanding kernel: no C runtime, no libc, static, not PIE,
//! laid out by link.ld at 1 MiB with `_start` as its entry.
use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let script = dir.join("link.ld");
    for arg in [
        "-nostartfiles",
        "-nostdlib",
        "-static",
        "-no-pie",
        "-Wl,--build-id=none",
    ] {
        println!("cargo:rustc-link-arg-bin=testguest={arg}");
    }
    println!("cargo:rustc-link-arg-bin=testguest=-Wl,-T,{}", script.display());
    println!("cargo:rerun-if-changed=link.ld");
    println!("cargo:rerun-if-changed=.cargo/config.toml");

    // The SSE-free flags live in .cargo/config.toml, which cargo only reads when run
    // from this directory. Refuse to build a guest that would use xmm registers.
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if !flags.contains("-sse") {
        panic!(
            "the test guest must be built without SSE: run tests/guest/build \
             (or cargo from inside tests/guest so .cargo/config.toml applies)"
        );
    }
}
