"""imaging.percentile: the same value as np.percentile (issue 21), bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from defacebench.imaging.percentile import MIN_SIZE, percentile


def _arrays(rng: np.random.Generator):
    n = MIN_SIZE + 12_345
    yield rng.normal(size=n).astype(np.float32)  # continuous
    yield rng.integers(0, 50, n).astype(np.float32)  # ties, as an int16 head's voxels
    yield np.abs(rng.standard_cauchy(3 * n))  # float64, heavy tail
    yield np.concatenate([np.zeros(n, np.float32), rng.random(n, dtype=np.float32)])  # half zeros (air)
    yield rng.random((30, 41, 57)).astype(np.float32)  # 3D


@pytest.mark.parametrize("q", [0, 0.5, 12.34, 50, 75, 99, 99.5, 99.9, 100])
def test_equals_numpy_bit_for_bit(q: float) -> None:
    for values in _arrays(np.random.default_rng(int(q * 100))):
        ours, numpy = percentile(values, q), float(np.percentile(values, q))
        assert np.float64(ours).tobytes() == np.float64(numpy).tobytes(), (values.dtype, values.size, q, ours, numpy)


def test_falls_back_to_numpy() -> None:
    rng = np.random.default_rng(1)
    values = rng.random(MIN_SIZE + 7).astype(np.float32)
    values[5] = np.nan
    assert np.isnan(percentile(values, 99))
    ints = rng.integers(0, 1000, MIN_SIZE + 7)
    assert percentile(ints, 99) == float(np.percentile(ints, 99))
    small = rng.random(100).astype(np.float32)
    assert percentile(small, 99) == float(np.percentile(small, 99))
