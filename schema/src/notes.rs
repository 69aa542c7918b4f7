//! Saying where a diagnostic of an expanded resource comes from.
//!
//! Decoding and validation report each problem as a [`Found`]: the rule, its file and,
//! for a resource made from a `count` or from templates, a [`Context`] naming the
//! instance. The instances of one node share its spans, so one mistake in a template or
//! a counted node is found once per instance: [`merge`] makes those one diagnostic, and
//! writes its note — "in vm web-2, expanded from vm "web-{n}" count=3 at vms.kdl:12",
//! "in vm web-1 and db-1, from template "base"" — which the diagnostic shows under its
//! message.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use miette::Diagnostic;

use crate::diagnostics::{FileId, Located, Note, SchemaError};
use crate::source::{SourceFile, Sources};
use crate::spans::{Origin, Site};

/// The instance a problem was found in.
#[derive(Debug, Clone)]
pub struct Context {
    /// Its name, expanded (`web-2`).
    pub instance: String,
    pub origin: Arc<Origin>,
}

/// A problem as found: the rule, the file it points into, and the instance.
#[derive(Debug)]
pub struct Found {
    /// `None` for problems of no one file (no `project` at all).
    pub file: Option<FileId>,
    pub error: SchemaError,
    pub context: Option<Context>,
}

impl Found {
    pub fn new(file: FileId, error: SchemaError, context: Option<Context>) -> Self {
        Found {
            file: Some(file),
            error,
            context,
        }
    }

    /// Where the problem points: its file and first label.
    fn site(&self) -> Option<Site> {
        let span = self.error.labels()?.next()?.inner().to_owned();
        Some(Site {
            file: self.file?,
            span,
        })
    }

    /// What makes two problems the same one: file, rule, message, labels and help.
    fn key(&self) -> String {
        let mut key = format!("{:?}\u{0}{}\u{0}", self.file, self.error);
        if let Some(code) = self.error.code() {
            let _ = write!(key, "{code}\u{0}");
        }
        for label in self.error.labels().into_iter().flatten() {
            let _ = write!(
                key,
                "{}+{}:{}\u{0}",
                label.offset(),
                label.len(),
                label.label().unwrap_or("")
            );
        }
        if let Some(help) = self.error.help() {
            let _ = write!(key, "{help}");
        }
        key
    }
}

/// Every problem as a diagnostic: the same problem found in several instances once,
/// each with the note saying which instances.
pub fn merge(found: Vec<Found>, sources: &Sources) -> Vec<Located> {
    let mut entries: Vec<(Found, Vec<Context>)> = Vec::with_capacity(found.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for mut f in found {
        let Some(context) = f.context.take() else {
            entries.push((f, Vec::new()));
            continue;
        };
        let key = f.key();
        match seen.get(&key) {
            Some(&i) => entries[i].1.push(context),
            None => {
                seen.insert(key, entries.len());
                entries.push((f, vec![context]));
            }
        }
    }
    entries
        .into_iter()
        .map(|(f, contexts)| {
            let note = note(&contexts, f.site(), sources).map(Note);
            Located {
                source: f.file.and_then(|i| sources.get(i)).map(SourceFile::named),
                file: f.file,
                error: f.error,
                note,
            }
        })
        .collect()
}

/// The note of a problem found in these instances at `site`, if it needs one: when the
/// instances come from a `count`, or the problem is in a template.
pub fn note(contexts: &[Context], site: Option<Site>, sources: &Sources) -> Option<String> {
    let first = contexts.first()?;
    let origin = &first.origin;
    let same_origin = contexts.iter().all(|c| Arc::ptr_eq(&c.origin, origin));
    let counted = origin.count.as_ref().filter(|_| same_origin);
    let template = site.and_then(|s| origin.template_at(s)).filter(|t| {
        contexts.iter().all(|c| {
            c.origin
                .templates
                .iter()
                .any(|o| o.name == t.name && o.file == t.file)
        })
    });
    if counted.is_none() && template.is_none() {
        // An uncounted resource's own setting: its name is in the snippet already.
        return None;
    }
    let mut text = format!("in {} {}", origin.kind, names(contexts));
    if let Some(c) = counted {
        let _ = write!(
            text,
            ", expanded from {} \"{}\" count={} at {}",
            origin.kind,
            c.written,
            c.count,
            line_of(sources, c.site)
        );
    }
    if let Some(t) = template {
        let _ = write!(text, ", from template \"{}\"", t.name);
        let nearest = origin.templates.first().filter(|n| n.name != t.name);
        if let Some(n) = nearest.filter(|_| same_origin) {
            let _ = write!(text, " (through \"{}\")", n.name);
        }
    }
    Some(text)
}

/// `web-1`, `web-1 and web-2`, `web-1, web-2 and web-3`, `web-1, web-2, web-3 and 7
/// more`: each name once, in order.
fn names(contexts: &[Context]) -> String {
    let mut unique: Vec<&str> = Vec::new();
    for c in contexts {
        if !unique.contains(&c.instance.as_str()) {
            unique.push(&c.instance);
        }
    }
    match unique.as_slice() {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [rest @ .., last] if unique.len() <= 4 => format!("{} and {last}", rest.join(", ")),
        many => format!("{} and {} more", many[..3].join(", "), many.len() - 3),
    }
}

/// `path:line` of a site.
fn line_of(sources: &Sources, site: Site) -> String {
    match sources.position(site) {
        Some((path, line, _)) => format!("{}:{line}", path.display()),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contexts(names: &[&str]) -> Vec<Context> {
        let origin = Arc::new(Origin {
            kind: "vm",
            count: None,
            templates: Vec::new(),
        });
        names
            .iter()
            .map(|n| Context {
                instance: (*n).to_owned(),
                origin: Arc::clone(&origin),
            })
            .collect()
    }

    #[test]
    fn names_are_listed_once_and_many_are_cut_short() {
        assert_eq!(names(&contexts(&["a"])), "a");
        assert_eq!(names(&contexts(&["a", "b", "a"])), "a and b");
        assert_eq!(names(&contexts(&["a", "b", "c", "d"])), "a, b, c and d");
        assert_eq!(
            names(&contexts(&["a", "b", "c", "d", "e"])),
            "a, b, c and 2 more"
        );
    }

    #[test]
    fn an_uncounted_resources_own_setting_needs_no_note() {
        let sources = Sources::default();
        let site = Site {
            file: 0,
            span: (0, 1).into(),
        };
        assert_eq!(note(&contexts(&["a"]), Some(site), &sources), None);
    }
}
