"""k-means 1-D solver and codebooks against a slow reference Lloyd and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.cluster import KMeans

from slimtorch.errors import ConfigError
from slimtorch.quantize import kmeans as km
from slimtorch.quantize import kmeans1d
from slimtorch.quantize.kmeans import KMeansConfig, kmeans_1d, kmeans_codebook


def reference_lloyd(x: np.ndarray, init: np.ndarray, max_iter: int = 300):
    """Textbook Lloyd: assign each point to its nearest centroid (first on ties), move each
    centroid to the mean of its points (an empty cluster keeps its centroid)."""
    x = x.astype(np.float64)
    c = init.astype(np.float64).copy()
    labels = None
    for _ in range(max_iter):
        new = np.argmin(np.abs(x[:, None] - c[None, :]), axis=1)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        for j in range(len(c)):
            if np.any(labels == j):
                c[j] = x[labels == j].mean()
    return c, np.argmin(np.abs(x[:, None] - c[None, :]), axis=1)


def independent_init(x: np.ndarray, k: int, init: str) -> np.ndarray:
    s = np.sort(x.astype(np.float64))
    if init == "linear":
        return np.array([s[0] + (s[-1] - s[0]) * i / (k - 1) for i in range(k)]) if k > 1 else s[:1]
    return np.array([s[min(int((i + 0.5) / k * len(s)), len(s) - 1)] for i in range(k)])


def sample(kind: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "normal":
        return rng.standard_normal(n).astype(np.float32)
    if kind == "laplace":
        return rng.laplace(0, 0.05, n).astype(np.float32)
    return np.concatenate([rng.normal(m, 0.1, n // 3) for m in (-2, 0.5, 3)]).astype(np.float32)


@pytest.mark.parametrize("init", ["linear", "density"])
@pytest.mark.parametrize("kind", ["normal", "laplace", "mixture"])
@pytest.mark.parametrize("k", [1, 2, 5, 16])
def test_matches_reference_lloyd(init: str, kind: str, k: int) -> None:
    x = sample(kind, 1500, seed=k)
    ref_c, ref_a = reference_lloyd(x, independent_init(x, k, init))
    c, a = kmeans_1d(torch.from_numpy(x), k, init=init)
    np.testing.assert_allclose(c.numpy(), ref_c, rtol=1e-5, atol=1e-6)
    assert np.array_equal(a.numpy(), ref_a)


def test_block_sums_path_matches_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kmeans1d, "FULL_PREFIX_MAX", 100)
    monkeypatch.setattr(kmeans1d, "SUM_BLOCK", 64)
    x = sample("mixture", 3000, seed=1)
    ref_c, ref_a = reference_lloyd(x, independent_init(x, 8, "linear"))
    c, a = kmeans_1d(torch.from_numpy(x), 8)
    np.testing.assert_allclose(c.numpy(), ref_c, rtol=1e-5, atol=1e-6)
    assert np.array_equal(a.numpy(), ref_a)


@pytest.mark.parametrize("k", [4, 16])
def test_matches_sklearn_lloyd(k: int) -> None:
    x = sample("normal", 2000, seed=7).astype(np.float64)
    init = independent_init(x, k, "linear")
    sk = KMeans(k, init=init[:, None], n_init=1, algorithm="lloyd", tol=0.0, max_iter=300)
    sk.fit(x[:, None])
    c, a = kmeans_1d(torch.from_numpy(x), k)
    assert c.dtype == torch.float64
    np.testing.assert_allclose(c.numpy(), sk.cluster_centers_[:, 0], rtol=1e-9, atol=1e-12)
    assert np.array_equal(a.numpy(), sk.labels_)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-100, 100, width=32), min_size=1, max_size=60),
    st.integers(1, 8),
    st.sampled_from(["linear", "density", "random"]),
)
def test_result_is_a_lloyd_fixed_point(values: list[float], k: int, init: str) -> None:
    x = torch.tensor(values, dtype=torch.float32)
    c, a = kmeans_1d(x, k, init=init, seed=3)
    assert c.shape == (k,) and bool((c[1:] >= c[:-1]).all())
    dist = (x[:, None].double() - c[None, :].double()).abs()  # nearest centroid, within rounding
    chosen = dist.gather(1, a[:, None])[:, 0]
    assert bool((chosen <= dist.min(dim=1).values + 1e-6 * (1 + x.abs().double())).all())
    for j in range(k):  # each non-empty centroid is the mean of its members
        members = x[a == j].double()
        if members.numel():
            assert abs(float(members.mean()) - float(c[j])) <= 1e-5 * (1 + abs(float(c[j])))


def test_ties_go_to_the_lower_centroid() -> None:
    c, a = kmeans_1d(torch.tensor([0.0, 1.0, 2.0]), k=2, init="linear", max_iter=1)
    # init (0, 2); the point 1.0 is equidistant and goes to centroid 0 like argmin would
    assert a.tolist() == [0, 0, 1]
    assert c.tolist() == [0.5, 2.0]


def test_random_init_is_seeded_and_uses_observations() -> None:
    x = torch.from_numpy(sample("normal", 500, 2))
    c1, _ = kmeans_1d(x, 4, init="random", seed=5, max_iter=1)
    c2, _ = kmeans_1d(x, 4, init="random", seed=5, max_iter=1)
    assert torch.equal(c1, c2)


def test_input_shape_kept_and_not_modified() -> None:
    w = torch.randn(3, 4, 5)
    before = w.clone()
    _c, a = kmeans_1d(w, 4)
    assert a.shape == w.shape and a.dtype == torch.int64 and torch.equal(w, before)


def test_sparse_zeros_stay_zero_and_are_not_clustered() -> None:
    torch.manual_seed(0)
    w = torch.randn(32, 32)
    w[torch.rand(32, 32) < 0.7] = 0.0  # a pruned weight
    codebook, idx, zero = kmeans_codebook(w, bits=3)
    assert zero == km.ZERO_INDEX and codebook[zero] == 0.0
    decoded = codebook[idx]
    assert torch.equal(decoded == 0, w == 0)  # zeros exact, nonzeros never mapped to 0
    c_nz, a_nz = kmeans_1d(w[w != 0], 2**3 - 1)  # the nonzeros alone, 7 clusters
    assert torch.equal(codebook[1:], c_nz)
    assert torch.equal(idx[w != 0], a_nz + 1)


def test_dense_weight_uses_every_entry() -> None:
    w = torch.randn(64, 16)
    codebook, idx, zero = kmeans_codebook(w, bits=2)
    assert (
        zero == km.NO_ZERO_INDEX
        and codebook.shape == (4,)
        and set(idx.unique().tolist())
        == {
            0,
            1,
            2,
            3,
        }
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bits": 0},
        {"bits": 17},
        {"bits": 4.0},
        {"bits": 4, "init": "kmeans++"},
        {"bits": 4, "per": "channel"},
        {"bits": 4, "max_iter": 0},
        {"bits": 4, "exclude": ("(",)},
        {"bits": 4, "layer_bits": {"fc": 0}},
    ],
)
def test_config_rejects_bad_input(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        KMeansConfig(**kwargs)


def test_solver_rejects_bad_input() -> None:
    with pytest.raises(ConfigError):
        kmeans_1d(torch.tensor([]), 2)
    with pytest.raises(ConfigError):
        kmeans_1d(torch.tensor([1.0, float("nan")]), 2)
    with pytest.raises(ConfigError):
        kmeans_1d(torch.tensor([1.0]), 0)
    with pytest.raises(ConfigError):
        kmeans_codebook(torch.randn(4), bits=0)


def test_config_layer_bits_and_exclude() -> None:
    cfg = KMeansConfig(bits=4, exclude=("classifier",), layer_bits={r"features\..*": 2})
    assert cfg.layer_bits == ((r"features\..*", 2),)
    assert cfg.bits_for("features.0.0") == 2 and cfg.bits_for("fc") == 4
    assert cfg.excludes("classifier") and not cfg.excludes("features.0.0")
