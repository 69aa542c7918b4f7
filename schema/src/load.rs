//! The loader: files to a validated [`Config`], or every diagnostic at once.
//!
//! Files are read, parsed and decoded in parallel (rayon), each exactly once; each
//! KDL document is dropped as soon as it is decoded. The whole-config checks then run
//! once over the merged model.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;

use crate::decode::{decode, Decoded};
use crate::diagnostics::{Diagnostics, FileId, Located, SchemaError};
use crate::model::Config;
use crate::parse::parse;
use crate::source::{discover, read, SourceFile, Sources};
use crate::spans::{ResourceSpans, Site, Spans};
use crate::validate::{validate, Report};

/// A validated config with where everything came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// The files, for pointing diagnostics at them.
    pub sources: Sources,
    /// Where each resource was declared, index for index with `config`.
    pub spans: Spans,
}

/// The kinds of resource, for looking up where one was declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Host,
    Network,
    Vlan,
    Pool,
    Volume,
    Vm,
}

impl Loaded {
    /// The spans of the resource of `kind` named `name`, if declared.
    pub fn spans_of(&self, kind: Kind, name: &str) -> Option<&ResourceSpans> {
        let c = &self.config;
        let s = &self.spans;
        let (i, spans) = match kind {
            Kind::Host => (c.hosts.iter().position(|r| r.name == name)?, &s.hosts),
            Kind::Network => (c.networks.iter().position(|r| r.name == name)?, &s.networks),
            Kind::Vlan => (c.vlans.iter().position(|r| r.name == name)?, &s.vlans),
            Kind::Pool => (c.pools.iter().position(|r| r.name == name)?, &s.pools),
            Kind::Volume => (c.volumes.iter().position(|r| r.name == name)?, &s.volumes),
            Kind::Vm => (c.vms.iter().position(|r| r.name == name)?, &s.vms),
        };
        spans.get(i)
    }

    /// Where the resource of `kind` named `name` was declared (its name argument).
    pub fn site(&self, kind: Kind, name: &str) -> Option<Site> {
        self.spans_of(kind, name).map(|s| s.site(s.name))
    }

    /// The file of a site, as a miette source to attach to a later diagnostic.
    pub fn source_of(&self, site: Site) -> Option<miette::NamedSource<Arc<str>>> {
        self.sources.get(site.file).map(SourceFile::named)
    }
}

/// A file's path and its text, or why it could not be read.
type FileText = (PathBuf, Result<Arc<str>, Box<SchemaError>>);

/// Loads the config at `path`: a `.kdl` file, or every `*.kdl` file of a folder.
pub fn load(path: &Path) -> Result<Loaded, Diagnostics> {
    let files = discover(path).map_err(|error| {
        Diagnostics(vec![Located {
            source: None,
            file: None,
            error: *error,
        }])
    })?;
    let read: Vec<FileText> = files
        .into_par_iter()
        .map(|p| {
            let text = read(&p);
            (p, text)
        })
        .collect();
    load_texts(read)
}

/// Loads a config from texts already in memory (tests, fuzzing, editors).
pub fn load_str(path: impl Into<PathBuf>, text: &str) -> Result<Loaded, Diagnostics> {
    load_texts(vec![(path.into(), Ok(Arc::from(text)))])
}

/// The outcome of one file: its source and its decoded content, or why not.
struct FileResult {
    source: SourceFile,
    decoded: Decoded,
    read_error: Option<SchemaError>,
}

fn load_texts(files: Vec<FileText>) -> Result<Loaded, Diagnostics> {
    let results: Vec<FileResult> = files
        .into_par_iter()
        .enumerate()
        .map(|(id, (path, text))| one_file(id, path, text))
        .collect();

    let mut sources = Sources::default();
    let mut located: Vec<Located> = Vec::new();
    let mut merged = Decoded::default();
    let mut project_sites: Vec<(String, Site)> = Vec::new();
    // A file that could not be read or parsed may hold the `project` node.
    let mut all_parsed = true;
    for (id, result) in results.into_iter().enumerate() {
        if let Some(error) = result.read_error {
            located.push(Located {
                source: None,
                file: Some(id),
                error,
            });
        }
        let named = result.source.named();
        let d = result.decoded;
        all_parsed &= d.parsed;
        for error in d.errors {
            located.push(Located {
                source: Some(named.clone()),
                file: Some(id),
                error,
            });
        }
        project_sites.extend(
            d.projects
                .into_iter()
                .map(|(n, span)| (n, Site { file: id, span })),
        );
        merged.hosts.extend(d.hosts);
        merged.networks.extend(d.networks);
        merged.vlans.extend(d.vlans);
        merged.pools.extend(d.pools);
        merged.volumes.extend(d.volumes);
        merged.vms.extend(d.vms);
        sources.files.push(result.source);
    }

    let mut report = Report::new(&sources);
    let project = check_project(&project_sites, all_parsed, &mut report);
    let (mut config, spans) = assemble(project, merged);
    validate(&mut config, &spans, &mut report);
    let mut spans = spans;
    spans.project = project_sites.first().map(|(_, s)| *s);

    for (file, error) in report.errors {
        located.push(Located {
            source: file.and_then(|f| sources.get(f)).map(SourceFile::named),
            file,
            error,
        });
    }
    if located.is_empty() {
        return Ok(Loaded {
            config,
            sources,
            spans,
        });
    }
    located.sort_by_key(|l| (l.file.map_or(0, |f| f + 1), l.offset()));
    Err(Diagnostics(located))
}

