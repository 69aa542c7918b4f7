//! What allocating addresses costs in process, for `bench/plan-ipam.sh`: loads the
//! config at CONFIG, then times `ipam::allocate` (what `plan` runs; the diff writes the
//! addresses into the copies of the VMs it makes anyway) against empty hosts (every NIC
//! allocated) and against the config as applied (every NIC keeps its recorded
//! address), best of RUNS each, beside the time the config took to load.
//!
//! `cargo run --release -p vmctl-planner --example bench_ipam -- CONFIG [RUNS]`

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use vmctl_planner::{ipam, LiveFile};

fn best(runs: usize, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(config) = args.first() else {
        eprintln!("usage: bench_ipam CONFIG [RUNS]");
        return ExitCode::FAILURE;
    };
    let runs: usize = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(9);
    let start = Instant::now();
    let loaded = match vmctl_schema::load(Path::new(config)) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let load = start.elapsed();
    let config = loaded.config;
    let nics: usize = config.vms.iter().map(|vm| vm.nics.len()).sum();
    let empty = LiveFile::default();
    let applied = LiveFile::applied(&config);
    let fresh = best(runs, || {
        std::hint::black_box(ipam::allocate(&config, &empty).expect("addresses"));
    });
    let kept = best(runs, || {
        std::hint::black_box(ipam::allocate(&config, &applied).expect("addresses"));
    });
    let filled = ipam::assign(&config, &empty).expect("addresses");
    let allocated = filled
        .vms
        .iter()
        .flat_map(|v| &v.nics)
        .filter(|n| n.ip.is_some())
        .count();
    println!(
        "{} VMs, {nics} NICs, {allocated} with an address; loading the config: {:.1} ms",
        config.vms.len(),
        load.as_secs_f64() * 1e3
    );
    println!(
        "ipam::allocate: {:.1} ms against empty hosts (all allocated), {:.1} ms against the applied config (all kept); best of {runs}",
        fresh.as_secs_f64() * 1e3,
        kept.as_secs_f64() * 1e3
    );
    ExitCode::SUCCESS
}
