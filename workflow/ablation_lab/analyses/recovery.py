"""Recovery: how fast a network compensates for units removed after training (issue 28).

Post-hoc knockout (knockout.py) and the `units` retrain family measure the two ends of
compensation: nothing relearned, everything relearned. This analysis measures the path
between them. Per trained model: a fraction f of one hidden layer's units (conv: channels)
is removed in the order of a criterion, and the reduced network is trained on, on the
training split with the study's optimizer, for a grid of budgets (steps and epochs),
evaluated on test at each budget on the way: one run per (criterion, fraction, arm), never
restarted per budget (training/masked.py: removed units are masked in every forward pass
and their weights stay exactly 0). Arms:

- `finetune`: the survivors keep their trained weights (budget 0 is the knockout itself);
- `rewind`: the survivors reset to their values at initialisation (Frankle & Carbin 2019),
  re-created by rebuilding the model with the run's seed exactly as training does (a test
  checks it gives the initial weights to the bit), so training saves nothing extra;
- `reinit`: fresh random weights (another seed) in the reduced architecture; at full budget
  what the `units` retrain variant trains (their initialiser scale still counts the removed
  units' fan-in and fan-out, a narrower model's does not).

Criteria (`orderings`): the knockout orderings (magnitude from the weights, activation and
single-unit importance on the validation split, as knockout computes them: budget 0 equals
the knockout analysis's accuracy for the same mask), plus the Taylor / Fisher score and the
OBD saliency on the training split (models/saliency.py). The test split is only predicted.
Study summaries, figures and the report section: analyses/recovery_report.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ablation_lab.analyses.base import Analysis, Params, RunContext, listed_families
from ablation_lab.analyses.knockout import keep_masks, single_unit_importance, unit_order
from ablation_lab.analyses.recovery_report import figures, plot, recovery_section, summarise
from ablation_lab.models.surgery import chosen_layers, split_model
from ablation_lab.report.sections import ReportInputs, SectionContent

ARMS = ("finetune", "rewind", "reinit")
GRADIENT_ORDERINGS = {"taylor_lowest": "taylor", "obd_lowest": "obd"}
KEYS = ("layer", "fractions", "orderings", "arms", "steps", "epochs", "draws", "families")  # its block's keys in its probe's identity
COLUMNS = ["layer", "ordering", "draw", "fraction", "arm", "steps", "budget", "epochs", "metric", "value", "hit_row"]

Rebuild = Callable[[int], list[np.ndarray]]  # seed -> every variable of the model as training builds it (model.variables order)


def removal_scores(
    model: Any, layer: str, split: Any, inputs: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray], orderings: Sequence[str]
) -> dict[str, np.ndarray]:
    """What each ordering ranks units by: weights, validation split (knockout's scores), training split (gradient scores)."""
    from ablation_lab.models.saliency import obd_scores, taylor_scores

    activations = split.head(inputs["val"])
    scores = {"magnitude": split.magnitude, "activation": activations.reshape(-1, split.units).mean(axis=0)}
    if any(o.startswith("importance") for o in orderings):
        scores["importance"] = single_unit_importance(split, activations, labels["val"], np.zeros(split.units, np.float32))
    if "taylor_lowest" in orderings:
        scores["taylor"] = taylor_scores(model, layer, split.head, inputs["train"], labels["train"])
    if "obd_lowest" in orderings:
        scores["obd"] = obd_scores(model, layer, split.head, inputs["train"], labels["train"])
    return scores


def removal_order(ordering: str, rng: np.random.Generator, scores: dict[str, np.ndarray]) -> np.ndarray:
    """Which units go first: knockout's orderings, or the smallest Taylor / OBD score first."""
    if ordering in GRADIENT_ORDERINGS:
        return np.argsort(scores[GRADIENT_ORDERINGS[ordering]], kind="stable")
    return unit_order(ordering, rng, scores)


def fresh_seed(seed: int) -> int:
    """The re-initialised arm's seed: derived from the run's, never equal to it (rewind uses the run's own)."""
    return int(np.random.SeedSequence([seed, 31]).generate_state(1)[0] % 2**31)


def recovery_table(
    model: Any,
    inputs: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
    training: Mapping[str, Any],
    params: RecoveryParams,
    seed: int,
    rebuild: Rebuild | None,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Every (ordering, draw, fraction, arm) run of one trained model along the budget grid, and its test hits per row.

    `inputs`/`labels` hold the train, val and test splits as the model saw them; `rebuild`
    (None: a model training cannot rebuild, such as a file's own weights) gives the rewind
    and re-initialise arms their starting weights.
    """
    from ablation_lab.specs import TrainingSpec
    from ablation_lab.training.masked import MaskedTraining, batch_rows, budget_steps, seeded_dropout

    layer = chosen_layers(model, [params.layer])[0]
    split = split_model(model, layer)
    scores = removal_scores(model, layer, split, inputs, labels, params.orderings)
    trainer = MaskedTraining(model, layer, TrainingSpec.of(training), inputs["train"], labels["train"])
    budgets = budget_steps(params.steps, params.epochs, trainer.steps_per_epoch)
    rows = batch_rows(seed, len(labels["train"]), trainer.batch_size, max(steps for steps, _ in budgets))
    # a loaded model's dropout seed state is its process's draw: set from the run's seed, as rewind's is
    starts = {"finetune": seeded_dropout(model, [v.numpy() for v in model.variables], seed)}
    if rebuild is not None:
        starts |= {"rewind": rebuild(seed), "reinit": rebuild(fresh_seed(seed))}
    arms = [arm for arm in params.arms if arm in starts]
    out, hits = [], []
    for ordering in params.orderings:
        for draw in range(params.draws if ordering == "random" else 1):
            order_rng = np.random.default_rng(np.random.SeedSequence([seed, 13, draw]))  # knockout's draws
            masks = keep_masks(removal_order(ordering, order_rng, scores), params.fractions)
            for fraction, keep in zip(params.fractions, masks, strict=True):
                for arm in arms:
                    base = {"layer": layer, "ordering": ordering, "draw": draw, "fraction": fraction, "arm": arm}
                    for steps, predicted in trainer.run(starts[arm], keep, [s for s, _ in budgets], rows, inputs["test"]):
                        label = dict(budgets)[steps]
                        right = predicted == labels["test"]
                        out.append(base | {"steps": steps, "budget": label, "epochs": steps / trainer.steps_per_epoch})
                        out[-1] |= {"metric": "accuracy", "value": float(right.mean()), "hit_row": len(hits)}
                        hits.append(right)
                    nonzero = float(trainer.removed_weights_nonzero())
                    out.append(base | {"steps": steps, "budget": label, "epochs": np.nan, "metric": "removed_weights_nonzero"})
                    out[-1] |= {"value": nonzero, "hit_row": -1}
    table = pd.DataFrame(out, columns=COLUMNS)
    return table, {"hits": np.array(hits, dtype=bool).reshape(len(hits), len(labels["test"]))}


def initial_variables(model_cfg: Mapping[str, Any], input_shape: Sequence[int], n_classes: int, seed: int) -> list[np.ndarray]:
    """The model's variables at initialisation, as `training.train.train_model` builds them for this seed."""
    from ablation_lab.models.build import build_model
    from ablation_lab.training.train import seed_everything

    seed_everything(seed)
    return [v.numpy() for v in build_model(dict(model_cfg), input_shape, n_classes).variables]


def recovery_run(context: RunContext, params: RecoveryParams) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Recovery curves of one trained model (see the module docstring)."""
    inputs = {split: context.inputs(split) for split in ("train", "val", "test")}
    labels = {"train": context.split.y("train"), "val": context.labels("val"), "test": context.labels("test")}
    model_cfg = context.spec["model"]
    rebuild = None
    if context.model_spec.kind != "file":  # a file's own layers: nothing here can re-create their initial values
        n_classes = int(context.split.meta["n_classes"])
        shapes = [tuple(v.shape) for v in context.model.variables]

        def rebuild(seed: int) -> list[np.ndarray]:
            built = initial_variables(model_cfg, inputs["train"].shape[1:], n_classes, seed)
            if [w.shape for w in built] != shapes:
                raise ValueError("recovery: the rebuilt model's variables differ from the trained model's; rewind needs the same model")
            return built

    return recovery_table(context.model, inputs, labels, context.spec["training"], params, context.seed, rebuild)


@dataclass(frozen=True)
class RecoveryParams(Params):
    """What is removed and how it is trained on (the `recovery` block), the study's margin, and the narrowed layer."""

    config_key = "recovery"

    layer: int | str  # the hidden layer (1-based) or layer name units are removed from
    fractions: list[float]  # shares of its units removed
    orderings: list[str]  # which units go first; the first is the one rewind and re-initialise are compared under
    arms: list[str]  # where the survivors start: `finetune`, `rewind`, `reinit`
    steps: list[int]  # the budget grid, in training steps
    epochs: list[int]  # the budget grid, in epochs
    draws: int  # random orderings drawn
    families: list[str]  # whose models it sees
    margin: float  # the study's `equivalence_margin`
    units_layer: int | None  # the hidden layer the `units` retrain family narrows (None: the study has none)


def recovery_params(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """Its block's keys, the equivalence margin, and which hidden layer the `units` retrain family narrows (if any)."""
    from ablation_lab.analyses.compensation import compensation_layer

    block = config.get("recovery")
    if not block:
        return None
    posthoc = config.get("posthoc") or {}
    narrowed = compensation_layer(posthoc["layers"]) if posthoc.get("compensation") else None
    return {key: block[key] for key in KEYS} | {"margin": config["equivalence_margin"], "units_layer": narrowed}


def recovery_chain_only(config: Mapping[str, Any]) -> list[str]:
    """Recovery removes units of one layer and trains the chain on (each layer takes the previous one's output)."""
    return ["recovery"]


def recovery_check(config: Mapping[str, Any]) -> None:
    """`recovery.layer` (one layer: checked as a one-item list) is one this model has, at plan time."""
    from ablation_lab import checks

    checks.check_posthoc_layers({"layers": [config["recovery"]["layer"]]}, config["model"], "recovery.layer")


def section(inputs: ReportInputs) -> list[SectionContent]:
    """The report section, handed the study's typed parameters."""
    return recovery_section(inputs, ANALYSIS.study_params(inputs.study))


ANALYSIS = Analysis(
    "recovery",
    "Recovery after removal",
    "A fraction of a hidden layer's units removed from the trained model, then trained on; test accuracy along a budget grid.",
    recovery_run,
    recovery_params,
    RecoveryParams,
    chain_only=recovery_chain_only,
    check=recovery_check,
    code=(
        "ablations",
        "analyses.knockout",
        "analyses.recovery_report",
        "models.surgery",
        "models.saliency",
        "training.masked",
        "training.train",  # with models.build: what rewind rebuilds the initial weights with
        "models.build",
        "statistics",
    ),
    wants=listed_families("recovery"),
    summaries=("recovery_curves", "recovery_share", "recovery_reach", "recovery_comparisons"),
    summarise=summarise,
    figures=figures,
    plot=plot,
    sections=(section,),
)
