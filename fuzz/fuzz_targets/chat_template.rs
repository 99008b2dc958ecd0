//! herd_rewardbench's Jinja chat-template renderer with an arbitrary template and conversation.
//! Input: `<template>\0<message>\x1e<message>...`; messages alternate user/assistant, a message
//! starting with `system:` is a system message. Rendering runs under small limits so a
//! runaway template ends in a fuel or output-size error quickly.
#![no_main]

use herd_rewardbench::chat::Message;
use herd_rewardbench::chat::{JinjaTemplate, RenderLimits, SpecialTokens};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
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
    let tokens = SpecialTokens {
        bos_token: Some("<s>".into()),
        eos_token: Some("</s>".into()),
        ..SpecialTokens::default()
    };
    let Ok(template) = JinjaTemplate::new(source, tokens) else {
        return;
    };
    let limits = RenderLimits {
        fuel: 200_000,
        max_output_bytes: 1 << 20,
    };
    let template = template.with_limits(limits);
    for add_generation_prompt in [false, true] {
        if let Ok(out) = template.render_with_generation_prompt(&messages, add_generation_prompt) {
            assert!(out.len() <= limits.max_output_bytes);
        }
    }
});
