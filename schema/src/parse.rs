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
                help: d.help,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kdl_v2_and_reports_syntax_errors() {
        assert!(parse("vm \"a\" cpus=1 { memory \"64MiB\" }").is_ok());
        let errors = parse("vm \"a\" {").expect_err("unclosed block");
        assert!(matches!(errors[0], SchemaError::Syntax { .. }));
    }
}
