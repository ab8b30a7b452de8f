"""Run identity: what determines a trained model, as a readable name plus a short digest.

Two variants (of one study or of two) that resolve to the same model, training settings,
training-time transforms, data split and training code share one trained model: their run
folder is named by a digest of exactly that, so it is trained once and never overwritten
by a study that wants something else. A person can still read the folder name
(`relu-128-drop0.2__gauss0.3-3fa9c2d1e0`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ablation_lab.models.settings import LEARNABLE_ACTIVATIONS, kind_defaults, learnable_settings, resnet_widths

DATA_DIGEST = 8
RUN_DIGEST = 10
PROBE_DIGEST = 8
MAX_READABLE = 72


def canonical(value: Any) -> Any:
    """JSON-ready value with integral floats as ints, so `0` and `0.0` give the same digest."""
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def digest(value: Any, length: int) -> str:
    text = json.dumps(canonical(value), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def content_digest(path: str | Path | None) -> str | None:
    """Digest of a local data file (or every file under a folder); None when there is none.

    The prepared split is keyed by it, so editing a CSV prepares a new split (and trains
    the runs that read it) instead of silently keeping the old one.
    """
    if not path:
        return None
    source = Path(path).expanduser()
    if not source.exists():
        return "missing"  # data prep fails with a message saying what to put where
    if not source.is_dir() and not source.is_file():
        return "not-a-regular-file"  # a FIFO would block this read, a device never end it; data prep refuses it
    files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
    sha = hashlib.sha256()
    for file in files:
        sha.update(str(file.relative_to(source) if source.is_dir() else file.name).encode())
        try:
            with open(file, "rb") as handle:
                for block in iter(lambda h=handle: h.read(1 << 20), b""):
                    sha.update(block)
        except OSError:
            sha.update(b"unreadable")
    return sha.hexdigest()[:16]


def is_noop(transform: Mapping[str, Any]) -> bool:
    """Transforms that change nothing (noise of level 0) do not make two runs differ."""
    if transform["op"] == "corrupt_labels":
        return float(transform["rate"]) == 0.0
    return transform["op"] == "noise" and float(transform["level"]) == 0.0


def changes_training(transform: Mapping[str, Any]) -> bool:
    """Whether a transform changes what the model is trained on (test-only ones do not)."""
    return transform.get("apply_to", "both") != "test"


def split_transforms(transforms: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training-time transforms, test-time-only transforms), no-ops dropped."""
    kept = [dict(t) for t in transforms if not is_noop(t)]
    return [t for t in kept if changes_training(t)], [t for t in kept if not changes_training(t)]


def _number(value: float) -> str:
    return f"{value:g}"


def describe_transform(transform: Mapping[str, Any]) -> str:
    """A few readable characters per transform: `gauss0.3`, `cols08-11-mean`, `drop3f`."""
    op = transform["op"]
    if op == "noise":
        short = {"gaussian": "gauss", "salt_pepper": "sp"}.get(transform["kind"], transform["kind"])
        return f"{short}{_number(transform['level'])}" + ("-test" if transform["apply_to"] == "test" else "")
    if op == "mask":
        region = transform["region"]
        if region["axis"] == "patches":
            name = f"patch-r{region['row']:02d}-c{region['col']:02d}-s{region['size']:02d}"
        else:
            name = f"{'cols' if region['axis'] == 'columns' else 'rows'}{region['start']:02d}-{region['stop'] - 1:02d}"
        name += "" if transform["fill"] == "zero" else f"-{transform['fill']}"
        return name + ("-test" if transform.get("apply_to") == "test" else "")
    if op == "corrupt_labels":
        return f"labels{_number(transform['rate'])}"
    if op in ("drop_features", "fill_features"):
        indices = list(transform["indices"])
        return f"{op.split('_')[0]}{len(indices)}f-{indices[0]}"
    return op


def canonical_model(model_cfg: dict[str, Any]) -> dict[str, Any]:
    """The model config without keys that change nothing, so equal models get one run.

    No dropout makes the kind and layers moot; `dropout_layers` naming every hidden layer is
    the default; `standard` is the default kind; a zero L2 penalty is none.
    """
    if model_cfg.get("kind") == "file":
        from ablation_lab.models.model_file import canonical_file_model

        return canonical_file_model(model_cfg)
    out = dict(model_cfg)
    depth = len(out.get("hidden_units", []))
    if not float(out.get("dropout", 0.0)):
        for key in ("dropout_kind", "dropout_layers", "nsdropout_interval"):
            out.pop(key, None)
    missing = [layer for layer in out.get("dropout_layers") or [] if not 1 <= layer <= depth]
    if missing:
        raise ValueError(f"model.dropout_layers: {missing} name no hidden layer of a {depth}-hidden-layer model (layers are 1..{depth})")
    if out.get("dropout_layers") is not None and sorted(set(out["dropout_layers"])) == list(range(1, depth + 1)):
        out.pop("dropout_layers")
    if out.get("dropout_kind") == "standard":
        out.pop("dropout_kind")
    if out.get("dropout_kind") != "nsdropout":
        out.pop("nsdropout_interval", None)
    if out.get("kind") == "mlp":
        out.pop("kind")
    if out.get("kind") == "cnn":
        out = {**kind_defaults("cnn"), **out}
        for key in ("dropout_kind", "dropout_layers"):
            if out.get(key) not in (None, "standard"):
                raise ValueError(f"model.{key}: not available for kind cnn (dropout follows every conv block and dense layer)")
        for key in ("blocks", "block_widths"):
            if key in out:
                raise ValueError(f"model.{key}: applies to kind resnet only (this model is kind cnn)")
    elif out.get("kind") == "resnet":
        out = _canonical_resnet(out)
    else:
        misplaced = sorted((set(kind_defaults("cnn")) | set(kind_defaults("resnet")) | {"block_widths"}) & set(out))
        if misplaced:
            raise ValueError(f"model.{misplaced[0]}: applies to kind cnn or resnet only (this model is kind {out.get('kind', 'mlp')})")
    if out.get("kind") == "kst" and out.get("activation") not in LEARNABLE_ACTIVATIONS:
        raise ValueError(
            f"model.activation: kind kst needs a learnable outer function ({', '.join(LEARNABLE_ACTIVATIONS)}), got {out.get('activation')!r}"
        )
    if out.get("activation") in LEARNABLE_ACTIVATIONS:
        out["learnable"] = learnable_settings(out)
    else:
        out.pop("learnable", None)
    if "l2" in out and not any([out["l2"]] if isinstance(out["l2"], int | float) else out["l2"]):
        out.pop("l2")
    if out.get("kind") == "builder":  # editing the builder's code retrains what it builds
        from ablation_lab.models.builders import builder_file

        out["builder_sha256"] = content_digest(builder_file(out["builder"]))
    return out


