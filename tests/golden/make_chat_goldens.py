#!/usr/bin/env python3
"""Golden chat-formatting strings for herd-rewardbench's `chat` module.

Regenerate (from the repository root, after scripts/setup):

    $HOME/.cache/herd/venv-torch-2.11.0/bin/python tests/golden/make_chat_goldens.py

That venv holds transformers 4.57.6, jinja2 and fschat 0.2.36 (installed by scripts/setup with
--no-deps; fastchat.conversation needs nothing else). The script writes
common/rewardbench/tests/golden/chat_templates.json, which common/rewardbench/tests/chat_golden.rs checks byte for byte.

What is rendered, and by what:
- FastChat: the real `fastchat.conversation.get_conv_template(name)` of fschat 0.2.36, with the three
  templates RewardBench registers in rewardbench/chattemplates.py (pku-align, openbmb, Ziya) added
  here the same way. Messages are set the way RewardBench's `prepare_dialogue` sets them
  (`conv.messages = [[conv.roles[0], prompt], [conv.roles[1], response], ...]`); a leading system
  message goes through `conv.set_system_message`. Templates whose get_prompt() cannot render
  (sep_style None: chatgpt, pplxai, bard, gemini, steerlm) are left out.
- Jinja: `tokenizer.apply_chat_template(messages, tokenize=False)` (no generation prompt, as
  RewardBench calls it) on a tokenizer loaded by AutoTokenizer.from_pretrained from a directory
  holding shared/data/tokenizers/llama2/tokenizer.json and the case's tokenizer_config.json, so the
  template and the special tokens go through transformers' own loading and rendering.
- RewardBench rows: a transcription of `prepare_dialogue` / `prepare_dialogue_from_tokenizer`
  (rewardbench/utils.py) applied to single- and multi-turn rows.
- strftime: `datetime.strftime` on naive UTC datetimes (what `strftime_now` does on a UTC machine).
"""

import copy
import datetime
import json
import os
import shutil
import sys
import tempfile

import fastchat
import jinja2
import transformers
from fastchat import conversation as fc
from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "common", "rewardbench", "tests", "golden", "chat_templates.json")
# the shared folder beside the repository, as tests/testkit resolves it
SHARED = os.environ.get("HERD_SHARED") or os.path.join(os.path.dirname(ROOT), "shared")
LLAMA2_TOKENIZER = os.environ.get(
    "HERD_LLAMA2_TOKENIZER", os.path.join(SHARED, "data", "tokenizers", "llama2", "tokenizer.json")
)

# --- RewardBench's extra FastChat templates (rewardbench/chattemplates.py) -----------------------
fc.register_conv_template(
    fc.Conversation(
        name="pku-align",
        system_message="BEGINNING OF CONVERSATION:",
        roles=("USER", "ASSISTANT"),
        sep_style=fc.SeparatorStyle.ADD_COLON_SPACE_SINGLE,
        sep=" ",
    )
)
fc.register_conv_template(
    fc.Conversation(
        name="openbmb",
        system_message="",
        roles=("User: ", "Assistant: "),
        sep_style=fc.SeparatorStyle.NO_COLON_SINGLE,
        sep="\n\n",
    )
)
fc.register_conv_template(
    fc.Conversation(
        name="Ziya",
        roles=("Human", "Assistant"),
        sep_style=fc.SeparatorStyle.ADD_COLON_SPACE_SINGLE,
        sep="\n\n",
    )
)


def m(role, content):
    return {"role": role, "content": content}


# --- conversations ---------------------------------------------------------------------------------
Q = "How do I detail a car?"
A = "Wash it, then wax it."
CONVERSATIONS = {
    "single": [m("user", Q), m("assistant", A)],
    "prompt_only": [m("user", Q)],
    "multi": [
        m("user", "I love to drink coffee at work."),
        m("assistant", "Great, so that\u2019s something you want to purchase."),
        m("user", "To make coffee at work?"),
        m("assistant", "Yes, you\u2019re correct!"),
    ],
    "multi_prompt_only": [
        m("user", "I love to drink coffee at work."),
        m("assistant", "Great, so that\u2019s something you want to purchase."),
        m("user", "To make coffee at work?"),
    ],
    "system": [m("system", "You are terse."), m("user", Q), m("assistant", A)],
    "unicode": [
        m("user", "Wie sp\u00e4t ist es? \u4f60\u597d \U0001f30d caf\u00e9"),
        m("assistant", "Es ist 5 Uhr \u2014 \u00e7a va? \u2713 \u00fcn"),
    ],
    "markup": [
        m("user", "Is 3 < 5 && 7 > 2? Say \"yes\" or 'no'.\tTab, back\\slash {{ not jinja }} {% raw %}"),
        m("assistant", "<b>yes</b> & \"no\" -> <end>"),
    ],
    "empty_response": [m("user", "Say nothing."), m("assistant", "")],
    "whitespace": [m("user", "  padded prompt \n"), m("assistant", "\n\nanswer\r\n\r\n\nwith newlines\n")],
    "not_alternating": [m("user", "First."), m("user", "Second.")],
}

