#!/usr/bin/env python3
"""Golden tokenizer-loading results for herd-engine's `tokenizer` module: chat templates kept in
`chat_template.jinja` files, and tokenizer folders that hold only a SentencePiece `tokenizer.model`.

Regenerate (from the repository root, after scripts/setup):

    PYTHONPATH=$HOME/.cache/herd/pylib-spm \
        $HOME/.cache/herd/venv-rewardbench-0.1.4/bin/python tests/golden/make_tokenizer_goldens.py

That venv is the published rewardbench 0.1.4 with the transformers it pins (4.51.0); rbref.py is
imported first, as for every golden from that venv. transformers' SentencePiece conversion needs
sentencepiece and protobuf: scripts/setup installs both there (a reference environment built
before protobuf was on its list gets it from pylib-spm through PYTHONPATH, as above). Everything
below is computed by the real packages; nothing is transcribed:

- tests/golden/tokenizer/chat_template_files.json: for each case, a folder holding
  shared/data/tokenizers/llama2's tokenizer.json and special_tokens_map.json, its
  tokenizer_config.json with the case's `chat_template` entry, and the case's template files
  (`chat_template.jinja`, `additional_chat_templates/*.jinja`). `AutoTokenizer.from_pretrained`
  loads it; `tokenizer.chat_template` says which template transformers chose, rewardbench's own
  `prepare_dialogue_from_tokenizer` (rewardbench/utils.py) formats RewardBench rows with it, and
  `tokenizer(text)["input_ids"]` gives the ids RewardBench's pipeline feeds the model.
- tests/golden/tokenizer/spm_llama2.json: a folder holding only shared/data/tokenizers/llama2's
  tokenizer.model with, in turn, llama2's special_tokens_map.json and tokenizer_config.json with
  `legacy` true, then false, and the two files `worker easylm convert` writes beside a bare
  tokenizer.model (no `legacy` key, token objects with normalized=true; transcribed from
  worker/engine/src/easylm/convert.rs). Each mode records the files it used. The folder is loaded by `AutoTokenizer.from_pretrained` (LlamaTokenizerFast,
  converted from the slow tokenizer by convert_slow_tokenizer.LlamaConverter). For EVERY row of
  shared/data/rewardbench-*.jsonl it records the ids of the prompt, chosen and rejected texts
  (no special tokens) and of the chat-formatted chosen and rejected texts (rewardbench's
  `prepare_dialogue` with FastChat's "tulu" template, tokenized with special tokens after
  `add_eos_token = True`, as rewardbench's run with a FastChat template does). To stay small the
  file stores, per text, the number of ids and the first 12 hex digits of the SHA-256 of the ids
  written as decimal numbers joined by "," ; every 200th row also stores the full ids, and so do a
  few edge-case texts.
"""

import hashlib
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rbref  # noqa: E402,F401  (first: the reference environment's runtime patches)

import transformers  # noqa: E402
from fastchat.conversation import get_conv_template  # noqa: E402
from rewardbench.utils import prepare_dialogue, prepare_dialogue_from_tokenizer  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT_DIR = os.path.join(ROOT, "tests", "golden", "tokenizer")
SHARED = os.environ.get("HERD_SHARED") or os.path.join(os.path.dirname(ROOT), "shared")
LLAMA2 = os.path.join(SHARED, "data", "tokenizers", "llama2")
DATASETS = ["rewardbench-llmbar.jsonl", "rewardbench-hep.jsonl"]
FULL_IDS_EVERY = 200

TEMPLATE_A = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}\n"
    "{% endfor %}"
)
TEMPLATE_B = (
    "{{ bos_token }}{% for message in messages %}\n"
    "[{{ message['role'] | upper }}]\n"
    "{{ message['content'] | trim }}{{ eos_token }}\n"
    "{% endfor %}\n"
)
TEMPLATE_C = "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"

