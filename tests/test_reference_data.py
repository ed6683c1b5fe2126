"""Synthetic tasks are deterministic and well formed; digits loads only with scikit-learn."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from precisionlab.reference import data


@pytest.mark.parametrize("name", ["blobs", "teacher", "regression", "sequence"])
def test_tasks_are_deterministic(name):
    a, b, c = data.get_task(name, seed=3), data.get_task(name, seed=3), data.get_task(name, seed=4)
    for field in ("x_train", "y_train", "x_test", "y_test"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.x_train, c.x_train)
    assert a.x_train.dtype == np.float32 and a.x_train.shape[0] + a.x_test.shape[0] == 512
    if a.n_classes is None:
        assert a.y_train.dtype == np.float32
    else:
        assert a.y_train.dtype == np.int64 and set(np.unique(a.y_train)) <= set(range(a.n_classes))


def test_blobs_are_balanced_and_shaped():
    d = data.gaussian_blobs(120, 5, 3, test_fraction=0.25, seed=0)
    y = np.concatenate([d.y_train, d.y_test])
    assert np.bincount(y).tolist() == [40, 40, 40]
    assert d.x_train.shape == (90, 5) and d.x_test.shape == (30, 5) and d.n_features == 5


def test_sequence_task_hides_the_prototype_in_one_token():
    d = data.sequence_task(64, seq_len=6, n_features=4, n_classes=4, noise=0.0, seed=1)
    assert d.x_train.shape[1:] == (6, 4)
    nonzero_tokens = (np.abs(d.x_train).sum(axis=2) > 0).sum(axis=1)
    assert np.all(nonzero_tokens == 1)


def test_regression_output_scale_shrinks_targets():
    big, small = data.teacher_regression(seed=0), data.teacher_regression(output_scale=1e-4, seed=0)
    np.testing.assert_allclose(small.y_train, 1e-4 * big.y_train, rtol=1e-6)


def test_batches_cover_the_training_set():
    d = data.gaussian_blobs(40, 2, 2, seed=0)
    xs = [x for x, _ in d.batches(8)]
    assert [len(x) for x in xs] == [8, 8, 8, 6]
    shuffled = np.concatenate([y for _, y in d.batches(8, seed=1)])
    assert sorted(shuffled.tolist()) == sorted(d.y_train.tolist())


def test_digits_without_scikit_learn_says_so(monkeypatch):
    for name in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "sklearn", None)      # makes "import sklearn" fail
    with pytest.raises(ImportError, match="scikit-learn"):
        data.digits()


def test_digits_with_scikit_learn():
    pytest.importorskip("sklearn")
    d = data.digits(seed=0)
    assert d.n_classes == 10 and d.n_features == 64
    assert d.x_train.shape[0] + d.x_test.shape[0] == 1797
    assert d.x_train.min() >= 0 and d.x_train.max() <= 1
    assert np.array_equal(d.x_test, data.digits(seed=0).x_test)


@pytest.mark.parametrize("call, exc, words", [
    (lambda: data.get_task("mnist"), ValueError, "task='mnist'"),
    (lambda: data.gaussian_blobs(n_classes=1), ValueError, "n_classes=1"),
    (lambda: data.gaussian_blobs(n_samples=2.5), TypeError, "n_samples=2.5"),
    (lambda: data.gaussian_blobs(test_fraction=1.0), ValueError, "test_fraction=1.0"),
    (lambda: next(data.gaussian_blobs().batches(0)), ValueError, "batch_size=0"),
])
def test_bad_input_is_named(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    assert words in str(info.value)
