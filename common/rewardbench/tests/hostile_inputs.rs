//! Hostile datasets, chat templates and rewards: each ends in an error that names the
//! file (and row and field) or the limit, quickly, never in a panic or a runaway allocation.

use std::time::{Duration, Instant};

use herd_rewardbench::chat::{ChatError, JinjaTemplate, Message, RenderLimits, SpecialTokens};
use herd_rewardbench::dataset::v2::parse_best_of_n;
use herd_rewardbench::dataset::{parse_pairs, DataFormat};
use herd_rewardbench::v1::is_win;

// ---------------------------------------------------------------------------------------------
// chat templates

fn conversation() -> Vec<Message> {
    vec![Message::user("Hello"), Message::assistant("Hi!")]
}

/// Renders `source` with the default limits; the error, and how long it took.
fn render_error(source: &str) -> (ChatError, Duration) {
    let template = JinjaTemplate::new(source, SpecialTokens::default()).unwrap();
    let start = Instant::now();
    match template.render(&conversation()) {
        Ok(out) => panic!("{source:?} rendered {} bytes", out.len()),
        Err(e) => (e, start.elapsed()),
    }
}

#[test]
fn endless_loops_run_out_of_fuel() {
    for source in [
        "{% for i in range(1000000000) %}x{% endfor %}",
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
        "{% for m in messages * 100000000 %}{{ m.content }}{% endfor %}",
    ] {
        let (error, took) = render_error(source);
        assert!(
            matches!(
                error,
                ChatError::OutOfFuel { .. } | ChatError::Render { .. }
            ),
            "{source}: {error}"
        );
        assert!(took < Duration::from_secs(10), "{source}: {took:?}");
    }
}

#[test]
fn huge_output_is_bounded() {
    for source in [
        // one expression asking for 10 GB
        "{{ 'x' * 10000000000 }}",
        "{{ messages[0].content * 1000000000 }}",
        // doubling a string 40 times (1 TiB)
        "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
        // a long loop with large output each step
        "{% for i in range(1000000) %}{{ 'y' * 1000 }}{% endfor %}",
        "{{ range(100000000) | join(',') }}",
    ] {
        let (error, took) = render_error(source);
        assert!(
            matches!(
                error,
                ChatError::OutOfFuel { .. }
                    | ChatError::OutputTooLarge { .. }
                    | ChatError::Render { .. }
            ),
            "{source}: {error}"
        );
        assert!(took < Duration::from_secs(10), "{source}: {took:?}");
    }
}

#[test]
fn output_cap_applies_to_ordinary_templates() {
    let template = JinjaTemplate::new(
        "{% for m in messages %}{{ m.content }}{% endfor %}",
        SpecialTokens::default(),
    )
    .unwrap()
    .with_limits(RenderLimits {
        fuel: 1_000_000,
        max_output_bytes: 100,
    });
    let error = template
        .render(&[Message::user("z".repeat(101))])
        .unwrap_err();
    assert!(
        matches!(error, ChatError::OutputTooLarge { max_bytes: 100 }),
        "{error}"
    );
    assert!(error.to_string().contains("100 bytes"), "{error}");
}

