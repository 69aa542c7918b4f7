//! The test guest's pure network code (tests/guest/src/net: `ip=`, DHCP messages,
//! Ethernet/ARP/IPv4/ICMP/UDP), compiled for the host so its unit tests run here: the
//! guest crate itself is a no_std kernel without a test harness.

#[path = "../guest/src/net/cmdline_ip.rs"]
mod cmdline_ip;
#[path = "../guest/src/net/dhcp.rs"]
#[allow(dead_code)]
mod dhcp;
#[path = "../guest/src/net/wire.rs"]
#[allow(dead_code)]
mod wire;
