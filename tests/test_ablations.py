"""Each family's variants and data transforms, checked pixel by pixel on small arrays."""

from __future__ import annotations

import numpy as np
import pytest
from ablation_lab.ablations import (
    add_noise,
    apply_transforms,
    combine,
    drop_features,
    expand_activation,
    expand_capacity,
    expand_dropout,
    expand_input,
    expand_noise,
    mask_region,
    region_mask,
)
from ablation_lab.data.base import DatasetInfo

MNIST = DatasetInfo("image", (28, 28))
TABLE = DatasetInfo("tabular", (3,), ("mean radius", "mean texture", "worst area"))


def split_of(x: np.ndarray) -> dict[str, np.ndarray]:
    y = np.zeros(len(x), dtype=np.int32)
    return {"x_train": x, "y_train": y, "x_val": x.copy(), "y_val": y, "x_test": x.copy(), "y_test": y}


def test_variant_ids_are_readable_and_stable():
    assert [v.id for v in expand_dropout({"rates": [0.0, 0.25]}, MNIST)] == ["dropout/rate-0", "dropout/rate-0.25"]
    assert [v.id for v in expand_activation({"functions": ["relu", "linear"]}, MNIST)] == ["activation/relu", "activation/linear"]
    noise = expand_noise({"levels": [0.3], "kinds": ["gaussian", "salt_pepper"], "apply_to": ["both", "test"]}, MNIST)
    assert [v.id for v in noise] == ["noise/gauss-0.3", "noise/gauss-0.3-testonly", "noise/sp-0.3", "noise/sp-0.3-testonly"]
    assert [v.id for v in expand_capacity({"widths": [16, 64], "depths": [1, 2]}, MNIST)] == [
        "capacity/w16-d1",
        "capacity/w64-d1",
        "capacity/w16-d2",
        "capacity/w64-d2",
    ]


def test_column_groups_cover_the_image_like_the_article():
    fours = [v.name for v in expand_input({"groups": [{"kind": "columns", "size": 4}]}, MNIST)]
    assert fours == ["cols-00-03", "cols-04-07", "cols-08-11", "cols-12-15", "cols-16-19", "cols-20-23", "cols-24-27"]
    sevens = [v.name for v in expand_input({"groups": [{"kind": "columns", "size": 7}], "fill": "mean"}, MNIST)]
    assert sevens == ["cols-00-06-mean", "cols-07-13-mean", "cols-14-20-mean", "cols-21-27-mean"]
    patches = expand_input({"groups": [{"kind": "patches", "size": 14}]}, MNIST)
    assert [v.name for v in patches] == ["patch-r00-c00-s14", "patch-r00-c14-s14", "patch-r14-c00-s14", "patch-r14-c14-s14"]


def test_zero_fill_zeroes_exactly_the_columns_of_the_group():
    x = np.ones((2, 6, 5), dtype=np.float32)
    out = mask_region(x, {"axis": "columns", "start": 1, "stop": 3}, "zero", np.random.default_rng(0), x[0], (0.0, 1.0))
    assert np.all(out[:, :, 1:3] == 0)
    assert np.all(out[:, :, [0, 3, 4]] == 1)
    assert np.all(x == 1), "the input must not be modified in place"


def test_rows_and_patches_masks():
    rows = region_mask({"axis": "rows", "start": 2, "stop": 4}, (6, 5))
    assert rows.sum() == 2 * 5 and rows[2:4].all()
    patch = region_mask({"axis": "patches", "row": 3, "col": 1, "size": 2}, (6, 5, 3))
    assert patch.shape == (6, 5, 3) and patch.sum() == 2 * 2 * 3 and patch[3:5, 1:3].all()


def test_mean_fill_uses_the_training_mean_image_and_noise_fill_is_seeded():
    train = np.stack([np.full((4, 4), 0.2), np.full((4, 4), 0.6)]).astype(np.float32)
    transform = {"op": "mask", "region": {"axis": "columns", "start": 0, "stop": 2}, "fill": "mean"}
    out = apply_transforms(split_of(train), [transform], seed=1)
    np.testing.assert_allclose(out["x_test"][:, :, :2], 0.4)
    noisy = {"op": "mask", "region": {"axis": "columns", "start": 0, "stop": 2}, "fill": "noise"}
    first = apply_transforms(split_of(train), [noisy], seed=1)["x_test"]
    again = apply_transforms(split_of(train), [noisy], seed=1)["x_test"]
    other = apply_transforms(split_of(train), [noisy], seed=2)["x_test"]
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert first[:, :, :2].min() >= 0.2 and first[:, :, :2].max() <= 0.6