#[test]
fn endless_recursion_is_an_error() {
    let (error, _) = render_error("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
    assert!(
        matches!(
            error,
            ChatError::Render { .. } | ChatError::OutOfFuel { .. }
        ),
        "{error}"
    );
}

#[test]
fn templates_cannot_reach_outside() {
    // no loader: include/import/extends of files fail; no attribute access to Python internals
    for source in [
        "{% include '/etc/passwd' %}",
        "{% import 'x.jinja' as x %}",
        "{% extends '../../../etc/passwd' %}",
    ] {
        let (error, _) = render_error(source);
        assert!(
            matches!(error, ChatError::Render { .. }),
            "{source}: {error}"
        );
    }
    let template = JinjaTemplate::new(
        "{{ messages.__class__ }}{{ ''.__class__.__mro__ }}",
        SpecialTokens::default(),
    )
    .unwrap();
    let out = template.render(&conversation()).unwrap_or_default();
    assert!(!out.contains("class"), "{out}");
}

#[test]
fn broken_template_syntax_is_a_syntax_error() {
    let deep = "{% if true %}".repeat(10_000);
    for source in [
        "{% for %}",
        "{{",
        "{% endfor %}",
        "{{ 1 +* 2 }}",
        deep.as_str(),
    ] {
        match JinjaTemplate::new(source, SpecialTokens::default()) {
            Err(ChatError::TemplateSyntax { .. }) => {}
            Err(other) => panic!("{source:.40}: {other}"),
            Ok(_) => panic!("{source:.40} compiled"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// datasets

fn pairs_error(file: &str, text: &str) -> String {
    match parse_pairs(
        file,
        text,
        DataFormat::from_path(std::path::Path::new(file)),
    ) {
        Ok(rows) => panic!("{text:.80} parsed into {} rows", rows.len()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn nan_and_infinite_numbers_are_refused_naming_file_and_row() {
    for text in [
        r#"{"id": NaN, "prompt": "p", "chosen": "a", "rejected": "b"}"#,
        r#"{"id": 1, "prompt": "p", "chosen": "a", "rejected": "b", "score": Infinity}"#,
        r#"{"id": 1e400, "prompt": "p", "chosen": "a", "rejected": "b"}"#,
    ] {
        let error = pairs_error("hostile.jsonl", &format!("{text}\n"));
        assert!(error.starts_with("hostile.jsonl: row 1"), "{text}: {error}");
    }
    // an id that is a finite non-integer number is not an id
    let error = pairs_error(
        "hostile.jsonl",
        "{\"id\": 1.5, \"prompt\": \"p\", \"chosen\": \"a\", \"rejected\": \"b\"}\n",
    );
    assert!(error.contains("\"id\""), "{error}");
}

#[test]
fn missing_and_mistyped_fields_name_file_row_and_field() {
    let good = r#"{"id": 1, "prompt": "p", "chosen": "a", "rejected": "b"}"#;
    for (row, field) in [
        (r#"{"id": 2, "prompt": "p", "chosen": "a"}"#, "rejected"),
        (r#"{"id": 2, "prompt": "p", "rejected": "b"}"#, "chosen"),
        (r#"{"id": 2, "chosen": "a", "rejected": "b"}"#, "prompt"),
        (
            r#"{"id": 2, "prompt": null, "chosen": "a", "rejected": "b"}"#,
            "prompt",
        ),
        (
            r#"{"id": 2, "prompt": "p", "chosen": 7, "rejected": "b"}"#,
            "chosen",
        ),
        (
            r#"{"id": 2, "prompt": [{"x": 1}], "chosen": "a", "rejected": "b"}"#,
            "prompt",
        ),
        (
            r#"{"id": {}, "prompt": "p", "chosen": "a", "rejected": "b"}"#,
            "id",
        ),
    ] {
        let error = pairs_error("hostile.jsonl", &format!("{good}\n{row}\n"));
        assert!(
            error.contains("hostile.jsonl: row 2") && error.contains(&format!("\"{field}")),
            "{row}: {error}"
        );
    }
    let error = match parse_best_of_n(
        "bon.jsonl",
        r#"{"id": 1, "prompt": "p", "chosen": ["a"], "rejected": "b"}"#,
        Some(DataFormat::JsonLines),
    ) {
        Ok(_) => panic!("parsed"),
        Err(e) => e.to_string(),
    };
    assert!(
        error.contains("bon.jsonl") && error.contains("rejected"),
        "{error}"
    );
}

#[test]
fn rows_that_are_not_objects_and_deep_nesting_are_refused() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    for (file, text) in [
        ("hostile.json", deep.as_str()),
        ("hostile.jsonl", "[1, 2]\n"),
        ("hostile.json", "[1, 2]"),
        ("hostile.json", "\"just a string\""),
        (
            "hostile.jsonl",
            "{\"id\": 1, \"prompt\": \"p\", \"chosen\": \"a\", \"rejected\": \"b\"}\n{",
        ),
    ] {
        let error = pairs_error(file, text);
        assert!(error.starts_with(file), "{text:.40}: {error}");
    }
}

/// Giant rows are accepted: herd keeps no per-row size limit (a 50 MB completion is odd but valid
/// JSON; the tokenizer truncates it to the model's window from the left later). Parsing stays
/// linear.
#[test]
fn giant_row_is_accepted() {
    let giant = "x".repeat(50 << 20);
    let text =
        format!("{{\"id\": 1, \"prompt\": \"p\", \"chosen\": \"{giant}\", \"rejected\": \"b\"}}\n");
    let start = Instant::now();
    let rows = parse_pairs("giant.jsonl", &text, Some(DataFormat::JsonLines)).unwrap();
    assert_eq!(rows[0].chosen.len(), 50 << 20);
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// rewards

#[test]
fn nan_and_infinite_rewards_never_win() {
    let bad = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY];
    for x in bad {
        assert!(!is_win(&[x], &[0.0]), "{x} vs 0");
        assert!(!is_win(&[0.0], &[x]), "0 vs {x}");
        assert!(!is_win(&[x], &[x]), "{x} vs {x}");
        assert!(!is_win(&[1.0, x], &[0.0, 0.0]), "[1, {x}]");
        assert!(!is_win(&[1.0], &[0.0, x]), "rejected [0, {x}]");
    }
    assert!(!is_win(&[f64::INFINITY], &[f64::NEG_INFINITY]));
    // finite rewards still compare
    assert!(is_win(&[1.0], &[0.0]));
    assert!(!is_win(&[0.0], &[1.0]));
    assert!(is_win(&[f64::MAX], &[f64::MIN]));
}

// ---------------------------------------------------------------------------------------------
// fuzz seeds on stable: the targets' committed seeds and byte mutations of them, through the same
// entry points as the cargo-fuzz targets of fuzz/

use herd_testkit::fuzz_seeds as stable_replay;

fn fuzz_seeds(target: &str) -> Vec<Vec<u8>> {
    stable_replay::seeds_and_mutations(target, stable_replay::Mutations::Text)
}

#[test]
fn fuzz_seeds_and_mutations_of_datasets_never_panic() {
    for target in ["dataset_jsonl", "dataset_json"] {
        for bytes in fuzz_seeds(target) {
            let Ok(text) = std::str::from_utf8(&bytes) else {
                continue;
            };
            let _ = parse_pairs("fuzz.jsonl", text, Some(DataFormat::JsonLines));
            let _ = parse_best_of_n("fuzz.jsonl", text, Some(DataFormat::JsonLines));
            let _ = parse_pairs("fuzz.json", text, Some(DataFormat::Json));
            let _ = parse_pairs("fuzz", text, None);
        }
    }
}

#[test]
fn fuzz_seeds_and_mutations_of_chat_templates_never_panic() {
    let limits = RenderLimits {
        fuel: 200_000,
        max_output_bytes: 1 << 20,
    };
    for bytes in fuzz_seeds("chat_template") {
        let text = String::from_utf8_lossy(&bytes);
        let (source, conversation) = text.split_once('\0').unwrap_or((&text, ""));
        let messages: Vec<Message> = conversation
            .split('\u{1e}')
            .filter(|m| !m.is_empty())
            .enumerate()
            .map(|(i, m)| match m.strip_prefix("system:") {
                Some(rest) => Message::system(rest),
                None if i % 2 == 0 => Message::user(m),
                None => Message::assistant(m),
            })
            .collect();
        let Ok(template) = JinjaTemplate::new(source, SpecialTokens::default()) else {
            continue;
        };
        if let Ok(out) = template.with_limits(limits).render(&messages) {
            assert!(out.len() <= limits.max_output_bytes);
        }
    }
}
