//! The loader: files to a validated [`Config`], or every diagnostic at once.
//!
//! Files are read, parsed and decoded in parallel (rayon), each exactly once; each
//! KDL document is dropped as soon as it is decoded (templates, and the vms that use
//! one, are kept as owned nodes). Once all files are decoded, the vms with templates are
//! expanded over them; the whole-config checks then run once over the merged model, on
//! the expanded names. Problems found in several instances of one node are reported
//! once (`notes.rs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;

use crate::decode::{decode, template, Decl, Decoded, Resource};
use crate::diagnostics::{is_warning, Diagnostics, FileId, Located, SchemaError};
use crate::model::Config;
use crate::notes::{Context, Found};
use crate::parse::parse;
use crate::source::{discover, read, SourceFile, Sources};
use crate::spans::{ResourceSpans, Site, Spans};
use crate::validate::{validate, Report};

/// A validated config with where everything came from.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    /// The files, for pointing diagnostics at them.
    pub sources: Sources,
    /// Where each resource was declared, index for index with `config`.
    pub spans: Spans,
    /// What is not wrong but likely unintended (a template no vm uses), in order.
    pub warnings: Vec<Located>,
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

    /// The note of a later diagnostic at `site` about the resources of `kind` named
    /// `names` (`kernel` of vms from one template): which instances of a `count` or a
    /// template they are, as the loader's own diagnostics say it.
    pub fn note(&self, kind: Kind, names: &[&str], site: Site) -> Option<String> {
        let contexts: Vec<Context> = names
            .iter()
            .filter_map(|name| {
                let origin = self.spans_of(kind, name)?.origin.as_ref()?;
                Some(Context {
                    instance: (*name).to_owned(),
                    origin: Arc::clone(origin),
                })
            })
            .collect();
        crate::notes::note(&contexts, Some(site), &self.sources)
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
            note: None,
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
    let mut found: Vec<Found> = Vec::new();
    let mut decls: Vec<Decl> = Vec::with_capacity(
        results.iter().map(|r| r.decoded.decls.len()).sum::<usize>()
            + results
                .iter()
                .flat_map(|r| &r.decoded.deferred)
                .map(|d| d.count.map_or(1, |c| c.n as usize))
                .sum::<usize>(),
    );
    let mut templates = Vec::new();
    let mut deferred = Vec::new();
    let mut project_sites: Vec<(String, Site)> = Vec::new();
    // A file that could not be read or parsed may hold the `project` node.
    let mut all_parsed = true;
    for (id, result) in results.into_iter().enumerate() {
        if let Some(error) = result.read_error {
            located.push(Located {
                source: None,
                file: Some(id),
                error,
                note: None,
            });
        }
        let d = result.decoded;
        all_parsed &= d.parsed;
        found.extend(d.errors);
        project_sites.extend(
            d.projects
                .into_iter()
                .map(|(n, span)| (n, Site { file: id, span })),
        );
        decls.extend(d.decls);
        templates.extend(d.templates);
        deferred.extend(d.deferred);
        sources.files.push(result.source);
    }

    let mut report = Report::new(&sources);
    report.errors = found;
    let project = check_project(&project_sites, all_parsed, &mut report);
    decls.extend(template::resolve(&templates, deferred, &mut report));
    drop(templates);
    let (mut config, spans) = assemble(project, decls);
    validate(&mut config, &spans, &mut report);
    let mut spans = spans;
    spans.project = project_sites.first().map(|(_, s)| *s);

    located.extend(crate::notes::merge(report.errors, &sources));
    located.sort_by_key(|l| (l.file.map_or(0, |f| f + 1), l.offset()));
    if located.iter().all(|l| is_warning(l)) {
        return Ok(Loaded {
            config,
            sources,
            spans,
            warnings: located,
        });
    }
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
            errors: errors
                .into_iter()
                .map(|e| Found::new(id, e, None))
                .collect(),
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
            report.errors.push(Found {
                file: None,
                error: SchemaError::Project {
                    problem: "the config has no `project` node".to_owned(),
                    span: None,
                },
                context: None,
            });
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

/// The model and its spans from every declaration, in the order they are written (the
/// vms with templates were decoded last).
fn assemble(project: String, mut decls: Vec<Decl>) -> (Config, Spans) {
    fn push<T>(items: &mut Vec<T>, spans: &mut Vec<ResourceSpans>, item: T, s: ResourceSpans) {
        items.push(item);
        spans.push(s);
    }
    decls.sort_by_key(|d| d.key);
    let mut c = Config::new(project);
    let mut s = Spans::default();
    for d in decls {
        match d.resource {
            Resource::Host(r) => push(&mut c.hosts, &mut s.hosts, r, d.spans),
            Resource::Network(r) => push(&mut c.networks, &mut s.networks, r, d.spans),
            Resource::Vlan(r) => push(&mut c.vlans, &mut s.vlans, r, d.spans),
            Resource::Pool(r) => push(&mut c.pools, &mut s.pools, r, d.spans),
            Resource::Volume(r) => push(&mut c.volumes, &mut s.volumes, r, d.spans),
            Resource::Vm(r) => push(&mut c.vms, &mut s.vms, r, d.spans),
        }
    }
    (c, s)
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
            .expect("span")
            .span;
        assert_eq!(&LAB[disk.offset()..disk.offset() + disk.len()], "\"root\"");
    }

    fn codes_of(errors: &Diagnostics) -> Vec<String> {
        errors
            .iter()
            .map(|d| {
                miette::Diagnostic::code(d)
                    .map(|c| c.to_string())
                    .unwrap_or_default()
            })
            .collect()
    }

    #[test]
    fn reports_every_error_together_in_source_order() {
        let text = LAB
            .replace("vlan=\"front\"", "vlan=\"frnt\"")
            .replace("cpus 1", "cpus 0")
            .replace("id=100", "id=5000");
        let errors = load_str("/repo/lab/main.kdl", &text).expect_err("invalid");
        let codes = codes_of(&errors);
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
    fn migration_settings_load_with_defaults_and_checks() {
        let loaded = load_str("/repo/lab/main.kdl", LAB).expect("valid");
        let (host, vm) = (&loaded.config.hosts[0], &loaded.config.vms[0]);
        assert!(vm.migrate);
        assert_eq!(
            (vm.migration_downtime, host.migration_downtime),
            (None, None)
        );
        assert!(host.cpuid_mask.is_empty() && vm.cpuid_mask.is_empty());
        let text = LAB
            .replace(
                "host \"local\"\n",
                "host \"local\" {\n    cpuid-mask \"AVX512F\" \"sse4.2\" \"avx512f\"\n    migration-downtime \"1.5s\"\n}\n",
            )
            .replace("    cpus 1\n", "    cpus 1\n    migrate #false\n    migration-downtime \"50ms\"\n");
        let loaded = load_str("/repo/lab/main.kdl", &text).expect("valid");
        let (host, vm) = (&loaded.config.hosts[0], &loaded.config.vms[0]);
        assert_eq!(host.cpuid_mask, ["avx512f", "sse4_2"]);
        assert_eq!(host.migration_downtime, Some(1500));
        assert!(!vm.migrate);
        assert_eq!(vm.migration_downtime, Some(50));
        let text = LAB
            .replace(
                "host \"local\"\n",
                "host \"local\" { cpuid-mask \"avx1024\"; }\n",
            )
            .replace(
                "    cpus 1\n",
                "    cpus 1\n    migration-downtime \"2m\"\n",
            );
        let errors = load_str("/repo/lab/main.kdl", &text).expect_err("invalid");
        let codes = codes_of(&errors);
        assert_eq!(
            codes,
            [
                "vmctl::schema::unknown_value",
                "vmctl::schema::invalid_value"
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
