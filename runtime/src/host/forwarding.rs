//! IPv4 forwarding of a host's interfaces, shared by the projects on the host.
//!
//! A VLAN with NAT or routes needs forwarding on its gateway interface and its uplink
//! (`/proc/sys/net/ipv4/conf/<if>/forwarding`, per interface, never `all`). Two
//! projects may need one interface (both NAT out of the host's uplink), so who needs
//! which is recorded per host, not per project: `<state-dir>/forwarding.json`, changed
//! only under the `flock` of `<state-dir>/forwarding.lock`. The rules:
//!
//! - vmctl turns forwarding on only where it is off, and holds it from then on: the
//!   record names the interface with the projects that need it, written before the
//!   interface is switched, so a crash in between leaves a record and never an
//!   interface vmctl turned on without saying so;
//! - an interface vmctl holds is on while a project needs it (one found off is turned
//!   on again), and off once none does — then it is let go;
//! - forwarding the host had on already is the host's own, never touched.
//!
//! Interfaces are keyed by network namespace too: projects of one state dir may keep
//! their networks in different ones.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::net::{Netlink, NetlinkError};
use super::records::{read_record, version, write_record};

/// Errors of reading or changing forwarding.
#[derive(Debug, thiserror::Error)]
pub enum ForwardingError {
    #[error("cannot read or write vmctl's record of the forwarding it holds ({path})")]
    Record { path: PathBuf, source: io::Error },
    #[error("cannot lock {path}")]
    Lock { path: PathBuf, source: io::Error },
    #[error("cannot set IPv4 forwarding of interface {ifname}")]
    Set { ifname: String, source: io::Error },
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
}

/// `<state-dir>/forwarding.json`: the interfaces whose forwarding vmctl holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct HostForwarding {
    pub interfaces: Vec<Held>,
}

/// One interface vmctl turned forwarding on for, and the projects that need it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct Held {
    /// Its network namespace (`None`: the host's own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    pub ifname: String,
    /// Sorted, each once; empty only while being let go.
    pub projects: Vec<String>,
}

/// What to switch after a change of needs: on (held, found off), off (let go).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Switches {
    pub on: Vec<String>,
    pub off: Vec<String>,
}

/// `<state-dir>/forwarding.json`.
pub fn record_path(state_dir: &Path) -> PathBuf {
    state_dir.join("forwarding.json")
}

impl HostForwarding {
    /// Makes `project`'s needs in `netns` exactly `wanted`; `legacy` are interfaces a
    /// per-project record of an earlier vmctl says vmctl turned on for it (taken over
    /// as held). `state` says whether forwarding of an interface is on (`None`: no
    /// such interface). Returns what to switch; interfaces to let go stay in the record
    /// until [`HostForwarding::forget_unneeded`].
    pub fn set_needs(
        &mut self,
        netns: Option<&str>,
        project: &str,
        wanted: &[String],
        legacy: &[String],
        state: impl Fn(&str) -> Option<bool>,
    ) -> Switches {
        for ifname in legacy {
            self.held_mut(netns, ifname).add(project);
        }
        for held in self.interfaces.iter_mut() {
            if held.netns.as_deref() == netns && !wanted.contains(&held.ifname) {
                held.projects.retain(|p| p != project);
            }
        }
        for ifname in wanted {
            if let Some(held) = self.get_mut(netns, ifname) {
                held.add(project);
            } else if state(ifname) == Some(false) {
                self.held_mut(netns, ifname).add(project);
            }
        }
        let mut switches = Switches::default();
        for held in self
            .interfaces
            .iter()
            .filter(|h| h.netns.as_deref() == netns)
        {
            if held.projects.is_empty() {
                switches.off.push(held.ifname.clone());
            } else if state(&held.ifname) == Some(false) {
                switches.on.push(held.ifname.clone());
            }
        }
        switches
    }

    /// Lets go of the interfaces in `netns` no project needs.
    pub fn forget_unneeded(&mut self, netns: Option<&str>) {
        self.interfaces
            .retain(|h| h.netns.as_deref() != netns || !h.projects.is_empty());
    }

    /// The interfaces in `netns` vmctl holds, for any project (`project: None`) or for
    /// `project`.
    pub fn held(&self, netns: Option<&str>, project: Option<&str>) -> Vec<String> {
        self.interfaces
            .iter()
            .filter(|h| h.netns.as_deref() == netns)
            .filter(|h| project.is_none_or(|p| h.projects.iter().any(|q| q == p)))
            .map(|h| h.ifname.clone())
            .collect()
    }

    fn get_mut(&mut self, netns: Option<&str>, ifname: &str) -> Option<&mut Held> {
        self.interfaces
            .iter_mut()
            .find(|h| h.netns.as_deref() == netns && h.ifname == ifname)
    }

