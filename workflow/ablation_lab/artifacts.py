"""Artifact I/O: every file is written to a temporary name beside its target and renamed.

A rename within one directory is atomic on POSIX, so a reader (or a rerun after a kill)
sees either the old file, the new file or nothing, never half a file.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ablation_lab.runtime.watchdog import alive


@contextlib.contextmanager
def atomic_path(target: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path in the target's directory; rename it onto the target on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    handle, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.{_writer_tag()}.", suffix=suffix or target.suffix)
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; artifacts are shared
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


STALE_SECONDS = 24 * 3600  # a temporary this old is stale whoever wrote it


def _host_tag(host: str | None = None) -> str:
    return hashlib.sha256((host or socket.gethostname()).encode()).hexdigest()[:8]


def _writer_tag() -> str:
    """`<pid>-<host digest>`: a temporary's name says which process on which machine writes it."""
    return f"{os.getpid()}-{_host_tag()}"


def stale_temporary(path: Path, target: Path, now: float | None = None) -> bool:
    """Whether a temporary of `target` was left by a writer that is gone (SIGKILL skips `finally`).

    Its name `.<target>.<pid>-<host>.<random><suffix>` names its writer: a process of this
    machine that is no longer running left it. A temporary of another machine (a cluster
    node sharing the folder) or without a writer in its name is stale only when it is older
    than a day, so cleanup never removes a file a live process is writing, even one that
    overlaps a rerun.
    """
    try:
        age = (now or time.time()) - path.stat().st_mtime
    except FileNotFoundError:
        return False
    if age > STALE_SECONDS:
        return True
    writer = re.fullmatch(r"(\d+)-([0-9a-f]{8})\..*", path.name[len(f".{target.name}.") :], re.DOTALL)
    if writer is None or writer.group(2) != _host_tag():
        return False
    pid = int(writer.group(1))
    return pid != os.getpid() and not alive(pid)


def remove_stale_temporaries(target: Path) -> None:
    """Delete the temporaries of `target` that killed writers left behind (`stale_temporary`)."""
    for temporary in target.parent.glob(f".{target.name}.*"):
        if stale_temporary(temporary, target):
            temporary.unlink(missing_ok=True)


def write_atomic(target: str | Path, writer: Callable[[Path], Any]) -> None:
    """Call `writer(tmp_path)` and move the result onto `target`."""
    with atomic_path(target) as tmp:
        writer(tmp)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


SEALED = "b64json:"


def sealed(value: Any) -> str:
    """A value as base64-encoded JSON: how user-supplied strings travel in rule `params`.

    Snakemake writes a rule's params unescaped into a `<script>` block of `snakemake
    --report`; a CSV header such as `a</script><script>...` would run there. Labels, group
    names, paths and the study config therefore cross the Snakefile/job boundary sealed
    (the base64 alphabet is inert in HTML); jobs open them with `unsealed`.
    """
    return SEALED + base64.urlsafe_b64encode(json.dumps(value, sort_keys=True, default=_json_default).encode()).decode("ascii")


def unsealed(text: str) -> Any:
    if not isinstance(text, str) or not text.startswith(SEALED):
        raise ValueError("expected a value sealed by ablation_lab.artifacts.sealed")
    return json.loads(base64.urlsafe_b64decode(text[len(SEALED) :].encode("ascii")))


class ArtifactError(RuntimeError):
    """An artifact whose content is not what its writer recorded; the message says what to do."""


def file_digest(path: str | Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def check_digest(path: str | Path, expected: str | None, rule: str) -> None:
    """Refuse a corrupted or truncated artifact, naming it and how to rebuild it (one line)."""
    if expected is None:
        return  # written before digests were recorded
    actual = file_digest(path) if Path(path).exists() else "missing"
    if actual != expected:
        raise ArtifactError(
            f"{path} is corrupted or truncated (its sha256 differs from the one recorded when it was written): "
            f"delete its run folder and rerun the study (every run file is a target of `rule all`, so Snakemake "
            f"rebuilds what is missing), or force its {rule} job with `--forcerun {rule}`"
        )


def write_json(target: str | Path, payload: Any) -> None:
    text = json.dumps(payload, indent=2, sort_keys=True, default=_json_default) + "\n"
    write_atomic(target, lambda tmp: tmp.write_text(text))


def read_json(path: str | Path) -> Any:
    with open(path) as handle:
        return json.load(handle)


def write_npz(target: str | Path, **arrays: np.ndarray) -> None:
    def save(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    write_atomic(target, save)


def write_table(target: str | Path, frame: Any) -> None:
    """A pandas frame as CSV or Parquet, chosen by the target's suffix."""
    target = Path(target)
    if target.suffix == ".parquet":
        write_atomic(target, lambda tmp: frame.to_parquet(tmp, index=False))
    else:
        write_atomic(target, lambda tmp: frame.to_csv(tmp, index=False))


def read_table(path: str | Path) -> Any:
    """A table `write_table` wrote as CSV; an empty frame (an analysis with nothing to compare
    writes one: a file of one line break, no header) reads back as an empty table."""
    import pandas as pd

    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


@contextlib.contextmanager
def job_log(path: str | Path | None) -> Iterator[logging.Logger]:
    """Send stdout, stderr and the `ablation_lab` logger of a job to its Snakemake log file.

    An exception is written to the log with its traceback before the job fails, so the one
    place a user looks (the rule's `log:`) says what went wrong.
    """
    logger = logging.getLogger("ablation_lab")
    logger.setLevel(logging.INFO)
    if path is None:
        yield logger
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", buffering=1) as stream:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        saved = sys.stdout, sys.stderr
        saved_fds = os.dup(1), os.dup(2)
        sys.stdout.flush()
        sys.stderr.flush()
        # File descriptors too: TensorFlow's C++ runtime writes to fd 2 directly.
        os.dup2(stream.fileno(), 1)
        os.dup2(stream.fileno(), 2)
        sys.stdout = sys.stderr = stream
        try:
            yield logger
        except BaseException:
            logger.exception("job failed")
            raise
        finally:
            stream.flush()
            os.dup2(saved_fds[0], 1)
            os.dup2(saved_fds[1], 2)
            for fd in saved_fds:
                os.close(fd)
            sys.stdout, sys.stderr = saved
            logger.removeHandler(handler)
