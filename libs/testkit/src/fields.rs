//! The field rules' accept/reject lists, and the check that a documented
//! JSON Schema accepts exactly what a validator accepts. The common crate
//! runs it on its schemas; each service runs it on the schemas in its own
//! OpenAPI document, so a hand-written pattern can never drift.

use regex::Regex;
use serde_json::Value;

/// Inputs with what the rules say of them.
#[derive(Debug)]
pub struct Samples {
    pub accepted: Vec<String>,
    pub rejected: Vec<String>,
}

fn owned(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Email addresses: ASCII local part, dot-separated ASCII labels, ≤ 254.
pub fn emails() -> Samples {
    let mut rejected = owned(&[
        "",
        "plain",
        "@x.io",
        "a@",
        "a@b",
        "a b@c.io",
        "a@b..io",
        "a@.b.io",
        "a@b.io.",
        " x@y.org",
        "x@y.org ",
        "a@b@c.io",
        "\u{fc}@x.io",
        "a@b\u{fc}cher.example",
        "a\u{7}@x.io",
    ]);
    rejected.push(format!("{}@x.io", "a".repeat(65)));
    rejected.push(format!("a@{}.io", "b".repeat(250)));
    let mut accepted = owned(&[
        "a@b.io",
        "first.last+tag@sub.example.com",
        "o'neil@xn--bcher-kva.example",
        "x@1-2.io",
        "Ann@Example.COM",
    ]);
    // Exactly 254 bytes.
    accepted.push(format!("{}@{}.io", "a".repeat(64), "b".repeat(186)));
    Samples { accepted, rejected }
}

/// Display names: 1–100 characters as sent, not blank, no control characters.
pub fn display_names() -> Samples {
    let mut accepted = owned(&[
        "Ann",
        "  Ann ",
        "Zoë O'Brien",
        "李小龍",
        "a\u{a0}b",
        "\u{2028}x",
        // Joiners and marks beside visible characters are part of names.
        "Ann\u{200d}",
        "\u{200f}\u{5e9}\u{5e8}\u{5d4}",
        "\u{feff}Ann",
    ]);
    accepted.push("é".repeat(100));
    accepted.push(format!("a{}", " ".repeat(99)));
    let mut rejected = owned(&[
        "",
        "   ",
        "\u{3000}\u{a0}",
        "\t",
        "a\u{7}b",
        "x\ny",
        "\u{85}x",
        "a\u{9f}",
        // Nothing visible: zero-width, BOM, fillers.
        "\u{feff}",
        "\u{200b}\u{200d}",
        " \u{2060} ",
        "\u{3164}",
        "\u{2800}\u{ffa0}",
        // Bidirectional overrides and isolates, wherever they are.
        "Ann\u{202e}nnA",
        "\u{2067}admin\u{2069}",
        "a\u{202a}",
    ]);
    rejected.push("é".repeat(101));
    rejected.push(format!("a{}", " ".repeat(100)));
    Samples { accepted, rejected }
}

/// What a JSON Schema string (`pattern`, `minLength`, `maxLength`, counted
/// in characters) says of `value`.
pub fn schema_accepts(schema: &Value, value: &str) -> bool {
    let chars = value.chars().count();
    let min_ok = schema["minLength"]
        .as_u64()
        .is_none_or(|min| chars as u64 >= min);
    let max_ok = schema["maxLength"]
        .as_u64()
        .is_none_or(|max| chars as u64 <= max);
    let pattern_ok = schema["pattern"].as_str().is_none_or(|pattern| {
        Regex::new(pattern)
            .unwrap_or_else(|err| panic!("pattern `{pattern}` does not compile: {err}"))
            .is_match(value)
    });
    min_ok && max_ok && pattern_ok
}

/// Asserts that `schema` and `validator` agree on every sample, and that
/// both accept the accepted ones and refuse the rejected ones.
pub fn assert_schema_agrees_with_validator(
    schema: &Value,
    validator: impl Fn(&str) -> bool,
    samples: &Samples,
) {
    assert!(
        schema["pattern"].is_string(),
        "the schema states no pattern: {schema}"
    );
    for value in &samples.accepted {
        assert!(validator(value), "the validator refuses {value:?}");
        assert!(
            schema_accepts(schema, value),
            "the schema refuses {value:?}: {schema}"
        );
    }
    for value in &samples.rejected {
        assert!(!validator(value), "the validator accepts {value:?}");
        assert!(
            !schema_accepts(schema, value),
            "the schema accepts {value:?}: {schema}"
        );
    }
}