def test_gaussian_noise_is_seeded_clipped_and_of_the_requested_strength():
    x = np.full((200, 10, 10), 0.5, dtype=np.float32)
    a = add_noise(x, "gaussian", 0.1, np.random.default_rng(3), (0.0, 1.0))
    b = add_noise(x, "gaussian", 0.1, np.random.default_rng(3), (0.0, 1.0))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32
    assert abs(float((a - x).std()) - 0.1) < 0.005
    strong = add_noise(x, "gaussian", 1.0, np.random.default_rng(3), (0.0, 1.0))
    assert strong.min() == 0.0 and strong.max() == 1.0
    assert np.array_equal(add_noise(x, "gaussian", 0.0, np.random.default_rng(3), (0.0, 1.0)), x)


def test_salt_and_pepper_corrupts_the_requested_share():
    x = np.full((100, 20, 20), 0.5, dtype=np.float32)
    out = add_noise(x, "salt_pepper", 0.2, np.random.default_rng(0), (0.0, 1.0))
    changed = out != 0.5
    assert abs(changed.mean() - 0.2) < 0.01
    assert set(np.unique(out[changed])) == {0.0, 1.0}


def test_test_only_noise_leaves_training_data_clean():
    x = np.random.default_rng(0).uniform(0, 1, (10, 4, 4)).astype(np.float32)
    out = apply_transforms(split_of(x), [{"op": "noise", "kind": "gaussian", "level": 0.2, "apply_to": "test"}], seed=0)
    assert np.array_equal(out["x_train"], x) and np.array_equal(out["x_val"], x)
    assert not np.array_equal(out["x_test"], x)
    both = apply_transforms(split_of(x), [{"op": "noise", "kind": "gaussian", "level": 0.2, "apply_to": "both"}], seed=0)
    assert not np.array_equal(both["x_train"], x)
    assert not np.array_equal(both["x_train"], both["x_test"]), "splits draw independent noise"


def test_tabular_leave_one_covariate_out_removes_the_column():
    variants = expand_input({"groups": [{"kind": "features"}]}, TABLE)
    assert [v.name for v in variants] == ["drop-mean_radius", "drop-mean_texture", "drop-worst_area"]
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    out = apply_transforms(split_of(x), variants[1].transforms, seed=0)
    np.testing.assert_array_equal(out["x_test"], x[:, [0, 2]])
    assert drop_features(x, [0, 2]).shape == (4, 1)


def test_named_feature_groups():
    variants = expand_input({"groups": [{"kind": "features", "named": {"means": ["mean radius", "mean texture"]}}]}, TABLE)
    assert [v.name for v in variants] == ["drop-means"]
    assert variants[0].transforms[0]["indices"] == [0, 1]
    with pytest.raises(ValueError, match="unknown features"):
        expand_input({"groups": [{"kind": "features", "named": {"g": ["nope"]}}]}, TABLE)


def test_combination_is_the_cartesian_product_with_merged_changes():
    noise = expand_noise({"levels": [0.0, 0.3], "kinds": ["gaussian"], "apply_to": ["both"]}, MNIST)
    dropout = expand_dropout({"rates": [0.0, 0.5]}, MNIST)
    grid = combine(noise, dropout)
    assert [v.id for v in grid] == [
        "noise-x-dropout/gauss-0__rate-0",
        "noise-x-dropout/gauss-0__rate-0.5",
        "noise-x-dropout/gauss-0.3__rate-0",
        "noise-x-dropout/gauss-0.3__rate-0.5",
    ]
    last = grid[-1]
    assert last.model == {"dropout": 0.5}
    assert last.transforms[0]["level"] == 0.3
    assert last.coords == {"noise": "gaussian 0.3", "dropout": "dropout 0.5"}


def test_noise_on_tabular_data_stays_inside_each_features_own_training_range():
    """A standardised table: each column has its own range; noise must not leave it."""
    from ablation_lab.ablations import apply_transforms

    rng = np.random.default_rng(0)
    scales = np.array([0.1, 1.0, 10.0] * 4 + [100.0])
    arrays = {f"x_{s}": (rng.normal(size=(200, 13)) * scales).astype(np.float32) for s in ("train", "val", "test")}
    arrays |= {f"y_{s}": np.zeros(200, np.int32) for s in ("train", "val", "test")}
    low, high = arrays["x_train"].min(axis=0), arrays["x_train"].max(axis=0)
    for kind in ("gaussian", "salt_pepper"):
        noisy = apply_transforms(arrays, [{"op": "noise", "kind": kind, "level": 0.2, "apply_to": "both"}], seed=1)
        for split in ("train", "val", "test"):
            x, changed = noisy[f"x_{split}"], noisy[f"x_{split}"] != arrays[f"x_{split}"]
            columns = np.nonzero(changed)[1]
            inside = (x[changed] >= low[columns] - 1e-6) & (x[changed] <= high[columns] + 1e-6)
            assert inside.all(), f"{kind} moved a value outside its feature's training range on {split}"
        assert not np.array_equal(noisy["x_train"], arrays["x_train"])