fn one_file(id: FileId, path: PathBuf, text: Result<Arc<str>, Box<SchemaError>>) -> FileResult {
    let text = match text {
        Ok(text) => text,
        Err(e) => {
            return FileResult {
                source: SourceFile {
                    path,
                    text: Arc::from(""),
                },
                decoded: Decoded::default(),
                read_error: Some(*e),
            }
        }
    };
    let decoded = match parse(&text) {
        Ok(document) => Decoded {
            parsed: true,
            ..decode(&document, id, &path)
        },
        Err(errors) => Decoded {
            errors,
            ..Decoded::default()
        },
    };
    FileResult {
        source: SourceFile { path, text },
        decoded,
        read_error: None,
    }
}

fn check_project(sites: &[(String, Site)], all_parsed: bool, report: &mut Report<'_>) -> String {
    match sites {
        [] if !all_parsed => String::new(),
        [] => {
            report.errors.push((
                None,
                SchemaError::Project {
                    problem: "the config has no `project` node".to_owned(),
                    span: None,
                },
            ));
            String::new()
        }
        [(name, _), rest @ ..] => {
            for (_, site) in rest {
                let problem = format!(
                    "`project` is declared again (first at {})",
                    report.location(sites[0].1)
                );
                report.push(
                    site.file,
                    SchemaError::Project {
                        problem,
                        span: Some(site.span),
                    },
                );
            }
            name.clone()
        }
    }
}

fn assemble(project: String, d: Decoded) -> (Config, Spans) {
    fn split<T, S>(v: Vec<(T, S)>) -> (Vec<T>, Vec<S>) {
        v.into_iter().unzip()
    }
    let (hosts, host_spans) = split(d.hosts);
    let (networks, network_spans) = split(d.networks);
    let (vlans, vlan_spans) = split(d.vlans);
    let (pools, pool_spans) = split(d.pools);
    let (volumes, volume_spans) = split(d.volumes);
    let (vms, vm_spans) = split(d.vms);
    (
        Config {
            project,
            hosts,
            networks,
            vlans,
            pools,
            volumes,
            vms,
        },
        Spans {
            project: None,
            hosts: host_spans,
            networks: network_spans,
            vlans: vlan_spans,
            pools: pool_spans,
            volumes: volume_spans,
            vms: vm_spans,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAB: &str = r#"
project "lab"
host "local"
network "lan" host="local"
vlan "front" network="lan" id=100
pool "fast" host="local" type="dir" { path "pools/fast"; }
volume "root" pool="fast" size="1GiB"
vm "web-1" host="local" {
    cpus 1
    memory "64MiB"
    kernel "../images/vmlinux"
    disk "root"
    nic vlan="front"
}
"#;

    #[test]
    fn loads_resolves_paths_and_derives_defaults() {
        let loaded = load_str("/repo/lab/main.kdl", LAB).expect("valid");
        let c = &loaded.config;
        assert_eq!(c.project, "lab");
        assert_eq!(c.pools[0].path, Path::new("/repo/lab/pools/fast"));
        assert_eq!(c.vms[0].kernel, Path::new("/repo/images/vmlinux"));
        assert_eq!(c.volumes[0].size, 1 << 30);
        assert_eq!(c.hosts[0].state_dir, Path::new("/var/lib/vmctl"));
        assert_eq!(c.hosts[0].reserve_memory, 0.08);
        assert_eq!(c.hosts[0].cpu_overcommit, 1.5);
        assert_eq!(
            c.networks[0].bridge,
            crate::derive::bridge_name("lab", "lan")
        );
        assert_eq!(
            c.vms[0].nics[0].mac,
            crate::derive::mac_address("lab", "web-1", 0, 0)
        );
        let site = loaded.site(Kind::Vm, "web-1").expect("declared");
        assert_eq!(
            &LAB[site.span.offset()..site.span.offset() + site.span.len()],
            "\"web-1\""
        );
        let disk = loaded
            .spans_of(Kind::Vm, "web-1")
            .and_then(|s| s.field("disk", 0))
            .expect("span");
        assert_eq!(&LAB[disk.offset()..disk.offset() + disk.len()], "\"root\"");
    }

    #[test]
    fn reports_every_error_together_in_source_order() {
        let text = LAB
            .replace("vlan=\"front\"", "vlan=\"frnt\"")
            .replace("cpus 1", "cpus 0")
            .replace("id=100", "id=5000");
        let errors = load_str("/repo/lab/main.kdl", &text).expect_err("invalid");
        let codes: Vec<String> = errors
            .iter()
            .map(|d| {
                miette::Diagnostic::code(d)
                    .map(|c| c.to_string())
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(
            codes,
            [
                "vmctl::schema::vlan_id_range",
                "vmctl::schema::too_small",
                "vmctl::schema::dangling_reference"
            ]
        );
    }

    #[test]
    fn derived_macs_never_collide_with_given_ones() {
        let taken = crate::derive::mac_address("lab", "web-1", 0, 0);
        let text = LAB.replace(
            "nic vlan=\"front\"",
            &format!("nic vlan=\"front\"\n    nic vlan=\"front\" mac=\"{taken}\""),
        );
        let loaded = load_str("/repo/lab/main.kdl", &text).expect("valid");
        let nics = &loaded.config.vms[0].nics;
        assert_eq!(nics[1].mac, taken);
        assert_ne!(nics[0].mac, taken);
    }
}
