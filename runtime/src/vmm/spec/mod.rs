//! The VMM spec: everything one `vmctl vmm` process needs to run one VM, as JSON
//! written by the runtime (`spec.json` in the VM's state directory).
//!
//! ```json
//! {
//!   "kernel": "/var/lib/vmctl/lab/images/vmlinux",
//!   "initrd": "/var/lib/vmctl/lab/images/initrd.img",
//!   "cmdline": "console=ttyS0 reboot=k panic=1",
//!   "cpus": 2,
//!   "memory": "512MiB",
//!   "console_log": "/var/lib/vmctl/lab/vms/web-1/console.log",
//!   "control_socket": "/var/lib/vmctl/lab/vms/web-1/control.sock",
//!   "console_socket": "/var/lib/vmctl/lab/vms/web-1/console.sock",
//!   "pid_file": "/var/lib/vmctl/lab/vms/web-1/vmm.pid",
//!   "cpuid_mask": ["avx512f"],
//!   "pit": false,
//!   "devices": {
//!     "disks": [{"path": "/var/lib/vmctl/pools/fast/web-1-root.raw", "read_only": false}],
//!     "nics": [{"tap": "vmctl-web1-0", "mac": "52:54:00:12:34:56"}]
//!   }
//! }
//! ```
//!
//! `memory` is a byte count or a string with a binary unit (`512MiB`, `4G` = GiB).
//! Only `kernel` is required; unknown fields are errors. `console_socket` defaults to
//! `console.sock` next to `control_socket` (none without a control socket). [`devices`] describes the
//! `devices` section (virtio disks and NICs).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub mod devices;

pub use devices::{Devices, DevicesError, Disk, Mac, Nic};

use super::arch::x86_64::cpuid::{self, CpuidError, FeatureBit};
use super::arch::x86_64::layout::MAX_VIRTIO_DEVICES;
use super::arch::x86_64::mptable::MAX_CPUS;

