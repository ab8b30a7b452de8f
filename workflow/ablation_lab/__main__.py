"""Small command line: `python -m ablation_lab report-path config/config.yaml`."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ablation_lab.config import ConfigError, load_config_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ablation_lab")
    commands = parser.add_subparsers(dest="command", required=True)
    path_cmd = commands.add_parser("report-path", help="print where a study's HTML report lands")
    path_cmd.add_argument("config", type=Path)
    check_cmd = commands.add_parser("check", help="validate a study config and its data file, and list its variants")
    check_cmd.add_argument("config", type=Path)
    verify_cmd = commands.add_parser("verify", help="check a study's trained artifacts against the digests recorded when they were written")
    verify_cmd.add_argument("config", type=Path)
    findings_cmd = commands.add_parser("findings", help="print a finished study's three main findings (from its aggregated tables)")
    findings_cmd.add_argument("config", type=Path)
    compare_cmd = commands.add_parser(
        "compare", help="put the same variants of two finished studies side by side (reports/compare/<a>--<b>/compare.html)"
    )
    compare_cmd.add_argument("config", type=Path, help="study A")
    compare_cmd.add_argument("other", type=Path, help="study B")
    args = parser.parse_args(argv)
    try:
        config = load_config_file(args.config)
        if args.command == "compare":
            from ablation_lab.report.compare import compare

            page = compare(config, str(args.config), load_config_file(args.other), str(args.other))
            print(f"comparison: {page.resolve()} (table: {page.with_suffix('.csv').resolve()})")
            return 0
        if args.command == "report-path":
            print(Path("reports", config["study"], "report.html").resolve())
        elif args.command == "verify":
            from ablation_lab.study import Study

            problems, checked = verify(Study.from_config(config))
            for line in problems:
                print(line)
            print(f"{checked} trained runs checked, {len(problems)} problem(s)", file=sys.stderr)
            return 1 if problems else 0
        elif args.command == "findings":
            for line in findings(config):
                print(line)
        else:
            from ablation_lab.analyses.registry import ANALYSES
            from ablation_lab.study import Study

            study = Study.from_config(config)
            data = check_data(study)
            check_model_loads(config, study)
            for variant_id, variant in study.variants.items():
                print(f"{variant_id}\t{study.run_of(variant)}")
            print(
                f"{len(study.variants)} variants x {len(study.seeds)} seeds; {len(study.runs)} distinct trained models per seed",
                file=sys.stderr,
            )
            for run, users in study.sharing().items():
                print(f"shared model {run}: {', '.join(users)}", file=sys.stderr)
            for name in study.analyses():
                print(f"analysis {name}: {ANALYSES[name].description}", file=sys.stderr)
            if study.compensation_off:  # its retrained and test-time twins alike: no units, input_posthoc or noise_posthoc family
                print(f"compensation gap: off (no units, input_posthoc or noise_posthoc family), because {study.compensation_off}", file=sys.stderr)  # fmt: skip
            elif (study.config.get("posthoc") or {}).get("compensation"):
                print(f"compensation gap: on ({', '.join(study.compensation_comparisons())})", file=sys.stderr)
            print(data, file=sys.stderr)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a missing or unreadable study (or data) file: one line, no traceback
        reason = f"cannot read {error.filename}: {error.strerror}" if error.filename and error.strerror else str(error)
        print(f"error: {' '.join(reason.split())}", file=sys.stderr)
        return 2
    except ValueError as error:
        # Imported here, not at the top: `report-path` must stay quick, and data imports scikit-learn.
        from ablation_lab.data.base import DataError
        from ablation_lab.models.model_file import ModelFileError

        if not isinstance(error, (DataError, ModelFileError)):
            raise
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    return 0


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """File descriptor 2 to /dev/null while a native library starts; Python errors still raise."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def check_model_loads(config: dict[str, Any], study: Any) -> None:
    """A model file is loaded as the training job will load it (Keras, safe mode): what Keras
    refuses (weights that do not fit the layers, an object it will not build) is refused here,
    in one line naming the file, rather than in every job. Plan time reads only config.json."""
    model = config["model"]
    if model.get("kind") != "file":
        return
    from ablation_lab.models.model_file import check_loaded, load_model_file

    with native_stderr_silenced():  # TensorFlow's C++ start-up chatter would bury the one line
        from ablation_lab.training.train import configure_tensorflow

        configure_tensorflow(1)
        loaded = load_model_file(str(model["path"]))
    if study.info.n_classes is not None:
        check_loaded(loaded, str(model["path"]), study.info.input_shape, study.info.n_classes)


def check_data(study: Any) -> str:
    """Read and check the study's data as its data-prep job would (same one-line errors), and
    split it, but write nothing: a bad file is found before `snakemake` plans any job."""
    from ablation_lab.checks import check_writable
    from ablation_lab.data.split import inspect
    from ablation_lab.design import check_split_sizes
    from ablation_lab.study import LOGS, REPORTS, RESULTS

    _ = study.info  # the header checks, as the Snakefile makes them
    found = inspect(study.config["dataset"])
    check_split_sizes(study.config, found["sizes"])
    check_writable([RESULTS, REPORTS, LOGS])  # from the folder it runs in, as Snakemake would
    sizes = "/".join(str(found["sizes"][s]) for s in ("train", "val", "test"))
    return f"data {found['where']}: {found['classes']} classes, {sizes} train/validation/test examples"


def findings(config: dict[str, Any]) -> list[str]:
    """The study's main findings, read from the tables its `aggregate` job wrote (the report's own)."""
    import pandas as pd

    from ablation_lab.report.page import main_findings
    from ablation_lab.study import Study

    tables = Path(Study.from_config(config).tables_dir())
    summary, comparisons, runs = (pd.read_csv(tables / f"{name}.csv") for name in ("summary", "comparisons", "runs"))
    return [
        f"Main findings of study {config['study']}:",
        *(f"  {n}. {line}" for n, line in enumerate(main_findings(summary, comparisons, runs), 1)),
    ]


def verify(study: Any) -> tuple[list[str], int]:
    """One line per missing, corrupted or truncated artifact of the study's trained runs, and how
    many runs were checked (a run with none of its files has not been trained yet: not a problem).

    A missing file is listed too: nothing else would say so before the report quietly lacks it.
    """
    from ablation_lab.artifacts import ArtifactError, check_digest, read_json
    from ablation_lab.study import RUN_FILES, run_file

    problems, checked = [], 0
    for run in study.runs:
        for seed in study.seeds:
            files = {kind: Path(run_file(kind, study.data_key, run, seed)) for kind in RUN_FILES}
            missing = [kind for kind, path in files.items() if not path.exists()]
            if len(missing) == len(files):
                continue
            checked += 1
            for kind in missing:
                problems.append(
                    f"{files[kind]} is missing ({RUN_FILES[kind]} of {run} seed {seed}); rerun the study with the same "
                    "command: every run file is a target, so Snakemake retrains that run"
                )
            if "provenance" in missing:
                continue
            digests = read_json(files["provenance"]).get("digests", {})
            for kind in ("model", "history", "predictions"):
                if kind in missing:
                    continue
                try:
                    check_digest(files[kind], digests.get(kind), "train")
                except ArtifactError as error:
                    problems.append(f"{error}; here: `rm -r {files['provenance'].parent}` ({RUN_FILES[kind]} of {run} seed {seed})")
    return problems, checked


if __name__ == "__main__":
    raise SystemExit(main())
