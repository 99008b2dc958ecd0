//! Chat formatting against the Python tools, byte for byte.
//!
//! The goldens in `golden/chat_templates.json` come from `tests/golden/make_chat_goldens.py`
//! (real fschat 0.2.36 `get_conv_template(..).get_prompt()` and transformers 4.57
//! `apply_chat_template(.., tokenize=False)`); regenerate with
//! `$HOME/.cache/herd/venv-torch-2.11.0/bin/python tests/golden/make_chat_goldens.py`.

use herd_rewardbench::chat::{
    rewardbench_messages, strftime_utc, ChatError, ChatFormatter, FastChatTemplate, JinjaTemplate,
    Message, Prompt,
};
use serde_json::Value;

fn goldens() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/chat_templates.json"
    );
    let text = std::fs::read_to_string(path).expect("read chat goldens");
    serde_json::from_str(&text).expect("parse chat goldens")
}

fn messages(value: &Value) -> Vec<Message> {
    serde_json::from_value(value.clone()).expect("conversation is a list of {role, content}")
}

fn str_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string"))
}

/// Where two strings first differ, or `None` when they are equal.
fn difference(context: &str, got: &str, want: &str) -> Option<String> {
    if got == want {
        return None;
    }
    let at = got
        .char_indices()
        .zip(want.chars())
        .find(|((_, a), b)| a != b)
        .map(|((i, _), _)| i)
        .unwrap_or(got.len().min(want.len()));
    Some(format!(
        "{context}: rendering differs at byte {at}\n  got:  {got:?}\n  want: {want:?}\n  \
         (got from there {:?}, want from there {:?})",
        &got[at..],
        want.get(at..).unwrap_or(""),
    ))
}

fn assert_same(context: &str, got: &str, want: &str) {
    if let Some(diff) = difference(context, got, want) {
        panic!("{diff}");
    }
}

/// Fails with every collected problem at once.
fn report(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} golden mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_fastchat_template_matches_fschat() {
    let goldens = goldens();
    let conversations = &goldens["conversations"];
    let entries = goldens["fastchat"].as_array().unwrap();
    let mut checked = 0;
    let mut failures = Vec::new();
    for entry in entries {
        let name = str_of(entry, "template");
        let template = FastChatTemplate::by_name(name)
            .unwrap_or_else(|err| panic!("golden template {name} is missing: {err}"));
        let formatter = ChatFormatter::FastChat(template);
        assert_eq!(formatter.result_name(), name);
        for (conversation, want) in entry["outputs"].as_object().unwrap() {
            let context = format!("FastChat {name}/{conversation}");
            match formatter.render(&messages(&conversations[conversation])) {
                Ok(got) => failures.extend(difference(&context, &got, want.as_str().unwrap())),
                Err(err) => failures.push(format!("{context}: {err}")),
            }
            checked += 1;
        }
    }
    report(&failures);
    // Every template we offer is covered by a golden, and the other way round.
    let golden_names: Vec<&str> = entries.iter().map(|e| str_of(e, "template")).collect();
    let ours: Vec<&str> = FastChatTemplate::names().collect();
    assert_eq!(ours, golden_names);
    assert!(checked > 200, "only {checked} FastChat renderings checked");
}

#[test]
fn fastchat_templates_that_cannot_render_are_not_offered() {
    for name in goldens()["fastchat_unrenderable"].as_array().unwrap() {
        let name = name.as_str().unwrap();
        assert!(
            matches!(
                FastChatTemplate::by_name(name),
                Err(ChatError::UnknownTemplate { .. })
            ),
            "{name}"
        );
    }
}

#[test]
fn every_jinja_template_matches_transformers() {
    let goldens = goldens();
    let conversations = &goldens["conversations"];
    let mut checked = 0;
    let mut failures = Vec::new();
    for entry in goldens["jinja"].as_array().unwrap() {
        let name = str_of(entry, "name");
        let built = JinjaTemplate::from_tokenizer_config(&entry["tokenizer_config"]);
        for (conversation, want) in entry["outputs"].as_object().unwrap() {
            let context = format!("Jinja {name}/{conversation}");
            let result = match &built {
                Ok(Some(template)) => ChatFormatter::Jinja(template.clone())
                    .render(&messages(&conversations[conversation])),
                Ok(None) => panic!("{context}: no chat template found in tokenizer_config"),
                Err(err) => Err(err.clone()),
            };
            let failure = match (
                want.get("text"),
                want.get("error_kind").and_then(Value::as_str),
            ) {
                (Some(text), _) => match result {
                    Ok(got) => difference(&context, &got, text.as_str().unwrap()),
                    Err(err) => Some(format!("{context}: {err}")),
                },
                (None, Some("exception")) => match result {
                    Err(ChatError::TemplateException { message })
                        if message == str_of(want, "message") =>
                    {
                        None
                    }
                    other => Some(format!(
                        "{context}: expected raise_exception({:?}), got {other:?}",
                        str_of(want, "message")
                    )),
                },
                (None, Some("syntax")) => match &built {
                    Err(ChatError::TemplateSyntax { .. }) => None,
                    other => Some(format!(
                        "{context}: expected a syntax error when compiling, got {:?}",
                        other.as_ref().map(|_| "a template")
                    )),
                },
                _ => panic!("{context}: malformed golden {want}"),
            };
            failures.extend(failure);
            checked += 1;
        }
    }
    report(&failures);
    assert!(checked > 80, "only {checked} Jinja renderings checked");
}

