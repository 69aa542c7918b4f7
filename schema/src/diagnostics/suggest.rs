//! "Did you mean": the closest declared name to one that is not.

/// "did you mean `x`?" for the closest candidate, or the list of candidates.
pub fn suggest<'a>(found: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    let mut best: Option<(f64, &str)> = None;
    let mut all = Vec::new();
    for c in candidates {
        let score = strsim::jaro_winkler(found, c);
        if score > 0.8 && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, c));
        }
        if all.len() < 12 {
            all.push(c);
        }
    }
    match best {
        Some((_, c)) => format!("did you mean `{c}`?"),
        None if all.is_empty() => "there is none declared".to_owned(),
        None => format!(
            "expected one of: {}",
            all.iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_closest_name() {
        assert_eq!(suggest("web1", ["web-1", "db-1"]), "did you mean `web-1`?");
        assert_eq!(suggest("zzz", ["a", "b"]), "expected one of: `a`, `b`");
        assert_eq!(suggest("x", []), "there is none declared");
    }
}
