//! VMs on this host: each one a state dir `<state-dir>/<project>/vms/<name>/` and, while
//! it runs, a detached `vmctl vmm` process.
//!
//! | file | what |
//! | --- | --- |
//! | `spec.json` | the applied VM ([`VmRecord`]: its format version, project, the VM as applied ([`VmSpec`]) with each NIC's address, whether it was left running) |
//! | `vmm.json` | the VMM spec the process was started with |
//! | `vmm.lock` | held (POSIX write lock) by the VM's VMM for its whole life: what identifies it |
//! | `vmm.pid` | the VMM's pid (the VMM writes it and removes it when it exits cleanly); informative only |
//! | `control.sock` | the VMM's control socket (JSON lines) |
//! | `console.sock` | the VMM's console socket (`vmctl console`) |
//! | `console.log` | the guest's serial output, rotated to `console.log.1` at 1 MiB |
//!
//! Modes, whatever the umask: the VM's dir (and `vms/`) 0700; `spec.json`, `vmm.json`,
//! `vmm.pid`, `vmm.lock` and the sockets 0600; the console logs 0640.
//!
//! Observing asks the VMM, it does not guess: a VM runs when a process holds its lock
//! (the kernel names it; [`crate::vmm::lock`]) and its control socket answers. A pid
//! file naming another process means nothing, and no signal is ever sent to a process
//! that does not hold the VM's lock. A VM that vmctl left running and whose process is
//! gone (killed, crashed, powered off by itself) is [`VmStatus::Crashed`]; one vmctl
//! stopped is [`VmStatus::Stopped`].
//!
//! Taps are not made here (they need the network's bridge and VLAN, see `apply`); a
//! start is given their names. A `cpuset` puts the VMM in a cgroup of the host's cpuset
//! controller, v2 or else v1 ([`cgroup`]); the group goes when the VM stops.

pub mod cgroup;
pub mod migrate;
pub(crate) mod process;
pub mod snapshot_call;
pub mod snapshots;

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vmctl_planner::live::{LiveVm, VmStatus};
use vmctl_planner::record::VmSpec;
use vmctl_schema::Vm;

use crate::host::fsutil::{list_dir, remove_if_exists, write_json_atomic};
use crate::host::mark::is_safe_file_name;
use crate::host::records::{self, read_record as read_versioned, BadRecord, Cause};
use crate::vmm::spec::{Devices, Disk, Mac, Nic, Size, VmmSpec};

pub use process::{probe, vmm_pid, Probe};

/// Mode of a VM's state dir (and of `vms/`).
pub const STATE_DIR_MODE: u32 = 0o700;

/// Errors of starting, stopping, observing and deleting VMs.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("VM {vm} cannot move: {reason}")]
    Migrate { vm: String, reason: String },
    #[error("{name:?} cannot be a VM state dir name")]
    InvalidName { name: String },
    #[error("cannot write the state of VM {vm} in {path}")]
    WriteState {
        vm: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot read the state of VM {vm} in {path}")]
    ReadState {
        vm: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot list the VMs in {path}")]
    ListVms { path: PathBuf, source: io::Error },
    #[error("cannot delete the state dir {path} of VM {vm}")]
    DeleteState {
        vm: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("invalid MAC address {mac:?} of VM {vm}")]
    InvalidMac { vm: String, mac: String },
    #[error("cannot enter network namespace {netns}")]
    EnterNetns { netns: String, source: io::Error },
    #[error("cannot run {vmctl} to start VM {vm}")]
    Spawn {
        vm: String,
        vmctl: PathBuf,
        source: io::Error,
    },
    #[error("VM {vm} did not start: {why}")]
    Start { vm: String, why: String },
    #[error("VM {vm} (pid {pid}) did not stop within {waited:?}, even after SIGKILL")]
    Stop {
        vm: String,
        pid: u32,
        waited: Duration,
    },
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
}

/// The format version of `spec.json` this build writes and reads (the rules are in
/// [`vmctl_planner::record`]).
pub const RECORD_FORMAT_VERSION: u32 = records::version::VM_RECORD;

/// What vmctl keeps of a VM it applied (`spec.json`). Its own type, not the config
/// model: a later vmctl reads what this one wrote. Written and read as every record
/// ([`records::write_record`], [`records::read_record`]): `format-version` in front,
/// absent in records written before it existed (format 1).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct VmRecord {
    pub project: String,
    /// The VM, as applied.
    pub vm: VmSpec,
    /// Whether vmctl left it running (a running VM whose process is gone crashed).
    pub running: bool,
}

