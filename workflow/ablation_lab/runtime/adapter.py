"""The command-line adapter of the two `shell:` rules (`train`, `analyse_run`): one `run_job` call.

    python workflow/scripts/run_job.py JOB LOG REQUEST [--threads N] [--gpu N]
    python -m ablation_lab.runtime.adapter JOB LOG REQUEST [--threads N] [--gpu N]

REQUEST is the job's arguments as one JSON document, built by the rule (`train_request`
and `analysis_request` in rules/common.smk), or `@FILE` holding it when it is too long for
a command line (runtime.hooks.request_argument). A `script:` job would first import Snakemake to unpickle its `snakemake`
object: 0.2 CPU s per job, several times the cost of handing the job to a warm worker
(benchmarks/README.md, bench_study). This adapter imports only the standard library and
`ablation_lab.runtime.dispatch`; with no worker free `run_job` runs the job in this process.
"""

import json
import sys

from ablation_lab.runtime.dispatch import run_job

OPTIONS = ("--threads", "--gpu")


def parse(argv: list[str]) -> tuple[str, str, dict]:
    """JOB, LOG and the job's arguments (REQUEST, plus --threads and --gpu).

    The usual command line is read directly: importing argparse is a quarter of this
    adapter's start-up, paid by every served job while its worker waits. Anything else
    (--help, a mistake) goes to argparse, which explains it.
    """
    options = dict(zip(argv[3::2], argv[4::2], strict=False))
    fast = (
        len(argv) >= 3
        and len(argv) % 2 == 1
        and set(options) <= set(OPTIONS)
        and all(value.isdigit() for value in options.values())
        and not any(value.startswith("-") for value in argv[:2])
    )
    if fast:
        job, log, request = argv[:3]
    else:
        import argparse

        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("job")
        parser.add_argument("log")
        parser.add_argument("request", help="the job's arguments, a JSON object")
        parser.add_argument("--threads", type=int, default=1)
        parser.add_argument("--gpu", type=int, help="the job's gpu resource (training only)")
        args = parser.parse_args(argv)
        job, log, request = args.job, args.log, args.request
        options = {name: str(value) for name, value in (("--threads", args.threads), ("--gpu", args.gpu)) if value is not None}
    if request.startswith("@"):
        with open(request[1:], encoding="utf-8") as handle:
            request = handle.read()
    kwargs = {**json.loads(request), "threads": int(options.get("--threads", 1))}
    if "--gpu" in options:
        kwargs["gpu"] = int(options["--gpu"])
    return job, log, kwargs


def main(argv: list[str] | None = None) -> None:
    job, log, kwargs = parse(sys.argv[1:] if argv is None else argv)
    run_job(job, log, **kwargs)


if __name__ == "__main__":  # `python -m ablation_lab.runtime.adapter`: a module read from git has no script on disk
    main()
