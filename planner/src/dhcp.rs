//! A VLAN's DHCP and DNS server (`dhcp #true`): the resource `dhcp.<vlan>`, and the
//! files of its dnsmasq, rendered here, deterministically, from the config and the
//! addresses IPAM gave its NICs.
//!
//! The server lives on the host that holds the VLAN's gateway (the network's one host,
//! or `gateway-host`), in `<state-dir>/<project>/dhcp/<vlan>/` ([`dir`]):
//!
//! - `dnsmasq.conf`: listens only on the gateway's address (`listen-address` with
//!   `bind-interfaces`, so only on the interface that holds it, in either bridge mode),
//!   never on `lo`; static leases only (`dhcp-range=<net>,static,<mask>`), router and
//!   DNS server the gateway; DNS for `<project>` only, from `names`, nothing forwarded;
//! - `hosts`: `MAC,IP,<vm>` per NIC on the VLAN (every host's VMs: a spanning VLAN is
//!   one segment);
//! - `names`: `IP <vm>.<project> <vm>` per NIC.
//!
//! Two hashes say what changed: [`DhcpServer::config`] (of `dnsmasq.conf`: a change
//! restarts dnsmasq) and [`DhcpServer::leases`] (of `hosts` and `names`: a change is
//! re-read on SIGHUP, the server and the guests' leases keep running). The host reports
//! the same two hashes of the files it has ([`LiveDhcp`]), so the diff compares them.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vmctl_schema::{Config, Vlan, Vm};

use crate::ipam::Addresses;

/// dnsmasq's configuration file in a server's directory.
pub const CONF_FILE: &str = "dnsmasq.conf";
/// The static leases (`dhcp-hostsfile`).
pub const HOSTS_FILE: &str = "hosts";
/// The DNS names (`addn-hosts`).
pub const NAMES_FILE: &str = "names";
/// dnsmasq's pid file.
pub const PID_FILE: &str = "pid";
/// dnsmasq's lease database.
pub const LEASE_FILE: &str = "leases";

/// The directory of the server of `vlan` of `project` under a host's state dir.
pub fn dir(state_dir: &Path, project: &str, vlan: &str) -> PathBuf {
    state_dir.join(project).join("dhcp").join(vlan)
}

/// The three files vmctl writes for one server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DhcpFiles {
    pub conf: String,
    pub hosts: String,
    pub names: String,
}

impl DhcpFiles {
    /// The hash of `dnsmasq.conf`.
    pub fn config_hash(&self) -> String {
        hash(&[&self.conf])
    }

    /// The hash of `hosts` and `names`.
    pub fn leases_hash(&self) -> String {
        hash(&[&self.hosts, &self.names])
    }
}

/// The first 16 hex digits of the SHA-256 of `parts`, each followed by a NUL (so that
/// moving text from one file to the other changes the hash).
pub fn hash(parts: &[&str]) -> String {
    let mut sha = Sha256::new();
    for part in parts {
        sha.update(part.as_bytes());
        sha.update([0]);
    }
    sha.finalize()
        .iter()
        .take(8)
        .fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The DHCP server of a VLAN, as the plan shows it: `name` is the VLAN's. `files` are
/// what the apply writes (only in the config's version; never compared: the hashes
/// stand for them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DhcpServer {
    pub name: String,
    /// The hash of `dnsmasq.conf`.
    pub config: String,
    /// The hash of `hosts` and `names`.
    pub leases: String,
    /// Whether dnsmasq runs (the config's version always wants it running).
    pub running: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<DhcpFiles>,
}

/// A server as a host reports it: its directory under `<project>/dhcp/`, the hashes of
/// the files there, and whether the dnsmasq of its pid file runs (proven vmctl's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct LiveDhcp {
    /// The VLAN's name (the directory's).
    pub name: String,
    pub project: String,
    pub config: String,
    pub leases: String,
    pub running: bool,
    /// dnsmasq's pid while it runs, for `status` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

impl LiveDhcp {
    /// The model's shape, for the diff.
    pub fn to_model(&self) -> DhcpServer {
        DhcpServer {
            name: self.name.clone(),
            config: self.config.clone(),
            leases: self.leases.clone(),
            running: self.running,
            files: None,
        }
    }
}

impl crate::live::Marked for LiveDhcp {
    fn name(&self) -> &str {
        &self.name
    }
    fn project(&self) -> &str {
        &self.project
    }
}

/// The host that runs `vlan`'s server: the one holding its gateway (`gateway-host`, or
/// its network's only host). `None` when the VLAN has no DHCP or no such host.
pub fn server_host<'c>(config: &'c Config, vlan: &'c Vlan) -> Option<&'c str> {
    if !vlan.dhcp || vlan.gateway.is_none() {
        return None;
    }
    if let Some(host) = &vlan.gateway_host {
        return Some(host);
    }
    let network = config.networks.iter().find(|n| n.name == vlan.network)?;
    match network.on_hosts() {
        [host] => Some(host),
        _ => None,
    }
}

