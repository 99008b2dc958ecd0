//! Chat formatting: turning a prompt and a response into the exact text RewardBench scores.
//!
//! RewardBench (`rewardbench/utils.py::load_eval_dataset`) formats every row in one of two ways:
//!
//! - the tokenizer defines a chat template (`tokenizer_config.json` `chat_template`): the HF path,
//!   `tokenizer.apply_chat_template(messages, tokenize=False)` without a generation prompt. The
//!   tokenizer's template wins over `--chat_template`. Here: [`JinjaTemplate`], rendered by
//!   minijinja configured like transformers 4.57.
//! - otherwise the FastChat path, `conv = get_conv_template(args.chat_template)`, then
//!   `conv.get_prompt()` (fschat 0.2.36 plus RewardBench's own `pku-align`, `openbmb`, `Ziya`).
//!   Here: [`FastChatTemplate`].
//!
//! [`ChatFormatter`] wraps both; [`rewardbench_messages`] builds the conversation from a row the way
//! RewardBench does. Both are checked byte for byte against the Python tools by
//! `common/rewardbench/tests/chat_golden.rs` (goldens from `tests/golden/make_chat_goldens.py`).

mod fastchat;
mod jinja;

pub use fastchat::{FastChatTemplate, SeparatorStyle};
pub use jinja::{strftime_utc, JinjaTemplate, RenderLimits, SpecialTokens};

use serde::{Deserialize, Serialize};

/// One turn of a conversation, as chat templates see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }

    /// A `user` turn.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    /// An `assistant` turn.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }

    /// A `system` turn.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
}

/// Everything that can go wrong while choosing a template or formatting a conversation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    #[error("unknown FastChat chat template {name:?}; known templates: {}", known.join(", "))]
    UnknownTemplate { name: String, known: Vec<String> },

    #[error(
        "no chat template: the tokenizer defines none and no FastChat template name was given"
    )]
    NoTemplate,

    #[error("the prompt has no turns (RewardBench needs at least one user turn)")]
    EmptyPrompt,

    #[error(
        "a multi-turn prompt must end with a user turn, but it has {turns} turns, so after \
         RewardBench re-assigns roles by position (user, assistant, user, ...) the last one is an \
         assistant turn"
    )]
    PromptEndsWithAssistant { turns: usize },

    #[error(
        "FastChat template {template:?} cannot render message {index} with role {role:?}: it takes \
         an optional leading \"system\" message, then \"user\" and \"assistant\" messages"
    )]
    UnsupportedRole {
        template: String,
        role: String,
        index: usize,
    },

    #[error("chat template syntax error: {detail}")]
    TemplateSyntax { detail: String },

    /// The template called `raise_exception(message)`; `message` is exactly its argument.
    #[error("chat template raised an exception: {message}")]
    TemplateException { message: String },

    #[error("chat template rendering failed: {detail}")]
    Render { detail: String },

    #[error(
        "chat template ran out of its rendering budget ({fuel} instructions); it probably loops \
         for too long"
    )]
    OutOfFuel { fuel: u64 },

    #[error("chat template output exceeds the limit of {max_bytes} bytes")]
    OutputTooLarge { max_bytes: usize },

    #[error("invalid tokenizer_config.json: {detail}")]
    InvalidTokenizerConfig { detail: String },

    #[error(
        "tokenizer_config.json has several chat templates ({}) and none is named \"default\"",
        names.join(", ")
    )]
    NoDefaultTemplate { names: Vec<String> },
}

/// The formatter RewardBench would use for a model: the tokenizer's Jinja template, or a FastChat
/// template by name.
#[derive(Clone, Debug)]
pub enum ChatFormatter {
    Jinja(JinjaTemplate),
    FastChat(FastChatTemplate),
}

impl ChatFormatter {
    /// Chooses like RewardBench's `run_rm.py`: the FastChat name (if given) must exist, but a
    /// chat template in `tokenizer_config` takes precedence over it.
    pub fn select(
        tokenizer_config: Option<&serde_json::Value>,
        fastchat_name: Option<&str>,
    ) -> Result<Self, ChatError> {
        let fastchat = fastchat_name.map(FastChatTemplate::by_name).transpose()?;
        if let Some(config) = tokenizer_config {
            if let Some(template) = JinjaTemplate::from_tokenizer_config(config)? {
                return Ok(Self::Jinja(template));
            }
        }
        fastchat.map(Self::FastChat).ok_or(ChatError::NoTemplate)
    }

    /// The conversation as one string, without a generation prompt: what
    /// `apply_chat_template(messages, tokenize=False)` or FastChat's `conv.get_prompt()` returns.
    pub fn render(&self, messages: &[Message]) -> Result<String, ChatError> {
        match self {
            Self::Jinja(template) => template.render(messages),
            Self::FastChat(template) => template.render(messages),
        }
    }

    /// What RewardBench writes as `chat_template` in its results: `"tokenizer"` for the tokenizer's
    /// template, else the FastChat template name.
    pub fn result_name(&self) -> &str {
        match self {
            Self::Jinja(_) => "tokenizer",
            Self::FastChat(template) => template.name(),
        }
    }
}

