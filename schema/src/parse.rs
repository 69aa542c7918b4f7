//! One file's text to a KDL document: the pre-parse limits, then the kdl crate (KDL
//! v2), its errors turned into our diagnostics.

use kdl::KdlDocument;
use miette::SourceSpan;

use crate::diagnostics::SchemaError;
use crate::guard;

/// Parses `text`; on failure, every syntax diagnostic the parser found.
pub fn parse(text: &str) -> Result<KdlDocument, Vec<SchemaError>> {
    guard::check(text).map_err(|e| vec![*e])?;
    KdlDocument::parse_v2(text).map_err(|error| {
        let mut out: Vec<SchemaError> = error
            .diagnostics
            .into_iter()
            .map(|d| SchemaError::Syntax {
                message: d.message.unwrap_or_else(|| "invalid KDL".to_owned()),
                span: d.span,
                label: d.label.unwrap_or_else(|| "here".to_owned()),
                help: v1_habit(text, d.span).map(str::to_owned).or(d.help),
            })
            .collect();
        if out.is_empty() {
            out.push(SchemaError::Syntax {
                message: "invalid KDL".to_owned(),
                span: SourceSpan::from((0, 0)),
                label: "here".to_owned(),
                help: None,
            });
        }
        out
    })
}

/// The help for a KDL v1 keyword at `span` (`prevent-destroy true`), which KDL v2
/// spells with a `#`.
fn v1_habit(text: &str, span: SourceSpan) -> Option<&'static str> {
    let rest = text.get(span.offset()..)?;
    let end = rest
        .find(|c: char| !c.is_ascii_alphanumeric() && c != '-')
        .unwrap_or(rest.len());
    match &rest[..end] {
        "true" | "false" => Some(crate::diagnostics::KDL_V2_BOOLEANS),
        "null" => Some("KDL v2 writes null as #null"),
        "inf" | "-inf" | "nan" => Some("KDL v2 writes these numbers as #inf, #-inf and #nan"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kdl_v2_and_reports_syntax_errors() {
        assert!(parse("vm \"a\" cpus=1 { memory \"64MiB\" }").is_ok());
        let errors = parse("vm \"a\" {").expect_err("unclosed block");
        assert!(matches!(errors[0], SchemaError::Syntax { .. }));
    }

    #[test]
    fn kdl_v1_booleans_get_the_v2_spelling() {
        for text in [
            "v \"a\" {\n    prevent-destroy true\n}",
            "x false",
            "x y=true",
        ] {
            let errors = parse(text).expect_err(text);
            let help = errors.iter().find_map(|e| match e {
                SchemaError::Syntax { help, .. } => help.clone(),
                _ => None,
            });
            assert_eq!(
                help.as_deref(),
                Some(crate::diagnostics::KDL_V2_BOOLEANS),
                "{text}"
            );
        }
        let errors = parse("x null").expect_err("null");
        assert!(
            matches!(&errors[0], SchemaError::Syntax { help: Some(h), .. } if h.contains("#null"))
        );
    }
}
