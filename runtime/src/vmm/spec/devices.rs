//! The `devices` section of a VMM spec: virtio disks and NICs.
//!
//! ```json
//! "devices": {
//!   "disks": [
//!     {"path": "/var/lib/vmctl/pools/fast/web-1-root.raw"},
//!     {"path": "/var/lib/vmctl/images/seed.raw", "read_only": true}
//!   ],
//!   "nics": [
//!     {"tap": "vmctl-web1-0", "mac": "52:54:00:12:34:56"},
//!     {"tap": "vmctl-web1-1"}
//!   ]
//! }
//! ```
//!
//! Both lists are optional. A disk is a raw file (`read_only` disks are opened
//! `O_RDONLY`); a NIC is an existing tap, opened by name in the VMM's network namespace.
//! A NIC without a `mac` gets one derived from its tap name ([`Mac::derived`]). The VMM
//! places the devices in this order — the disks, then the NICs — so the guest sees disk
//! 0 as the first virtio-mmio device (Linux: `vda`).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Errors in the `devices` section.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DevicesError {
    /// A MAC address could not be read.
    #[error("invalid MAC address `{value}`: expected six hex bytes like 52:54:00:12:34:56")]
    InvalidMac {
        /// The text.
        value: String,
    },
    /// A MAC address is a multicast (group) address, which a NIC cannot have.
    #[error("MAC address {mac} is a multicast address (the low bit of its first byte is set)")]
    MulticastMac {
        /// The address.
        mac: Mac,
    },
    /// A tap name is not a valid interface name.
    #[error("tap name {name:?} is not a valid interface name (1 to 15 bytes, no '/', ':', spaces or NUL)")]
    InvalidTapName {
        /// The name.
        name: String,
    },
    /// Two NICs name the same tap.
    #[error("tap {name} is used by two NICs")]
    DuplicateTap {
        /// The name.
        name: String,
    },
    /// More devices than the VM has interrupt lines for.
    #[error("{count} devices given; a VM has at most {max} disks and NICs together")]
    TooManyDevices {
        /// Disks plus NICs.
        count: usize,
        /// The limit.
        max: usize,
    },
}

/// A MAC address, written `aa:bb:cc:dd:ee:ff` in specs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// A stable, locally administered unicast MAC for a NIC on tap `tap`:
    /// `52:54:00` (the prefix QEMU and libvirt use) and three bytes of the 32-bit
    /// FNV-1a hash of the name. The same name always gives the same MAC.
    pub fn derived(tap: &str) -> Self {
        let h = vmctl_schema::derive::fnv1a_32(tap.bytes());
        let [_, a, b, c] = h.to_be_bytes();
        Mac([0x52, 0x54, 0x00, a, b, c])
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Mac {
    type Err = DevicesError;
    fn from_str(s: &str) -> Result<Self, DevicesError> {
        let invalid = || DevicesError::InvalidMac {
            value: s.to_string(),
        };
        // The config's syntax: six hex bytes separated by colons.
        let mac = vmctl_schema::units::parse_mac(s).ok_or_else(invalid)?;
        if mac[0] & 1 == 1 {
            return Err(DevicesError::MulticastMac { mac: Mac(mac) });
        }
        Ok(Mac(mac))
    }
}

impl TryFrom<String> for Mac {
    type Error = DevicesError;
    fn try_from(s: String) -> Result<Self, DevicesError> {
        s.parse()
    }
}

impl From<Mac> for String {
    fn from(m: Mac) -> String {
        m.to_string()
    }
}

/// A virtio-blk disk over a raw file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    /// The raw disk file.
    pub path: PathBuf,
    /// Open it `O_RDONLY` and offer VIRTIO_BLK_F_RO.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

/// A virtio-net NIC over an existing tap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nic {
    /// The tap's interface name.
    pub tap: String,
    /// The guest's MAC; absent: [`Mac::derived`] from the tap name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<Mac>,
}

impl Nic {
    /// The MAC the guest gets.
    pub fn mac(&self) -> Mac {
        self.mac.unwrap_or_else(|| Mac::derived(&self.tap))
    }
}

/// Disks and NICs, in the order the guest sees them (disks first).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Devices {
    /// virtio-blk disks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<Disk>,
    /// virtio-net NICs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nics: Vec<Nic>,
}

impl Devices {
    /// How many virtio devices the VM gets.
    pub fn count(&self) -> usize {
        self.disks.len() + self.nics.len()
    }

