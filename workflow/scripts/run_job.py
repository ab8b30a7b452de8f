"""Shell adapter of the jobs a warm worker may serve (`train`, `analyse_run`).

    python run_job.py JOB LOG REQUEST [--threads N] [--gpu N]

REQUEST is the job's arguments as one JSON document, built by the rule (`train_request`
and `analysis_request` in rules/common.smk). A `script:` job would first import Snakemake to unpickle its `snakemake`
object: 0.2 CPU s per job, several times the cost of handing the job to a warm worker
(benchmarks/README.md, bench_study). This adapter imports only the standard library and
`ablation_lab.dispatch`; with no worker free the job runs here, as before.
"""

import argparse
import json

import _package  # noqa: F401
from ablation_lab.dispatch import run_job

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("job")
parser.add_argument("log")
parser.add_argument("request", help="the job's arguments, a JSON object")
parser.add_argument("--threads", type=int, default=1)
parser.add_argument("--gpu", type=int, help="the job's gpu resource (training only)")
args = parser.parse_args()
kwargs = {**json.loads(args.request), "threads": args.threads}
if args.gpu is not None:
    kwargs["gpu"] = args.gpu
run_job(args.job, args.log, **kwargs)
