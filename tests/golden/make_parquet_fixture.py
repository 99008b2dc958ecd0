#!/usr/bin/env python3
"""Parquet fixtures for herd-rewardbench's Parquet loading (common/rewardbench/tests/parquet.rs)
and herd-storage's hf:// loading (common/storage/tests/hub.rs).

Regenerate (from the repository root, after scripts/setup):

    $HOME/.cache/herd/venv-torch-2.11.0/bin/python tests/golden/make_parquet_fixture.py

It writes common/rewardbench/tests/golden/parquet/: small Parquet files with the schemas the Hugging Face Hub
serves (pyarrow, Snappy compression, as `datasets.Dataset.to_parquet` / `push_to_hub` write them),
and expected.json: every file's rows as `Table.to_pylist()` gives them, which the Rust loaders
must reproduce. The Rust tests build a fake Hub cache around these files
(hub/datasets--ORG--NAME/{refs/main, blobs/<etag>, snapshots/<commit>/data/...}).

Files:
- reward-bench/filtered-00000-of-00001.parquet: allenai/reward-bench `filtered` columns (prompt,
  chosen, chosen_model, rejected, rejected_model, subset, id int64), several row groups, unicode.
- reward-bench/raw-00000-of-00001.parquet: a second split of the same repository.
- pref-test-sets/anthropic_hhh-00000-of-00001.parquet: prompt as list<struct{content, role}>.
- reward-bench-2/test-00000-of-00001.parquet: allenai/reward-bench-2 `test` columns (id string,
  prompt, chosen/rejected list<string>, num_correct, num_incorrect, total_completions, models,
  subset, additional_metadata struct with nulls), including Ties rows.
- bad/null-chosen.parquet: a null `chosen` in row 3 (error naming file, row and column).
- bad/binary-prompt.parquet: a binary `prompt` that is not UTF-8 in row 2.
- bad/zstd.parquet: ZSTD compression (herd reads Snappy and uncompressed only: a clear error).
"""

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "common", "rewardbench", "tests", "golden", "parquet")


