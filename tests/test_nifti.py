from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import TINY_AFFINE, tiny_volume, write_nifti
from defacebench.io import nifti
from defacebench.io.errors import ImageError
from defacebench.io.nifti import SCRUBBED_FIELDS, load_image, read_header, reorient_ras, save_image


def test_load_reorients_to_ras_and_keeps_world_coordinates(tiny_image: Path) -> None:
    original = nib.load(str(tiny_image))
    img = load_image(tiny_image)
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
    assert img.get_fdata().dtype == np.float64
    # The same voxel value sits at the same world coordinate before and after.
    data0 = original.get_fdata()
    ijk0 = np.array([3, 5, 11])
    world = original.affine @ np.r_[ijk0, 1]
    ijk1 = np.round(np.linalg.inv(img.affine) @ world).astype(int)[:3]
    assert img.get_fdata()[tuple(ijk1)] == pytest.approx(data0[tuple(ijk0)], rel=1e-5)
    assert sorted(img.shape) == sorted(original.shape)


def test_load_squeezes_singleton_4d(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "four_d.nii.gz", tiny_volume()[..., None])
    assert load_image(path, reorient=False).shape == (17, 18, 19)


@pytest.mark.parametrize(
    ("data", "affine", "message"),
    [
        (np.zeros((17, 18, 19, 2), np.float32), TINY_AFFINE, "3D image"),
        (np.ones((17, 18, 8), np.float32), TINY_AFFINE, "too small"),
        (np.ones((17, 18, 19), np.float32), np.diag([7.0, 1, 1, 1]), "voxel sizes"),
        (np.zeros((17, 18, 19), np.float32), TINY_AFFINE, "all zeros"),
    ],
)
def test_load_rejects_bad_images(tmp_path: Path, data: np.ndarray, affine: np.ndarray, message: str) -> None:
    path = write_nifti(tmp_path / "bad.nii.gz", data, affine)
    with pytest.raises(ImageError, match=message) as info:
        load_image(path)
    assert info.value.path == path


def test_load_rejects_non_finite(tmp_path: Path) -> None:
    data = tiny_volume()
    data[1, 2, 3] = np.nan
    path = write_nifti(tmp_path / "nan.nii.gz", data)
    with pytest.raises(ImageError, match="1 non-finite"):
        load_image(path)


def test_unreadable_and_missing_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a nifti at all")
    with pytest.raises(ImageError, match="unreadable image header"):
        read_header(broken)
    with pytest.raises(ImageError, match="file not found"):
        read_header(tmp_path / "missing.nii.gz")


def test_save_scrubs_header_text_and_extensions(tmp_path: Path) -> None:
    src = write_nifti(tmp_path / "src.nii.gz", descrip=b"John Doe 1950-01-01", aux_file=b"secret", intent_name=b"name")
    img = nib.load(str(src))
    img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"patient: John Doe"))
    out = save_image(img, tmp_path / "out" / "clean.nii.gz")
    raw = out.read_bytes()
    written = nib.load(str(out))
    for field in SCRUBBED_FIELDS:
        assert not bytes(written.header[field]).strip(b"\x00")
    assert len(written.header.extensions) == 0
    assert b"John" not in nib.openers.Opener(str(out)).read()
    np.testing.assert_allclose(written.get_fdata(), img.get_fdata(), rtol=1e-6)
    np.testing.assert_allclose(written.affine, img.affine, atol=1e-5)
    assert raw  # the file exists and is non-empty


def test_save_is_atomic_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "dest.nii.gz"
    save_image(tiny_volume(), dest, affine=TINY_AFFINE)
    before = dest.read_bytes()

    def boom(img, path):  # the writer dies half-way through the temporary file
        Path(path).write_bytes(b"\x1f\x8b half a file")
        raise OSError("disk full")

    monkeypatch.setattr(nifti, "_write_nifti", boom)
    with pytest.raises(OSError, match="disk full"):
        save_image(tiny_volume(seed=3), dest, affine=TINY_AFFINE)
    assert dest.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["dest.nii.gz"]


def test_save_integer_mask_dtype(tmp_path: Path) -> None:
    mask = (tiny_volume() > 50).astype(np.float32)
    out = save_image(mask, tmp_path / "mask.nii.gz", affine=TINY_AFFINE, dtype=np.uint8)
    written = nib.load(str(out))
    assert written.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), mask.astype(np.uint8))


def test_reorient_ras_is_idempotent(tiny_image: Path) -> None:
    img = reorient_ras(nib.load(str(tiny_image)))
    again = reorient_ras(img)
    np.testing.assert_array_equal(img.affine, again.affine)


def test_fast_gzip_writes_nibabels_bytes_and_reads_them_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ISA-L's .nii.gz holds byte for byte the NIfTI stream nibabel writes, and read_image reads it as nib.load does."""
    import gzip

    descrip = "defaced (afni) by defacebench"
    for dtype, data in ((np.int16, np.rint(tiny_volume()).astype(np.int16)), (np.float32, tiny_volume()), (np.uint8, (tiny_volume() > 50).astype(np.uint8))):
        fast = save_image(data, tmp_path / "fast.nii.gz", affine=TINY_AFFINE, dtype=dtype, descrip=descrip)
        again = save_image(data, tmp_path / "again.nii.gz", affine=TINY_AFFINE, dtype=dtype, descrip=descrip)
        assert fast.read_bytes() == again.read_bytes()  # deterministic: no file name, mtime 0
        with monkeypatch.context() as patch:  # nibabel's own writer
            patch.setattr(nifti, "_write_nifti", lambda img, path: nib.save(img, str(path)))
            slow = save_image(data, tmp_path / "slow.nii.gz", affine=TINY_AFFINE, dtype=dtype, descrip=descrip)
        assert gzip.decompress(fast.read_bytes()) == gzip.decompress(slow.read_bytes())
        read, loaded = nifti.read_image(fast), nib.load(str(fast))
        assert read.header.binaryblock == loaded.header.binaryblock
        np.testing.assert_array_equal(np.asarray(read.dataobj), np.asarray(loaded.dataobj))
        assert np.asarray(read.dataobj).dtype == np.asarray(loaded.dataobj).dtype