/// Where a VM lives on its host, and how to reach its engine.
#[derive(Debug, Clone, Copy)]
pub struct VmHost<'a> {
    pub project: &'a str,
    pub state_dir: &'a Path,
    /// The host's network namespace: the VMM opens its taps there.
    pub netns: Option<&'a str>,
    /// The `vmctl` binary that runs `vmctl vmm`.
    pub vmctl: &'a Path,
}

/// The files of one VM.
#[derive(Debug, Clone)]
pub struct VmPaths {
    pub dir: PathBuf,
    pub record: PathBuf,
    pub vmm_spec: PathBuf,
    pub pid: PathBuf,
    pub lock: PathBuf,
    pub control: PathBuf,
    pub console: PathBuf,
}

impl VmPaths {
    pub fn new(state_dir: &Path, project: &str, name: &str) -> VmPaths {
        VmPaths::in_dir(vms_dir(state_dir, project).join(name))
    }

    /// The files of the VM whose state dir is `dir`.
    pub fn in_dir(dir: PathBuf) -> VmPaths {
        VmPaths {
            record: dir.join("spec.json"),
            vmm_spec: dir.join("vmm.json"),
            pid: dir.join("vmm.pid"),
            lock: dir.join("vmm.lock"),
            control: dir.join("control.sock"),
            console: dir.join("console.log"),
            dir,
        }
    }
}

/// `<state-dir>/<project>/vms`.
pub fn vms_dir(state_dir: &Path, project: &str) -> PathBuf {
    state_dir.join(project).join("vms")
}

/// A VM's disks (volume files) and NICs (tap name, MAC) as the engine gets them.
#[derive(Debug, Clone, Default)]
pub struct VmDevices {
    pub disks: Vec<PathBuf>,
    pub nics: Vec<(String, String)>,
    /// Where this host has the VM's kernel and initrd when not at the paths the config
    /// names (a remote host's image cache); the record keeps the config's paths.
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
}

fn check_name(name: &str) -> Result<(), VmError> {
    if is_safe_file_name(name) {
        Ok(())
    } else {
        Err(VmError::InvalidName { name: name.into() })
    }
}

/// Reads the record of VM `name`; `None` when it has no state dir.
pub fn read_record(
    state_dir: &Path,
    project: &str,
    name: &str,
) -> Result<Option<VmRecord>, VmError> {
    check_name(name)?;
    let paths = VmPaths::new(state_dir, project, name);
    read_versioned(&paths.record, RECORD_FORMAT_VERSION).map_err(|source| VmError::ReadState {
        vm: name.into(),
        path: paths.record,
        source,
    })
}

/// Writes the record of `vm` (creating its state dir).
pub fn write_record(host: &VmHost<'_>, vm: &Vm, running: bool) -> Result<VmPaths, VmError> {
    check_name(&vm.name)?;
    let paths = VmPaths::new(host.state_dir, host.project, &vm.name);
    let record = VmRecord {
        project: host.project.into(),
        vm: VmSpec::from(vm),
        running,
    };
    create_private_dir(&paths.dir)
        .and_then(|()| records::write_record(&paths.record, RECORD_FORMAT_VERSION, &record))
        .map_err(|source| VmError::WriteState {
            vm: vm.name.clone(),
            path: paths.record.clone(),
            source,
        })?;
    Ok(paths)
}