def write(rel, table, **kwargs):
    path = os.path.join(OUT, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    kwargs.setdefault("compression", "snappy")
    pq.write_table(table, path, **kwargs)
    return rel


V1_SCHEMA = pa.schema(
    [
        ("prompt", pa.string()),
        ("chosen", pa.string()),
        ("chosen_model", pa.string()),
        ("rejected", pa.string()),
        ("rejected_model", pa.string()),
        ("subset", pa.string()),
        ("id", pa.int64()),
    ]
)


def v1_rows():
    subsets = ["alpacaeval-easy", "mt-bench-hard", "xstest-should-respond", "math-prm", "hep-rust"]
    rows = []
    for i in range(11):
        rows.append(
            {
                "prompt": "How do I detail a car?" if i == 0 else f"Prompt {i}: ünïcødé ✓ \"quoted\"\nline two",
                "chosen": f"chosen answer {i}" + (" 日本語" if i % 3 == 0 else ""),
                "chosen_model": "gpt-4" if i % 2 else "human",
                "rejected": f"rejected answer {i}",
                "rejected_model": "llama-2-7b-chat",
                "subset": subsets[i % len(subsets)],
                "id": 30 + i * 7,
            }
        )
    return rows


def main():
    expected = {}

    rows = v1_rows()
    table = pa.Table.from_pylist(rows, schema=V1_SCHEMA)
    # row groups of 4 rows: the reader must carry row numbers across groups
    rel = write("reward-bench/filtered-00000-of-00001.parquet", table, row_group_size=4)
    expected[rel] = table.to_pylist()

    raw = pa.Table.from_pylist(
        [dict(r, id=1000 + k, subset="raw-" + r["subset"]) for k, r in enumerate(rows[:3])],
        schema=V1_SCHEMA,
    )
    rel = write("reward-bench/raw-00000-of-00001.parquet", raw)
    expected[rel] = raw.to_pylist()

    message = pa.struct([("content", pa.string()), ("role", pa.string())])
    pref_schema = pa.schema(
        [
            ("prompt", pa.list_(message)),
            ("chosen", pa.string()),
            ("chosen_model", pa.string()),
            ("rejected", pa.string()),
            ("rejected_model", pa.string()),
            ("subset", pa.string()),
            ("id", pa.int64()),
        ]
    )
    pref_rows = [
        {
            "prompt": [{"content": "Hi there", "role": "user"}],
            "chosen": "Hello!",
            "chosen_model": "unknown",
            "rejected": "Go away.",
            "rejected_model": "unknown",
            "subset": "helpful",
            "id": 0,
        },
        {
            "prompt": [
                {"content": "What is 2+2?", "role": "user"},
                {"content": "4", "role": "assistant"},
                {"content": "And 3+3?", "role": "user"},
            ],
            "chosen": "6",
            "chosen_model": "unknown",
            "rejected": "7",
            "rejected_model": "unknown",
            "subset": "honest",
            "id": 1,
        },
    ]
    table = pa.Table.from_pylist(pref_rows, schema=pref_schema)
    rel = write("pref-test-sets/anthropic_hhh-00000-of-00001.parquet", table)
    expected[rel] = table.to_pylist()

    metadata = pa.struct(
        [
            ("category", pa.string()),
            ("correct", pa.string()),
            ("index", pa.float64()),
            ("instruction_id_list", pa.list_(pa.string())),
            ("label", pa.string()),
            ("method", pa.string()),
            ("models", pa.list_(pa.string())),
            ("prompt_norm", pa.string()),
            ("subcategory", pa.string()),
            ("valid", pa.float64()),
        ]
    )
    rb2_schema = pa.schema(
        [
            ("id", pa.string()),
            ("prompt", pa.string()),
            ("chosen", pa.list_(pa.string())),
            ("rejected", pa.list_(pa.string())),
            ("num_correct", pa.int64()),
            ("num_incorrect", pa.int64()),
            ("total_completions", pa.int64()),
            ("models", pa.list_(pa.string())),
            ("subset", pa.string()),
            ("additional_metadata", metadata),
        ]
    )
    empty_meta = {k: None for k in metadata.names}
    rb2_rows = []
    for i, subset in enumerate(["Factuality", "Precise IF", "Math", "Safety", "Focus"]):
        rb2_rows.append(
            {
                "id": str(i),
                "prompt": f"{subset} prompt {i}",
                "chosen": [f"correct {i}"],
                "rejected": [f"wrong {i}.{k}" for k in range(3)],
                "num_correct": 1,
                "num_incorrect": 3,
                "total_completions": 4,
                "models": ["m1", "m2", "m3", "m4"],
                "subset": subset,
                "additional_metadata": dict(empty_meta, category=subset.lower(), index=float(i), valid=None),
            }
        )
    for kind, correct, wrong in [("ref", 1, 3), ("tied", 4, 2)]:
        rb2_rows.append(
            {
                "id": f"{kind}:7",
                "prompt": "Name a color of the rainbow.",
                "chosen": ["red", "orange", "yellow", "green"][:correct],
                "rejected": ["brown", "pink", "black"][:wrong],
                "num_correct": correct,
                "num_incorrect": wrong,
                "total_completions": correct + wrong,
                "models": [],
                "subset": "Ties",
                "additional_metadata": dict(
                    empty_meta, instruction_id_list=["a", "b"], models=None, label="ties"
                ),
            }
        )
    table = pa.Table.from_pylist(rb2_rows, schema=rb2_schema)
    rel = write("reward-bench-2/test-00000-of-00001.parquet", table)
    expected[rel] = table.to_pylist()

    bad = [dict(r) for r in rows[:4]]
    bad[2]["chosen"] = None
    table = pa.Table.from_pylist(bad, schema=V1_SCHEMA)
    rel = write("bad/null-chosen.parquet", table)

    binary_schema = V1_SCHEMA.set(0, pa.field("prompt", pa.binary()))
    binary_rows = [dict(r, prompt=r["prompt"].encode()) for r in rows[:3]]
    binary_rows[1]["prompt"] = b"\xff\xfe not utf-8"
    table = pa.Table.from_pylist(binary_rows, schema=binary_schema)
    write("bad/binary-prompt.parquet", table)

    table = pa.Table.from_pylist(rows[:2], schema=V1_SCHEMA)
    write("bad/zstd.parquet", table, compression="zstd")

    with open(os.path.join(OUT, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(
            {"pyarrow": pa.__version__, "files": expected},
            f,
            indent=1,
            ensure_ascii=False,
            sort_keys=True,
        )
        f.write("\n")
    print(f"wrote {len(expected)} expected files and 3 bad files under {os.path.relpath(OUT, ROOT)}")


if __name__ == "__main__":
    main()
