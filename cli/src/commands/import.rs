//! `vmctl import ADDRESS ID`: adopt a pool directory or a volume file that vmctl did not
//! make into the project, as Terraform's `import` does: the resource stays where it is
//! and as it is, and must already be what the config declares. The rules are the
//! runtime's (`vmctl_runtime::host::import`); this module finds the declaration, checks
//! that ID is where the config puts it, takes the host's lock as apply does, asks the
//! host (this machine, or a remote one through its agent), and turns a refusal into a
//! diagnostic on the declaration.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use miette::{LabeledSpan, MietteDiagnostic, Report};
use vmctl_planner::{ResourceId, ResourceKind};
use vmctl_runtime::host::import::{ImportError, ImportOrder};
use vmctl_runtime::host::volume::volume_path;
use vmctl_schema::{Kind, Loaded, Site};

use crate::error::CommandError;
use crate::render::Style;
use crate::runtime;

/// Adopt an existing pool directory or volume file into the project.
///
/// The resource must be declared in the config, and ID must be where the config puts
/// it: a pool's `path`, or a volume's `<pool path>/<name>.raw` (move or rename the
/// file there first; vmctl moves nothing). vmctl checks that it matches the declaration
/// — a directory only its owner may write to; a regular raw file (not qcow2, VMDK or
/// VHDX) of exactly the declared `size`, in a pool that is already the project's —
/// and that nothing owns it: no marker of another project (vmctl never takes another
/// project's resources) or of this one (already imported), and no process holding a
/// lock on the file (a running VM). Then it writes the project's marker, holding the
/// host's lock as apply does; the next plan shows no change for it. A volume is
/// recorded with the config's `from` and `prevent-destroy`; its content is not
/// compared with `from`. An imported pool's directory is kept when the pool is deleted.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  vmctl import pool.fast /var/lib/pools/fast\n  vmctl import volume.db-1-data /var/lib/pools/fast/db-1-data.raw\n  vmctl import volume.db-1-data /var/lib/pools/fast/db-1-data.raw ~/infra\n\nExit codes: 0 imported, 1 error (nothing was changed)."
)]
pub struct Args {
    /// The resource's address: `pool.NAME` or `volume.NAME`.
    pub address: String,

    /// Where the resource is on its host: the pool's directory, or the volume's file.
    #[arg(value_name = "ID")]
    pub id: PathBuf,

    /// A .kdl file, or a folder whose *.kdl files form one config.
    #[arg(default_value = ".", env = "VMCTL_CONFIG")]
    pub path: PathBuf,

    /// How long to wait for another vmctl holding the host's lock: 0, 500ms, 1m30s.
    #[arg(long, value_name = "DUR", default_value = "0", value_parser = runtime::parse_duration)]
    pub lock_timeout: Duration,

    #[command(flatten)]
    pub reach: runtime::Reach,
}

/// What the address declares: the order for its host, the host, and where it is
/// declared (the setting ID must match).
struct Declared {
    order: ImportOrder,
    host: String,
    site: Option<Site>,
    expected: PathBuf,
}

/// A diagnostic on `site` of the config (when known).
fn at_site(
    loaded: &Loaded,
    site: Option<Site>,
    code: &str,
    label: &str,
    message: String,
    help: String,
) -> CommandError {
    let mut diagnostic = MietteDiagnostic::new(message)
        .with_code(code)
        .with_help(help);
    if let Some(site) = site {
        diagnostic = diagnostic.with_label(LabeledSpan::at(site.span, label));
    }
    let report = Report::new(diagnostic);
    let report = match site.and_then(|s| loaded.source_of(s)) {
        Some(source) => report.with_source_code(source),
        None => report,
    };
    CommandError::Report(report)
}