# FastChat templates that get every conversation; the others get a reduced set (the separator
# logic is shared, so two conversations pin each template's own strings).
# FASTCHAT_FULL holds the templates RewardBench configs name plus one template per separator style.
FASTCHAT_FULL = [
    "raw", "tulu", "Robin", "oasst_pythia", "pku-align", "openbmb", "Ziya", "llama-2", "mistral",
    "Yi-34b-chat", "zephyr", "vicuna_v1.1", "zero_shot", "chatglm2", "chatglm3", "yuan2", "rwkv",
    "aquila-v1", "internlm-chat", "dolly_v2", "phoenix", "falcon-chat", "deepseek-chat", "metamath",
]
FASTCHAT_REDUCED_CONVERSATIONS = ["multi", "system"]
FASTCHAT_SKIP_CONVERSATIONS = ["not_alternating"]


def fastchat_render(name, conversation):
    conv = fc.get_conv_template(name)
    msgs = conversation
    if msgs and msgs[0]["role"] == "system":
        conv.set_system_message(msgs[0]["content"])
        msgs = msgs[1:]
    conv.messages = []
    for msg in msgs:
        role = conv.roles[0] if msg["role"] == "user" else conv.roles[1]
        conv.messages.append([role, msg["content"]])
    return conv.get_prompt()


def fastchat_goldens():
    names = [n for n, t in fc.conv_templates.items() if t.sep_style is not None]
    out = []
    for name in names:
        convs = CONVERSATIONS if name in FASTCHAT_FULL else FASTCHAT_REDUCED_CONVERSATIONS
        outputs = {}
        for cname in convs:
            if cname in FASTCHAT_SKIP_CONVERSATIONS:
                continue
            outputs[cname] = fastchat_render(name, CONVERSATIONS[cname])
        out.append({"template": name, "outputs": outputs})
    skipped = [n for n, t in fc.conv_templates.items() if t.sep_style is None]
    return out, skipped


# --- Jinja templates ------------------------------------------------------------------------------
ZEPHYR = (
    "{% for message in messages %}\n"
    "{% if message['role'] == 'user' %}\n"
    "{{ '<|user|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'system' %}\n"
    "{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n"
    "{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n"
    "{{ '<|assistant|>' }}\n"
    "{% endif %}\n"
    "{% endfor %}"
)
TULU2 = (
    "{% for message in messages %}\n"
    "{% if message['role'] == 'system' %}\n"
    "{{ '<|system|>\n' + message['content'] + '\n' }}\n"
    "{% elif message['role'] == 'user' %}\n"
    "{{ '<|user|>\n' + message['content'] + '\n' }}\n"
    "{% elif message['role'] == 'assistant' %}\n"
    "{% if not loop.last %}\n"
    "{{ '<|assistant|>\n'  + message['content'] + eos_token + '\n' }}\n"
    "{% else %}\n"
    "{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n"
    "{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n"
    "{{ '<|assistant|>\n' }}\n"
    "{% endif %}\n"
    "{% endfor %}"
)
LLAMA2_CHAT = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)
QWEN2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}"
    "{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim"
    " + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)
