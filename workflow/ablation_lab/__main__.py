"""Small command line: `python -m ablation_lab report-path config/config.yaml`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ablation_lab.config import ConfigError, load_config_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ablation_lab")
    commands = parser.add_subparsers(dest="command", required=True)
    path_cmd = commands.add_parser("report-path", help="print where a study's HTML report lands")
    path_cmd.add_argument("config", type=Path)
    check_cmd = commands.add_parser("check", help="validate a study config and list its variants")
    check_cmd.add_argument("config", type=Path)
    args = parser.parse_args(argv)
    try:
        config = load_config_file(args.config)
        if args.command == "report-path":
            print(Path("reports", config["study"], "report.html").resolve())
        else:
            from ablation_lab.study import Study

            study = Study.from_config(config)
            for variant_id, variant in study.variants.items():
                print(f"{variant_id}\t{study.run_of(variant)}")
            print(
                f"{len(study.variants)} variants x {len(study.seeds)} seeds; {len(study.runs)} distinct trained models per seed",
                file=sys.stderr,
            )
            for run, users in study.sharing().items():
                print(f"shared model {run}: {', '.join(users)}", file=sys.stderr)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a missing or unreadable study (or data) file: one line, no traceback
        reason = f"cannot read {error.filename}: {error.strerror}" if error.filename and error.strerror else str(error)
        print(f"error: {' '.join(reason.split())}", file=sys.stderr)
        return 2
    except ValueError as error:
        # Imported here, not at the top: `report-path` must stay quick, and data imports scikit-learn.
        from ablation_lab.data import DataError

        if not isinstance(error, DataError):
            raise
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
