#!/usr/bin/env python3
"""Validates what `coord deploy k8s|beaker` renders with the platforms' own published definitions.

    validate.py k8s [--kubernetes-version 1.33] FILE...
    validate.py beaker FILE...

* `k8s`: every Kubernetes object of the YAML files against the OpenAPI schema of the Kubernetes
  API at a pinned version (KUBERNETES_VERSION, overridable), strictly: a field the API does not
  have is an error, as are a wrong type, a missing required field and a kind/apiVersion the API
  does not serve. The schemas are the ones kubernetes-validate (PyPI) ships. A kustomization.yaml
  is kustomize's configuration, not a Kubernetes object: its `resources` must be files beside it.
* `beaker`: every Beaker experiment spec is loaded with beaker-py's
  `BeakerExperimentSpec.from_file`, the call `Beaker.experiment.create` makes on a spec file, and
  serialized back with `to_json`, which is the body it POSTs. beaker-py drops the fields it does
  not know without a word, so every field of the file must come back with the same value:
  otherwise the experiment Beaker creates is not the one the file says. Every value must have the
  type beaker-py's dataclasses declare (from_file checks none). beaker-py's warnings
  (deprecated fields) are printed, and are not errors.

Exit status 0 when every file is valid; 1 with one `ERROR <file>: <object>: <reason>` line per
problem; 2 for bad usage. Runs in the environment of deploy/validate/requirements.txt.
"""

import argparse
import json
import re
import sys
import warnings
from pathlib import Path

import yaml

# The Kubernetes version the manifests must be valid for: the oldest minor the renderer targets
# (podFailurePolicy, used by the worker Job, is GA since 1.31).
KUBERNETES_VERSION = "1.33"


def error(path, what, reason):
    print(f"ERROR {path}: {what}: {reason}")


def k8s(paths, version):
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

    problems = 0
    checked = 0
    for path in paths:
        try:
            docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d is not None]
        except (OSError, yaml.YAMLError) as e:
            error(path, "file", e)
            problems += 1
            continue
        if not docs:
            error(path, "file", "no YAML document")
            problems += 1
        for doc in docs:
            if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
                error(path, "document", "not an object with apiVersion and kind")
                problems += 1
                continue
            name = (doc.get("metadata") or {}).get("name", "?")
            what = f"{doc['kind']}/{name}"
            if doc["apiVersion"].startswith("kustomize.config.k8s.io/"):
                for resource in doc.get("resources") or []:
                    if not (Path(path).parent / resource).is_file():
                        error(path, doc["kind"], f"resource {resource} is not a file beside it")
                        problems += 1
                checked += 1
                continue
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except ValidationError as e:
                at = ".".join(str(p) for p in e.path) or "(top)"
                error(path, what, f"{at}: {e.message} (Kubernetes {e.version} API)")
                problems += 1
            except SchemaNotFoundError as e:
                error(path, what, e.message)
                problems += 1
            checked += 1
    print(f"k8s: {checked} objects in {len(paths)} files against Kubernetes {version}, "
          f"kubernetes-validate {kubernetes_validate.__version__}: {problems} problems")
    return problems


def missing_or_changed(raw, back, at):
    """The places where `raw` (the file) is not a subset of `back` (what beaker-py sends)."""
    if isinstance(raw, dict):
        if not isinstance(back, dict):
            return [f"{at}: {json.dumps(raw)} came back as {json.dumps(back)}"]
        out = []
        for key, value in raw.items():
            here = f"{at}.{key}" if at else key
            if key not in back:
                out.append(f"{here}: not a field beaker-py knows (dropped from what it sends)")
            else:
                out.extend(missing_or_changed(value, back[key], here))
        return out
    if isinstance(raw, list):
        if not isinstance(back, list) or len(back) != len(raw):
            return [f"{at}: {json.dumps(raw)} came back as {json.dumps(back)}"]
        out = []
        for i, (a, b) in enumerate(zip(raw, back)):
            out.extend(missing_or_changed(a, b, f"{at}.{i}"))
        return out
    if raw != back:
        return [f"{at}: {json.dumps(raw)} came back as {json.dumps(back)}"]
    return []


def type_problems(value, hint, at):
    """Where a loaded spec's values do not have the types beaker-py's dataclasses declare
    (from_file itself checks no types: `gpuCount: one` would reach Beaker's server)."""
    import dataclasses
    import enum
    import types
    import typing

    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return []
        found = [type_problems(value, h, at) for h in options if h is not type(None)]
        return [] if any(not f for f in found) else found[0]
    if origin is list:
        if not isinstance(value, list):
            return [f"{at}: {value!r} is not a list"]
        (item,) = typing.get_args(hint)
        return [p for i, v in enumerate(value) for p in type_problems(v, item, f"{at}.{i}")]
    if dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        if isinstance(value, dict):
            # a nested part beaker-py keeps as the JSON it read (a mount's `source`)
            out = []
            for key, v in value.items():
                name = re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()
                if name not in hints:
                    out.append(f"{at}.{key}: not a field of {hint.__name__}")
                else:
                    out.extend(type_problems(v, hints[name], f"{at}.{key}"))
            return out
        if not dataclasses.is_dataclass(value):
            return [f"{at}: {value!r} is not a {hint.__name__}"]
        return [
            p
            for f in dataclasses.fields(hint)
            for p in type_problems(getattr(value, f.name), hints[f.name], f"{at}.{f.name}")
        ]
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return [] if isinstance(value, hint) else [f"{at}: {value!r} is not one of {[e.name for e in hint]}"]
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(hint, type):
        ok = isinstance(value, hint)
    else:
        ok = True  # a hint this check does not know: beaker-py's own parsing is the check
    return [] if ok else [f"{at}: {value!r} is not a {getattr(hint, '__name__', hint)}"]


def beaker(paths):
    from beaker.types import BeakerExperimentSpec
    from beaker.version import VERSION as BEAKER_PY_VERSION

    problems = 0
    for path in paths:
        try:
            raw = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as e:
            error(path, "file", e)
            problems += 1
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                spec = BeakerExperimentSpec.from_file(path)
                back = spec.to_json()
            except Exception as e:  # beaker-py raises TypeError/ValueError/KeyError on bad specs
                error(path, "experiment spec", f"{type(e).__name__}: {e}")
                problems += 1
                continue
        for message in sorted({str(w.message) for w in caught}):
            print(f"WARNING {path}: beaker-py: {message}")
        if not spec.tasks:
            error(path, "experiment spec", "no tasks")
            problems += 1
        for problem in type_problems(spec, BeakerExperimentSpec, "spec") + missing_or_changed(
            raw, back, ""
        ):
            error(path, "experiment spec", problem)
            problems += 1
    print(f"beaker: {len(paths)} specs with beaker-py {BEAKER_PY_VERSION}: {problems} problems")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="target", required=True)
    k = sub.add_parser("k8s", help="Kubernetes manifests")
    k.add_argument("--kubernetes-version", default=KUBERNETES_VERSION)
    k.add_argument("files", nargs="+")
    b = sub.add_parser("beaker", help="Beaker experiment specs")
    b.add_argument("files", nargs="+")
    args = parser.parse_args()
    if args.target == "k8s":
        problems = k8s(args.files, args.kubernetes_version)
    else:
        problems = beaker(args.files)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