/// A row's prompt: a plain string (the core RewardBench set) or a list of turns (prior sets).
#[derive(Clone, Copy, Debug)]
pub enum Prompt<'a> {
    Text(&'a str),
    Turns(&'a [Message]),
}

impl<'a> From<&'a str> for Prompt<'a> {
    fn from(text: &'a str) -> Self {
        Prompt::Text(text)
    }
}

impl<'a> From<&'a [Message]> for Prompt<'a> {
    fn from(turns: &'a [Message]) -> Self {
        Prompt::Turns(turns)
    }
}

impl<'a> From<&'a Vec<Message>> for Prompt<'a> {
    fn from(turns: &'a Vec<Message>) -> Self {
        Prompt::Turns(turns)
    }
}

/// Builds the conversation RewardBench formats for a row (`prepare_dialogue*` in
/// `rewardbench/utils.py`).
///
/// - a text prompt gives `[user: prompt, assistant: response]`;
/// - a list of turns keeps only the contents: roles are re-assigned by position (user, assistant,
///   user, ...), so the list must have an odd length (end on a user turn), then the response is
///   appended as an assistant turn;
/// - `response: None` leaves the response out: the templated `prompt` column of the DPO path.
///
/// RewardBench asserts the last prompt turn is a user turn by comparing FastChat role strings;
/// with `raw` (both roles `""`) that check cannot fail there, while this function always
/// requires an odd number of turns.
pub fn rewardbench_messages<'a>(
    prompt: impl Into<Prompt<'a>>,
    response: Option<&str>,
) -> Result<Vec<Message>, ChatError> {
    let mut messages = match prompt.into() {
        Prompt::Text(text) => vec![Message::user(text)],
        Prompt::Turns([]) => return Err(ChatError::EmptyPrompt),
        Prompt::Turns(turns) => {
            if turns.len() % 2 == 0 {
                return Err(ChatError::PromptEndsWithAssistant { turns: turns.len() });
            }
            turns
                .iter()
                .enumerate()
                .map(|(i, turn)| {
                    let role = if i % 2 == 0 { "user" } else { "assistant" };
                    Message::new(role, turn.content.clone())
                })
                .collect()
        }
    };
    if let Some(response) = response {
        messages.push(Message::assistant(response));
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_turn_prompt_and_response() {
        let messages = rewardbench_messages("Q", Some("A")).unwrap();
        assert_eq!(messages, vec![Message::user("Q"), Message::assistant("A")]);
    }

    #[test]
    fn single_turn_prompt_only() {
        let messages = rewardbench_messages("Q", None).unwrap();
        assert_eq!(messages, vec![Message::user("Q")]);
    }

    #[test]
    fn empty_response_is_still_a_turn() {
        let messages = rewardbench_messages("Q", Some("")).unwrap();
        assert_eq!(messages, vec![Message::user("Q"), Message::assistant("")]);
    }

    #[test]
    fn multi_turn_roles_are_reassigned_by_position() {
        // Roles in the data are ignored, as in RewardBench.
        let turns = [
            Message::new("system", "a"),
            Message::user("b"),
            Message::assistant("c"),
        ];
        let messages = rewardbench_messages(&turns[..], Some("d")).unwrap();
        assert_eq!(
            messages,
            vec![
                Message::user("a"),
                Message::assistant("b"),
                Message::user("c"),
                Message::assistant("d"),
            ]
        );
        let prompt_only = rewardbench_messages(&turns[..], None).unwrap();
        assert_eq!(prompt_only, messages[..3].to_vec());
    }

    #[test]
    fn multi_turn_must_end_on_user() {
        let turns = [Message::user("a"), Message::assistant("b")];
        let err = rewardbench_messages(&turns[..], Some("c")).unwrap_err();
        assert!(matches!(
            err,
            ChatError::PromptEndsWithAssistant { turns: 2 }
        ));
        assert!(
            err.to_string().contains("must end with a user turn"),
            "{err}"
        );
    }

    #[test]
    fn empty_turn_list_is_an_error() {
        let err = rewardbench_messages(&[][..], Some("c")).unwrap_err();
        assert!(matches!(err, ChatError::EmptyPrompt));
    }

    #[test]
    fn formatters_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<ChatFormatter>();
        assert_send_sync::<ChatError>();
    }

    #[test]
    fn select_prefers_the_tokenizer_template() {
        let config = serde_json::json!({"chat_template": "{{ messages[0]['content'] }}"});
        let formatter = ChatFormatter::select(Some(&config), Some("tulu")).unwrap();
        assert_eq!(formatter.result_name(), "tokenizer");
        assert_eq!(formatter.render(&[Message::user("hi")]).unwrap(), "hi");

        let no_template = serde_json::json!({"eos_token": "</s>"});
        let formatter = ChatFormatter::select(Some(&no_template), Some("tulu")).unwrap();
        assert_eq!(formatter.result_name(), "tulu");

        assert!(matches!(
            ChatFormatter::select(Some(&config), Some("no-such-template")),
            Err(ChatError::UnknownTemplate { .. })
        ));
        assert!(matches!(
            ChatFormatter::select(None, None),
            Err(ChatError::NoTemplate)
        ));
    }
}
