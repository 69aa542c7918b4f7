//! Fuzzing the loader and the formatter with proptest: arbitrary bytes, and mutations
//! of valid configs (tokens that stress the KDL parser inserted, ranges deleted or
//! repeated). Properties: never a panic, never slow (a hang shows as a case over the
//! time limit), and `format` is idempotent whenever it succeeds.
//!
//! Runs a few hundred cases with `cargo test`; for a long run:
//! `PROPTEST_CASES=200000 cargo test --release -p vmctl-schema --test fuzz`.

use std::time::{Duration, Instant};

use proptest::prelude::*;

const SEEDS: &[&str] = &[
    concat!(
        include_str!("../../examples/quickstart/lab.kdl"),
        include_str!("../../examples/quickstart/vms.kdl")
    ),
    include_str!("../../examples/bad/over-capacity/main.kdl"),
    include_str!("../../examples/bad/dependency-cycle/main.kdl"),
    include_str!("../../examples/bad/template-cycle/main.kdl"),
];

/// Fragments that have broken KDL parsers: nesting, slashdash, strings, escapes.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "/-",
    "/-{",
    "\"",
    "#\"",
    "\"#",
    "\"\"\"",
    "##\"",
    "/*",
    "*/",
    "//",
    "\\",
    ";",
    "=",
    "(",
    ")",
    "#true",
    "#null",
    "#inf",
    "-",
    "0x",
    "1e999",
    "99999999999999999999999999999999999999999",
    "\n",
    " ",
    "\u{feff}",
    "\u{2028}",
    "é",
    "vm",
    "host=",
    "nic vlan=",
    "depends-on ",
    "disk ",
    "memory \"",
    "GiB",
    "mac=\"",
    "52:54:00:",
    "ff:ff",
    "%",
    "../",
    "{n}",
    "count=",
    "count=3",
    "template=",
    "template \"t\" ",
];

#[derive(Debug, Clone)]
enum Mutation {
    Insert(usize, usize),
    Delete(usize, usize),
    Repeat(usize, usize, usize),
    Byte(usize, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 0..TOKENS.len()).prop_map(|(at, t)| Mutation::Insert(at, t)),
        2 => (any::<usize>(), 0usize..40).prop_map(|(at, n)| Mutation::Delete(at, n)),
        1 => (any::<usize>(), 0usize..30, 1usize..40).prop_map(|(at, n, k)| Mutation::Repeat(at, n, k)),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Byte(at, b)),
    ]
}

fn floor_char(text: &str, at: usize) -> usize {
    let mut at = at % (text.len() + 1);
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn apply(text: &mut String, m: &Mutation) {
    match *m {
        Mutation::Insert(at, token) => {
            let at = floor_char(text, at);
            text.insert_str(at, TOKENS[token]);
        }
        Mutation::Delete(at, n) => {
            let start = floor_char(text, at);
            let end = floor_char(text, start + n).max(start);
            text.replace_range(start..end, "");
        }
        Mutation::Repeat(at, n, k) => {
            let start = floor_char(text, at);
            let end = floor_char(text, start + n).max(start);
            let piece = text[start..end].repeat(k);
            text.insert_str(end, &piece);
        }
        Mutation::Byte(at, b) => {
            let at = floor_char(text, at);
            text.insert(at, char::from(b));
        }
    }
}

const LIMIT: Duration = Duration::from_secs(3);

fn check(text: &str) -> Result<(), TestCaseError> {
    let start = Instant::now();
    let _ = vmctl_schema::load_str("fuzz.kdl", text);
    let loaded = start.elapsed();
    prop_assert!(loaded < LIMIT, "load took {loaded:?} on {text:?}");
    let start = Instant::now();
    if let Ok(formatted) = vmctl_schema::format(text) {
        let again = vmctl_schema::format(&formatted);
        if again.as_ref().ok() != Some(&formatted) {
            let again = again.unwrap_or_else(|e| format!("ERROR {e:?}"));
            let line = formatted
                .lines()
                .zip(again.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            let around = |t: &str| {
                t.lines()
                    .skip(line.saturating_sub(2))
                    .take(4)
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            prop_assert!(
                false,
                "format is not idempotent at line {}:\nonce:  {:?}\ntwice: {:?}\ninput: {:?}",
                line,
                around(&formatted),
                around(&again),
                text
            );
        }
        // The canonical form means the same: it loads exactly when the input does.
        let before = vmctl_schema::load_str("fuzz.kdl", text).map(|l| l.config);
        let after = vmctl_schema::load_str("fuzz.kdl", &formatted).map(|l| l.config);
        if before.as_ref().ok() != after.as_ref().ok() {
            prop_assert!(
                false,
                "format changed the meaning:\nbefore: {:?}\nafter:  {:?}\ninput: {:?}\nformatted: {:?}",
                before.map_err(|e| e.0.iter().map(|d| d.to_string()).collect::<Vec<_>>()),
                after.map_err(|e| e.0.iter().map(|d| d.to_string()).collect::<Vec<_>>()),
                text,
                formatted
            );
        }
    }
    let formatted = start.elapsed();
    prop_assert!(
        formatted < LIMIT * 3,
        "format took {formatted:?} on {text:?}"
    );
    Ok(())
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_or_hang(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn arbitrary_token_soup_never_panics_or_hangs(tokens in proptest::collection::vec(0..TOKENS.len(), 0..200)) {
        let text: String = tokens.iter().map(|&t| TOKENS[t]).collect();
        check(&text)?;
    }

    #[test]
    fn mutated_configs_never_panic_or_hang(
        seed in 0..SEEDS.len(),
        mutations in proptest::collection::vec(mutation(), 1..12),
    ) {
        let mut text = SEEDS[seed].to_owned();
        for m in &mutations {
            apply(&mut text, m);
        }
        check(&text)?;
    }
}

#[test]
fn known_pathological_inputs_are_fast() {
    let inputs = [
        format!("a {}", "/-{".repeat(40)),
        format!("a {}", "/-{ \"x\" ".repeat(40)),
        format!("a {}", "/-".repeat(5000)),
        "/*".repeat(5000),
        "a {".repeat(5000),
        format!("a {}", "/-{ #\"".repeat(40)),
    ];
    for input in inputs {
        check(&input).expect("fast and no panic");
    }
}
