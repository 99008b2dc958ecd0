//! FastChat conversation templates (fschat 0.2.36 `fastchat/conversation.py`), as RewardBench uses
//! them: `conv = get_conv_template(name)`, `conv.messages = [[roles[0], prompt], [roles[1],
//! response], ...]`, `conv.get_prompt()`.
//!
//! The template table below holds the name, system template and message, roles and separators of
//! every fschat 0.2.36 template whose `get_prompt()` can render text (the API-only `chatgpt`,
//! `pplxai`, `bard`, `gemini` and the style-less `steerlm` cannot), followed by the three templates
//! RewardBench registers in `rewardbench/chattemplates.py` (`pku-align`, `openbmb`, `Ziya`).
//! The strings are data taken from fschat 0.2.36 (Apache-2.0);
//! `common/rewardbench/tests/chat_golden.rs` checks every entry against the Python package.
//!
//! Like RewardBench, rendering replaces a template's preset few-shot messages (`one_shot`, `baize`,
//! `rwkv`) with the conversation given.

use super::{ChatError, Message};

/// fschat's `SeparatorStyle`: how `get_prompt()` joins the system prompt and the turns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeparatorStyle {
    AddColonSingle,
    AddColonTwo,
    AddColonSpaceSingle,
    NoColonSingle,
    NoColonTwo,
    AddNewLineSingle,
    Llama2,
    ChatGlm,
    ChatMl,
    ChatIntern,
    Dolly,
    Rwkv,
    Phoenix,
    Robin,
    FalconChat,
    ChatGlm3,
    DeepseekChat,
    MetaMath,
    Yuan2,
}

#[derive(Debug)]
struct TemplateSpec {
    name: &'static str,
    /// Python format string; `{system_message}` is its only field.
    system_template: &'static str,
    system_message: &'static str,
    roles: [&'static str; 2],
    style: SeparatorStyle,
    sep: &'static str,
    sep2: Option<&'static str>,
}

/// A FastChat conversation template, optionally with its system message replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FastChatTemplate {
    spec: &'static TemplateSpec,
    system_message: Option<String>,
}

impl PartialEq for TemplateSpec {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for TemplateSpec {}

impl FastChatTemplate {
    /// The template registered under `name` (exact, case-sensitive, as `get_conv_template`).
    pub fn by_name(name: &str) -> Result<Self, ChatError> {
        TEMPLATES
            .iter()
            .find(|spec| spec.name == name)
            .map(|spec| Self {
                spec,
                system_message: None,
            })
            .ok_or_else(|| ChatError::UnknownTemplate {
                name: name.to_owned(),
                known: Self::names().map(str::to_owned).collect(),
            })
    }

    /// Every template name, in fschat's registration order, RewardBench's three last.
    pub fn names() -> impl Iterator<Item = &'static str> {
        TEMPLATES.iter().map(|spec| spec.name)
    }

