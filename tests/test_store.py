from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import TINY_AFFINE
from defacebench.io.errors import InputError
from defacebench.io.store import list_conditions, open_condition, write_condition, write_index


def _index(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "participant_id": [f"sub-{i:02d}" for i in range(n)],
            "session_id": [""] * n,
            "run": [""] * n,
            "age": np.linspace(56, 96, n),
            "split": (["train"] * 6 + ["val", "test"]) * (n // 8),
        }
    )


def test_store_roundtrip_memmap_and_checksum(tmp_path: Path) -> None:
    index = _index(8)
    rng = np.random.default_rng(0)
    images = [rng.normal(size=(7, 8, 9)).astype(np.float32) for _ in range(8)]
    write_index(tmp_path, "tiny", index)
    write_condition(tmp_path, "tiny", "raw", images, index, TINY_AFFINE)
    store = open_condition(tmp_path, "tiny", "raw", verify=True)
    assert isinstance(store.images, np.memmap) and store.images.dtype == np.float16
    assert store.images.shape == (8, 7, 8, 9)
    np.testing.assert_allclose(store.images[3], images[3], atol=2e-3)
    assert list(store.rows("val")) == [6] and list(store.rows("test")) == [7]
    assert list_conditions(tmp_path, "tiny") == ["raw"]
    np.testing.assert_allclose(store.affine, TINY_AFFINE)


def test_stale_and_corrupt_stores_are_detected(tmp_path: Path) -> None:
    index = _index(8)
    write_index(tmp_path, "tiny", index)
    write_condition(tmp_path, "tiny", "raw", np.ones((8, 7, 8, 9)), index, TINY_AFFINE)
    arr = np.load(tmp_path / "stores" / "tiny" / "raw.npy", mmap_mode="r+")
    arr[0, 0, 0, 0] = 5
    arr.flush()
    del arr
    with pytest.raises(InputError, match="checksum"):
        open_condition(tmp_path, "tiny", "raw", verify=True)
    changed = index.copy()
    changed.loc[0, "split"] = "test"
    write_index(tmp_path, "tiny", changed)
    with pytest.raises(InputError, match="stale"):
        open_condition(tmp_path, "tiny", "raw")
    with pytest.raises(InputError, match="no store"):
        open_condition(tmp_path, "tiny", "face-afni")