/// Errors reading or checking a spec.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The spec file cannot be read.
    #[error("cannot read the VMM spec {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The spec is not valid JSON or has unknown or mistyped fields.
    #[error("invalid VMM spec {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What serde said (with line and column).
        source: serde_json::Error,
    },
    /// The kernel file does not exist or cannot be read.
    #[error("kernel {path}: {source}")]
    Kernel {
        /// The kernel path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The initrd file does not exist or cannot be read.
    #[error("initrd {path}: {source}")]
    Initrd {
        /// The initrd path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The vCPU count is out of range.
    #[error("cpus must be between 1 and {MAX_CPUS}, not {cpus}")]
    Cpus {
        /// The count given.
        cpus: u32,
    },
    /// A size string could not be read.
    #[error("invalid size `{value}`: expected bytes or a number with a unit (KiB, MiB, GiB, TiB; K, M, G, T)")]
    Size {
        /// The string.
        value: String,
    },
    /// A CPUID feature name is unknown.
    #[error(transparent)]
    Cpuid(#[from] CpuidError),
    /// A disk file does not exist or cannot be opened as the spec asks.
    #[error("disk {path}: {source}")]
    Disk {
        /// The disk path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The `devices` section is invalid.
    #[error(transparent)]
    Devices(#[from] DevicesError),
    /// Running detached needs somewhere to write the console.
    #[error("a detached VMM needs `console_log` in its spec (or run it with --foreground)")]
    NoConsoleLog,
}

/// A memory size: bytes, or a string with a binary unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SizeRepr", into = "u64")]
pub struct Size(pub u64);

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeRepr {
    Bytes(u64),
    Text(String),
}

impl TryFrom<SizeRepr> for Size {
    type Error = SpecError;
    fn try_from(r: SizeRepr) -> Result<Self, SpecError> {
        match r {
            SizeRepr::Bytes(b) => Ok(Size(b)),
            SizeRepr::Text(t) => parse_size(&t).map(Size),
        }
    }
}

impl From<Size> for u64 {
    fn from(s: Size) -> u64 {
        s.0
    }
}

/// Parses `128MiB`, `4G`, `1073741824`, `512 MiB` (binary units; `B` optional).
pub fn parse_size(value: &str) -> Result<u64, SpecError> {
    let err = || SpecError::Size {
        value: value.to_string(),
    };
    let t = value.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| err())?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" | "kb" => 10,
        "m" | "mib" | "mb" => 20,
        "g" | "gib" | "gb" => 30,
        "t" | "tib" | "tb" => 40,
        _ => return Err(err()),
    };
    n.checked_mul(1u64 << shift).ok_or_else(err)
}

fn default_cpus() -> u32 {
    1
}

fn default_memory() -> Size {
    Size(128 << 20)
}

/// The command line used when none is given.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=1";

fn default_cmdline() -> String {
    DEFAULT_CMDLINE.to_string()
}

/// One VM, as the VMM process runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmmSpec {
    /// ELF vmlinux or bzImage.
    pub kernel: PathBuf,
    /// Initial ramdisk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[serde(default = "default_cmdline")]
    pub cmdline: String,
    /// vCPU count.
    #[serde(default = "default_cpus")]
    pub cpus: u32,
    /// Guest memory.
    #[serde(default = "default_memory")]
    pub memory: Size,
    /// Where the guest's serial output goes (and, detached, the VMM's own stdout and
    /// stderr). Absent: stdout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_log: Option<PathBuf>,
    /// The control socket (JSON lines). Absent: no control socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_socket: Option<PathBuf>,
    /// The console socket (`vmctl console`, see `vmm::console`). Absent: `console.sock`
    /// next to the control socket, or none without one ([`VmmSpec::console_socket_path`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_socket: Option<PathBuf>,
    /// Where the VMM writes its pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_file: Option<PathBuf>,
    /// The lock the VMM holds for its whole life (`vmm::lock`). Absent: `vmm.lock` next
    /// to the pid file, or none without one ([`VmmSpec::lock_file_path`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_file: Option<PathBuf>,
    /// CPUID features hidden from the guest, by /proc/cpuinfo name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpuid_mask: Vec<String>,
    /// Create the in-kernel PIT (i8254). Linux guests want it; the test guest does not,
    /// and it costs milliseconds to create and tear down.
    #[serde(default)]
    pub pit: bool,
    /// virtio disks and NICs ([`devices`]).
    #[serde(default)]
    pub devices: Devices,
}

impl VmmSpec {
    /// A spec for `kernel` with every default.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        Self {
            kernel: kernel.into(),
            initrd: None,
            cmdline: default_cmdline(),
            cpus: default_cpus(),
            memory: default_memory(),
            console_log: None,
            control_socket: None,
            console_socket: None,
            pid_file: None,
            lock_file: None,
            cpuid_mask: Vec::new(),
            pit: false,
            devices: Devices::default(),
        }
    }

    /// The console socket: `console_socket`, else `console.sock` in the control
    /// socket's folder, else none.
    pub fn console_socket_path(&self) -> Option<PathBuf> {
        self.console_socket.clone().or_else(|| {
            self.control_socket
                .as_ref()
                .map(|c| c.with_file_name("console.sock"))
        })
    }

    /// The lock file: `lock_file`, else `vmm.lock` in the pid file's folder, else none.
    pub fn lock_file_path(&self) -> Option<PathBuf> {
        self.lock_file
            .clone()
            .or_else(|| self.pid_file.as_ref().map(|p| p.with_file_name("vmm.lock")))
    }

    /// Reads a spec file.
    pub fn from_file(path: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| SpecError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Checks what can be checked without KVM: files exist and are readable, counts in
    /// range, CPUID names known. Memory is checked against the host when it is built.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.cpus == 0 || self.cpus > MAX_CPUS {
            return Err(SpecError::Cpus { cpus: self.cpus });
        }
        check_file(&self.kernel).map_err(|source| SpecError::Kernel {
            path: self.kernel.clone(),
            source,
        })?;
        if let Some(initrd) = &self.initrd {
            check_file(initrd).map_err(|source| SpecError::Initrd {
                path: initrd.clone(),
                source,
            })?;
        }
        self.cpuid_features()?;
        self.devices.validate(MAX_VIRTIO_DEVICES)?;
        for disk in &self.devices.disks {
            check_disk(disk).map_err(|source| SpecError::Disk {
                path: disk.path.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// The CPUID mask as feature bits.
    pub fn cpuid_features(&self) -> Result<Vec<FeatureBit>, SpecError> {
        self.cpuid_mask
            .iter()
            .map(|n| cpuid::parse_feature(n).map_err(SpecError::from))
            .collect()
    }

    /// Makes every path absolute against the current directory, so the spec still
    /// means the same after a detached VMM changes directory.
    pub fn absolutize(&mut self) {
        let abs = |p: &mut PathBuf| {
            if let Ok(a) = std::path::absolute(&*p) {
                *p = a;
            }
        };
        abs(&mut self.kernel);
        for disk in &mut self.devices.disks {
            abs(&mut disk.path);
        }
        for p in [
            &mut self.initrd,
            &mut self.console_log,
            &mut self.control_socket,
            &mut self.console_socket,
            &mut self.pid_file,
            &mut self.lock_file,
        ]
        .into_iter()
        .flatten()
        {
            abs(p);
        }
    }
}

/// A disk must be a regular file (or block device) that opens as the spec asks:
/// read-write unless `read_only`.
fn check_disk(disk: &Disk) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(!disk.read_only)
        .open(&disk.path)?;
    if f.metadata()?.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "is a directory",
        ));
    }
    Ok(())
}