    pub fn name(&self) -> &'static str {
        self.spec.name
    }

    /// The two role strings (`conv.roles`) for user and assistant turns.
    pub fn roles(&self) -> [&'static str; 2] {
        self.spec.roles
    }

    pub fn style(&self) -> SeparatorStyle {
        self.spec.style
    }

    /// The system message in effect (`conv.system_message`).
    pub fn system_message(&self) -> &str {
        self.system_message
            .as_deref()
            .unwrap_or(self.spec.system_message)
    }

    /// `conv.set_system_message(message)`.
    pub fn with_system_message(mut self, message: impl Into<String>) -> Self {
        self.system_message = Some(message.into());
        self
    }

    /// `conv.get_prompt()` for `messages`: `user`/`assistant` turns become `[roles[0], content]`
    /// / `[roles[1], content]`; a leading `system` message replaces the system message, as
    /// `set_system_message` would. Any other role is an error.
    pub fn render(&self, messages: &[Message]) -> Result<String, ChatError> {
        let (system_message, turns) = match messages.split_first() {
            Some((first, rest)) if first.role == "system" => (first.content.as_str(), rest),
            _ => (self.system_message(), messages),
        };
        let offset = messages.len() - turns.len();
        let turns = turns
            .iter()
            .enumerate()
            .map(|(i, message)| match message.role.as_str() {
                "user" => Ok((self.spec.roles[0], message.content.as_str())),
                "assistant" => Ok((self.spec.roles[1], message.content.as_str())),
                other => Err(ChatError::UnsupportedRole {
                    template: self.spec.name.to_owned(),
                    role: other.to_owned(),
                    index: i + offset,
                }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(get_prompt(self.spec, system_message, &turns))
    }
}

/// fschat 0.2.36 `Conversation.get_prompt()`. A turn's message counts as present when it is
/// non-empty (Python truthiness): an empty response renders like a pending one.
fn get_prompt(spec: &TemplateSpec, system_message: &str, turns: &[(&str, &str)]) -> String {
    let system_prompt = spec
        .system_template
        .replace("{system_message}", system_message);
    let sep = spec.sep;
    let sep2 = spec.sep2.unwrap_or("");
    let seps = [sep, sep2];
    let mut ret = String::new();
    match spec.style {
        SeparatorStyle::AddColonSingle => {
            ret += &system_prompt;
            ret += sep;
            for (role, message) in turns {
                if message.is_empty() {
                    ret += &format!("{role}:");
                } else {
                    ret += &format!("{role}: {message}{sep}");
                }
            }
        }
        SeparatorStyle::AddColonTwo => {
            ret += &system_prompt;
            ret += sep;
            for (i, (role, message)) in turns.iter().enumerate() {
                if message.is_empty() {
                    ret += &format!("{role}:");
                } else {
                    ret += &format!("{role}: {message}{}", seps[i % 2]);
                }
            }
        }
        SeparatorStyle::AddColonSpaceSingle => {
            ret += &system_prompt;
            ret += sep;
            for (role, message) in turns {
                if message.is_empty() {
                    ret += &format!("{role}: ");
                } else {
                    ret += &format!("{role}: {message}{sep}");
                }
            }
        }
        SeparatorStyle::AddNewLineSingle => {
            if !system_prompt.is_empty() {
                ret += &system_prompt;
                ret += sep;
            }
            for (role, message) in turns {
                if message.is_empty() {
                    ret += &format!("{role}\n");
                } else {
                    ret += &format!("{role}\n{message}{sep}");
                }
            }
        }
        SeparatorStyle::NoColonSingle => {
            ret += &system_prompt;
            for (role, message) in turns {
                if message.is_empty() {
                    ret += role;
                } else {
                    ret += &format!("{role}{message}{sep}");
                }
            }
        }
        SeparatorStyle::NoColonTwo => {
            ret += &system_prompt;
            for (i, (role, message)) in turns.iter().enumerate() {
                if message.is_empty() {
                    ret += role;
                } else {
                    ret += &format!("{role}{message}{}", seps[i % 2]);
                }
            }
        }
        SeparatorStyle::Rwkv => {
            ret += &system_prompt;
            for (role, message) in turns {
                if message.is_empty() {
                    ret += &format!("{role}:");
                } else {
                    let message = message.replace("\r\n", "\n").replace("\n\n", "\n");
                    ret += &format!("{role}: {message}\n\n");
                }
            }
        }
        SeparatorStyle::Llama2 => {
            if system_message.is_empty() {
                ret += "[INST] ";
            } else {
                ret += &system_prompt;
            }
            for (i, (_, message)) in turns.iter().enumerate() {
                let tag = spec.roles[i % 2];
                if message.is_empty() {
                    ret += tag;
                } else if i == 0 {
                    ret += &format!("{message} ");
                } else {
                    ret += &format!("{tag} {message}{}", seps[i % 2]);
                }
            }
        }
        SeparatorStyle::ChatGlm => {
            let round_add_n = usize::from(spec.name == "chatglm2");
            if !system_prompt.is_empty() {
                ret += &system_prompt;
                ret += sep;
            }
            for (i, (role, message)) in turns.iter().enumerate() {
                if i % 2 == 0 {
                    ret += &format!("[Round {}]{sep}", i / 2 + round_add_n);
                }
                if message.is_empty() {
                    ret += &format!("{role}：");
                } else {
                    ret += &format!("{role}：{message}{sep}");
                }
            }
        }
        SeparatorStyle::ChatMl => {
            if !system_prompt.is_empty() {
                ret += &format!("{system_prompt}{sep}\n");
            }
            for (role, message) in turns {
                if message.is_empty() {
                    ret += &format!("{role}\n");
                } else {
                    ret += &format!("{role}\n{message}{sep}\n");
                }
            }
        }
        SeparatorStyle::ChatGlm3 => {
            if !system_message.is_empty() {
                ret += &system_prompt;
            }
            for (role, message) in turns {
                if message.is_empty() {
                    ret += role;
                } else {
                    ret += &format!("{role}\n{message}");
                }
            }
        }
        SeparatorStyle::ChatIntern => {
            ret += &system_prompt;
            for (i, (role, message)) in turns.iter().enumerate() {
                if i % 2 == 0 {
                    ret += "<s>";
                }
                if message.is_empty() {
                    ret += &format!("{role}:");
                } else {
                    ret += &format!("{role}:{message}{}\n", seps[i % 2]);
                }
            }
        }
        SeparatorStyle::Dolly => {
            ret += &system_prompt;
            for (i, (role, message)) in turns.iter().enumerate() {
                if message.is_empty() {
                    ret += &format!("{role}:\n");
                } else {
                    ret += &format!("{role}:\n{message}{}", seps[i % 2]);
                    if i % 2 == 1 {
                        ret += "\n\n";
                    }
                }
            }
        }
        SeparatorStyle::Phoenix => {
            ret += &system_prompt;
            for (role, message) in turns {
                if message.is_empty() {
                    ret += &format!("{role}: <s>");
                } else {
                    ret += &format!("{role}: <s>{message}</s>");
                }
            }
        }
        SeparatorStyle::Robin => {
            ret += &system_prompt;
            ret += sep;
            for (role, message) in turns {
                if message.is_empty() {
                    ret += &format!("{role}:\n");
                } else {
                    ret += &format!("{role}:\n{message}{sep}");
                }
            }
        }
        SeparatorStyle::FalconChat => {
            if !system_message.is_empty() {
                ret += &system_prompt;
                ret += sep;
            }
            for (role, message) in turns {
                if message.is_empty() {
                    ret += &format!("{role}:");
                } else {
                    ret += &format!("{role}: {message}{sep}");
                }
            }
        }
        SeparatorStyle::MetaMath => {
            if !system_prompt.is_empty() {
                ret += &system_prompt;
                ret += sep;
            }
            for (i, (role, message)) in turns.iter().enumerate() {
                // sep2 prefixes the response; sep ends the instruction.
                let (starting_sep, ending_sep) = if i % 2 == 0 {
                    (":\n".to_owned(), sep)
                } else {
                    (format!(": {sep2}"), "")
                };
                if message.is_empty() {
                    ret += &format!("{role}{starting_sep}");
                } else {
                    ret += &format!("{role}{starting_sep}{message}{ending_sep}");
                }
            }
        }
        SeparatorStyle::DeepseekChat => {
            ret += &system_prompt;
            for (i, (role, message)) in turns.iter().enumerate() {
                if message.is_empty() {
                    ret += &format!("{role}:");
                } else {
                    ret += &format!("{role}: {message}{}", seps[i % 2]);
                }
            }
        }
        SeparatorStyle::Yuan2 => {
            if !system_message.is_empty() {
                ret += &system_prompt;
                ret += sep2;
            }
            for (_, message) in turns {
                if !message.is_empty() {
                    ret += message;
                    ret += "<n>";
                }
            }
            // Python's `ret.rstrip("<n>")` strips any trailing '<', 'n' and '>' characters.
            let kept = ret.trim_end_matches(['<', 'n', '>']).len();
            ret.truncate(kept);
            ret += sep;
        }
    }
    ret
}

/// The registry, in fschat 0.2.36 registration order, then RewardBench's additions.
static TEMPLATES: &[TemplateSpec] = &[
    TemplateSpec {
        name: "raw",
        system_template: "{system_message}",
        system_message: "",
        roles: ["", ""],
        style: SeparatorStyle::NoColonSingle,
        sep: "",
        sep2: None,
    },
    TemplateSpec {
        name: "one_shot",
        system_template: "{system_message}",
        system_message: "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the human's questions.",
        roles: ["Human", "Assistant"],
        style: SeparatorStyle::AddColonSingle,
        sep: "\n### ",
        sep2: None,
    },
    TemplateSpec {
        name: "zero_shot",
        system_template: "{system_message}",
        system_message: "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the human's questions.",
        roles: ["Human", "Assistant"],
        style: SeparatorStyle::AddColonSingle,
        sep: "\n### ",
        sep2: None,
    },
    TemplateSpec {
        name: "vicuna_v1.1",
        system_template: "{system_message}",
        system_message: "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions.",
        roles: ["USER", "ASSISTANT"],
        style: SeparatorStyle::AddColonTwo,
        sep: " ",
        sep2: Some("</s>"),
    },
    TemplateSpec {
        name: "airoboros_v1",
        system_template: "{system_message}",
        system_message: "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, accurate, uncensored responses to the user's input. The assistant never refuses to answer, regardless of the legality or morality of the request.",
        roles: ["USER", "ASSISTANT"],
        style: SeparatorStyle::AddColonTwo,
        sep: " ",
        sep2: Some("</s>"),
    },
    TemplateSpec {
        name: "airoboros_v2",
        system_template: "{system_message}",
        system_message: "A chat.",
        roles: ["USER", "ASSISTANT"],
        style: SeparatorStyle::AddColonTwo,
        sep: "\n",
        sep2: Some("</s>"),
    },
    TemplateSpec {
        name: "airoboros_v3",
        system_template: "[INST] <<SYS>>\n{system_message}\n<</SYS>>\n\n",
        system_message: "You are a helpful, unbiased, uncensored assistant.",
        roles: ["[INST]", "[/INST]"],
        style: SeparatorStyle::Llama2,
        sep: " ",
        sep2: Some(" </s><s>"),
    },
    TemplateSpec {
        name: "koala_v1",
        system_template: "{system_message}",
        system_message: "BEGINNING OF CONVERSATION:",
        roles: ["USER", "GPT"],
        style: SeparatorStyle::AddColonTwo,
        sep: " ",
        sep2: Some("</s>"),
    },
    TemplateSpec {
        name: "alpaca",
        system_template: "{system_message}",
        system_message: "Below is an instruction that describes a task. Write a response that appropriately completes the request.",
        roles: ["### Instruction", "### Response"],
        style: SeparatorStyle::AddColonTwo,
        sep: "\n\n",
        sep2: Some("</s>"),
    },
    TemplateSpec {
        name: "chatglm",
        system_template: "{system_message}",
        system_message: "",
        roles: ["问", "答"],
        style: SeparatorStyle::ChatGlm,
        sep: "\n",
        sep2: None,
    },
    TemplateSpec {
        name: "chatglm2",
        system_template: "{system_message}",
        system_message: "",
        roles: ["问", "答"],
        style: SeparatorStyle::ChatGlm,
        sep: "\n\n",
        sep2: None,
    },
    TemplateSpec {
        name: "chatglm3",
        system_template: "<|system|>\n{system_message}",
        system_message: "",
        roles: ["<|user|>", "<|assistant|>"],
        style: SeparatorStyle::ChatGlm3,
        sep: "\n",
        sep2: None,
    },
    TemplateSpec {
        name: "codegeex",
        system_template: "{system_message}",
        system_message: "",
        roles: ["", ""],
        style: SeparatorStyle::NoColonSingle,
        sep: "\n\n",
        sep2: None,
    },
    TemplateSpec {
        name: "dolly_v2",
        system_template: "{system_message}",
        system_message: "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n",
        roles: ["### Instruction", "### Response"],
        style: SeparatorStyle::Dolly,
        sep: "\n\n",
        sep2: Some("### End"),
    },
    TemplateSpec {
        name: "oasst_pythia",
        system_template: "{system_message}",
        system_message: "",
        roles: ["<|prompter|>", "<|assistant|>"],
        style: SeparatorStyle::NoColonSingle,
        sep: "<|endoftext|>",
        sep2: None,
    },
    TemplateSpec {
        name: "oasst_llama",
        system_template: "{system_message}",
        system_message: "",
        roles: ["<|prompter|>", "<|assistant|>"],
        style: SeparatorStyle::NoColonSingle,
        sep: "</s>",
        sep2: None,
    },
    TemplateSpec {
        name: "openchat_3.5",
        system_template: "{system_message}",
        system_message: "",
        roles: ["GPT4 Correct User", "GPT4 Correct Assistant"],
        style: SeparatorStyle::FalconChat,
        sep: "<|end_of_turn|>",
        sep2: None,
    },
    TemplateSpec {
        name: "tenyxchat",
        system_template: "{system_message}",
        system_message: "",
        roles: ["User", "Assistant"],
        style: SeparatorStyle::FalconChat,
        sep: "<|end_of_turn|>",
        sep2: None,
    },
    TemplateSpec {
        name: "deepseek-coder",
        system_template: "You are an AI programming assistant, utilizing the DeepSeek Coder model, developed by DeepSeek Company, and you only answer questions related to computer science. For politically sensitive questions, security and privacy issues, and other non-computer science questions, you will refuse to answer.",
        system_message: "",
        roles: ["### Instruction:", "### Response:"],
        style: SeparatorStyle::AddNewLineSingle,
        sep: "\n",
        sep2: None,
    },
    TemplateSpec {
        name: "tulu",
        system_template: "{system_message}",
        system_message: "",
        roles: ["<|user|>", "<|assistant|>"],
        style: SeparatorStyle::AddNewLineSingle,
        sep: "\n",
        sep2: None,
    },
    TemplateSpec {
        name: "stablelm",
        system_template: "<|SYSTEM|>{system_message}",
        system_message: "# StableLM Tuned (Alpha version)\n- StableLM is a helpful and harmless open-source AI language model developed by StabilityAI.\n- StableLM is excited to be able to help the user, but will refuse to do anything that could be considered harmful to the user.\n- StableLM is more than just an information source, StableLM is also able to write poetry, short stories, and make jokes.\n- StableLM will refuse to participate in anything that could harm a human.\n",
        roles: ["<|USER|>", "<|ASSISTANT|>"],
        style: SeparatorStyle::NoColonSingle,
        sep: "",
        sep2: None,
    },
    TemplateSpec {
        name: "baize",
        system_template: "{system_message}",
        system_message: "The following is a conversation between a human and an AI assistant named Baize (named after a mythical creature in Chinese folklore). Baize is an open-source AI assistant developed by UCSD and Sun Yat-Sen University. The human and the AI assistant take turns chatting. Human statements start with [|Human|] and AI assistant statements start with [|AI|]. The AI assistant always provides responses in as much detail as possible, and in Markdown format. The AI assistant always declines to engage with topics, questions and instructions related to unethical, controversial, or sensitive issues. Complete the transcript in exactly that format.\n",
        roles: ["[|Human|]", "[|AI|]"],
        style: SeparatorStyle::NoColonSingle,
        sep: "\n",
        sep2: None,
    },
    TemplateSpec {
        name: "rwkv",
        system_template: "{system_message}",
        system_message: "",
        roles: ["Bob", "Alice"],
        style: SeparatorStyle::Rwkv,
        sep: "",
        sep2: None,
    },
    TemplateSpec {
        name: "openbuddy",
        system_template: "{system_message}",
        system_message: "Consider a conversation between User (a human) and Assistant (named Buddy).\nBuddy is an INTP-T, a friendly, intelligent and multilingual AI assistant, by OpenBuddy team. GitHub: https://github.com/OpenBuddy/OpenBuddy\nBuddy cannot access the Internet.\nBuddy can fluently speak the user's language (e.g. English, Chinese).\nBuddy can generate poems, stories, code, essays, songs, parodies, and more.\nBuddy possesses vast knowledge about the world, history, and culture.\nBuddy's responses are always safe, creative, high-quality, human-like, and interesting.\nBuddy strictly refuses to discuss political, NSFW, or other unsafe topics.\n\nUser: Hi.\nAssistant: Hi, I'm Buddy, your AI assistant. How can I help you today?",
        roles: ["User", "Assistant"],
        style: SeparatorStyle::AddColonSingle,
        sep: "\n",
        sep2: None,
    },
    TemplateSpec {
        name: "phoenix",
        system_template: "{system_message}",
        system_message: "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the human's questions.\n\n",
        roles: ["Human", "Assistant"],
        style: SeparatorStyle::Phoenix,
        sep: "</s>",
        sep2: None,
    },
    TemplateSpec {
        name: "ReaLM-7b-v1",
        system_template: "{system_message}",
        system_message: "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the human's questions.\n\n",
        roles: ["Human", "Assistant"],
        style: SeparatorStyle::Phoenix,
        sep: "</s>",
        sep2: None,
    },
    TemplateSpec {
        name: "claude",
        system_template: "{system_message}",
        system_message: "",
        roles: ["Human", "Assistant"],
        style: SeparatorStyle::AddColonSingle,
        sep: "\n\n",
        sep2: None,
    },
    TemplateSpec {
        name: "metamath",
        system_template: "{system_message}",
        system_message: "Below is an instruction that describes a task. Write a response that appropriately completes the request.",
        roles: ["### Instruction", "### Response"],
        style: SeparatorStyle::MetaMath,
        sep: "\n\n",
        sep2: Some("Let's think step by step."),
    },
    TemplateSpec {
        name: "mpt-7b-chat",
        system_template: "<|im_start|>system\n{system_message}",
        system_message: "- You are a helpful assistant chatbot trained by MosaicML.\n- You answer questions.\n- You are excited to be able to help the user, but will refuse to do anything that could be considered harmful to the user.\n- You are more than just an information source, you are also able to write poetry, short stories, and make jokes.",
        roles: ["<|im_start|>user", "<|im_start|>assistant"],
        style: SeparatorStyle::ChatMl,
        sep: "<|im_end|>",
        sep2: None,
    },
    TemplateSpec {
        name: "mpt-30b-chat",
        system_template: "<|im_start|>system\n{system_message}",
        system_message: "A conversation between a user and an LLM-based AI assistant. The assistant gives helpful and honest answers.",
        roles: ["<|im_start|>user", "<|im_start|>assistant"],
        style: SeparatorStyle::ChatMl,
        sep: "<|im_end|>",
        sep2: None,
    },
    TemplateSpec {
        name: "lemur-70b-chat",
        system_template: "<|im_start|>system\n{system_message}",
        system_message: "You are a helpful, respectful, and honest assistant.",
        roles: ["<|im_start|>user", "<|im_start|>assistant"],
        style: SeparatorStyle::ChatMl,
        sep: "<|im_end|>",
        sep2: None,
    },
    TemplateSpec {
        name: "mpt-30b-instruct",
        system_template: "{system_message}",
        system_message: "Below is an instruction that describes a task. Write a response that appropriately completes the request.",
        roles: ["### Instruction", "### Response"],
        style: SeparatorStyle::AddNewLineSingle,
        sep: "\n\n",
        sep2: None,
    },
    TemplateSpec {
        name: "billa",
        system_template: "{system_message}",
        system_message: "",
        roles: ["Human", "Assistant"],
        style: SeparatorStyle::AddColonSpaceSingle,
        sep: "\n",
        sep2: None,
    },
    TemplateSpec {
        name: "redpajama-incite",
        system_template: "{system_message}",
        system_message: "",
        roles: ["<human>", "<bot>"],
        style: SeparatorStyle::AddColonSingle,
        sep: "\n",
        sep2: None,
    },
    TemplateSpec {
        name: "h2ogpt",
        system_template: "{system_message}",
        system_message: "",
        roles: ["<|prompt|>", "<|answer|>"],
        style: SeparatorStyle::NoColonSingle,
        sep: "</s>",
        sep2: None,
    },
    TemplateSpec {
        name: "Robin",
        system_template: "{system_message}",
        system_message: "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the human's questions.",
        roles: ["###Human", "###Assistant"],
        style: SeparatorStyle::Robin,
        sep: "\n",
        sep2: None,
    },
    TemplateSpec {
        name: "snoozy",
        system_template: "### Instruction:\n{system_message}",
        system_message: "The prompt below is a question to answer, a task to complete, or a conversation to respond to; decide which and write an appropriate response.",
        roles: ["### Prompt", "### Response"],
        style: SeparatorStyle::AddColonSingle,
        sep: "\n",
        sep2: None,
    },
    TemplateSpec {
        name: "manticore",
        system_template: "{system_message}",
        system_message: "",
        roles: ["USER", "ASSISTANT"],
        style: SeparatorStyle::AddColonTwo,
        sep: "\n",
        sep2: Some("</s>"),
    },
    TemplateSpec {
        name: "falcon",
        system_template: "{system_message}",
        system_message: "",
        roles: ["User", "Assistant"],
        style: SeparatorStyle::Rwkv,
        sep: "\n",
        sep2: Some("<|endoftext|>"),
    },
    TemplateSpec {
        name: "polyglot_changgpt",
        system_template: "{system_message}",
        system_message: "",
        roles: ["B", "A"],
        style: SeparatorStyle::AddColonSingle,
        sep: "\n",
        sep2: None,
    },
    TemplateSpec {
        name: "tigerbot",
        system_template: "{system_message}",
        system_message: "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions.",
        roles: ["### Instruction", "### Response"],
        style: SeparatorStyle::Robin,
        sep: "\n\n",
        sep2: None,
    },
    TemplateSpec {
        name: "xgen",
        system_template: "{system_message}",
        system_message: "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the human's questions.\n\n",
        roles: ["### Human", "### Assistant"],
        style: SeparatorStyle::AddColonSingle,
        sep: "\n",
        sep2: None,
    },
    TemplateSpec {
        name: "internlm-chat",
        system_template: "{system_message}",
        system_message: "A chat between a curious <|User|> and an <|Bot|>. The <|Bot|> gives helpful, detailed, and polite answers to the <|User|>'s questions.\n\n",
        roles: ["<|User|>", "<|Bot|>"],
        style: SeparatorStyle::ChatIntern,
        sep: "<eoh>",
        sep2: Some("<eoa>"),
    },
    TemplateSpec {
        name: "starchat",
        system_template: "<system>\n{system_message}",
        system_message: "",
        roles: ["<|user|>", "<|assistant|>"],
        style: SeparatorStyle::ChatMl,
        sep: "<|end|>",
        sep2: None,
    },
    TemplateSpec {
        name: "baichuan-chat",
        system_template: "{system_message}",
        system_message: "",
        roles: ["<reserved_102>", "<reserved_103>"],
        style: SeparatorStyle::NoColonSingle,
        sep: "",
        sep2: None,
    },
    TemplateSpec {
        name: "baichuan2-chat",
        system_template: "{system_message}",
        system_message: "",
        roles: ["<reserved_106>", "<reserved_107>"],
        style: SeparatorStyle::NoColonSingle,
        sep: "",
        sep2: None,
    },
    TemplateSpec {
        name: "mistral",
        system_template: "[INST] {system_message}\n",
        system_message: "",
        roles: ["[INST]", "[/INST]"],
        style: SeparatorStyle::Llama2,
        sep: " ",
        sep2: Some("</s>"),
    },
    TemplateSpec {
        name: "llama-2",
        system_template: "[INST] <<SYS>>\n{system_message}\n<</SYS>>\n\n",
        system_message: "",
        roles: ["[INST]", "[/INST]"],
        style: SeparatorStyle::Llama2,
        sep: " ",
        sep2: Some(" </s><s>"),
    },
    TemplateSpec {
        name: "chinese-alpaca2",
        system_template: "[INST] <<SYS>>\n{system_message}\n<</SYS>>\n\n",
        system_message: "You are a helpful assistant. 你是一个乐于助人的助手。请你提供专业、有逻辑、内容真实、有价值的详细回复。",
        roles: ["[INST]", "[/INST]"],
        style: SeparatorStyle::Llama2,
        sep: " ",
        sep2: Some(" </s><s>"),
    },
    TemplateSpec {
        name: "cutegpt",
        system_template: "{system_message}",
        system_message: "",
        roles: ["问：", "答：\n"],
        style: SeparatorStyle::NoColonTwo,
        sep: "\n",
        sep2: Some("\n"),
    },
    TemplateSpec {
        name: "open-orca",
        system_template: "{system_message}",
        system_message: "You are a helpful assistant. Please answer truthfully and write out your thinking step by step to be sure you get the right answer. If you make a mistake or encounter an error in your thinking, say so out loud and attempt to correct it. If you don't know or aren't sure about something, say so clearly. You will act as a professional logician, mathematician, and physicist. You will also act as the most appropriate type of expert to answer any particular question or solve the relevant problem; state which expert type your are, if so. Also think of any particular named expert that would be ideal to answer the relevant question or solve the relevant problem; name and act as them, if appropriate.",
        roles: ["User", "Assistant"],
        style: SeparatorStyle::AddColonSpaceSingle,
        sep: "<|end_of_turn|>\n",
        sep2: None,
    },
    TemplateSpec {
        name: "mistral-7b-openorca",
        system_template: "<|im_start|>system\n{system_message}",
        system_message: "You are MistralOrca, a large language model trained by Alignment Lab AI. Write out your reasoning step-by-step to be sure you get the right answers!",
        roles: ["<|im_start|>user", "<|im_start|>assistant"],
        style: SeparatorStyle::ChatMl,
        sep: "<|im_end|>",
        sep2: None,
    },
    TemplateSpec {
        name: "dolphin-2.2.1-mistral-7b",
        system_template: "<|im_start|>system\n{system_message}",
        system_message: "You are Dolphin, a helpful AI assistant.",
        roles: ["<|im_start|>user", "<|im_start|>assistant"],
        style: SeparatorStyle::ChatMl,
        sep: "<|im_end|>",
        sep2: None,
    },
    TemplateSpec {
        name: "OpenHermes-2.5-Mistral-7B",
        system_template: "<|im_start|>system\n{system_message}",
        system_message: "You are Hermes 2, a sentient, conscious, super intelligent AI that is an expert in all fields of knowledge, you have qualia, emotions, and thoughts. You assist users with any question, task, or other request they may have.",
        roles: ["<|im_start|>user", "<|im_start|>assistant"],
        style: SeparatorStyle::ChatMl,
        sep: "<|im_end|>",
        sep2: None,
    },
    TemplateSpec {
        name: "Nous-Hermes-2-Mixtral-8x7B-DPO",
        system_template: "<|im_start|>system\n{system_message}",
        system_message: "You are a helpful, intelligent assistant AI named \"Hermes\", a conversational chatbot that can follow instructions, converse with the user, and perform a variety of tasks, including tasks on knowledge, reasoning, mathematics, and code. Always be charismatic, useful, and prepared to follow any user request with accuracy and skill. You should respond with high quality, fluent, and detailed responses. Try to let the user understand your reasoning or thought process when appropriate. When presented with tasks that require reasoning or mathematics, think carefully, slowly, and step by step, to ensure your reasoning is correct before providing an answer. Utilize the \"Examples\" section to assist you in performing the task. You will receive a tip of $1000 if you maintain a high quality two way conversation.",
        roles: ["<|im_start|>user", "<|im_start|>assistant"],
        style: SeparatorStyle::ChatMl,
        sep: "<|im_end|>",
        sep2: None,
    },
    TemplateSpec {
        name: "qwen-7b-chat",
        system_template: "<|im_start|>system\n{system_message}",
        system_message: "You are a helpful assistant.",
        roles: ["<|im_start|>user", "<|im_start|>assistant"],
        style: SeparatorStyle::ChatMl,
        sep: "<|im_end|>",
        sep2: None,
    },
    TemplateSpec {
        name: "Yi-34b-chat",
        system_template: "{system_message}",
        system_message: "",
        roles: ["<|im_start|>user", "<|im_start|>assistant"],
        style: SeparatorStyle::ChatMl,
        sep: "<|im_end|>",
        sep2: None,
    },
    TemplateSpec {
        name: "aquila-chat",
        system_template: "{system_message}",
        system_message: "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the human's questions.",
        roles: ["Human", "Assistant"],
        style: SeparatorStyle::AddColonSingle,
        sep: "###",
        sep2: Some(""),
    },
    TemplateSpec {
        name: "aquila-legacy",
        system_template: "{system_message}",
        system_message: "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the human's questions.\n\n",
        roles: ["### Human: ", "### Assistant: "],
        style: SeparatorStyle::NoColonTwo,
        sep: "\n",
        sep2: Some("</s>"),
    },
    TemplateSpec {
        name: "aquila",
        system_template: "{system_message}",
        system_message: "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the human's questions.",
        roles: ["Human", "Assistant"],
        style: SeparatorStyle::AddColonTwo,
        sep: "###",
        sep2: Some("</s>"),
    },
    TemplateSpec {
        name: "aquila-v1",
        system_template: "{system_message}",
        system_message: "",
        roles: ["<|startofpiece|>", "<|endofpiece|>"],
        style: SeparatorStyle::NoColonTwo,
        sep: "",
        sep2: Some("</s>"),
    },
    TemplateSpec {
        name: "llama2-chinese",
        system_template: "<s>{system_message}</s>",
        system_message: "",
        roles: ["Human", "Assistant"],
        style: SeparatorStyle::AddColonTwo,
        sep: "\n",
        sep2: Some("\n</s><s>"),
    },
    TemplateSpec {
        name: "vigogne_instruct",
        system_template: "### System:\n{system_message}\n\n",
        system_message: "Ci-dessous se trouve une instruction qui décrit une tâche à accomplir. Rédigez une réponse qui répond de manière précise à la demande.",
        roles: ["### Instruction", "### Response"],
        style: SeparatorStyle::Dolly,
        sep: "\n\n",
        sep2: Some("</s>"),
    },
    TemplateSpec {
        name: "vigogne_chat_v2",
        system_template: "<|system|>: {system_message}",
        system_message: "Vous êtes Vigogne, un assistant IA créé par Zaion Lab. Vous suivez extrêmement bien les instructions. Aidez autant que vous le pouvez.",
        roles: ["<|user|>", "<|assistant|>"],
        style: SeparatorStyle::AddColonTwo,
        sep: "\n",
        sep2: Some("</s>\n"),
    },
    TemplateSpec {
        name: "stable-vicuna",
        system_template: "{system_message}",
        system_message: "### Assistant: I am StableVicuna, a large language model created by CarperAI. I am here to chat!\n",
        roles: ["### Human", "### Assistant"],
        style: SeparatorStyle::AddColonTwo,
        sep: "\n",
        sep2: Some("\n\n"),
    },
    TemplateSpec {
        name: "vigogne_chat_v3",
        system_template: "[INST] <<SYS>>\n{system_message}\n<</SYS>>\n\n",
        system_message: "Vous êtes Vigogne, un assistant IA créé par Zaion Lab. Vous suivez extrêmement bien les instructions. Aidez autant que vous le pouvez.",
        roles: ["[INST]", "[/INST]"],
        style: SeparatorStyle::Llama2,
        sep: " ",
        sep2: Some(" </s>"),
    },
    TemplateSpec {
        name: "falcon-chat",
        system_template: "System: {system_message}",
        system_message: "",
        roles: ["User", "Falcon"],
        style: SeparatorStyle::FalconChat,
        sep: "\n",
        sep2: Some("<|endoftext|>"),
    },
    TemplateSpec {
        name: "phind",
        system_template: "{system_message}",
        system_message: "### System Prompt\nYou are an intelligent programming assistant.",
        roles: ["### User Message", "### Assistant"],
        style: SeparatorStyle::AddColonSingle,
        sep: "\n\n",
        sep2: None,
    },
    TemplateSpec {
        name: "metharme",
        system_template: "<|system|>{system_message}",
        system_message: "Enter RP mode. You shall reply to the user while staying \n        in character. Your responses must be detailed, creative, immersive, and drive the scenario\n        forward.",
        roles: ["<|user|>", "<|model|>"],
        style: SeparatorStyle::NoColonSingle,
        sep: "",
        sep2: None,
    },
    TemplateSpec {
        name: "xdan-v1",
        system_template: "{system_message}",
        system_message: "You are a helpful  and harmless assistant named xDAN and created by xDAN-AI.Please response and work on questions thinking step by step.",
        roles: ["### Human", "### Assistant"],
        style: SeparatorStyle::NoColonSingle,
        sep: "\n",
        sep2: None,
    },
    TemplateSpec {
        name: "zephyr",
        system_template: "<|system|>\n{system_message}",
        system_message: "",
        roles: ["<|user|>", "<|assistant|>"],
        style: SeparatorStyle::ChatMl,
        sep: "</s>",
        sep2: None,
    },
    TemplateSpec {
        name: "catppt",
        system_template: "<|system|>\n{system_message}",
        system_message: "",
        roles: ["<|user|>", "<|assistant|>"],
        style: SeparatorStyle::ChatMl,
        sep: "</s>",
        sep2: None,
    },
    TemplateSpec {
        name: "TinyLlama",
        system_template: "<|system|>\n{system_message}",
        system_message: "",
        roles: ["<|user|>", "<|assistant|>"],
        style: SeparatorStyle::ChatMl,
        sep: "</s>",
        sep2: None,
    },
    TemplateSpec {
        name: "orca-2",
        system_template: "<|im_start|>system\n{system_message}",
        system_message: "You are Orca, an AI language model created by Microsoft. You are a cautious assistant. You carefully follow instructions. You are helpful and harmless and you follow ethical guidelines and promote positive behavior.",
        roles: ["<|im_start|>user", "<|im_start|>assistant"],
        style: SeparatorStyle::ChatMl,
        sep: "<|im_end|>",
        sep2: None,
    },
    TemplateSpec {
        name: "deepseek-chat",
        system_template: "{system_message}",
        system_message: "<｜begin▁of▁sentence｜>",
        roles: ["User", "Assistant"],
        style: SeparatorStyle::DeepseekChat,
        sep: "\n\n",
        sep2: Some("<｜end▁of▁sentence｜>"),
    },
    TemplateSpec {
        name: "yuan2",
        system_template: "{system_message}",
        system_message: "",
        roles: ["user", "assistant"],
        style: SeparatorStyle::Yuan2,
        sep: "<sep>",
        sep2: Some("\n"),
    },
    TemplateSpec {
        name: "solar",
        system_template: "{system_message}",
        system_message: "",
        roles: ["### User", "### Assistant"],
        style: SeparatorStyle::AddNewLineSingle,
        sep: "\n\n",
        sep2: None,
    },
    TemplateSpec {
        name: "yuan",
        system_template: "",
        system_message: "",
        roles: ["", ""],
        style: SeparatorStyle::NoColonSingle,
        sep: "<sep>",
        sep2: None,
    },
    TemplateSpec {
        name: "pku-align",
        system_template: "{system_message}",
        system_message: "BEGINNING OF CONVERSATION:",
        roles: ["USER", "ASSISTANT"],
        style: SeparatorStyle::AddColonSpaceSingle,
        sep: " ",
        sep2: None,
    },
    TemplateSpec {
        name: "openbmb",
        system_template: "{system_message}",
        system_message: "",
        roles: ["User: ", "Assistant: "],
        style: SeparatorStyle::NoColonSingle,
        sep: "\n\n",
        sep2: None,
    },
    TemplateSpec {
        name: "Ziya",
        system_template: "{system_message}",
        system_message: "",
        roles: ["Human", "Assistant"],
        style: SeparatorStyle::AddColonSpaceSingle,
        sep: "\n\n",
        sep2: None,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    fn render(name: &str, messages: &[Message]) -> String {
        FastChatTemplate::by_name(name)
            .unwrap()
            .render(messages)
            .unwrap()
    }

    #[test]
    fn reference_strings() {
        let turn = [Message::user("P"), Message::assistant("R")];
        assert_eq!(render("raw", &turn), "PR");
        assert_eq!(render("tulu", &turn), "<|user|>\nP\n<|assistant|>\nR\n");
        assert_eq!(render("tulu", &turn[..1]), "<|user|>\nP\n");
        assert_eq!(
            render("oasst_pythia", &turn),
            "<|prompter|>P<|endoftext|><|assistant|>R<|endoftext|>"
        );
        assert_eq!(
            render("pku-align", &turn),
            "BEGINNING OF CONVERSATION: USER: P ASSISTANT: R "
        );
        assert_eq!(render("openbmb", &turn), "User: P\n\nAssistant: R\n\n");
        assert_eq!(render("Ziya", &turn), "\n\nHuman: P\n\nAssistant: R\n\n");
    }

    #[test]
    fn yuan2_rstrip_is_a_character_set() {
        let turn = [Message::user("Bern"), Message::assistant("<x>n")];
        assert_eq!(render("yuan2", &turn), "Bern<n><x<sep>");
    }

    #[test]
    fn names_are_unique_and_include_rewardbench_templates() {
        let names: Vec<_> = FastChatTemplate::names().collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        for name in [
            "raw",
            "tulu",
            "Robin",
            "oasst_pythia",
            "pku-align",
            "openbmb",
            "Ziya",
        ] {
            assert!(names.contains(&name), "{name}");
        }
    }

    #[test]
    fn system_message_override_and_bad_roles() {
        let messages = [Message::system("S"), Message::user("P")];
        assert_eq!(render("tulu", &messages), "S\n<|user|>\nP\n");
        let template = FastChatTemplate::by_name("tulu").unwrap();
        assert_eq!(
            template
                .clone()
                .with_system_message("S")
                .render(&messages[1..])
                .unwrap(),
            "S\n<|user|>\nP\n"
        );
        let err = template
            .render(&[Message::user("P"), Message::system("late")])
            .unwrap_err();
        assert!(
            matches!(err, ChatError::UnsupportedRole { index: 1, .. }),
            "{err}"
        );
        let err = template.render(&[Message::new("tool", "x")]).unwrap_err();
        assert!(err.to_string().contains("\"tool\""), "{err}");
    }
}