/// The declaration `address` names, or a diagnostic with the declared candidates.
fn declared(loaded: &Loaded, address: &str) -> Result<Declared, CommandError> {
    let config = &loaded.config;
    let id = ResourceId::parse_address(address);
    let candidates: Vec<String> = config
        .pools
        .iter()
        .map(|p| format!("pool.{}", p.name))
        .chain(config.volumes.iter().map(|v| format!("volume.{}", v.name)))
        .collect();
    let unknown = |why: String| {
        let suggestion =
            vmctl_schema::diagnostics::suggest(address, candidates.iter().map(String::as_str));
        CommandError::Report(miette::miette!(
            code = "vmctl::import::unknown_address",
            help =
                format!("{suggestion}; import adopts a declared pool or volume: declare it first"),
            "{why}"
        ))
    };
    let Some(id) = id else {
        return Err(unknown(format!(
            "{address:?} is not an address: write `pool.NAME` or `volume.NAME`"
        )));
    };
    match id.kind {
        ResourceKind::Pool => {
            let pool = config
                .pools
                .iter()
                .find(|p| p.name == id.name)
                .ok_or_else(|| unknown(format!("the config declares no pool {:?}", id.name)))?;
            Ok(Declared {
                order: ImportOrder::Pool {
                    name: pool.name.clone(),
                    path: pool.path.clone(),
                },
                host: pool.host.clone(),
                site: loaded
                    .spans_of(Kind::Pool, &pool.name)
                    .map(|s| s.field_or_name("path", 0)),
                expected: pool.path.clone(),
            })
        }
        ResourceKind::Volume => {
            let volume = config
                .volumes
                .iter()
                .find(|v| v.name == id.name)
                .ok_or_else(|| unknown(format!("the config declares no volume {:?}", id.name)))?;
            let Some(pool) = config.pools.iter().find(|p| p.name == volume.pool) else {
                return Err(unknown(format!(
                    "volume {:?} names pool {:?}, which the config does not declare",
                    volume.name, volume.pool
                )));
            };
            Ok(Declared {
                order: ImportOrder::Volume {
                    name: volume.name.clone(),
                    pool: pool.path.clone(),
                    size: volume.size,
                    from: volume.from.clone(),
                    prevent_destroy: volume.prevent_destroy,
                },
                host: pool.host.clone(),
                site: loaded.site(Kind::Volume, &volume.name),
                expected: volume_path(&pool.path, &volume.name),
            })
        }
        kind => Err(unknown(format!(
            "vmctl import adopts pools and volumes, not a {kind}: `{address}`"
        ))),
    }
}

