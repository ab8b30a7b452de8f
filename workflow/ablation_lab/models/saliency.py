"""Unit saliencies that need gradients: the first-order Taylor (Fisher) score and the OBD saliency.

Both are estimated on the split they are handed (the recovery analysis hands them the
training split, never test) for the units (conv: channels) of the layer a model is cut at.

- Taylor / Fisher (Molchanov et al. 2017; Theis et al. 2018): removing unit i from example
  n changes its loss by about -a_ni g_ni (first order), g = d loss_n / d a. The score is
  1/(2N) sum_n (sum over positions a_ni g_ni)^2, the Fisher information of a gate on the unit.
- OBD (LeCun, Denker & Solla 1990): the saliency of a weight w is h_ww w^2 / 2 with h_ww the
  diagonal of the Hessian of the mean training loss; a unit's saliency is the sum over its
  outgoing weights W_ij in the next Dense layer. Since only z_j = sum_i a_i W_ij + b_j depends
  on W_ij, and linearly, h = mean_n a_ni^2 d^2 loss_n / d z_nj^2 exactly (no Gauss-Newton
  step): OBD_i = 1/2 sum_j W_ij^2 mean_n(a_ni^2 H_njj), H_n the Hessian of loss_n in z_n.
  It needs the cut layer to feed a Dense layer directly (Dropout between them is skipped: it is
  the identity at inference), as an MLP's hidden layers do.

Smaller scores are removed first (`taylor_lowest`, `obd_lowest`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ablation_lab.models.surgery import layers_after


def _per_example_loss(labels: Any, probabilities: Any) -> Any:
    import keras

    return keras.losses.sparse_categorical_crossentropy(labels, probabilities)


def taylor_scores(model: Any, layer: str, head: Any, x: np.ndarray, y: np.ndarray, chunk: int = 512) -> np.ndarray:
    """Fisher score per unit (channel) of `layer`: 1/(2N) sum_n (sum over positions a * dloss_n/da)^2."""
    import tensorflow as tf

    after = layers_after(model, layer)
    total = None
    for start in range(0, len(x), chunk):
        activations = tf.constant(head(x[start : start + chunk]))
        with tf.GradientTape() as tape:
            tape.watch(activations)
            out = activations
            for each in after:
                out = each(out, training=False)
            loss = tf.reduce_sum(_per_example_loss(y[start : start + chunk], out))
        products = (activations * tape.gradient(loss, activations)).numpy().astype(np.float64)
        per_example = products.reshape(len(products), -1, products.shape[-1]).sum(axis=1)  # over positions
        part = (per_example**2).sum(axis=0)
        total = part if total is None else total + part
    return (total / (2 * len(x))).astype(np.float64)


def obd_scores(model: Any, layer: str, head: Any, x: np.ndarray, y: np.ndarray, chunk: int = 256) -> np.ndarray:
    """OBD saliency per unit of `layer`: 1/2 sum_j W_ij^2 mean_n(a_ni^2 H_njj), exact diagonal Hessian (module docstring)."""
    import keras
    import tensorflow as tf

    after = [each for each in layers_after(model, layer) if not isinstance(each, keras.layers.Dropout)]
    dense = after[0] if after else None
    if not isinstance(dense, keras.layers.Dense):
        raise ValueError(f"recovery: the obd criterion needs {layer!r} to feed a Dense layer directly (an MLP hidden layer)")
    kernel, bias = dense.kernel, dense.bias
    weighted = None
    for start in range(0, len(x), chunk):
        activations = head(x[start : start + chunk])
        if activations.ndim != 2:
            raise ValueError(f"recovery: the obd criterion needs {layer!r} to output one value per unit (no spatial axes)")
        z = tf.matmul(tf.constant(activations), kernel) + (bias if bias is not None else 0.0)
        with tf.GradientTape() as outer:
            outer.watch(z)
            with tf.GradientTape() as inner:
                inner.watch(z)
                out = dense.activation(z)
                for each in after[1:]:
                    out = each(out, training=False)
                loss = tf.reduce_sum(_per_example_loss(y[start : start + chunk], out))
            gradient = inner.gradient(loss, z)
        diagonal = tf.linalg.diag_part(outer.batch_jacobian(gradient, z)).numpy().astype(np.float64)
        part = (activations.astype(np.float64) ** 2).T @ diagonal  # (units, next units)
        weighted = part if weighted is None else weighted + part
    w = np.asarray(kernel, dtype=np.float64)
    return 0.5 * (w**2 * weighted / len(x)).sum(axis=1)
