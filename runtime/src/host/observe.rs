//! One host's inventory of one project, rebuilt from the host itself: pools by their
//! markers (and the project's pool index), volumes by theirs, networks, VLANs and taps
//! over netlink inside the host's netns. The disk and the netlink halves run in
//! parallel. A declared netns that does not exist yet is an empty network side.
//!
//! What it finds goes straight into the planner's `HostFacts` (`vmctl_planner::facts`),
//! built by the modules that read the host; [`super::facts::gather`] adds the VMs (the
//! engine's state dirs), the netns, the host's size, and the records that cannot be
//! read, named and with their hints.

use std::path::Path;

use vmctl_planner::facts::HostFacts;
use vmctl_planner::live::{LivePool, LiveVolume};
use vmctl_planner::ResourceKind;

use super::net::{self, Netlink, NetlinkError};
use super::pool::{self, PoolError};
use super::records::BadRecord;
use super::volume::{self, VolumeError};

/// Errors of observing a host.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error("cannot observe the pools")]
    ObservePools(#[source] PoolError),
    #[error("cannot observe the volumes of pool {pool:?}")]
    ObserveVolumes {
        pool: String,
        #[source]
        source: VolumeError,
    },
    #[error("cannot observe the networks")]
    ObserveNetworks(#[source] NetlinkError),
}

/// What to observe: the project on one host.
#[derive(Debug, Clone, Copy)]
pub struct HostSpec<'a> {
    pub project: &'a str,
    /// The host's state dir (`<state-dir>/<project>/pools/` is the pool index).
    pub state_dir: &'a Path,
    /// The host's network namespace, if it has one.
    pub netns: Option<&'a str>,
    /// The pool paths the config names (pools are also found through the index).
    pub pool_paths: &'a [&'a Path],
}

/// The records of the project's pools and volumes that cannot be read, each that
/// resource's problem. A pool's name is empty when only the config can tell (by the
/// marker's directory).
pub type BadRecords = Vec<(ResourceKind, BadRecord)>;

/// Observes `spec.project`'s storage and networking on this host (disk and netlink in
/// parallel): the facts of them, sorted, and the records that cannot be read.
pub fn observe_host(spec: &HostSpec<'_>) -> Result<(HostFacts, BadRecords), ObserveError> {
    let (storage, net) = std::thread::scope(|scope| {
        let storage = scope.spawn(|| observe_storage(spec));
        // A declared netns that does not exist yet holds nothing: apply makes it.
        let net = match spec.netns {
            Some(name) if !net::netns::exists(name) => Ok(net::NetInventory::default()),
            netns => Netlink::run(netns, |nl| net::observe_net(nl, spec.project)),
        };
        let storage = match storage.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        (storage, net)
    });
    let (pools, volumes, unreadable) = storage?;
    let net = net.map_err(ObserveError::ObserveNetworks)?;
    let facts = HostFacts {
        pools,
        volumes,
        networks: net.networks,
        vlans: net.vlans,
        taps: net.taps,
        tunnels: net.tunnels,
        other_links: net.others,
        ..HostFacts::default()
    };
    Ok((facts, unreadable))
}

/// The project's pools and volumes observed from disk, and the markers of them that
/// cannot be read.
pub type Storage = (Vec<LivePool>, Vec<LiveVolume>, BadRecords);

/// The project's pools and the volumes in them; a marker that cannot be read is its
/// pool's or volume's problem, reported beside the rest.
pub fn observe_storage(spec: &HostSpec<'_>) -> Result<Storage, ObserveError> {
    let (pools, bad_pools) = pool::scan_pools(spec.state_dir, spec.project, spec.pool_paths)
        .map_err(ObserveError::ObservePools)?;
    let mut unreadable: Vec<_> = bad_pools
        .into_iter()
        .map(|b| (ResourceKind::Pool, b))
        .collect();
    let mut volumes = Vec::new();
    for pool in &pools {
        let (found, bad) =
            volume::scan_volumes(pool).map_err(|source| ObserveError::ObserveVolumes {
                pool: pool.name.clone(),
                source,
            })?;
        unreadable.extend(bad.into_iter().map(|b| (ResourceKind::Volume, b)));
        volumes.extend(found);
    }
    volumes.sort_by(|a, b| (&a.pool, &a.name).cmp(&(&b.pool, &b.name)));
    Ok((pools, volumes, unreadable))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::volume::VolumeSpec;

    fn volume_spec(name: &str, prevent_destroy: bool) -> VolumeSpec<'_> {
        VolumeSpec {
            name,
            size: 1 << 20,
            from: None,
            source: None,
            prevent_destroy,
            cancel: None,
        }
    }

    #[test]
    fn storage_is_observed_with_pool_names_and_protection() {
        let state = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let fast = root.path().join("fast");
        let slow = root.path().join("slow");
        pool::create_pool(state.path(), "lab", "fast", &fast).unwrap();
        pool::create_pool(state.path(), "lab", "slow", &slow).unwrap();
        volume::create_volume("lab", &fast, &volume_spec("root", true)).unwrap();
        volume::create_volume("lab", &slow, &volume_spec("data", false)).unwrap();
        pool::create_pool(state.path(), "other", "theirs", &root.path().join("theirs")).unwrap();

        // Only `fast` is in the config; `slow` is found through the index.
        let host = HostSpec {
            project: "lab",
            state_dir: state.path(),
            netns: None,
            pool_paths: &[&fast],
        };
        let (pools, volumes, unreadable) = observe_storage(&host).unwrap();
        assert!(unreadable.is_empty(), "{unreadable:?}");
        let pools: Vec<_> = pools
            .iter()
            .map(|p| (p.name.as_str(), p.project.as_str()))
            .collect();
        assert_eq!(pools, [("fast", "lab"), ("slow", "lab")]);
        let volumes: Vec<_> = volumes
            .iter()
            .map(|v| (v.pool.as_str(), v.name.as_str(), v.size, v.prevent_destroy))
            .collect();
        assert_eq!(
            volumes,
            [
                ("fast", "root", 1 << 20, true),
                ("slow", "data", 1 << 20, false)
            ]
        );
    }

    #[test]
    fn a_bad_marker_is_its_pool_or_volumes_problem_alone() {
        use crate::host::records::Cause;
        let state = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let fast = root.path().join("fast");
        let slow = root.path().join("slow");
        pool::create_pool(state.path(), "lab", "fast", &fast).unwrap();
        pool::create_pool(state.path(), "lab", "slow", &slow).unwrap();
        for (pool, name) in [(&fast, "good"), (&fast, "bad"), (&slow, "lost")] {
            volume::create_volume("lab", pool, &volume_spec(name, false)).unwrap();
        }
        std::fs::write(fast.join("bad.vmctl.json"), "{\"project\": ").unwrap();
        std::fs::write(slow.join(pool::MARKER), "garbage").unwrap();
        let host = HostSpec {
            project: "lab",
            state_dir: state.path(),
            netns: None,
            pool_paths: &[&fast, &slow],
        };
        let (pools, volumes, unreadable) = observe_storage(&host).unwrap();
        let pools: Vec<_> = pools.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(pools, ["fast"]);
        let volumes: Vec<_> = volumes.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(volumes, ["good"]);
        let bad: Vec<_> = unreadable
            .iter()
            .map(|(kind, b)| (*kind, b.name.as_str(), b.cause))
            .collect();
        assert_eq!(
            bad,
            [
                (ResourceKind::Pool, "slow", Cause::Corrupt),
                (ResourceKind::Volume, "bad", Cause::Corrupt)
            ]
        );
    }
}