/// `path` without `.` components and trailing slashes (`..` is kept: no guessing
/// about symlinks).
fn normal(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

/// The diagnostic of a refusal, on the declaration, with what to do.
fn refused(
    loaded: &Loaded,
    address: &str,
    declared: &Declared,
    error: &ImportError,
) -> CommandError {
    let (code, label, help) = match error {
        ImportError::NotFound { .. } => (
            "vmctl::import::not_found",
            "declared here",
            "import adopts what exists: put it there, or let `vmctl apply` create it".to_owned(),
        ),
        ImportError::WrongKind { .. } => (
            "vmctl::import::wrong_kind",
            "declared here",
            "vmctl never follows a symlink in a pool: put the directory or file itself there".to_owned(),
        ),
        ImportError::OtherProject { project, .. } => (
            "vmctl::import::other_project",
            "declared here",
            format!("vmctl never takes another project's resources: destroy it in project {project:?}, or declare another name or path"),
        ),
        ImportError::AlreadyOurs { .. } => (
            "vmctl::import::already_ours",
            "already the project's",
            "nothing to import: `vmctl plan` manages it already".to_owned(),
        ),
        ImportError::PoolNotOurs { .. } => (
            "vmctl::import::pool_not_ours",
            "in this pool",
            "import the volume's pool first (`vmctl import pool.NAME DIR`), or let `vmctl apply` create it".to_owned(),
        ),
        ImportError::SizeMismatch { size, .. } => (
            "vmctl::import::size_mismatch",
            "declared size",
            format!(
                "set the volume's `size` to the file's size ({}), or resize the file; import changes nothing",
                vmctl_schema::units::format_size(*size)
            ),
        ),
        ImportError::NotRaw { .. } => (
            "vmctl::import::not_raw",
            "declared here",
            "convert it to a raw file first (`qemu-img convert -O raw`)".to_owned(),
        ),
        ImportError::InUse { .. } => (
            "vmctl::import::in_use",
            "declared here",
            "stop whatever uses it (a VM with it as a disk), then import it".to_owned(),
        ),
        ImportError::InvalidName { .. } | ImportError::Host { .. } => (
            "vmctl::import::failed",
            "declared here",
            "nothing was imported; fix the cause above and run the import again".to_owned(),
        ),
    };
    let site = match error {
        ImportError::SizeMismatch { .. } => loaded
            .spans_of(Kind::Volume, &declared_name(&declared.order))
            .map(|s| s.field_or_name("size", 0))
            .or(declared.site),
        _ => declared.site,
    };
    at_site(
        loaded,
        site,
        code,
        label,
        format!(
            "cannot import {address} on host {:?}: {error}",
            declared.host
        ),
        help,
    )
}

fn declared_name(order: &ImportOrder) -> String {
    match order {
        ImportOrder::Pool { name, .. } | ImportOrder::Volume { name, .. } => name.clone(),
    }
}

pub fn run(args: &Args, style: &Style) -> Result<(), CommandError> {
    let loaded = crate::config::load(&args.path, style)?;
    let declared = declared(&loaded, &args.address)?;
    let given = normal(&args.id);
    if !given.is_absolute() || given != normal(&declared.expected) {
        let why = if given.is_absolute() {
            "is not where the config puts it"
        } else {
            "is not an absolute path on the host"
        };
        return Err(at_site(
            &loaded,
            declared.site,
            "vmctl::import::wrong_path",
            "declared here",
            format!(
                "{} {why}: {} is at {} on host {:?}",
                args.id.display(),
                args.address,
                declared.expected.display(),
                declared.host
            ),
            format!(
                "import adopts a resource where the config declares it and moves nothing: move it to {} (`mv` within one filesystem), or change the declaration",
                declared.expected.display()
            ),
        ));
    }
    // Only the resource's host is reached and locked.
    let mut reach = args.reach.clone();
    if reach.exclude_hosts.contains(&declared.host) {
        return Err(CommandError::failed(format!(
            "{} is on host {:?}, which --exclude-host leaves out",
            args.address, declared.host
        )));
    }
    reach.exclude_hosts = loaded
        .config
        .hosts
        .iter()
        .map(|h| h.name.clone())
        .filter(|h| *h != declared.host)
        .collect();
    let fleet = runtime::connect(&loaded.config, &reach, &args.path)?;
    let _locks = runtime::lock(&loaded.config, &fleet, args.lock_timeout)?;
    let host = fleet
        .get(&declared.host)
        .ok_or_else(|| CommandError::failed(format!("host {:?} was not reached", declared.host)))?;
    match host.import(&loaded.config.project, &declared.order) {
        Ok(path) => {
            println!(
                "Imported {} on host {:?}: {} is now project {:?}'s; `vmctl plan` manages it from here.",
                args.address,
                declared.host,
                path.display(),
                loaded.config.project
            );
            Ok(())
        }
        Err(error) => Err(refused(&loaded, &args.address, &declared, &error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_compare_without_dots_and_trailing_slashes() {
        assert_eq!(normal(Path::new("/p/./fast/")), Path::new("/p/fast"));
        assert_ne!(normal(Path::new("/p/x/../fast")), Path::new("/p/fast"));
    }

    #[test]
    fn the_declaration_is_found_or_suggested() {
        let loaded = vmctl_schema::load_str(
            "/x/lab.kdl",
            "project \"lab\"\nhost \"local\"\npool \"fast\" host=\"local\" type=\"dir\" {\n    path \"/p/fast\"\n}\nvolume \"db\" pool=\"fast\" size=\"1MiB\"\n",
        )
        .unwrap();
        let d = declared(&loaded, "volume.db").ok().unwrap();
        assert_eq!(d.expected, Path::new("/p/fast/db.raw"));
        assert_eq!(d.host, "local");
        assert!(d.site.is_some());
        let d = declared(&loaded, "pool.fast").ok().unwrap();
        assert_eq!(d.expected, Path::new("/p/fast"));
        let style = Style::plain();
        for (address, says) in [
            ("volume.dv", "did you mean `volume.db`?"),
            ("vm.db", "not a vm"),
            ("db", "not an address"),
        ] {
            let text = match declared(&loaded, address) {
                Err(e) => e.render(&style),
                Ok(_) => panic!("{address} is no importable declaration"),
            };
            assert!(text.contains(says), "{address}: {text}");
        }
    }
}
