//! The `vmctl` binary: clap commands wiring schema, planner and runtime together.

fn main() {
    println!("vmctl {}", env!("CARGO_PKG_VERSION"));
}
