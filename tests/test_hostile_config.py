"""Hostile study configs and model files, round two: each refused by `python -m ablation_lab check`
in one line naming the key or file, within seconds and a memory bound, before any job.

Each case is a study file (and, for the model-file cases, a .keras archive) built in tmp_path,
checked in a fresh process under `resource.setrlimit(RLIMIT_AS)`: an input that expands,
hangs or floods the message fails the case by time, memory or length, not by luck.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

TIME_LIMIT_S = 60  # a case that hangs is a failure, not a stuck test run
ADDRESS_SPACE = 1200 * 2**20  # the check's own imports take about 600 MB of address space
MAX_MESSAGE = 600  # characters: one readable line, whatever the input holds


def laughs(levels: int, width: int = 10) -> str:
    """The "billion laughs" YAML: `levels` anchors, each `width` aliases of the one before."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines)


def study(**keys) -> str:
    return yaml.safe_dump({"study": "hostile", "seeds": [1], "training": {"epochs": 1}, **keys})


CASES: dict[str, tuple[str, str]] = {
    # name: (study file text, fragment the one line must hold)
    "alias bomb as study name": (laughs(9) + "\nstudy: *l8\n", "alias"),
    "alias bomb as seeds": (laughs(9) + "\nseeds: *l8\n", "more than 200,000 values"),
    "alias that contains itself": ("seeds: &s [1, *s]\n", "refers to the value that contains it"),
    "nesting deeper than any key": ("seeds: " + "[" * 40 + "1" + "]" * 40 + "\n", "nested more than 12 levels"),
    "study file over a megabyte": ("study: " + "a" * 2_000_000 + "\n", "larger than the limit of 1,000,000"),
    "50 KB study name": ("study: " + "a" * 50_000 + "\n", "study: is 50000 characters long"),
    "1,000-character unknown key": (study() + "k" * 1000 + ": 1\n", "unknown key 'kkkk"),
    "100 KB key (YAML's own limit)": (study() + "k" * 100_000 + ": 1\n", "could not find expected ':'"),
    "look-alike key (Cyrillic o)": (study(families={"dr\u043epout": {"rates": [0.1]}}), "U+043E CYRILLIC SMALL LETTER O"),
    "look-alike key (zero-width space)": (study(training={"epochs\u200b": 2}), "U+200B ZERO WIDTH SPACE"),
    "YAML 1.1 octal seed": ("study: hostile\nseeds: [8, 010]\n", "reads 010 as the number 8"),
    "YAML 1.1 sexagesimal epochs": ("study: hostile\ntraining: {epochs: 1:30}\n", "reads 1:30 as the number 90"),
    "YAML syntax error has its line": ("study: hostile\nseeds: [1, 2\nepochs: 3\n", "line 3, column 7"),
    "crossed families past max_variants": (
        study(
            families={"dropout": {"rates": [i / 20 for i in range(19)]}, "noise": {"levels": [i / 20 for i in range(19)]}},
            combinations=[["dropout", "noise"]],
            limits={"max_variants": 100},
        ),
        "combinations[0]: brings the study to 400 variants, more than limits.max_variants (100)",
    ),
    "family past max_variants": (
        study(families={"dropout": {"rates": [i / 100 for i in range(60)]}}, limits={"max_variants": 50}),
        "families.dropout",
    ),
    "seeds past max_jobs": (
        study(seeds=list(range(100)), families={"dropout": {"rates": [0.1, 0.2]}}, limits={"max_jobs": 250}),
        "limits.max_jobs (250)",
    ),
    "25,000 unknown feature names": (
        study(
            dataset={"name": "breast_cancer"},
            families={"input": {"groups": [{"kind": "features", "named": {"g": [f"no_such_{i}" for i in range(25_000)]}}]}},
        ),
        "(25000 in all)",
    ),
    "units as text": (study(model={"hidden_units": ["10"]}), "model.hidden_units[0]"),
}


def check(path: Path, limit_memory: bool = True) -> tuple[int, str, float]:
    """`python -m ablation_lab check path` in a fresh, bounded process: exit status, stderr, seconds."""

    def bound() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))

    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "workflow")}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "ablation_lab", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=TIME_LIMIT_S,
        preexec_fn=bound if limit_memory else None,
        env=env,
        cwd=path.parent,
    )
    return done.returncode, done.stderr, time.perf_counter() - start