    /// Checks names and counts; `max` is how many devices the VM can place. Disk
    /// files are checked by the caller (they need the spec's error type).
    pub fn validate(&self, max: usize) -> Result<(), DevicesError> {
        if self.count() > max {
            return Err(DevicesError::TooManyDevices {
                count: self.count(),
                max,
            });
        }
        let mut seen = std::collections::BTreeSet::new();
        for nic in &self.nics {
            if !valid_ifname(&nic.tap) {
                return Err(DevicesError::InvalidTapName {
                    name: nic.tap.clone(),
                });
            }
            if !seen.insert(nic.tap.as_str()) {
                return Err(DevicesError::DuplicateTap {
                    name: nic.tap.clone(),
                });
            }
        }
        Ok(())
    }
}

/// What Linux accepts as an interface name (`dev_valid_name`).
fn valid_ifname(name: &str) -> bool {
    (1..16).contains(&name.len())
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_and_print() {
        let m: Mac = "52:54:00:AB:cd:0f".parse().unwrap();
        assert_eq!(m.0, [0x52, 0x54, 0, 0xab, 0xcd, 0x0f]);
        assert_eq!(m.to_string(), "52:54:00:ab:cd:0f");
        // One syntax with the config (`vmctl validate`): colons only, hex digits only.
        for bad in [
            "52-54-00-ab-cd-0f",
            "+2:54:00:ab:cd:0f",
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:0f:11",
            "5:54:00:ab:cd:0f",
            "zz:54:00:ab:cd:0f",
        ] {
            assert!(
                matches!(bad.parse::<Mac>(), Err(DevicesError::InvalidMac { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            "01:00:5e:00:00:01".parse::<Mac>(),
            Err(DevicesError::MulticastMac { .. })
        ));
    }

    #[test]
    fn derived_macs_are_stable_local_and_distinct() {
        let a = Mac::derived("tapA");
        assert_eq!(a, Mac::derived("tapA"));
        assert_ne!(a, Mac::derived("tapB"));
        assert_eq!(&a.0[..3], &[0x52, 0x54, 0x00]);
        // Pinned, so a change of the derivation (which would change guests' MACs) is seen.
        assert_eq!(Mac::derived("vmctl0").to_string(), "52:54:00:52:d1:8f");
        assert_eq!(Mac::derived("tapA").to_string(), "52:54:00:4a:e3:59");
        assert_eq!(
            Mac::derived("vt0123456789ab").to_string(),
            "52:54:00:38:79:cf"
        );
        let nic = Nic {
            tap: "tapA".into(),
            mac: None,
        };
        assert_eq!(nic.mac(), a);
    }

    #[test]
    fn devices_json() {
        let d: Devices = serde_json::from_str(
            r#"{"disks":[{"path":"/d0"},{"path":"/d1","read_only":true}],
                "nics":[{"tap":"tap0","mac":"52:54:00:00:00:01"},{"tap":"tap1"}]}"#,
        )
        .unwrap();
        assert_eq!(d.count(), 4);
        assert!(d.disks[1].read_only && !d.disks[0].read_only);
        assert_eq!(d.nics[0].mac().to_string(), "52:54:00:00:00:01");
        assert_eq!(d.nics[1].mac, None);
        let back: Devices = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(back, d);
        assert_eq!(serde_json::to_string(&Devices::default()).unwrap(), "{}");

        let e = serde_json::from_str::<Devices>(r#"{"nics":[{"tap":"t","mac":"nope"}]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid MAC address `nope`"), "{e}");
        let e = serde_json::from_str::<Devices>(r#"{"disks":[{"path":"/d","ro":true}]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `ro`"), "{e}");
    }

    #[test]
    fn validation() {
        let nic = |tap: &str| Nic {
            tap: tap.into(),
            mac: None,
        };
        let mut d = Devices {
            nics: vec![nic("tap0"), nic("tap0")],
            ..Default::default()
        };
        assert!(matches!(
            d.validate(19),
            Err(DevicesError::DuplicateTap { .. })
        ));
        d.nics = vec![nic("a/b")];
        assert!(matches!(
            d.validate(19),
            Err(DevicesError::InvalidTapName { .. })
        ));
        d.nics = vec![nic("a-name-far-too-long")];
        assert!(d.validate(19).is_err());
        d.nics = (0..3).map(|i| nic(&format!("t{i}"))).collect();
        assert!(d.validate(3).is_ok());
        assert!(matches!(
            d.validate(2),
            Err(DevicesError::TooManyDevices { count: 3, max: 2 })
        ));
    }
}
