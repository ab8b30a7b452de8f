"""Ablation Lab: ablation studies of Keras models, orchestrated by Snakemake.

Importing the package (or any module but `models`, `train` and `knockout`) never
imports TensorFlow: the Snakefile, aggregation, plots and the report stay fast.
"""

__version__ = "0.4.0"

# Bump when a change to the training code changes what a trained model is: every training
# job's `params` carry it, so Snakemake retrains everything once. Snakemake does not see
# edits inside imported modules by itself.
TRAINING_CODE_VERSION = 3


def source_digest(*modules: str) -> str:
    """A short hash of some of this package's code, for the `params` of cheap rules.

    Each name is a dotted module ("analyses.knockout") or a sub-package ("report": every
    file in it, templates included). Evaluation, analysis, plots and the report rerun by
    themselves when their code changes (Snakemake does not look inside imported modules);
    training does not, on purpose: it reruns only when TRAINING_CODE_VERSION is bumped.
    """
    import hashlib
    from pathlib import Path

    root = Path(__file__).parent
    digest = hashlib.sha256()
    for name in modules:
        path = root.joinpath(*name.split("."))
        files = (
            sorted(f for f in path.rglob("*") if f.is_file() and "__pycache__" not in f.parts)
            if path.is_dir()
            else [path.with_suffix(".py")]
        )
        for file in files:
            digest.update(file.read_bytes())
    return digest.hexdigest()[:12]
