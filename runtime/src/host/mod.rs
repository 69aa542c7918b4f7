//! Observing and changing one host's resources: pools, volumes, bridges, VLANs, taps,
//! and the per-host lock.
//!
//! Every module here has one job and its own error enum; nothing prints. The functions
//! take plain values (project, names, paths) rather than the config model, so the action
//! executor and `observe(host)` can call them from whatever they hold.
//!
//! How vmctl recognises what it made (DESIGN.md, "Live state, not a state file"):
//!
//! | resource | mark |
//! | --- | --- |
//! | pool | `<pool>/.vmctl.json` (`project`, `name`, `kind`, `made_dir`: whether vmctl made the directory), and an index entry `<state-dir>/<project>/pools/<name>.json` so a pool deleted from the config is still found |
//! | volume | `<pool>/<name>.raw` with its marker `<pool>/<name>.vmctl.json` (`project`, `name`, base image digest) |
//! | bridge | interface alias `vmctl:<project>:<network>` |
//! | VLAN | an entry in the bridge's own VLAN table; a gateway is an address on the VLAN link `<bridge>.<id>` (alias `vmctl:<project>:<network>/<id>`). Where the kernel has no VLAN filtering: a bridge `<bridge>v<id>` per VLAN with that alias, the gateway an address on it (see `net::bridge`) |
//! | tap | interface alias `vmctl:<project>:<vm>#<nic-index>` |
//! | nftables table | `inet vmctl-<project>`, each rule commented `vmctl:<project>`; vmctl's record `<state-dir>/<project>/firewall.json` (see `firewall`) |
//! | lock | `flock` on `<state-dir>/<project>/lock`, holding the holder's pid |

pub mod dhcp;
pub mod facts;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub mod files;
pub mod firewall;
pub mod forwarding;
pub mod image;
pub mod image_cache;
pub mod import;
mod leftovers;
pub mod lock;
pub mod mark;
pub mod net;
pub mod observe;
pub mod origin;
pub mod pool;
pub mod proc;
pub mod records;
pub mod volume;
pub mod volume_transfer;

pub(crate) mod fsutil;
