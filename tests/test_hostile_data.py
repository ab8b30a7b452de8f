"""Hostile data files through the command line: `python -m ablation_lab check` and `snakemake -n`
refuse each with the same one line naming the file (or key), in bounded time and memory.

Each case builds a study file and its data in tmp_path. `check` runs on every case: in this
process for the plain ones (fast), and in a subprocess under RLIMIT_AS and a timeout for the
resource cases (pipes, devices, decompression bombs, arrays that only a header claims), where a
hang or an allocation is the bug. `snakemake -n` (the `workflow` marker: ~5-15 s each) runs on
every case and must print the very line `check` prints; the prepare_data job's script, should
a file change between the plan and the job, prints that line alone too.

"One line" for `snakemake -n`: what it prints once Snakemake's own banner line ("Using workflow
specific profile ...") is set aside; Snakemake prints the message of a SystemExit raised while
the Snakefile is parsed and nothing else (no frames, no "DataError in file ..." header).
"""

from __future__ import annotations

import gzip
import io
import os
import socket
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ablation_lab.__main__ import main
from workflow_helpers import snakemake, write_config

# A few hundred MB above what the interpreter holds once check's imports are done: reading
# any of these files whole, or allocating what a header claims, would pass it.
HEADROOM_MB = 300
TIMEOUT_S = 120  # the test's own guard against a hang
RESOURCE_SECONDS = 45  # the bound asserted for a resource case: imports plus a capped read, on 2 shared cores
PLAIN_SECONDS = 10  # the bound for the other cases, run in this process (imports done)

BANNER = "Using workflow specific profile"

DRIVER = f"""
import resource, sys
from ablation_lab.__main__ import main
import ablation_lab.study, ablation_lab.data.split, pandas, sklearn.model_selection  # what check imports: the baseline
size = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmSize")) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + {HEADROOM_MB} << 20, size + {HEADROOM_MB} << 20))
sys.exit(main(["check", sys.argv[1]]))
"""


def study(tmp: Path, dataset: dict) -> Path:
    config = {
        "study": "hostile",
        "seeds": [1],
        "dataset": dataset,
        "model": {"hidden_units": [4]},
        "training": {"epochs": 1, "early_stopping_patience": 0},
        "families": {"dropout": {"rates": [0.5]}},
    }
    return write_config(tmp, config)


def csv_text(tmp: Path, text: str | bytes, name: str = "t.csv") -> dict:
    (tmp / name).write_bytes(text.encode() if isinstance(text, str) else text)
    return {"name": "csv", "path": str(tmp / name)}


def table(n: int = 60, classes: int = 3, **columns) -> str:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "label": np.arange(n) % classes})
    return frame.assign(**columns).to_csv(index=False)


def npz(tmp: Path, **arrays) -> dict:
    np.savez(tmp / "d.npz", **arrays)
    return {"name": "npz", "path": str(tmp / "d.npz")}


def xy(n: int = 60, classes: int = 3) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(0).normal(size=(n, 4)), "y": np.arange(n) % classes}


def fifo(tmp: Path) -> dict:
    os.mkfifo(tmp / "t.csv")
    return {"name": "csv", "path": str(tmp / "t.csv")}


def unix_socket(tmp: Path) -> dict:
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(tmp / "t.csv"))  # the socket file outlives the socket
    return {"name": "csv", "path": str(tmp / "t.csv")}


def link_to_dev_zero(tmp: Path) -> dict:
    (tmp / "t.csv").symlink_to("/dev/zero")
    return {"name": "csv", "path": str(tmp / "t.csv")}


def folder(tmp: Path) -> dict:
    (tmp / "t.csv").mkdir()
    return {"name": "csv", "path": str(tmp / "t.csv")}


