"""Command-line adapter of the `shell:` rules: `python run_job.py JOB LOG REQUEST [--threads N] [--gpu N]`.

The command line and its parsing are documented in `ablation_lab/runtime/adapter.py`; this file
makes the package beside the rules the one imported (`_package`), as every rule script does.
"""

import _package  # noqa: F401
from ablation_lab.runtime.adapter import main, parse  # noqa: F401  (tests read the command line through `parse`)

if __name__ == "__main__":
    main()
