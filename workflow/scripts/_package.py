"""Imported first by every rule script: the `ablation_lab` package beside the rules wins.

In a rule's conda environment (`--software-deployment-method conda`) only the dependencies
are installed; the package itself is imported from this workflow's source tree.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