def gzip_bomb(tmp: Path) -> dict:
    """A valid header and rows, then 1.1 GiB of rows of zeros, as 1,100 concatenated gzip members (about 1 MB)."""
    block = gzip.compress(b"0,0,0\n" * 174763, compresslevel=9)  # 1 MiB of rows, about 1 KB compressed
    (tmp / "t.csv.gz").write_bytes(gzip.compress(table().encode()) + block * 1100)
    return {"name": "csv", "path": str(tmp / "t.csv.gz")}


def no_line_break(tmp: Path) -> dict:
    (tmp / "t.csv.gz").write_bytes(gzip.compress(b"a" * (3 << 20)))
    return {"name": "csv", "path": str(tmp / "t.csv.gz")}


def sparse_giant(tmp: Path) -> dict:
    """A CSV whose first 8 KiB are fine and whose size is 1.1 GiB (sparse: no disk used)."""
    path = tmp / "t.csv"
    path.write_text(table(600))
    os.truncate(path, 1100 << 20)
    return {"name": "csv", "path": str(path)}


def npy_member(shape: tuple[int, ...], body: bytes, dtype: str = "<f8") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + body


def npz_members(tmp: Path, x: bytes) -> dict:
    y = io.BytesIO()
    np.save(y, np.arange(60) % 3)
    with zipfile.ZipFile(tmp / "d.npz", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", x)
        archive.writestr("y.npy", y.getvalue())
    return {"name": "npz", "path": str(tmp / "d.npz")}


def cifar_tar_bomb(tmp: Path) -> dict:
    """A .tar.gz whose first member's header claims 2 GiB (the data itself is not there)."""
    info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
    info.size = 2 << 30
    (tmp / "cifar.tar.gz").write_bytes(gzip.compress(info.tobuf() + bytes(4096)))
    return {"name": "cifar10", "path": str(tmp / "cifar.tar.gz")}


def idx_bomb(tmp: Path) -> dict:
    """An MNIST folder whose training images' IDX header claims 2,000,000 images."""
    root = tmp / "mnist"
    root.mkdir()
    header = bytes([0, 0, 8, 3]) + (2_000_000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    (root / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + bytes(1000)))
    return {"name": "mnist", "path": str(root)}


Builder = Callable[[Path], dict]
# (case, build, a fragment of the message, resource case?)
CASES: list[tuple[str, Builder, str, bool]] = [
    # what the path is
    ("folder", folder, "is a folder, not a file", False),
    ("dev-null", lambda t: {"name": "csv", "path": "/dev/null"}, "is not a regular file but a character device", False),
    ("fifo", fifo, "is not a regular file but a named pipe (FIFO)", True),
    ("socket", unix_socket, "is not a regular file but a socket", True),
    ("symlink-to-dev-zero", link_to_dev_zero, "is not a regular file but a character device", True),
    ("empty-file", lambda t: csv_text(t, b""), "is empty (0 bytes)", False),
    ("binary-file", lambda t: csv_text(t, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"), "is a binary file, not a CSV text table", False),
    ("gzipped-binary", lambda t: csv_text(t, gzip.compress(bytes(range(256)) * 4), "t.csv.gz"), "is a binary file", False),
    # the CSV's header and rows
    ("semicolon-delimited", lambda t: csv_text(t, table().replace(",", ";")), "the header looks semicolon-separated (';'", False),
    ("tab-delimited", lambda t: csv_text(t, table().replace(",", "\t")), "the header looks tab-separated ('\\t'", False),
    ("duplicated-label-column", lambda t: csv_text(t, "a,label,b,label\n1,0,2,0\n"), "column 'label' appears 2 times", False),
    ("missing-label-column", lambda t: csv_text(t, table().replace("label", "target")), "has no label column 'label'", False),
    ("malformed-rows", lambda t: csv_text(t, "a,b,label\n1,2,0\n1,2,3,4,5\n"), "cannot read", False),
    ("nan-feature", lambda t: csv_text(t, table(a=[np.nan] + [0.5] * 59)), "1 NaN/inf feature values in 1 row", False),
    ("inf-feature", lambda t: csv_text(t, table(b=[0.5] * 59 + [np.inf])), "1 NaN/inf feature values in 1 row (first row 59)", False),
    ("one-example-of-a-class", lambda t: csv_text(t, table(30, 2) + "0.1,0.2,7\n"), "class 7 has only 1 example", False),
    ("too-many-classes", lambda t: csv_text(t, table(20, 10)), "only 20 examples for 10 classes", False),
    ("overflow-when-standardised", lambda t: csv_text(t, table(a=np.arange(60) * 1e200)), "column 'a' is not finite after scaling", False),
    ("gzip-bomb", gzip_bomb, "decompressed, is over the limit of 1 GiB", True),
    ("no-line-break", no_line_break, "no line break in its first 1 MiB", True),
    ("over-the-size-limit", sparse_giant, "the file is 1.07 GiB, over the limit of 1 GiB", True),
    # npz archives
    ("npz-not-a-zip", lambda t: csv_text(t, "x,y\n1,2\n", "d.npz") | {"name": "npz"}, "is not a NumPy .npz archive", False),
    ("npz-wrong-keys", lambda t: npz(t, features=xy()["x"], labels=xy()["y"]), "must hold arrays named 'x' and 'y'", False),
    ("npz-x-rank-1", lambda t: npz(t, x=np.ones(30), y=np.arange(30) % 2), "'x' has shape (30,)", False),
    ("npz-y-rank-2", lambda t: npz(t, x=xy()["x"], y=np.eye(3)[xy()["y"]]), "labels have shape (60, 3)", False),
    ("npz-lengths-differ", lambda t: npz(t, x=np.ones((60, 2)), y=np.arange(59) % 3), "60 feature rows but 59 labels", False),
    ("npz-nan", lambda t: npz(t, x=np.where(np.eye(60, 4) == 1, np.nan, 1.0), y=xy()["y"]), "4 NaN/inf feature values", False),
    ("npz-object-array", lambda t: npz(t, x=np.array([[1, "a"]] * 60, dtype=object), y=xy()["y"]), "holds Python objects", False),
    ("npz-too-many-classes", lambda t: npz(t, x=np.ones((30, 2)), y=np.arange(30) % 15), "only 30 examples for 15 classes", False),
    ("npz-overflow", lambda t: npz(t, x=xy()["x"] * 1e300, y=xy()["y"]), "is not finite after scaling", False),
    ("npz-header-claims-1e11", lambda t: npz_members(t, npy_member((10**11, 4), bytes(64))), "of shape (100000000000, 4)", True),
    ("npz-header-claims-more", lambda t: npz_members(t, npy_member((60, 4), bytes(64))), "but its member holds", True),
    # image archives
    ("cifar-member-claims-2-GiB", cifar_tar_bomb, "is 2 GiB, over the limit of 64 MiB", True),
    ("mnist-idx-claims-2M-images", idx_bomb, "the IDX data of shape (2000000, 28, 28) is 1.46 GiB", True),
]

IDS = [case for case, *_ in CASES]


def named_file(dataset: dict) -> str:
    return Path(dataset["path"]).name


def one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if not line.startswith(BANNER)]
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{text[-3000:]}"
    return lines[0]


def check_in_subprocess(path: Path) -> tuple[int, str, float]:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, str(path)], capture_output=True, text=True, timeout=TIMEOUT_S, env=env, check=False
    )
    return done.returncode, done.stderr, time.perf_counter() - started