/// Every server the config wants, with its host: one per VLAN with `dhcp #true`, its
/// leases from the NICs of every VM on the VLAN with their `addresses`.
pub fn servers(config: &Config, addresses: &Addresses) -> Vec<(String, DhcpServer)> {
    let wanted: Vec<(&Vlan, &str)> = config
        .vlans
        .iter()
        .filter_map(|v| Some((v, server_host(config, v)?)))
        .collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    let mut vms: Vec<(usize, &Vm)> = config.vms.iter().enumerate().collect();
    vms.sort_by(|a, b| a.1.name.cmp(&b.1.name));
    let mut out = Vec::new();
    for (vlan, host) in wanted {
        let Some(state_dir) = config.hosts.iter().find(|h| h.name == host) else {
            continue;
        };
        let mut leases = Vec::new();
        for &(i, vm) in &vms {
            if !vm.nics.iter().any(|n| n.vlan == vlan.name) {
                continue;
            }
            let mut filled = vm.clone();
            addresses.fill(i, &mut filled);
            for nic in filled.nics.iter().filter(|n| n.vlan == vlan.name) {
                if let Some(ip) = nic.ip {
                    leases.push(Lease {
                        vm: &vm.name,
                        mac: nic.mac.clone(),
                        ip,
                    });
                }
            }
        }
        let dir = dir(&state_dir.state_dir, &config.project, &vlan.name);
        let Some(files) = render(&config.project, vlan, &dir, &leases) else {
            continue;
        };
        out.push((
            host.to_owned(),
            DhcpServer {
                name: vlan.name.clone(),
                config: files.config_hash(),
                leases: files.leases_hash(),
                running: true,
                files: Some(files),
            },
        ));
    }
    out
}

/// One static lease: a NIC's MAC and address, named for its VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease<'a> {
    pub vm: &'a str,
    pub mac: String,
    pub ip: IpAddr,
}

/// The files of `vlan`'s server in `dir`, its `leases` in the order given (the first
/// NIC of a VM names it). `None` when the VLAN has no IPv4 gateway (the schema refuses
/// `dhcp` without one).
pub fn render(project: &str, vlan: &Vlan, dir: &Path, leases: &[Lease<'_>]) -> Option<DhcpFiles> {
    let gateway: IpNet = vlan.gateway.as_deref()?.parse().ok()?;
    let IpNet::V4(gateway) = gateway else {
        return None;
    };
    let (address, network, mask) = (gateway.addr(), gateway.network(), gateway.netmask());
    let path = |file: &str| dir.join(file).display().to_string();
    let mut conf = String::new();
    let mut line = |text: String| {
        conf.push_str(&text);
        conf.push('\n');
    };
    line(format!(
        "# vmctl: DHCP and DNS of VLAN {} of project {project}; written by vmctl, do not edit",
        vlan.name
    ));
    line(format!("listen-address={address}"));
    line("bind-interfaces".into());
    line("except-interface=lo".into());
    // Root without the capabilities it does not need (see the runtime): the files
    // stay the runtime's own, 0600.
    line("user=root".into());
    line("group=root".into());
    line(format!("dhcp-range={network},static,{mask}"));
    line(format!("dhcp-option=option:router,{address}"));
    line(format!("dhcp-option=option:dns-server,{address}"));
    line(format!("dhcp-option=option:domain-search,{project}"));
    line("dhcp-authoritative".into());
    line(format!("dhcp-hostsfile={}", path(HOSTS_FILE)));
    line(format!("addn-hosts={}", path(NAMES_FILE)));
    line(format!("dhcp-leasefile={}", path(LEASE_FILE)));
    line(format!("pid-file={}", path(PID_FILE)));
    line(format!("domain={project}"));
    line(format!("local=/{project}/"));
    line("no-resolv".into());
    line("no-hosts".into());
    let mut hosts = String::new();
    let mut names = String::new();
    let mut named: Vec<&str> = Vec::new();
    for lease in leases {
        // dnsmasq gives one name to one MAC: a VM's second NIC on the VLAN gets its
        // lease without the name (both addresses still answer to it in DNS). A dotted
        // VM name is no DHCP host name (dnsmasq would read a domain into it): DNS only.
        if named.contains(&lease.vm) || lease.vm.contains('.') {
            let _ = writeln!(hosts, "{},{}", lease.mac, lease.ip);
        } else {
            named.push(lease.vm);
            let _ = writeln!(hosts, "{},{},{}", lease.mac, lease.ip, lease.vm);
        }
        let _ = writeln!(names, "{} {}.{project} {}", lease.ip, lease.vm, lease.vm);
    }
    Some(DhcpFiles { conf, hosts, names })
}

#[cfg(test)]
mod tests;