    fn held_mut(&mut self, netns: Option<&str>, ifname: &str) -> &mut Held {
        let at = match self
            .interfaces
            .iter()
            .position(|h| h.netns.as_deref() == netns && h.ifname == ifname)
        {
            Some(at) => at,
            None => {
                self.interfaces.push(Held {
                    netns: netns.map(str::to_owned),
                    ifname: ifname.to_owned(),
                    projects: Vec::new(),
                });
                self.interfaces.len() - 1
            }
        };
        &mut self.interfaces[at]
    }
}

impl Held {
    fn add(&mut self, project: &str) {
        if let Err(at) = self.projects.binary_search_by(|p| p.as_str().cmp(project)) {
            self.projects.insert(at, project.to_owned());
        }
    }
}

/// Makes `project`'s forwarding in `netns` exactly `wanted` (see the module comment),
/// `legacy` taken over as held for it. Returns the interfaces of `wanted` vmctl holds.
pub fn set_needs(
    state_dir: &Path,
    netns: Option<&str>,
    project: &str,
    wanted: &[String],
    legacy: &[String],
) -> Result<Vec<String>, ForwardingError> {
    let _lock = lock(state_dir)?;
    let mut record = read(state_dir)?;
    let mut names: Vec<String> = wanted.to_vec();
    names.extend(record.held(netns, None));
    names.extend(legacy.iter().cloned());
    let state = Netlink::run(netns, |_| {
        names
            .iter()
            .map(|ifname| Ok((ifname.clone(), is_on(ifname)?)))
            .collect::<Result<Vec<_>, ForwardingError>>()
    })?;
    let lookup = |ifname: &str| state.iter().find(|(n, _)| n == ifname).and_then(|s| s.1);
    let switches = record.set_needs(netns, project, wanted, legacy, lookup);
    // Said before it is done.
    write(state_dir, &record)?;
    Netlink::run(netns, |_| {
        for ifname in &switches.off {
            set(ifname, false)?;
        }
        for ifname in &switches.on {
            set(ifname, true)?;
        }
        Ok::<_, ForwardingError>(())
    })?;
    record.forget_unneeded(netns);
    write(state_dir, &record)?;
    Ok(record.held(netns, Some(project)))
}

/// The interfaces in `netns` vmctl holds for any project.
pub fn held(state_dir: &Path, netns: Option<&str>) -> Result<Vec<String>, ForwardingError> {
    Ok(read(state_dir)?.held(netns, None))
}

fn read(state_dir: &Path) -> Result<HostForwarding, ForwardingError> {
    let path = record_path(state_dir);
    read_record(&path, version::FORWARDING_RECORD)
        .map(Option::unwrap_or_default)
        .map_err(|source| ForwardingError::Record { path, source })
}

fn write(state_dir: &Path, record: &HostForwarding) -> Result<(), ForwardingError> {
    let path = record_path(state_dir);
    write_record(&path, version::FORWARDING_RECORD, record)
        .map_err(|source| ForwardingError::Record { path, source })
}

/// The exclusive `flock` of `<state-dir>/forwarding.lock`, held until dropped.
fn lock(state_dir: &Path) -> Result<std::fs::File, ForwardingError> {
    use std::os::fd::AsRawFd;
    let path = state_dir.join("forwarding.lock");
    let lock_err = |source| ForwardingError::Lock {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(state_dir).map_err(lock_err)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .custom_flags_nofollow()
        .open(&path)
        .map_err(lock_err)?;
    // SAFETY: flock on a descriptor this function owns; no memory is passed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(lock_err(io::Error::last_os_error()));
    }
    Ok(file)
}

/// `O_NOFOLLOW | O_CLOEXEC` on an `OpenOptions`.
trait NoFollow {
    fn custom_flags_nofollow(&mut self) -> &mut Self;
}

impl NoFollow for std::fs::OpenOptions {
    fn custom_flags_nofollow(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
    }
}

/// `/proc/sys/net/ipv4/conf/<ifname>/forwarding` of the calling thread's netns; `None`
/// for `all` and `default` (the host-wide settings, never an interface of a VLAN) and
/// for a name that is not one file name (`..`, `a/b`).
fn path_of(ifname: &str) -> Option<PathBuf> {
    let interface = !matches!(ifname, "all" | "default");
    (interface && super::mark::is_safe_file_name(ifname)).then(|| {
        Path::new("/proc/sys/net/ipv4/conf")
            .join(ifname)
            .join("forwarding")
    })
}

/// Whether forwarding is on for `ifname` in the calling thread's netns; `None` when
/// there is no such interface.
pub fn is_on(ifname: &str) -> Result<Option<bool>, ForwardingError> {
    let Some(path) = path_of(ifname) else {
        return Ok(None);
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text.trim() != "0")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ForwardingError::Set {
            ifname: ifname.into(),
            source,
        }),
    }
}

/// Turns forwarding of `ifname` on or off in the calling thread's netns; an interface
/// that is gone needs nothing.
fn set(ifname: &str, on: bool) -> Result<(), ForwardingError> {
    let Some(path) = path_of(ifname) else {
        return Ok(());
    };
    match std::fs::write(&path, if on { "1" } else { "0" }) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ForwardingError::Set {
            ifname: ifname.into(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests;