def check_here(path: Path, capsys) -> tuple[int, str, float]:
    capsys.readouterr()
    started = time.perf_counter()
    code = main(["check", str(path)])
    return code, capsys.readouterr().err, time.perf_counter() - started


@pytest.mark.parametrize(("case", "build", "fragment", "resource"), CASES, ids=IDS)
def test_check_refuses_with_one_line_naming_the_file(tmp_path, capsys, case, build, fragment, resource):
    dataset = build(tmp_path)
    path = study(tmp_path, dataset)
    code, stderr, seconds = check_in_subprocess(path) if resource else check_here(path, capsys)
    line = one_line(stderr)
    assert code != 0, stderr
    assert line.startswith("error: ") and named_file(dataset) in line and fragment in line, line
    assert seconds < (RESOURCE_SECONDS if resource else PLAIN_SECONDS), f"{case}: {seconds:.1f} s"


def test_the_table_is_large():
    assert len(CASES) >= 25 and len(set(IDS)) == len(IDS)


@pytest.mark.workflow
@pytest.mark.parametrize(("case", "build", "fragment", "resource"), CASES, ids=IDS)
def test_a_dry_run_prints_the_line_check_prints(tmp_path, capsys, case, build, fragment, resource):
    """Plan time refuses every case check refuses, with the very same line and no Python frames or wrappers."""
    dataset = build(tmp_path)
    path = study(tmp_path, dataset)
    code, stderr, _ = check_in_subprocess(path) if resource else check_here(path, capsys)
    started = time.perf_counter()
    planned = snakemake(tmp_path, path, "--dry-run", check=False, timeout=TIMEOUT_S)
    seconds = time.perf_counter() - started
    assert planned.returncode != 0 and code != 0
    assert one_line(planned.stdout) == one_line(stderr) and fragment in one_line(stderr)
    for wrapper in ("Traceback", "DataError", "RuleException", "Error in rule", "in file", ", line "):
        assert wrapper not in planned.stdout, planned.stdout
    assert seconds < 60, f"{case}: {seconds:.1f} s"
    assert not (tmp_path / "results").exists()


