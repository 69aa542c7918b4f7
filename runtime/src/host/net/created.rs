//! Creation records: how vmctl knows an unmarked interface is its own crash leftover.
//!
//! vmctl's mark is the interface alias, but the kernel ignores `IFLA_IFALIAS` in the
//! `RTM_NEWLINK` that creates a link (checked on 6.18: `ip link add br0 alias x type
//! bridge` makes an unaliased bridge), and a tap is made by `TUNSETIFF`, not netlink. So
//! the mark comes in a second request, and a crash between the two leaves an unmarked
//! interface. Before creating one, vmctl writes a record
//! `/run/vmctl/creating/<netns-cookie>/<ifname>.json` naming the mark it is about to set,
//! and removes it once the mark is set. An unmarked interface is taken as vmctl's only
//! when such a record names it *and* it is still exactly what the create left: down, no
//! address, not a port and without ports. Anything else unmarked is never adopted.
//!
//! The records live under `/run` (a tmpfs) because interfaces do not outlive a reboot
//! either, and are keyed by the netns cookie (`SO_NETNS_COOKIE`, never reused while the
//! machine runs), so a record cannot speak for a namespace made later under the same name.

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::session::{Link, Netlink, NetlinkError};
use crate::host::fsutil;
use crate::host::mark::Mark;
use crate::host::records::{self, version};

/// Where the creation records are kept.
pub const RECORD_DIR: &str = "/run/vmctl/creating";

/// What a record says: vmctl is creating an interface it will mark `alias`. Written
/// and read as every record of vmctl's ([`records`]: `format-version` in front).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    alias: String,
}

fn record_path(nl: &Netlink, ifname: &str) -> PathBuf {
    PathBuf::from(RECORD_DIR)
        .join(nl.netns_cookie())
        .join(format!("{ifname}.json"))
}

/// Records that interface `ifname` is about to be created and marked `mark`.
pub(crate) fn begin(nl: &Netlink, ifname: &str, mark: &Mark) -> io::Result<()> {
    write(&record_path(nl, ifname), &mark.alias())
}

/// Writes the record at `path` (and its folder, 0700) for the mark `alias`. Another
/// vmctl finishing the namespace's last record removes the folder (see [`finish`]), so
/// it can vanish between making it and writing into it: then both are done again.
fn write(path: &Path, alias: &str) -> io::Result<()> {
    let record = Record {
        alias: alias.to_owned(),
    };
    let mut attempts = 0;
    loop {
        let folder = path.parent().map_or(Ok(()), |dir| {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
        });
        // The folder removed between making it and writing in it (NotFound), or between
        // `mkdir`'s EEXIST and the check that it is a folder (AlreadyExists): again.
        let written =
            folder.and_then(|()| records::write_record(path, version::CREATION_RECORD, &record));
        match written {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::AlreadyExists
                ) && attempts < 100 =>
            {
                attempts += 1
            }
            done => return done,
        }
    }
}

/// The mark the record at `path` names; `None` when there is none, or it cannot be
/// read (corrupt, or of a newer format): then nothing unmarked is taken for vmctl's.
fn recorded_alias(path: &Path) -> Option<String> {
    records::read_record::<Record>(path, version::CREATION_RECORD)
        .ok()
        .flatten()
        .map(|r| r.alias)
}

/// Drops the record of `ifname` once its mark is set (or its creation failed).
pub(crate) fn finish(nl: &Netlink, ifname: &str) -> io::Result<()> {
    let path = record_path(nl, ifname);
    fsutil::remove_if_exists(&path)?;
    if let Some(dir) = path.parent() {
        // The namespace's folder goes with its last record; another vmctl may be adding
        // one right now, which is why a non-empty folder is fine.
        let _ = fs::remove_dir(dir);
    }
    Ok(())
}

/// Whether `link`, which carries no mark, is what a crash of vmctl left while creating
/// it to be marked `mark`: a record says so and the link is untouched since its creation.
pub(crate) fn is_leftover(nl: &Netlink, link: &Link, mark: &Mark) -> Result<bool, NetlinkError> {
    if link.alias.is_some() || link.up || link.controller.is_some() {
        return Ok(false);
    }
    let recorded = recorded_alias(&record_path(nl, &link.name)) == Some(mark.alias());
    if !recorded {
        return Ok(false);
    }
    let has_ports = nl.links()?.iter().any(|l| l.controller == Some(link.index));
    Ok(!has_ports && nl.addresses(link.index)?.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_versioned_like_every_record_and_a_newer_one_names_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cookie").join("tap0.json");
        write(&path, "vmctl:lab:web-1:0").unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"format-version\": 1"), "{text}");
        assert_eq!(recorded_alias(&path).as_deref(), Some("vmctl:lab:web-1:0"));
        fs::write(
            &path,
            r#"{"format-version": 2, "alias": "vmctl:lab:web-1:0"}"#,
        )
        .unwrap();
        assert_eq!(recorded_alias(&path), None);
        fs::write(&path, "{\"alias\": ").unwrap();
        assert_eq!(recorded_alias(&path), None);
        assert_eq!(recorded_alias(&dir.path().join("none.json")), None);
    }

    #[test]
    fn a_record_is_written_even_when_its_folder_vanishes_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("cookie");
        let path = folder.join("tap0.json");
        // Other vmctls remove the folder as their last records go, again and again.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let remover = {
            let (folder, stop) = (folder.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = fs::remove_dir(&folder);
                    std::thread::sleep(std::time::Duration::from_micros(20));
                }
            })
        };
        for _ in 0..200 {
            write(&path, "vmctl:lab").unwrap();
            assert_eq!(recorded_alias(&path).as_deref(), Some("vmctl:lab"));
            fs::remove_file(&path).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        remover.join().unwrap();
    }
}
