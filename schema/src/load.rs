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
use crate::spans::{Site, Spans};
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

impl Loaded {
    /// The file and span where the VM (or any resource: see [`Spans`]) named `name`
    /// was declared.
    pub fn vm_site(&self, name: &str) -> Option<Site> {
        let i = self.config.vms.iter().position(|v| v.name == name)?;
        let s = self.spans.vms.get(i)?;
        Some(s.site(s.name))
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