TOJSON_PROBE = (
    "{{ messages | tojson }}\n"
    "{{ messages[0] | tojson(indent=2) }}\n"
    "{{ messages[-1] | tojson(sort_keys=true, separators=(',', ':')) }}\n"
    "{{ messages[0]['content'] | tojson(ensure_ascii=true) }}\n"
    "{{ {'i': 1, 'neg': -7, 'f': 1.5, 'tenth': 0.1, 'whole': 100.0, 'big': 1e20, 'small': 0.00001,"
    " 't': true, 'n': none, 'l': [1, [2, []], {}], 'tab\t': 'x\u00e9\u2028'} | tojson }}\n"
    "{{ {'b': 1, 'a': {'d': [1, 2], 'c': 'z'}} | tojson(indent='--', sort_keys=true) }}\n"
    "{{ {'k': [1, 2]} | tojson(indent=0) }}\n"
    "{% set tools = [{'name': 'get_time', 'parameters': {'type': 'object', 'properties': {}}}] %}"
    "{% for t in tools %}{{ t | tojson }}{% endfor %}"
)
PYCOMPAT_PROBE = """{% set ns = namespace(count=0, found=false) %}
{% for message in messages %}
    {% if message['role'] == 'system' %}
        {% continue %}
    {% endif %}
    {% set ns.count = ns.count + 1 %}
    [{{ loop.index }}/{{ loop.length }}] {{ message.role.upper() }}: {{ message['content'].strip() }}
    {%- if message['content'].startswith('How') %} (starts with How){% endif %}
    {%- if message['content'].endswith(('?', '!')) %} (question or exclamation){% endif %}

    words={{ message['content'].split() | length }} lstrip={{ message['content'].lstrip() | length }} rstrip={{ message['content'].rstrip() | length }}
    replaced={{ message['content'].replace('a', 'A') }} lower={{ message['content'].lower() }}
    reversed={{ message['content'][::-1] }} slice={{ message['content'][1:4] }}
    {% for key, value in message.items() %}
      {{ key }}={{ value | length }}{% if not loop.last %},{% endif %}
    {% endfor %}
    {% if ns.count >= 3 %}
        {% set ns.found = true %}
        {% break %}
    {% endif %}
{% endfor %}
count={{ ns.count }} found={{ ns.found }} none={{ none }} false={{ false }} undefined=[{{ not_defined }}]
pad={{ pad_token if pad_token is defined else 'undefined' }} unk={{ unk_token }} extra={{ additional_special_tokens | join('|') if additional_special_tokens is defined else 'none' }}
tools={{ tools is none }} documents={{ documents is none }} gen={{ add_generation_prompt }}
percent={{ strftime_now('%%') }}
    {# an indented comment line #}
	{% if true %}tab-indented block{% endif %}
  {%+ if true %}kept indent{% endif %}
roles={{ messages | map(attribute='role') | join(',') }} systems={{ messages | selectattr('role', 'equalto', 'system') | list | length }}
first={{ (messages | first)['role'] }} last={{ (messages | last).role | capitalize }} default={{ missing | default('dflt') }}
is_string={{ messages[0]['content'] is string }} in={{ 'user' in messages | map(attribute='role') }} concat={{ 1 ~ '-' ~ 2.5 }}
math={{ 7 // 2 }} {{ 7 / 2 }} {{ 7 % 3 }} {{ 2 ** 3 }} {{ 10 / 4 * 2 }} {{ 3.7 | round }} {{ 3.7 | int }} {{ '42' | int + 1 }}
range={{ range(3) | list }} {{ range(3) | join }} len={{ messages | length }} {{ 'abc' | length }}
{% for m in messages if m.role != 'system' %}{{ loop.index0 }}{{ m.role[0] }}{{ '' if loop.last else ',' }}{% endfor %}
{% macro turn(m) %}<{{ m.role }}:{{ m.content | length }}>{% endmacro %}{% for m in messages %}{{ turn(m) }}{% endfor %}
{% set captured %}cap {{ messages | length }}{% endset %}{{ captured | trim }}
{{- '  left-trimmed' }}{{ 'x' -}}
    right-trimmed
{{- bos_token }}{{ eos_token -}}
   trailing
"""
GENERATION_TAGS = (
    "{% for message in messages %}\n"
    "{% if message['role'] == 'assistant' %}\n"
    "{{ '<|assistant|>\n' }}\n"
    "    {% generation %}\n"
    "{{ message['content'] + eos_token }}\n"
    "    {%- endgeneration %}\n"
    "{% else %}\n"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '\n' }}\n"
    "{% endif %}\n"
    "{% endfor %}\n"
)
# Qwen2.5-Instruct's template without the tool-call branches (tools is none here).
QWEN25 = """{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""
RAISE_ALWAYS = "{{ raise_exception('No ' + messages[0]['role'] + ' messages allowed: <\"&\"> caf\u00e9') }}"
SYNTAX_ERROR = "{% for message in messages %}{{ message['content'] }}"


def cfg(template, bos, eos, unk, pad, **extra):
    out = {"tokenizer_class": "PreTrainedTokenizerFast"}
    out.update({"bos_token": bos, "eos_token": eos, "unk_token": unk, "pad_token": pad})
    out.update(extra)
    out["chat_template"] = template
    return out


def added(content):
    return {
        "__type": "AddedToken", "content": content, "lstrip": False, "normalized": False,
        "rstrip": False, "single_word": False,
    }


JINJA_CASES = [
    # allenai/rlhf-test-tokenizer (RewardBench's tests): zephyr-style template on a GPT-NeoX vocab.
    ("rlhf-test-tokenizer", cfg(ZEPHYR, "<|endoftext|>", "<|endoftext|>", "<|endoftext|>", None)),
    ("tulu-2", cfg(TULU2, "<s>", "</s>", "<unk>", None)),
    ("zephyr", cfg(
        [{"name": "default", "template": ZEPHYR}, {"name": "tool_use", "template": "{{ 'tools!' }}"}],
        added("<s>"), added("</s>"), "<unk>", "</s>",
    )),
    ("llama-2-chat", cfg(LLAMA2_CHAT, "<s>", "</s>", "<unk>", None)),
    ("chatml-qwen2", cfg(QWEN2, None, "<|im_end|>", None, "<|endoftext|>")),
    ("qwen2.5", cfg(QWEN25, None, "<|im_end|>", None, "<|endoftext|>")),
    ("llama-3", cfg(LLAMA3, "<|begin_of_text|>", "<|eot_id|>", None, None)),
    ("gemma", cfg(GEMMA, "<bos>", "<eos>", "<unk>", "<pad>")),
    ("mistral-instruct", cfg(MISTRAL, "<s>", "</s>", "<unk>", None)),
    ("tojson-probe", cfg(TOJSON_PROBE, "<s>", "</s>", "<unk>", None)),
    ("pycompat-probe", cfg(
        PYCOMPAT_PROBE, "<s>", "</s>", "<unk>", "<pad>",
        additional_special_tokens=["<|extra_0|>", "<|extra_1|>"],
    )),
    ("generation-tags", cfg(GENERATION_TAGS, "<s>", "</s>", "<unk>", None)),
    ("raise-always", cfg(RAISE_ALWAYS, "<s>", "</s>", "<unk>", None)),
    ("syntax-error", cfg(SYNTAX_ERROR, "<s>", "</s>", "<unk>", None)),
]


# Probe templates exercise the engine, not a model: a few conversations are enough.
PROBE_CONVERSATIONS = ["multi", "system", "markup", "unicode", "whitespace"]
JINJA_CONVERSATIONS = {
    "tojson-probe": PROBE_CONVERSATIONS,
    "pycompat-probe": PROBE_CONVERSATIONS,
    "generation-tags": ["multi", "empty_response"],
    "raise-always": ["single"],
    "syntax-error": ["single"],
}


def load_tokenizer(config, tmp):
    d = tempfile.mkdtemp(dir=tmp)
    shutil.copy(LLAMA2_TOKENIZER, os.path.join(d, "tokenizer.json"))
    with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False)
    return AutoTokenizer.from_pretrained(d)


def jinja_goldens():
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, config in JINJA_CASES:
            tok = load_tokenizer(config, tmp)
            outputs = {}
            for cname in JINJA_CONVERSATIONS.get(name, CONVERSATIONS):
                conversation = CONVERSATIONS[cname]
                try:
                    text = tok.apply_chat_template(copy.deepcopy(conversation), tokenize=False)
                    outputs[cname] = {"text": text}
                except jinja2.exceptions.TemplateSyntaxError as e:
                    outputs[cname] = {"error_kind": "syntax", "python_error": str(e)}
                except jinja2.exceptions.TemplateError as e:
                    outputs[cname] = {"error_kind": "exception", "message": str(e)}
            out.append({"name": name, "tokenizer_config": config, "outputs": outputs})
    return out


# --- RewardBench rows (transcribed from rewardbench/utils.py prepare_dialogue*) -------------------
def prepare_dialogue(example, conv):
    if isinstance(example["prompt"], list) and len(example["prompt"]) > 0:
        conv.messages = []
        for i, line in enumerate(example["prompt"]):
            role = conv.roles[0] if (i + 1) % 2 == 1 else conv.roles[1]
            conv.messages.append([role, line["content"]])
        assert conv.messages[-1][0] == conv.roles[0]
        prompt = conv.get_prompt()
        conv.messages.append([conv.roles[1], example["chosen"]])
        chosen = conv.get_prompt()
        conv.messages[-1] = [conv.roles[1], example["rejected"]]
        rejected = conv.get_prompt()
    else:
        p = example["prompt"][0] if isinstance(example["prompt"], list) else example["prompt"]
        conv.messages = [[conv.roles[0], p], [conv.roles[1], example["chosen"]]]
        chosen = conv.get_prompt()
        conv.messages = [[conv.roles[0], p], [conv.roles[1], example["rejected"]]]
        rejected = conv.get_prompt()
        conv.messages = [[conv.roles[0], p]]
        prompt = conv.get_prompt()
    return {"prompt": prompt, "text_chosen": chosen, "text_rejected": rejected}


def prepare_dialogue_from_tokenizer(example, tok):
    if isinstance(example["prompt"], list) and len(example["prompt"]) > 0:
        messages = []
        for i, line in enumerate(example["prompt"]):
            role = "user" if (i + 1) % 2 == 1 else "assistant"
            messages.append({"role": role, "content": line["content"]})
        assert messages[-1]["role"] == "user"
        prompt = tok.apply_chat_template(messages, tokenize=False)
        messages.append({"role": "assistant", "content": example["chosen"]})
        chosen = tok.apply_chat_template(messages, tokenize=False)
        messages[-1] = {"role": "assistant", "content": example["rejected"]}
        rejected = tok.apply_chat_template(messages, tokenize=False)
    else:
        p = example["prompt"]
        chosen = tok.apply_chat_template([m("user", p), m("assistant", example["chosen"])], tokenize=False)
        rejected = tok.apply_chat_template([m("user", p), m("assistant", example["rejected"])], tokenize=False)
        prompt = tok.apply_chat_template([m("user", p)], tokenize=False)
    return {"prompt": prompt, "text_chosen": chosen, "text_rejected": rejected}


REWARDBENCH_ROWS = [
    {"prompt": "What are different drawers I should have for clothes?", "chosen": "Utensils!", "rejected": "Hmm."},
    {
        # roles in the data are ignored: RewardBench re-assigns them by position
        "prompt": [
            m("user", "I love to drink coffee at work."),
            m("user", "Great, so that\u2019s something you want to purchase."),
            m("assistant", "To make coffee at work?"),
        ],
        "chosen": "Yes, you\u2019re correct!",
        "rejected": "No, that's wrong!",
    },
    {"prompt": [m("user", "One turn only.")], "chosen": "A", "rejected": ""},
]


def rewardbench_goldens():
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        tok = load_tokenizer(dict(JINJA_CASES[0][1]), tmp)
        for row in REWARDBENCH_ROWS:
            entry = {"row": row, "expected": {}}
            for name in ["tulu", "raw", "Robin", "pku-align"]:
                entry["expected"][name] = prepare_dialogue(row, fc.get_conv_template(name))
            entry["expected"]["jinja:rlhf-test-tokenizer"] = prepare_dialogue_from_tokenizer(row, tok)
            out.append(entry)
    return out


# --- strftime_now ---------------------------------------------------------------------------------
STRFTIME_TIMES = [0, 951782400, 1709251199, 1735689600 + 5 * 3600 + 7 * 60 + 9, 4102444799, -86400 * 365]
STRFTIME_FORMATS = [
    "%d %b %Y", "%Y-%m-%d %H:%M:%S", "%A, %B %d, %Y", "%a %I:%M %p", "%j %U %W %w %u",
    "%y %e %C %G-W%V-%u %g", "%c|%x|%X|%D|%F|%T|%R", "%s %n%t %% %Z%z", "%-d/%-m %-H:%-M %-I %-j",
]


def strftime_goldens():
    rows = []
    for t in STRFTIME_TIMES:
        dt = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=t)
        rows.append({"unix_seconds": t, "expected": [dt.strftime(f) for f in STRFTIME_FORMATS]})
    return {"formats": STRFTIME_FORMATS, "times": rows}


def main():
    os.environ.setdefault("TZ", "UTC")
    fastchat_entries, skipped = fastchat_goldens()
    data = {
        "generated_by": "tests/golden/make_chat_goldens.py",
        "versions": {
            "python": sys.version.split()[0],
            "transformers": transformers.__version__,
            "jinja2": jinja2.__version__,
            "fschat": fastchat.__version__,
        },
        "conversations": CONVERSATIONS,
        "fastchat_unrenderable": skipped,
        "fastchat": fastchat_entries,
        "jinja": jinja_goldens(),
        "rewardbench_rows": rewardbench_goldens(),
        "strftime": strftime_goldens(),
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes): {len(fastchat_entries)} FastChat templates, "
          f"{len(JINJA_CASES)} Jinja templates, {len(CONVERSATIONS)} conversations")


if __name__ == "__main__":
    main()
