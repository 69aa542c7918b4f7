//! Writes the live state for `bench/plan.sh`: what the hosts would report once the config
//! at CONFIG is applied, then drifted in PERCENT% of its resources (default 10), spread
//! evenly over kinds and hosts: VMs with other memory (restart), crashed (start) or
//! missing (create); volumes smaller (grow) or missing; VLANs without their gateway
//! (update) or missing; and as many VMs of the project that the config no longer has
//! (delete).
//!
//! `cargo run --release -p vmctl-planner --example bench_live -- CONFIG OUT.json [PERCENT]`

use std::path::Path;
use std::process::ExitCode;

use vmctl_planner::{LiveFile, VmStatus};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(config), Some(out)) = (args.first(), args.get(1)) else {
        eprintln!("usage: bench_live CONFIG OUT.json [PERCENT]");
        return ExitCode::FAILURE;
    };
    let percent: usize = args.get(2).and_then(|p| p.parse().ok()).unwrap_or(10);
    let every = (100 / percent.max(1)).max(1);
    let loaded = match vmctl_schema::load(Path::new(config)) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let mut live = LiveFile::applied(&loaded.config);
    let (mut total, mut drifted) = (0usize, 0usize);
    let pick = |i: &mut usize| {
        *i += 1;
        (*i).is_multiple_of(every)
    };
    for state in live.hosts.values_mut() {
        total += state.pools.len() + state.networks.len();
        let mut i = 0;
        let mut extra = Vec::new();
        let mut keep = Vec::new();
        for mut vm in std::mem::take(&mut state.vms) {
            total += 1;
            if pick(&mut i) {
                drifted += 1;
                match drifted % 4 {
                    0 => vm.spec.memory *= 2,
                    1 => vm.status = VmStatus::Crashed,
                    2 => continue,
                    _ => {
                        let mut gone = vm.clone();
                        gone.name = format!("{}-old", vm.name);
                        gone.spec.name.clone_from(&gone.name);
                        gone.spec.depends_on.clear();
                        extra.push(gone);
                    }
                }
            }
            keep.push(vm);
        }
        keep.extend(extra);
        state.vms = keep;
        let mut keep = Vec::new();
        for mut volume in std::mem::take(&mut state.volumes) {
            total += 1;
            if pick(&mut i) {
                drifted += 1;
                if drifted % 2 == 0 {
                    continue;
                }
                volume.size /= 2;
            }
            keep.push(volume);
        }
        state.volumes = keep;
        let mut keep = Vec::new();
        for mut vlan in std::mem::take(&mut state.vlans) {
            total += 1;
            if pick(&mut i) {
                drifted += 1;
                if drifted % 2 == 0 {
                    continue;
                }
                vlan.gateway = None;
            }
            keep.push(vlan);
        }
        state.vlans = keep;
    }
    let text = serde_json::to_string(&live).expect("serializable");
    if let Err(e) = std::fs::write(out, text) {
        eprintln!("cannot write {out}: {e}");
        return ExitCode::FAILURE;
    }
    eprintln!("{out}: {drifted} of {total} resources drifted");
    ExitCode::SUCCESS
}