/// Creates the file `path`, which must not exist (nor be a link): 0600, read-write —
/// a file vmctl writes for a VM (a snapshot's or a move's state and memory).
pub(crate) fn new_private_file(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Creates `dir` (a VM's state dir) and its missing parents 0700, and makes it and its
/// parent (`vms/`) 0700 whatever they were.
fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(STATE_DIR_MODE)
        .create(dir)?;
    let private = fs::Permissions::from_mode(STATE_DIR_MODE);
    if let Some(vms) = dir.parent() {
        fs::set_permissions(vms, private.clone())?;
    }
    fs::set_permissions(dir, private)
}

/// Every VM of `project` on this host, sorted by name, each asked whether it runs; and
/// the entries of `vms/` whose record cannot be read (corrupt, of a newer format, a
/// stray file), each that VM's problem alone. Fails only when `vms/` cannot be listed.
pub fn observe_vms(
    state_dir: &Path,
    project: &str,
) -> Result<(Vec<LiveVm>, Vec<BadRecord>), VmError> {
    let dir = vms_dir(state_dir, project);
    let names = list_dir(&dir).map_err(|source| VmError::ListVms {
        path: dir.clone(),
        source,
    })?;
    let mut names: Vec<String> = names
        .into_iter()
        .filter_map(|n| n.into_string().ok())
        .filter(|n| is_safe_file_name(n))
        .collect();
    names.sort();
    let mut records = Vec::new();
    let mut bad = Vec::new();
    for name in &names {
        match read_record(state_dir, project, name) {
            Ok(Some(record)) if record.project == project => records.push((name, record)),
            Ok(_) => {}
            Err(VmError::ReadState { path, source, .. }) => {
                let mut record = BadRecord::new(name, &path, &source);
                if record.cause == Cause::Stray {
                    record.path = VmPaths::new(state_dir, project, name).dir;
                }
                bad.push(record);
            }
            Err(e) => return Err(e),
        }
    }
    // Every VMM is asked at once.
    let paths: Vec<VmPaths> = records
        .iter()
        .map(|(name, _)| VmPaths::new(state_dir, project, name))
        .collect();
    let probes = process::probe_all(&paths.iter().collect::<Vec<_>>());
    let host = migrate::Leftovers { state_dir, project };
    let vms = records
        .into_iter()
        .zip(probes)
        .map(|((name, record), probe)| {
            let mut vm = observed(state_dir, name, record, probe);
            // Only a VM a move left behind is asked (rare): the rest cost nothing more.
            vm.paused = vm.status == VmStatus::Running && host.left_paused(name);
            vm
        })
        .collect();
    Ok((vms, bad))
}

/// The VM of `record`, in the dir `name`, as its host reports it: running when its VMM
/// answers `probe`, crashed when vmctl left it running and it does not.
fn observed(state_dir: &Path, name: &str, record: VmRecord, probe: Probe) -> LiveVm {
    let (status, pid) = match probe {
        Probe::Running(pid) => (VmStatus::Running, Some(pid)),
        Probe::Gone if record.running => (VmStatus::Crashed, None),
        Probe::Gone => (VmStatus::Stopped, None),
    };
    let project = record.project;
    LiveVm {
        // The dir's name is the VM's identity.
        name: name.to_owned(),
        project: project.clone(),
        spec: VmSpec {
            name: name.to_owned(),
            ..record.vm
        },
        status,
        // The matcher's, from the host's taps.
        tap_drift: Vec::new(),
        pid,
        uptime_seconds: pid
            .and_then(crate::host::proc::uptime)
            .map(|up| up.as_secs()),
        paused: false,
        snapshots: snapshots::names(&VmPaths::new(state_dir, &project, name)),
    }
}

/// One VM; `None` when its dir has no record (an interrupted create: nothing to see).
pub fn observe_vm(state_dir: &Path, project: &str, name: &str) -> Result<Option<LiveVm>, VmError> {
    let Some(record) = read_record(state_dir, project, name)? else {
        return Ok(None);
    };
    if record.project != project {
        return Ok(None);
    }
    let paths = VmPaths::new(state_dir, project, name);
    Ok(Some(observed(state_dir, name, record, probe(&paths))))
}

/// The engine's spec for `vm` with `devices`, its files in `paths`.
pub fn vmm_spec(vm: &Vm, devices: &VmDevices, paths: &VmPaths) -> Result<VmmSpec, VmError> {
    let mut spec = VmmSpec::new(devices.kernel.as_deref().unwrap_or(&vm.kernel));
    spec.initrd = devices.initrd.clone().or_else(|| vm.initrd.clone());
    spec.cmdline = match &vm.ip_argument {
        // The planner's `ip=` argument for the first NIC (`ip-cmdline`).
        Some(argument) if vm.ip_cmdline => {
            format!("{} {argument}", vm.cmdline).trim_start().to_owned()
        }
        _ => vm.cmdline.clone(),
    };
    spec.cpus = vm.cpus;
    spec.memory = Size(vm.memory);
    // Its host's `cpuid-mask`, as the planner put it on the VM.
    spec.cpuid_mask = vm.cpuid_mask.clone();
    spec.console_log = Some(paths.console.clone());
    spec.control_socket = Some(paths.control.clone());
    spec.pid_file = Some(paths.pid.clone());
    spec.lock_file = Some(paths.lock.clone());
    let mut nics = Vec::new();
    for (tap, mac) in &devices.nics {
        let parsed: Mac = mac.parse().map_err(|_| VmError::InvalidMac {
            vm: vm.name.clone(),
            mac: mac.clone(),
        })?;
        nics.push(Nic {
            tap: tap.clone(),
            mac: Some(parsed),
        });
    }
    spec.devices = Devices {
        disks: devices
            .disks
            .iter()
            .map(|path| Disk {
                path: path.clone(),
                read_only: false,
            })
            .collect(),
        nics,
    };
    Ok(spec)
}

/// Starts `vm` (its record says running) with `devices`, waiting until its control
/// socket answers; then puts it in its cpuset, if it has one. Returns the VMM's pid. A
/// VM already running is left as it is.
pub fn start_vm(host: &VmHost<'_>, vm: &Vm, devices: &VmDevices) -> Result<u32, VmError> {
    start_vm_from(host, vm, devices, None)
}

/// Starts `vm` from the saved VM in `restore` (a VM moving here, see [`migrate`])
/// instead of booting it, as [`start_vm`] does otherwise.
pub fn start_vm_from(
    host: &VmHost<'_>,
    vm: &Vm,
    devices: &VmDevices,
    restore: Option<&Path>,
) -> Result<u32, VmError> {
    let paths = write_record(host, vm, true)?;
    if let Probe::Running(pid) = probe(&paths) {
        return Ok(pid);
    }
    if let Some(cpuset) = &vm.cpuset {
        cgroup::check_available(cpuset)?;
    }
    let spec = vmm_spec(vm, devices, &paths)?;
    write_json_atomic(&paths.vmm_spec, &spec).map_err(|source| VmError::WriteState {
        vm: vm.name.clone(),
        path: paths.vmm_spec.clone(),
        source,
    })?;
    let pid = match restore {
        Some(dir) => process::spawn_restored(host, &vm.name, &paths, dir)?,
        None => process::spawn(host, &vm.name, &paths)?,
    };
    if let Some(cpuset) = &vm.cpuset {
        if let Err(e) = cgroup::place(host.project, &vm.name, cpuset, pid) {
            let _ = process::stop(&vm.name, &paths, Duration::from_secs(1));
            return Err(e.into());
        }
    }
    Ok(pid)
}

/// Applies a changed `cpuset` to a running VM (an in-place update: its group's CPUs are
/// rewritten, or it leaves its group when it has no cpuset any more) and records `vm`.
pub fn update_vm(host: &VmHost<'_>, vm: &Vm) -> Result<(), VmError> {
    check_name(&vm.name)?;
    let running = read_record(host.state_dir, host.project, &vm.name)?.is_some_and(|r| r.running);
    if let Some(cpuset) = &vm.cpuset {
        cgroup::check_available(cpuset)?;
    }
    let paths = VmPaths::new(host.state_dir, host.project, &vm.name);
    if let Probe::Running(pid) = probe(&paths) {
        match &vm.cpuset {
            Some(cpuset) => cgroup::place(host.project, &vm.name, cpuset, pid)?,
            None => cgroup::unplace(host.project, &vm.name, pid)?,
        }
    }
    write_record(host, vm, running)?;
    Ok(())
}

/// Stops VM `name` (graceful shutdown, then kill after `timeout`) and records it as
/// stopped. Returns whether a process was stopped.
pub fn stop_vm(host: &VmHost<'_>, name: &str, timeout: Duration) -> Result<bool, VmError> {
    check_name(name)?;
    let paths = VmPaths::new(host.state_dir, host.project, name);
    if let Some(record) = read_record(host.state_dir, host.project, name)? {
        write_record(host, &record.vm.to_model(), false)?;
    }
    let stopped = process::stop(name, &paths, timeout)?;
    cgroup::remove(host.project, name)?;
    Ok(stopped)
}

/// Stops VM `name` if it runs and deletes its state dir.
pub fn delete_vm(host: &VmHost<'_>, name: &str, timeout: Duration) -> Result<(), VmError> {
    stop_vm(host, name, timeout)?;
    let paths = VmPaths::new(host.state_dir, host.project, name);
    // The record goes last but one, the dir last, so an interrupted delete is retried.
    let rotated = crate::vmm::console_log::rotated_path(&paths.console);
    let console_sock = paths.dir.join("console.sock");
    for file in [
        &paths.vmm_spec,
        &paths.pid,
        &paths.control,
        &console_sock,
        &paths.console,
        &rotated,
        &paths.lock,
    ] {
        remove_if_exists(file).map_err(|source| VmError::DeleteState {
            vm: name.into(),
            path: file.clone(),
            source,
        })?;
    }
    match fs::remove_dir_all(&paths.dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(VmError::DeleteState {
            vm: name.into(),
            path: paths.dir,
            source: e,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
