"""How a matrix of pairwise output changes separates classes: row AUCs, similarity ratios, clustering.

The measures local elasticity (analyses/elasticity.py) reports for each model: given how far
a step on example i moved the output at example j (`norms`, examples x examples), how well
that change separates i's class from the others, and how well clustering the similarity
matrix recovers the classes (against K-means on the raw inputs). A helper module: it
declares no analysis of its own.
"""

from __future__ import annotations

import numpy as np

CLUSTERINGS = ("kmeans", "spectral")


KMEANS_INITS = 4  # K-means restarts (k-means++ seeds), fixed in advance; the best of them is kept


def relative_similarity(norms: np.ndarray) -> np.ndarray:
    """S_rel[i, j] = change[i, j] / change[i, i]; a row whose self-change is exactly 0 is NaN."""
    diagonal = np.diag(norms)
    with np.errstate(divide="ignore", invalid="ignore"):
        similarity = norms / diagonal[:, None]
    similarity[diagonal == 0] = np.nan
    return similarity


def kernel_similarity(norms: np.ndarray, gradient_norms: np.ndarray, learning_rate: float) -> np.ndarray:
    """S_ker[i, j] = change[i, j] / (lr ||dL/df(x_i)||): never divides by a self-change."""
    return norms / (learning_rate * gradient_norms[:, None])


def symmetrised(similarity: np.ndarray) -> np.ndarray:
    return (similarity + similarity.T) / 2


def elasticity_ratio(similarity: np.ndarray, labels: np.ndarray) -> float:
    """Mean similarity over same-class pairs (i != j) / mean over different-class pairs; finite entries only."""
    same = labels[:, None] == labels[None, :]
    finite = np.isfinite(similarity)
    within = similarity[same & ~np.eye(len(labels), dtype=bool) & finite]
    between = similarity[~same & finite]
    if not len(within) or not len(between) or between.mean() == 0:
        return float("nan")
    return float(within.mean() / between.mean())


def row_aucs(norms: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per row i: ROC AUC of change[i, j] (j != i) separating x_j of x_i's class from the others.

    Invariant to the row's scale, so one AUC per row serves change, S_rel and S_ker alike.
    All rows at once by the rank (Mann-Whitney) form, ties at half: the same numbers as
    scikit-learn's `roc_auc_score` row by row (tested), without n calls of it. A row whose
    changes are all equal (e.g. all 0) scores 0.5.
    """
    from scipy.stats import rankdata

    n = len(labels)
    others = ~np.eye(n, dtype=bool)
    scores = norms[others].reshape(n, n - 1)
    same = (labels[:, None] == labels[None, :])[others].reshape(n, n - 1)
    positives = same.sum(axis=1)
    rank_sum = (rankdata(scores, axis=1) * same).sum(axis=1)
    return (rank_sum - positives * (positives + 1) / 2) / (positives * (n - 1 - positives))


def clustering_scores(similarity: np.ndarray, labels: np.ndarray, k: int, seed: int) -> dict[str, float]:
    """ARI and NMI against the classes of K-means on the matrix's rows and of spectral clustering with it as affinity.

    k is the number of classes and the seeds are fixed: nothing here is tuned, on test or elsewhere.
    A matrix with a non-finite entry (a zero self-change in S_rel) is not clustered (NaN).
    """
    from sklearn.cluster import KMeans, SpectralClustering

    names = [f"{score}_{method}" for method in CLUSTERINGS for score in ("ari", "nmi")]
    if not np.all(np.isfinite(similarity)):
        return dict.fromkeys(names, float("nan"))
    found = {
        "kmeans": KMeans(k, n_init=KMEANS_INITS, random_state=seed).fit_predict(similarity),
        "spectral": SpectralClustering(k, affinity="precomputed", random_state=seed).fit_predict(np.clip(similarity, 0, None)),
    }
    return {name: value for method, clusters in found.items() for name, value in agreement(labels, clusters, method).items()}


def agreement(labels: np.ndarray, clusters: np.ndarray, method: str) -> dict[str, float]:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    return {
        f"ari_{method}": float(adjusted_rand_score(labels, clusters)),
        f"nmi_{method}": float(normalized_mutual_info_score(labels, clusters)),
    }


def input_clustering_scores(x: np.ndarray, labels: np.ndarray, k: int, seed: int) -> dict[str, float]:
    """The reference: K-means on the raw (flattened) inputs of the same sample."""
    from sklearn.cluster import KMeans

    clusters = KMeans(k, n_init=KMEANS_INITS, random_state=seed).fit_predict(x.reshape(len(x), -1))
    return {f"{name}_inputs": value for name, value in agreement(labels, clusters, "kmeans").items()}


def similarity_metrics(
    norms: np.ndarray, gradient_norms: np.ndarray, labels: np.ndarray, learning_rate: float, seed: int
) -> dict[str, float]:
    """Ratios and clustering scores of both similarities; the degenerate rows of S_rel are counted."""
    k = len(np.unique(labels))
    matrices = {"relative": relative_similarity(norms), "kernel": kernel_similarity(norms, gradient_norms, learning_rate)}
    metrics = {"degenerate_rows": float(np.sum(np.diag(norms) == 0))}
    for name, similarity in matrices.items():
        both = symmetrised(similarity)
        metrics[f"ratio_{name}"] = elasticity_ratio(both, labels)
        metrics |= {f"{score}_{name}": value for score, value in clustering_scores(both, labels, k, seed).items()}
    return metrics
