"""Imported first by every rule script: the `ablation_lab` package beside the rules wins.

In a rule's conda environment (`--software-deployment-method conda`) only the dependencies
are installed; the package itself is imported from this workflow's source tree.
"""

import os
import sys

# os.path, not pathlib: every job's adapter starts here, and pathlib's import is a fifth of
# a served job's start-up (see run_job.py)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