#[test]
fn rewardbench_rows_match_prepare_dialogue() {
    let goldens = goldens();
    let jinja_configs: Vec<&Value> = goldens["jinja"].as_array().unwrap().iter().collect();
    for entry in goldens["rewardbench_rows"].as_array().unwrap() {
        let row = &entry["row"];
        let turns: Option<Vec<Message>> =
            row["prompt"].is_array().then(|| messages(&row["prompt"]));
        let prompt = match &turns {
            Some(turns) => Prompt::Turns(turns),
            None => Prompt::Text(str_of(row, "prompt")),
        };
        for (formatter_name, want) in entry["expected"].as_object().unwrap() {
            let formatter = match formatter_name.strip_prefix("jinja:") {
                Some(jinja_name) => {
                    let config = jinja_configs
                        .iter()
                        .find(|e| e["name"] == jinja_name)
                        .map(|e| &e["tokenizer_config"])
                        .unwrap();
                    ChatFormatter::select(Some(config), Some("tulu")).unwrap()
                }
                None => ChatFormatter::select(None, Some(formatter_name)).unwrap(),
            };
            let render = |response: Option<&str>| {
                formatter
                    .render(&rewardbench_messages(prompt, response).unwrap())
                    .unwrap()
            };
            let context = format!("{formatter_name} row {row}");
            assert_same(&context, &render(None), str_of(want, "prompt"));
            assert_same(
                &context,
                &render(Some(str_of(row, "chosen"))),
                str_of(want, "text_chosen"),
            );
            assert_same(
                &context,
                &render(Some(str_of(row, "rejected"))),
                str_of(want, "text_rejected"),
            );
        }
    }
}

#[test]
fn strftime_matches_python() {
    let goldens = goldens();
    let strftime = &goldens["strftime"];
    let formats: Vec<&str> = strftime["formats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    for time in strftime["times"].as_array().unwrap() {
        let secs = time["unix_seconds"].as_i64().unwrap();
        let expected = time["expected"].as_array().unwrap();
        assert_eq!(
            expected.len(),
            formats.len(),
            "strftime goldens at {secs}: one expected string per format"
        );
        for (format, want) in formats.iter().zip(expected) {
            assert_eq!(
                strftime_utc(format, secs),
                want.as_str().unwrap(),
                "strftime({format:?}) at {secs}"
            );
        }
    }
}

#[test]
fn unknown_fastchat_name_lists_the_known_ones() {
    let err = FastChatTemplate::by_name("tulu-3000").unwrap_err();
    let ChatError::UnknownTemplate { name, known } = &err else {
        panic!("unexpected error {err:?}");
    };
    assert_eq!(name, "tulu-3000");
    for expected in [
        "raw",
        "tulu",
        "Robin",
        "pku-align",
        "openbmb",
        "Ziya",
        "llama-2",
    ] {
        assert!(known.iter().any(|k| k == expected), "{expected} not listed");
    }
    let message = err.to_string();
    assert!(message.contains("\"tulu-3000\""), "{message}");
    assert!(message.contains("known templates: raw, "), "{message}");
    assert!(message.contains("pku-align, openbmb, Ziya"), "{message}");
}

#[test]
fn raise_exception_surfaces_its_message() {
    let config = serde_json::json!({
        "chat_template": "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}",
    });
    let formatter = ChatFormatter::select(Some(&config), None).unwrap();
    let err = formatter
        .render(&[Message::system("s"), Message::user("u")])
        .unwrap_err();
    assert!(
        matches!(&err, ChatError::TemplateException { message } if message == "System role not supported"),
        "{err:?}"
    );
    assert!(err.to_string().contains("System role not supported"));
}

#[test]
fn reference_examples_hold_exactly() {
    // tulu, prompt only (the DPO `prompt` column).
    let tulu = ChatFormatter::select(None, Some("tulu")).unwrap();
    let prompt = rewardbench_messages("How do I detail a car?", None).unwrap();
    assert_eq!(
        tulu.render(&prompt).unwrap(),
        "<|user|>\nHow do I detail a car?\n"
    );
    assert_eq!(tulu.result_name(), "tulu");

    // allenai/rlhf-test-tokenizer through its chat template.
    let goldens = goldens();
    let config = goldens["jinja"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "rlhf-test-tokenizer")
        .map(|e| e["tokenizer_config"].clone())
        .unwrap();
    let hf = ChatFormatter::select(Some(&config), Some("tulu")).unwrap();
    assert_eq!(hf.result_name(), "tokenizer");
    let conversation = rewardbench_messages("Q", Some("A")).unwrap();
    assert_eq!(
        hf.render(&conversation).unwrap(),
        "<|user|>\nQ<|endoftext|>\n<|assistant|>\nA<|endoftext|>\n"
    );

    // raw is plain concatenation.
    let raw = ChatFormatter::select(None, Some("raw")).unwrap();
    let conversation = rewardbench_messages("prompt ", Some("response")).unwrap();
    assert_eq!(raw.render(&conversation).unwrap(), "prompt response");
}

#[test]
fn goldens_can_fail() {
    // A one-character change in a golden must be caught by the comparison used above.
    let result =
        std::panic::catch_unwind(|| assert_same("probe", "<|user|>\nQ\n", "<|user|>\nQ \n"));
    assert!(result.is_err());
}