# name -> (tokenizer_config chat_template entry or None, {relative file: text})
CHAT_CASES = {
    "config_only": (TEMPLATE_A, {}),
    "file_only": (None, {"chat_template.jinja": TEMPLATE_B}),
    "file_over_config": (TEMPLATE_A, {"chat_template.jinja": TEMPLATE_B}),
    "file_over_config_list": (
        [{"name": "default", "template": TEMPLATE_A}, {"name": "tool_use", "template": TEMPLATE_C}],
        {"chat_template.jinja": TEMPLATE_B},
    ),
    "file_crlf": (None, {"chat_template.jinja": TEMPLATE_B.replace("\n", "\r\n")}),
    "file_empty": (TEMPLATE_A, {"chat_template.jinja": ""}),
    # transformers 4.51.0 does not read additional_chat_templates/ (later versions do)
    "additional_ignored": (
        TEMPLATE_A,
        {
            "additional_chat_templates/default.jinja": TEMPLATE_C,
            "additional_chat_templates/tool_use.jinja": TEMPLATE_C,
        },
    ),
    "additional_only": (None, {"additional_chat_templates/default.jinja": TEMPLATE_C}),
}

EDGE_TEXTS = [
    "",
    " ",
    "  leading spaces",
    "trailing spaces  ",
    "Hello world",
    "tabs\tand\nnewlines\r\n",
    "emoji 🦙 and CJK 漢字 and é",
    "control \x01 byte",
    "special <s> and </s> and <unk> inline",
    "<s>starts with bos",
    "▁already▁metaspace",
]


