//! The canonical form of a config file: node order kept; four-space indentation, one
//! node per line, strings always quoted, properties after arguments and in the
//! language's order, at most one blank line between nodes; comments kept.

use kdl::{KdlDocument, KdlEntryFormat, KdlNode, KdlValue};

use crate::diagnostics::{Diagnostics, Located, SchemaError};
use crate::language::{child_kind, top_level, NodeKind};
use crate::parse::parse;
use crate::source::SourceFile;

/// The canonical form of one file, or its syntax errors as diagnostics on that file.
pub fn format_source(file: &SourceFile) -> Result<String, Diagnostics> {
    format(&file.text).map_err(|errors| {
        Diagnostics(
            errors
                .into_iter()
                .map(|error| Located {
                    source: Some(file.named()),
                    file: None,
                    error,
                    note: None,
                })
                .collect(),
        )
    })
}

/// How many rendering passes may run before the result must have settled.
const MAX_PASSES: usize = 4;

/// `text` in canonical form, or its syntax errors.
///
/// Rendering runs until its output no longer changes, so formatting is idempotent by
/// construction. Every pass is parsed back and must mean the same as the input (same
/// nodes and values, comments aside); for the rare layout of comments that the kdl
/// crate cannot round-trip, the text is returned as written rather than risk it.
pub fn format(text: &str) -> Result<String, Vec<SchemaError>> {
    let original = parse(text)?;
    let meaning = meaning(&original);
    let mut current = text.to_owned();
    let mut document = parse(&keep_comments_after_blocks(text)).unwrap_or(original);
    for _ in 0..MAX_PASSES {
        let next = render(document);
        if next == current {
            return Ok(next);
        }
        match parse(&keep_comments_after_blocks(&next)) {
            Ok(parsed) if self::meaning(&parsed) == meaning => {
                current = next;
                document = parsed;
            }
            _ => return Ok(text.to_owned()),
        }
    }
    Ok(text.to_owned())
}