# the prepare_data job's script as Snakemake runs it: its module with a `snakemake` object in its globals
SCRIPT_DRIVER = """
import json, runpy, sys, types
from ablation_lab.artifacts import sealed
cfg, data, meta, log = sealed(json.loads(sys.argv[1])), *sys.argv[2:5]
stub = types.SimpleNamespace(log=[log], params=types.SimpleNamespace(dataset=cfg), output=types.SimpleNamespace(data=data, meta=meta))
runpy.run_path(sys.argv[5], init_globals={"snakemake": stub})
"""


@pytest.mark.runtime
@pytest.mark.parametrize("case", ["semicolon-delimited", "one-example-of-a-class", "npz-lengths-differ", "overflow-when-standardised"])
def test_the_prepare_data_script_prints_the_line_alone_and_fails(tmp_path, case):
    """Should the data change between the plan and the job, the job's script prints check's line alone (the traceback in its log)."""
    import json

    from ablation_lab.config import validate_config
    from workflow_helpers import ROOT

    _, build, fragment, _ = next(c for c in CASES if c[0] == case)
    dataset = validate_config({"study": "hostile", "dataset": build(tmp_path)})["dataset"]
    log, out = tmp_path / "prepare_data.log", tmp_path / "split"
    args = [json.dumps(dataset), str(out / "split.npz"), str(out / "meta.json"), str(log), str(ROOT / "workflow/scripts/prepare_data.py")]
    done = subprocess.run([sys.executable, "-c", SCRIPT_DRIVER, *args], capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert done.returncode == 1 and done.stdout == "", done
    line = one_line(done.stderr)
    assert line.startswith("error: ") and fragment in line and named_file(dataset) in line, done.stderr
    assert "Traceback" in log.read_text() and not (out / "split.npz").exists()


def test_a_good_file_passes_check_with_a_summary_of_its_split(tmp_path, capsys):
    dataset = csv_text(tmp_path, table())
    code, stderr, _ = check_here(study(tmp_path, dataset), capsys)
    assert code == 0, stderr
    assert f"data '{dataset['path']}': 3 classes, 38/10/12 train/validation/test examples" in stderr
