"""Sidecars: the scrub (deny and allow lists), BIDS inheritance, defaced header text, method records."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import write_nifti
from defacebench.io.errors import InputError
from defacebench.io.nifti import defaced_descrip, save_image
from defacebench.io.sidecars import (DEFAULT_ALLOW, ScrubPolicy, find_sidecars, make_policy, read_input_sidecar, scrub_sidecar,
                                     source_uri)
from sharing_helpers import HEADER_TEXT, IDENTIFYING_FIELDS, IDENTIFYING_VALUES, SIEMENS_SIDECAR, add_siemens_metadata


def _text(content: dict) -> str:
    return json.dumps(content)


def test_deny_list_removes_every_identifying_field_and_keeps_acquisition():
    kept, removed = scrub_sidecar(SIEMENS_SIDECAR)
    text = _text(kept)
    assert [f for f in IDENTIFYING_FIELDS if f in kept] == []
    assert [v for v in IDENTIFYING_VALUES if v in text] == []
    assert set(IDENTIFYING_FIELDS) <= set(removed)
    for field in ("RepetitionTime", "EchoTime", "InversionTime", "FlipAngle", "MagneticFieldStrength", "Manufacturer", "SeriesDescription"):
        assert kept[field] == SIEMENS_SIDECAR[field]


def test_any_patient_field_nested_fields_and_repeated_values_go():
    content = {"PatientMotherBirthName": "X" * 8, "EchoTime": 0.003, "global": {"const": {"PatientName": "ROE^RICHARD", "FlipAngle": 8}},
               "InstitutionName": "Klinikum Nordwest", "ProtocolName": "Klinikum Nordwest MPRAGE", "SeriesDescription": "mprage"}
    kept, removed = scrub_sidecar(content)
    assert kept == {"EchoTime": 0.003, "global": {"const": {"FlipAngle": 8}}, "SeriesDescription": "mprage"}
    assert "global.const.PatientName" in removed and "PatientMotherBirthName" in removed
    assert any(r.startswith("ProtocolName") for r in removed)


def test_allow_mode_keeps_only_the_list(tmp_path: Path):
    kept, _ = scrub_sidecar(SIEMENS_SIDECAR, make_policy("allow"))
    assert set(kept) <= set(DEFAULT_ALLOW) and "RepetitionTime" in kept
    assert "SeriesDescription" not in kept and "ProtocolName" not in kept  # free text is not on the default allow list
    listing = tmp_path / "allowed.txt"
    listing.write_text("# our site\nRepetitionTime\nEcho*\n")
    kept, removed = scrub_sidecar(SIEMENS_SIDECAR, make_policy("allow", listing))
    assert kept == {"RepetitionTime": 2.3, "EchoTime": 0.00226}
    assert len(removed) == len(SIEMENS_SIDECAR) - 2


def test_site_deny_patterns_add_to_the_default():
    policy = make_policy("deny", "SeriesDescription,Protocol*")
    kept, _ = scrub_sidecar(SIEMENS_SIDECAR, policy)
    assert "SeriesDescription" not in kept and "ProtocolName" not in kept and "InstitutionName" not in kept
    assert policy.describe(3) == {"Mode": "deny", "Rules": "defacebench deny list + 2 site pattern(s)", "FieldsRemoved": 3}
    with pytest.raises(InputError):
        ScrubPolicy("strict")


def test_bids_inheritance_more_specific_wins(tmp_path: Path):
    root = tmp_path / "bids"
    image = write_nifti(root / "sub-01" / "ses-a" / "anat" / "sub-01_ses-a_run-2_T1w.nii.gz")
    (root / "T1w.json").write_text(json.dumps({"RepetitionTime": 2.0, "InstitutionName": "Top Hospital", "FlipAngle": 9}))
    (root / "sub-01" / "sub-01_T1w.json").write_text(json.dumps({"RepetitionTime": 2.1}))
    (root / "sub-01" / "ses-a" / "anat" / "sub-01_ses-a_run-2_T1w.json").write_text(json.dumps({"RepetitionTime": 2.3}))
    (root / "sub-01" / "ses-a" / "anat" / "sub-01_ses-a_run-1_T1w.json").write_text(json.dumps({"EchoTime": 9.9}))  # another run
    (root / "T2w.json").write_text(json.dumps({"EchoTime": 0.1}))  # another suffix
    found = find_sidecars(image, root)
    assert [p.name for p in found] == ["T1w.json", "sub-01_T1w.json", "sub-01_ses-a_run-2_T1w.json"]
    assert read_input_sidecar(image, root) == {"RepetitionTime": 2.3, "InstitutionName": "Top Hospital", "FlipAngle": 9}
    assert read_input_sidecar(image, None) == {"RepetitionTime": 2.3}  # a manifest: only the image's own folder
    assert source_uri(image, root) == "bids:raw:sub-01/ses-a/anat/sub-01_ses-a_run-2_T1w.nii.gz"
    assert source_uri(image, None) == "bids:raw:sub-01_ses-a_run-2_T1w.nii.gz"  # no absolute path
    (root / "sub-01" / "sub-01_T1w.json").write_text("{not json")
    with pytest.raises(InputError, match="unreadable sidecar"):
        read_input_sidecar(image, root)


def test_header_text_is_scrubbed_and_defaced_is_said(tmp_path: Path):
    image = write_nifti(tmp_path / "sub-01_T1w.nii.gz")
    add_siemens_metadata(image)
    img = nib.load(str(image))
    assert img.header["aux_file"].item().decode() == HEADER_TEXT["aux_file"] and len(img.header.extensions) == 1
    plain = save_image(img, tmp_path / "plain.nii.gz")
    marked = save_image(img, tmp_path / "marked.nii.gz", descrip=defaced_descrip("pydeface"))
    for path, descrip in ((plain, b""), (marked, b"defaced (pydeface) by defacebench")):
        header = nib.load(str(path)).header
        assert header["descrip"].item().startswith(descrip) and (descrip or not header["descrip"].item())
        assert not header["aux_file"].item() and not header["db_name"].item() and len(header.extensions) == 0
        np.testing.assert_array_equal(np.asarray(nib.load(str(path)).dataobj), np.asarray(img.dataobj))


def test_method_record_names_tool_version_and_parameters():
    from defacebench.deface.provenance import method_record

    record = method_record("quickshear")
    assert record["Tool"] == "quickshear" and record["Backend"] == "builtin" and "defacebench" in record["Version"]
    assert record["Parameters"] == {"BUFFER_VOXELS": 10}
    fsl = method_record("fsl")
    assert fsl["Parameters"]["RegistrationResolutionMm"] == 4.0 and fsl["Tool"].startswith("fsl_deface")
    assert method_record("afni")["Parameters"]["AFNI_BRAIN_MARGIN_MM"] > 0