def read_rows():
    rows = []
    for name in DATASETS:
        with open(os.path.join(SHARED, "data", name), encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                rows.append({"file": name, **row})
    return rows


def write_files(folder, files):
    for relative, text in files.items():
        path = os.path.join(folder, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # bytes exactly as given (the CRLF case must keep its \r)
        with open(path, "wb") as f:
            f.write(text.encode("utf-8"))


def llama2_config():
    with open(os.path.join(LLAMA2, "tokenizer_config.json"), encoding="utf-8") as f:
        return json.load(f)


def chat_template_goldens(rows):
    examples = [rows[0], rows[1], rows[500]]
    cases = []
    for name, (config_template, files) in CHAT_CASES.items():
        with tempfile.TemporaryDirectory() as folder:
            for file in ("tokenizer.json", "special_tokens_map.json"):
                shutil.copy(os.path.join(LLAMA2, file), folder)
            config = llama2_config()
            if config_template is not None:
                config["chat_template"] = config_template
            with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
                json.dump(config, f, ensure_ascii=False, indent=2)
            write_files(folder, files)
            tokenizer = AutoTokenizer.from_pretrained(folder)
            case = {
                "name": name,
                "config_chat_template": config_template,
                "files": files,
                "chat_template": tokenizer.chat_template,
                "rows": [],
            }
            if tokenizer.chat_template is not None:
                for row in examples:
                    example = {k: row[k] for k in ("prompt", "chosen", "rejected")}
                    formatted = prepare_dialogue_from_tokenizer(dict(example), tokenizer)
                    case["rows"].append(
                        {
                            **example,
                            "text_chosen": formatted["text_chosen"],
                            "text_rejected": formatted["text_rejected"],
                            "ids_chosen": tokenizer(formatted["text_chosen"])["input_ids"],
                            "ids_rejected": tokenizer(formatted["text_rejected"])["input_ids"],
                        }
                    )
            cases.append(case)
    return {
        "generator": "tests/golden/make_tokenizer_goldens.py",
        "reference": rbref.REFERENCE,
        "cases": cases,
    }


def digest(ids):
    text = ",".join(str(i) for i in ids)
    return [len(ids), hashlib.sha256(text.encode("ascii")).hexdigest()[:12]]


def easylm_files():
    """What `worker easylm convert` writes beside a bare tokenizer.model
    (worker/engine/src/easylm/convert.rs easylm_tokenizer_config, EasyLM's write_tokenizer)."""

    def token(content):
        return {"content": content, "lstrip": False, "normalized": True, "rstrip": False,
                "single_word": False}

    special = {"bos_token": token("<s>"), "eos_token": token("</s>"), "unk_token": token("<unk>")}
    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": token("<s>"),
        "clean_up_tokenization_spaces": False,
        "eos_token": token("</s>"),
        "model_max_length": 4096,
        "pad_token": None,
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": token("<unk>"),
    }
    return config, special


def spm_goldens(rows):
    with open(os.path.join(LLAMA2, "special_tokens_map.json"), encoding="utf-8") as f:
        llama2_special = json.load(f)
    setups = []
    for legacy in (True, False):
        config = llama2_config()
        config["legacy"] = legacy
        setups.append(("llama2 legacy=" + str(legacy).lower(), config, llama2_special))
    config, special = easylm_files()
    setups.append(("easylm (no legacy key)", config, special))
    modes = []
    for name, config, special in setups:
        legacy = config.get("legacy", True)
        with tempfile.TemporaryDirectory() as folder:
            shutil.copy(os.path.join(LLAMA2, "tokenizer.model"), folder)
            for file, value in (("tokenizer_config.json", config), ("special_tokens_map.json", special)):
                with open(os.path.join(folder, file), "w", encoding="utf-8") as f:
                    json.dump(value, f, ensure_ascii=False, indent=2)
            tokenizer = AutoTokenizer.from_pretrained(folder)
            assert type(tokenizer).__name__ == "LlamaTokenizerFast", type(tokenizer)
            assert tokenizer.legacy == legacy

            def plain(text):
                return tokenizer(text, add_special_tokens=False)["input_ids"]

            formatted_rows = []
            for row in rows:
                example = {k: row[k] for k in ("prompt", "chosen", "rejected")}
                formatted_rows.append(prepare_dialogue(dict(example), get_conv_template("tulu")))
            out_rows = []
            for index, (row, formatted) in enumerate(zip(rows, formatted_rows)):
                entry = {"file": row["file"], "id": row["id"]}
                ids = {}
                tokenizer.add_eos_token = False
                for field in ("prompt", "chosen", "rejected"):
                    ids[field] = plain(row[field])
                # RewardBench's FastChat path: add_eos_token = True, then tokenize with special tokens
                tokenizer.add_eos_token = True
                for field in ("text_chosen", "text_rejected"):
                    ids[field] = tokenizer(formatted[field])["input_ids"]
                entry["digests"] = {field: digest(value) for field, value in ids.items()}
                if index % FULL_IDS_EVERY == 0:
                    entry["ids"] = ids
                out_rows.append(entry)
            tokenizer.add_eos_token = False
            edge = [{"text": text, "ids": plain(text)} for text in EDGE_TEXTS]
            modes.append(
                {
                    "name": name,
                    "legacy": legacy,
                    "tokenizer_config": config,
                    "special_tokens_map": special,
                    "rows": out_rows,
                    "edge_texts": edge,
                }
            )
    return {
        "generator": "tests/golden/make_tokenizer_goldens.py",
        "reference": rbref.REFERENCE,
        "tokenizer": "shared/data/tokenizers/llama2/tokenizer.model",
        "chat_template": "tulu",
        "digest": "first 12 hex digits of sha256(ids as decimal numbers joined by ',')",
        "modes": modes,
    }


def main():
    assert transformers.__version__ == "4.51.0", transformers.__version__
    rows = read_rows()
    os.makedirs(OUT_DIR, exist_ok=True)
    outputs = {
        "chat_template_files.json": chat_template_goldens(rows),
        "spm_llama2.json": spm_goldens(rows),
    }
    for name, value in outputs.items():
        path = os.path.join(OUT_DIR, name)
        with open(path, "w", encoding="utf-8") as f:
            # compact: the SentencePiece golden holds every row of the shared data
            json.dump(value, f, ensure_ascii=False, indent=None, separators=(",", ":"))
            f.write("\n")
        print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