fn check_file(path: &Path) -> std::io::Result<()> {
    let f = std::fs::File::open(path)?;
    if f.metadata()?.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "is a directory",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("128MiB").unwrap(), 128 << 20);
        assert_eq!(parse_size("4G").unwrap(), 4 << 30);
        assert_eq!(parse_size("512 mib").unwrap(), 512 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn minimal_spec_gets_defaults() {
        let s: VmmSpec = serde_json::from_str(r#"{"kernel": "/k"}"#).unwrap();
        assert_eq!(s, VmmSpec::new("/k"));
        assert_eq!(s.memory, Size(128 << 20));
        let s: VmmSpec =
            serde_json::from_str(r#"{"kernel": "/k", "memory": "1GiB", "cpus": 2}"#).unwrap();
        assert_eq!((s.memory.0, s.cpus), (1 << 30, 2));
    }

    #[test]
    fn console_socket_defaults_next_to_the_control_socket() {
        let mut s: VmmSpec = serde_json::from_str(r#"{"kernel": "/k"}"#).unwrap();
        assert_eq!(s.console_socket_path(), None);
        s.control_socket = Some("/run/vm/control.sock".into());
        assert_eq!(
            s.console_socket_path(),
            Some(PathBuf::from("/run/vm/console.sock"))
        );
        let s: VmmSpec =
            serde_json::from_str(r#"{"kernel": "/k", "console_socket": "/c.sock"}"#).unwrap();
        assert_eq!(s.console_socket_path(), Some(PathBuf::from("/c.sock")));
    }

    #[test]
    fn round_trips() {
        let mut s = VmmSpec::new("/k");
        s.initrd = Some("/i".into());
        s.cpuid_mask = vec!["avx".into()];
        let back: VmmSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn bad_specs() {
        let unknown = serde_json::from_str::<VmmSpec>(r#"{"kernel": "/k", "cpu": 2}"#);
        assert!(unknown
            .unwrap_err()
            .to_string()
            .contains("unknown field `cpu`"));
        assert!(serde_json::from_str::<VmmSpec>(r#"{"cpus": 2}"#).is_err());
        let devices = serde_json::from_str::<VmmSpec>(r#"{"kernel":"/k","devices":{"disk":[]}}"#);
        assert!(devices.is_err());

        let mut s = VmmSpec::new("/nonexistent/vmlinux");
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("/nonexistent/vmlinux"), "{e}");
        s.kernel = "/proc/self/exe".into();
        s.cpus = 0;
        assert!(matches!(s.validate(), Err(SpecError::Cpus { cpus: 0 })));
        s.cpus = 1;
        s.cpuid_mask = vec!["nope".into()];
        assert!(matches!(s.validate(), Err(SpecError::Cpuid(_))));
    }

    #[test]
    fn device_checks() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk.raw");
        std::fs::write(&disk, [0u8; 1024]).unwrap();
        let mut s = VmmSpec::new("/proc/self/exe");
        s.devices.disks.push(Disk {
            path: disk.clone(),
            read_only: false,
        });
        s.validate().unwrap();

        s.devices.disks.push(Disk {
            path: dir.path().join("missing.raw"),
            read_only: true,
        });
        let e = s.validate().unwrap_err().to_string();
        assert!(
            e.contains("missing.raw") && e.contains("No such file"),
            "{e}"
        );
        s.devices.disks.pop();

        s.devices.disks.push(Disk {
            path: dir.path().to_path_buf(),
            read_only: true,
        });
        assert!(matches!(s.validate(), Err(SpecError::Disk { .. })));
        s.devices.disks.pop();

        s.devices.nics = (0..MAX_VIRTIO_DEVICES)
            .map(|i| Nic {
                tap: format!("tap{i}"),
                mac: None,
            })
            .collect();
        assert!(matches!(
            s.validate(),
            Err(SpecError::Devices(DevicesError::TooManyDevices { .. }))
        ));

        let e = serde_json::from_str::<VmmSpec>(
            r#"{"kernel":"/k","devices":{"nics":[{"tap":"t0","mac":"52:54:00:00:00"}]}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("invalid MAC address `52:54:00:00:00`"), "{e}");
    }
}
