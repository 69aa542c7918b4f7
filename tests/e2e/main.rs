//! End-to-end tests: each drives the real `vmctl` binary. One test binary (cli's `e2e`
//! target); one module per area.

mod addresses;
mod apply;
mod cli_ux;
mod console;
mod cpuset;
mod dhcp;
mod engine;
mod expansion;
mod fleet;
mod fleet_apply;
mod fleet_bench;
mod fleet_migrate;
mod footprint;
mod guest_count;
mod guest_ip;
mod guest_net;
mod inventory;
mod jail;
mod lab;
mod linux_boot;
mod nat;
mod netns;
mod plan;
mod records;
mod remote;
mod sandbox;
mod snapshot;
mod support;
mod trust_net;
mod trust_storage;
mod trust_vm;
mod validate;
mod virtio;
mod vm;