/// kdl 6.7 loses a comment after a block's closing brace when a space precedes it
/// (`} // end`), but keeps `}// end`: lines that start with `}` are given that form
/// before parsing. (Were such a line inside a multi-line string, the meaning check of
/// [`format`] would notice and leave the file as written.)
fn keep_comments_after_blocks(text: &str) -> std::borrow::Cow<'_, str> {
    let needs = |line: &str| {
        line.trim_start().strip_prefix('}').is_some_and(|rest| {
            rest.starts_with([' ', '\t']) && rest.trim_start().starts_with("//")
        })
    };
    if !text.lines().any(needs) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if needs(line) {
            let indent = &line[..line.len() - line.trim_start().len()];
            let rest = line.trim_start()[1..].trim_start();
            out.push_str(indent);
            out.push('}');
            out.push_str(rest);
        } else {
            out.push_str(line);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A document without its formatting and comments, properties sorted by name (their
/// order means nothing; a stable sort keeps "the last one wins"): what it means.
fn meaning(document: &KdlDocument) -> String {
    fn sort(document: &mut KdlDocument) {
        for node in document.nodes_mut() {
            node.entries_mut()
                .sort_by(|a, b| match (a.name(), b.name()) {
                    (None, None) => std::cmp::Ordering::Equal,
                    (None, Some(_)) => std::cmp::Ordering::Less,
                    (Some(_), None) => std::cmp::Ordering::Greater,
                    (Some(x), Some(y)) => x.value().cmp(y.value()),
                });
            if let Some(children) = node.children_mut() {
                sort(children);
            }
        }
    }
    let mut bare = document.clone();
    bare.clear_format_recursive();
    sort(&mut bare);
    bare.to_string()
}

/// One rendering pass.
fn render(mut document: KdlDocument) -> String {
    let mut kept = Vec::new();
    collect(&document, &mut kept);
    // kdl's autoformat normalises indentation and comment lines, but drops a comment
    // that ends a node's line and comments between entries: those are put back below.
    document.autoformat();
    let mut kept = kept.into_iter();
    restore(&mut document, None, 0, &mut kept);
    if let Some(format) = document.format_mut() {
        let lines: Vec<&str> = format
            .trailing
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        format.trailing = lines.iter().map(|l| format!("{l}\n")).collect();
    }
    let mut out = document.to_string();
    let trimmed = out.trim_start_matches('\n').len();
    out.drain(..out.len() - trimmed);
    if !out.ends_with('\n') && !out.is_empty() {
        out.push('\n');
    }
    out
}

/// What autoformat would lose of one node.
struct Kept {
    /// The lines before the node (comments, slashdashed nodes), trimmed, with runs of
    /// blank lines collapsed to one.
    leading: Vec<String>,
    /// Comments and slashdashed entries at the end of the line, before the terminator.
    before_terminator: String,
    /// A `// comment` that ends the node's line.
    line_comment: Option<String>,
    /// Comments and slashdashed entries between the last entry and `{`.
    before_children: String,
    /// Per entry, in source order: comments before it.
    entry_comments: Vec<String>,
}

/// The lines of the text before a node, trimmed, blank runs collapsed to one blank.
/// The last line is what stands on the node's own line before its name (indentation,
/// or the end of a block comment, or a slashdash): kept as the last element.
fn leading_lines(leading: &str) -> Vec<String> {
    let leading = normalise_newlines(leading);
    let mut lines: Vec<&str> = leading.split('\n').collect();
    let own_line = lines.pop().unwrap_or("").trim();
    // A slashdashed node may hold a multi-line string: keep its lines as they are.
    let verbatim = is_verbatim(&leading);
    let mut out: Vec<String> = Vec::new();
    for line in lines {
        let trimmed = line.trim();
        if trimmed == "\\"
            || (trimmed.starts_with('\\') && trimmed[1..].trim_start().starts_with("//"))
        {
            continue; // a line continuation between nodes means nothing
        }
        if trimmed.is_empty() && out.last().is_some_and(String::is_empty) {
            continue;
        }
        out.push(if verbatim {
            line.trim_end().to_owned()
        } else {
            trimmed.to_owned()
        });
    }
    out.push(own_line.trim_start_matches('\\').trim_start().to_owned());
    out
}

/// Whether lines before a node must be kept as written: a slashdashed node with a
/// multi-line string, whose meaning depends on its lines' indentation.
fn is_verbatim(leading: &str) -> bool {
    leading.contains("\"\"\"")
}

/// KDL's newlines (CRLF, CR, NEL, FF, LS, PS) as `\n`.
fn normalise_newlines(text: &str) -> String {
    text.replace("\r\n", "\n").replace(
        ['\r', '\u{85}', '\u{0B}', '\u{0C}', '\u{2028}', '\u{2029}'],
        "\n",
    )
}

/// Comments and slashdashes found between entries, made safe to put on one line: line
/// continuations (`\`) are dropped with any `// comment` after them, lines are joined.
fn inline(text: &str) -> String {
    let mut parts = Vec::new();
    let text = normalise_newlines(text);
    let lines: Vec<&str> = text.trim().lines().collect();
    if let Some((_, before_last)) = lines.split_last() {
        if before_last.iter().any(|l| l.contains("//")) {
            // A line comment (or what may be one) ends a line: joining would comment out
            // what follows it. Keep the text as written.
            return text.trim().to_owned();
        }
    }
    for line in lines {
        let mut line = line.trim();
        if let Some(rest) = line.strip_prefix('\\') {
            line = rest.trim();
            if line.starts_with("//") {
                continue;
            }
        }
        if let Some(rest) = line.strip_suffix('\\') {
            if !rest.ends_with('\\') {
                line = rest.trim();
            }
        }
        if !line.is_empty() {
            parts.push(line);
        }
    }
    parts.join(" ")
}

/// Records, in document order, what [`Kept`] holds for every node.
fn collect(document: &KdlDocument, out: &mut Vec<Kept>) {
    for node in document.nodes() {
        let format = node.format();
        let terminator = format.map_or("", |f| f.terminator.trim_start());
        out.push(Kept {
            leading: format.map_or(Vec::new(), |f| leading_lines(&f.leading)),
            before_terminator: format.map_or(String::new(), |f| inline(&f.before_terminator)),
            line_comment: terminator
                .starts_with("//")
                .then(|| terminator.trim_end().to_owned()),
            before_children: format.map_or(String::new(), |f| inline(&f.before_children)),
            entry_comments: node
                .entries()
                .iter()
                .map(|e| e.format().map_or(String::new(), |f| inline(&f.leading)))
                .collect(),
        });
        if let Some(children) = node.children() {
            collect(children, out);
        }
    }
}

/// Puts back what autoformat dropped, quotes strings and orders properties.
fn restore(
    document: &mut KdlDocument,
    parent: Option<&NodeKind>,
    depth: usize,
    kept: &mut impl Iterator<Item = Kept>,
) {
    for (i, node) in document.nodes_mut().iter_mut().enumerate() {
        let Some(k) = kept.next() else { return };
        let kind = match parent {
            None => top_level(node.name().value()),
            Some(p) => child_kind(p, node.name().value()),
        };
        canonical_entries(node, kind, &k.entry_comments);
        if let Some(format) = node.format_mut() {
            let indent = format.leading.rsplit('\n').next().unwrap_or("").to_owned();
            let (own_line, lines) = k
                .leading
                .split_last()
                .map_or(("", &[][..]), |(l, r)| (l.as_str(), r));
            let skip = if i == 0 {
                lines.iter().take_while(|l| l.is_empty()).count()
            } else {
                0
            };
            let mut leading = String::new();
            let verbatim = is_verbatim(&k.leading.join("\n"));
            for line in &lines[skip..] {
                if !line.is_empty() {
                    if !verbatim {
                        leading.push_str(&indent);
                    }
                    leading.push_str(line);
                }
                leading.push('\n');
            }
            leading.push_str(&indent);
            leading.push_str(own_line);
            format.leading = leading;
            format.before_terminator = match (k.before_terminator.is_empty(), &k.line_comment) {
                (true, None) => String::new(),
                (true, Some(_)) => " ".to_owned(),
                (false, None) => format!(" {}", k.before_terminator),
                (false, Some(_)) => format!(" {} ", k.before_terminator),
            };
            if !k.before_children.is_empty() {
                format.before_children = format!(" {} ", k.before_children);
            }
            format.terminator = match &k.line_comment {
                Some(comment) => format!("{comment}\n"),
                None => "\n".to_owned(),
            };
        }
        if let Some(children) = node.children_mut() {
            restore(children, kind, depth + 1, kept);
            if let Some(format) = children.format_mut() {
                let indent = "    ".repeat(depth + 1);
                let mut trailing: String = format
                    .trailing
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(|l| format!("{indent}{l}\n"))
                    .collect();
                // The closing brace's own indentation.
                trailing.push_str(&"    ".repeat(depth));
                format.trailing = trailing;
            }
        }
    }
}

fn canonical_entries(node: &mut KdlNode, kind: Option<&NodeKind>, comments: &[String]) {
    for (entry, comment) in node.entries_mut().iter_mut().zip(comments) {
        let is_string = matches!(entry.value(), KdlValue::String(_));
        if comment.is_empty() && !is_string {
            continue;
        }
        let value_repr = match entry.value() {
            KdlValue::String(s) => quote(s),
            other => other.to_string(),
        };
        let leading = if comment.is_empty() {
            " ".to_owned()
        } else {
            format!(" {comment} ")
        };
        entry.set_format(KdlEntryFormat {
            value_repr,
            leading,
            ..Default::default()
        });
    }
    let rank = |name: Option<&str>| -> usize {
        match name {
            None => 0,
            Some(n) => kind
                .and_then(|k| k.field(n))
                .map_or(usize::MAX, |(i, _)| i + 1),
        }
    };
    node.entries_mut()
        .sort_by_key(|e| rank(e.name().map(|n| n.value())));
}

/// A string as a KDL v2 quoted string.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0C}' => out.push_str("\\f"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_layout_and_keeps_comments() {
        let input = "// the lab\nproject lab\n\n\n\nvm web-1 memory=\"64MiB\"   host=local {\n  cpus 1 // one\n      kernel \"k\"\n\n  disk a\n}\n";
        let out = format(input).expect("formats");
        assert_eq!(
            out,
            "// the lab\nproject \"lab\"\n\nvm \"web-1\" host=\"local\" memory=\"64MiB\" {\n    cpus 1 // one\n    kernel \"k\"\n\n    disk \"a\"\n}\n"
        );
        assert_eq!(format(&out).expect("formats"), out);
    }

    #[test]
    fn quotes_strings_with_escapes() {
        let out = format("a \"x\\\"y\" #\"raw\\n\"#\n").expect("formats");
        assert_eq!(out, "a \"x\\\"y\" \"raw\\\\n\"\n");
    }

    #[test]
    fn keeps_comments_between_entries_and_slashdashes() {
        let input = "a x /* c */ y=2 /-z=3 // t\nb 1; c 2\n/-d\n";
        let out = format(input).expect("formats");
        assert_eq!(out, "a \"x\" /* c */ y=2 /-z=3 // t\nb 1\nc 2\n/-d\n");
        assert_eq!(format(&out).expect("formats"), out);
    }

    #[test]
    fn keeps_a_comment_after_a_closing_brace() {
        let input = "vm \"a\" {\n    cpus 1\n}   // the web server\nvm \"b\"\n";
        let out = format(input).expect("formats");
        assert_eq!(
            out,
            "vm \"a\" {\n    cpus 1\n} // the web server\nvm \"b\"\n"
        );
        assert_eq!(format(&out).expect("formats"), out);
    }

    #[test]
    fn syntax_errors_are_reported() {
        assert!(format("vm {").is_err());
    }
}