def assert_one_line_refusal(code: int, stderr: str, fragment: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, stderr[-2000:]
    assert len(lines) == 1, stderr[-2000:]
    assert lines[0].startswith("error: ")
    assert fragment in lines[0], lines[0]
    assert len(lines[0]) <= MAX_MESSAGE, lines[0][:300]
    return lines[0]


@pytest.mark.parametrize("name", CASES)
def test_a_hostile_study_file_is_one_bounded_line(tmp_path, name):
    text, fragment = CASES[name]
    path = tmp_path / "study.yaml"
    path.write_text(text, encoding="utf-8")
    code, stderr, seconds = check(path)
    assert_one_line_refusal(code, stderr, fragment)
    assert seconds < 30


# --- model files ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_mlp(tmp_path_factory) -> Path:
    from test_model_file import mlp_file

    return mlp_file(tmp_path_factory.mktemp("model") / "mlp.keras")


def rewritten(source: Path, target: Path, edit: Callable[[dict], object] | None = None, padding: int = 0) -> Path:
    """A copy of a .keras archive with its config.json edited (or padded with spaces)."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as copy:
        for name in original.namelist():
            data = original.read(name)
            if name == "config.json":
                if edit is not None:
                    config = json.loads(data)
                    result = edit(config)
                    data = result if isinstance(result, bytes) else json.dumps(config).encode()
                data += b" " * padding
            copy.writestr(name, data)
    return target


def layer_config(config: dict, name: str) -> dict:
    return next(entry["config"] for entry in config["config"]["layers"] if entry.get("config", {}).get("name") == name)


def nested(depth: int) -> bytes:
    return b'{"x": ' * depth + b"{}" + b"}" * depth


MODEL_CASES: dict[str, tuple[Callable[[Path, Path], Path], str]] = {
    "config.json inflating to 200 MB": (lambda src, dst: rewritten(src, dst, padding=200 * 2**20), "inflates past the limit of 16 MiB"),
    "config.json nested 100,000 deep": (lambda src, dst: rewritten(src, dst, lambda c: nested(100_000)), "nested too deeply"),
    "units written as text": (
        lambda src, dst: rewritten(src, dst, lambda c: layer_config(c, "out").update(units="10")),
        "layer 'out' has units '10' of type str, not an integer",
    ),
    "an initializer that downloads": (
        lambda src, dst: rewritten(
            src,
            dst,
            lambda c: layer_config(c, "dense_a").update(
                kernel_initializer={
                    "module": "keras.initializers",
                    "class_name": "Constant",
                    "config": {"value": "https://example.org/w.npy"},
                }
            ),
        ),
        "layer 'dense_a' holds a URL",
    ),
    "an initializer with code": (
        lambda src, dst: rewritten(
            src,
            dst,
            lambda c: layer_config(c, "dense_a").update(kernel_initializer={"class_name": "__lambda__", "config": {"code": "cHJpbnQ="}}),
        ),
        "layer 'dense_a' holds Python code",
    ),
    "a registered name that is not ours": (
        lambda src, dst: rewritten(
            src,
            dst,
            lambda c: layer_config(c, "dense_a").update(
                kernel_regularizer={"module": "evil.regularizers", "class_name": "Evil", "config": {}, "registered_name": "evil>Evil"}
            ),
        ),
        "layer 'dense_a' holds a custom object 'evil>Evil'",
    ),
    "a FIFO for a model file": (lambda src, dst: (os.mkfifo(dst), dst)[1], "is not a regular file"),
    "weights that do not fit the layers": (
        lambda src, dst: rewritten(src, dst, lambda c: layer_config(c, "dense_a").update(units=13)),
        "Keras cannot load it",
    ),
}


@pytest.mark.parametrize("name", MODEL_CASES)
def test_a_hostile_model_file_is_refused_by_check_in_one_line(tmp_path, saved_mlp, name):
    make, fragment = MODEL_CASES[name]
    model = make(saved_mlp, tmp_path / "model.keras")
    config = {"study": "hostile", "seeds": [1], "dataset": {"name": "digits"}, "model": {"kind": "file", "path": str(model)}}
    config["families"] = {"dropout": {"rates": [0.0, 0.3]}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    loads_keras = name == "weights that do not fit the layers"  # TensorFlow reserves far more address space
    code, stderr, seconds = check(path, limit_memory=not loads_keras)
    line = assert_one_line_refusal(code, stderr, fragment)
    assert "model.path" in line
    assert seconds < 45


# --- what a job would otherwise meet -----------------------------------------------------------


def test_a_request_too_long_for_a_command_line_travels_in_a_file(tmp_path, monkeypatch):
    """A 25,000-feature group's spec exceeds Linux's 128 KiB per argument; the job reads it from a file."""
    from ablation_lab.runtime.hooks import MAX_INLINE_REQUEST, request_argument

    monkeypatch.chdir(tmp_path)
    short = json.dumps({"spec": {"indices": [1, 2]}})
    assert request_argument(short) == short
    long = json.dumps({"spec": {"indices": list(range(25_000))}, "seed": 1})
    argument = request_argument(long)
    assert argument.startswith("@") and len(argument) < 200 < MAX_INLINE_REQUEST < len(long)
    assert request_argument(long) == argument  # the same request, the same argument: no spurious rerun
    sys.path.insert(0, str(ROOT / "workflow" / "scripts"))
    try:
        from run_job import parse
    finally:
        sys.path.remove(str(ROOT / "workflow" / "scripts"))
    _job, _log, kwargs = parse(["train", "job.log", argument, "--threads", "1"])
    assert kwargs["spec"]["indices"] == list(range(25_000)) and kwargs["seed"] == 1


def test_labels_are_drawn_as_written_not_as_mathtext(tmp_path):
    """A feature, group or class name such as `$\\frac{$` must not crash a figure job as bad mathtext."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from ablation_lab.report.figures import save_figure

    sns.set_theme()
    figure, axis = plt.subplots()
    axis.set_title("$\\frac{$")
    axis.bar(["$x_1$", "$\\frac{$"], [1, 2])
    save_figure(figure, tmp_path / "figure.png")
    assert (tmp_path / "figure.png").stat().st_size > 0


def test_yaml_documents_that_mean_what_they_look_like_still_load():
    """The refusals are narrow: 0, 10, hex and quoted text still read as before."""
    from ablation_lab.config import load_yaml_text

    assert load_yaml_text("a: [0, 10, -3, 0x10, '010', 1_000]\n") == {"a": [0, 10, -3, 16, "010", 1000]}