def _canonical_resnet(model_cfg: dict[str, Any]) -> dict[str, Any]:
    """Kind resnet: its defaults filled in, `filters` one per block, `block_widths` only where a
    block's inner width differs from its stream width; the dense head keys (which it has none of) dropped."""
    if "l2" in model_cfg and any([model_cfg["l2"]] if isinstance(model_cfg["l2"], int | float) else model_cfg["l2"]):
        raise ValueError("model.l2: not available for kind resnet (it penalises the dense head's hidden layers, which it has none of)")
    model_cfg.pop("l2", None)
    for key in ("dropout_kind", "dropout_layers"):
        if model_cfg.get(key) not in (None, "standard"):
            raise ValueError(f"model.{key}: not available for kind resnet (its one dropout layer sits before the softmax head)")
    if model_cfg.get("pooling") is not None:
        raise ValueError(
            "model.pooling: not available for kind resnet (it downsamples with strided convs, and pools once, globally, before the head)"
        )
    out = {**kind_defaults("resnet"), **model_cfg}
    out.pop("hidden_units", None)
    out.pop("pooling", None)
    out["filters"], inner = resnet_widths(out)
    out.pop("block_widths", None)
    if inner != out["filters"]:
        out["block_widths"] = inner
    return out


# Training keys added after runs were first named: left out of a run's spec at their schema
# default, so adding one renames (and retrains) no existing run.
LATER_TRAINING_KEYS = ("keep_best",)


def canonical_training(training: Mapping[str, Any]) -> dict[str, Any]:
    """The training settings that determine a model: a later key at its schema default is left out."""
    from ablation_lab.specs import schema_defaults

    defaults = schema_defaults("training")
    return {key: value for key, value in training.items() if not (key in LATER_TRAINING_KEYS and value == defaults[key])}


def describe_model(model: Mapping[str, Any]) -> str:
    if model.get("kind") == "file":
        from ablation_lab.models.model_file import describe_file_model

        return describe_file_model(model)
    if model.get("kind") == "resnet":
        units = "resnet-" + "x".join(str(f) for f in model["filters"])
        units += "-in" + "x".join(str(w) for w in model["block_widths"]) if "block_widths" in model else ""
    else:
        units = "x".join(str(u) for u in model["hidden_units"])
    if model.get("kind") == "kst":
        units = f"kst-{units}"
    elif model.get("kind") == "cnn":
        units = "cnn" + "x".join(str(f) for f in model["filters"]) + f"-{units}"
    elif model.get("kind") == "builder":
        units = f"{model['builder']}-{units}"
    dropout = float(model.get("dropout", 0.0))
    kind = "nsdrop" if model.get("dropout_kind") == "nsdropout" else "drop"
    return f"{model['activation']}-{units}" + (f"-{kind}{_number(dropout)}" if dropout else "") + ("-l2" if model.get("l2") else "")


def readable(parts: Sequence[str]) -> str:
    text = "__".join(p for p in parts if p)
    text = re.sub(r"[^a-z0-9_.+-]+", "-", text.lower()).strip("-")
    return text[:MAX_READABLE].rstrip("-_") or "run"


def run_name(spec: Mapping[str, Any]) -> str:
    """`<model>__<transforms>-<digest>`: the folder of one trained model under its data split."""
    parts = [describe_model(spec["model"]), *(describe_transform(t) for t in spec["transforms"])]
    return f"{readable(parts)}-{digest(spec, RUN_DIGEST)}"


def data_name(dataset: str, spec: Mapping[str, Any]) -> str:
    return f"{dataset}-{digest(spec, DATA_DIGEST)}"


def view_name(view: Sequence[Mapping[str, Any]]) -> str:
    return readable([describe_transform(t) for t in view]) if view else "clean"


def probe_name(view: Sequence[Mapping[str, Any]], spec: Mapping[str, Any]) -> str:
    """One per-model analysis under one test view: `clean-1a2b3c4d`, `gauss0.3-test-1a2b3c4d`."""
    return f"{view_name(view)}-{digest(spec, PROBE_DIGEST)}"
