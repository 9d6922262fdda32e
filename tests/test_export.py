"""Export pieces on tiny data: whose OUT it is, tables with chosen columns, the BIDS and face checks."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from conftest import make_bids, write_nifti
from defacebench import layout
from defacebench.export import (ExportItem, export_image, face_problems, prepare_destination, structure_problems, write_description,
                                write_tables)
from defacebench.io.errors import InputError
from defacebench.io.sidecars import ScrubPolicy
from sharing_helpers import IDENTIFYING_VALUES, add_siemens_metadata

SETTINGS = {"method": "spm", "applyto": False, "backend": "builtin"}


@pytest.fixture
def bids(tmp_path: Path) -> Path:
    root = make_bids(tmp_path / "bids", {"01": 60, "02": 70, "03": 80}, sessions={"03": {"a": 80, "b": 82}})
    table = pd.read_csv(root / "participants.tsv", sep="\t", dtype=str)
    table["site"] = "Nordwest"
    table.to_csv(root / "participants.tsv", sep="\t", index=False)
    (root / "participants.json").write_text(json.dumps({"age": {"Units": "years"}, "site": {"Description": "scanner site"}}))
    return root


def test_destination_new_empty_or_its_own(tmp_path: Path, bids: Path):
    out = tmp_path / "share"
    record = prepare_destination(out, bids, SETTINGS)
    assert layout.export_files(out)["record"].is_file() and record["method"] == "spm" and str(bids) not in json.dumps(record)
    (out / "sub-01").mkdir()
    (out / "sub-01" / ".sub-01_T1w.abc.part.nii.gz").write_bytes(b"half")  # a killed run's temporary file
    prepare_destination(out, bids, SETTINGS)  # its own: a resume
    assert not list(out.rglob("*.part*"))
    with pytest.raises(InputError, match="other settings.*method"):
        prepare_destination(out, bids, {**SETTINGS, "method": "fsl"})
    foreign = tmp_path / "full"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        prepare_destination(foreign, bids, SETTINGS)
    with pytest.raises(InputError, match="outside the source"):
        prepare_destination(bids / "share", bids, SETTINGS)
    with pytest.raises(InputError, match="outside the source"):
        prepare_destination(bids.parent, bids, SETTINGS)


def test_tables_keep_chosen_columns_and_exported_people(tmp_path: Path, bids: Path):
    out = tmp_path / "share"
    exported = [bids / "sub-01/anat/sub-01_T1w.nii.gz", bids / "sub-03/ses-b/anat/sub-03_ses-b_T1w.nii.gz"]
    columns = write_tables(bids, out, exported)
    assert columns == {"participants": ["participant_id", "age", "sex"], "sub-03": ["session_id", "age"]}
    participants = pd.read_csv(out / "participants.tsv", sep="\t", dtype=str)
    assert list(participants["participant_id"]) == ["sub-01", "sub-03"] and "site" not in participants
    assert json.loads((out / "participants.json").read_text()) == {"age": {"Units": "years"}}
    assert list(pd.read_csv(out / "sub-03" / "sub-03_sessions.tsv", sep="\t")["session_id"]) == ["ses-b"]
    write_tables(bids, out, exported, participant_columns="all")
    assert "site" in pd.read_csv(out / "participants.tsv", sep="\t")
    write_tables(bids, out, exported, participant_columns="site")
    assert list(pd.read_csv(out / "participants.tsv", sep="\t").columns) == ["participant_id", "site"]
    with pytest.raises(InputError, match="no column.*weight"):
        write_tables(bids, out, exported, participant_columns="age,weight")


def _export_one(tmp_path: Path, bids: Path) -> Path:
    """Export sub-01 from a defaced image written where the deface stage would write it."""
    source = bids / "sub-01/anat/sub-01_T1w.nii.gz"
    add_siemens_metadata(source)
    data = np.asarray(nib.load(str(source)).dataobj, dtype=np.float32)
    derived = write_nifti(tmp_path / "study" / "sub-01_desc-spmdefaced_T1w.nii.gz", np.where(data > 50, data, 0).astype(np.float32))
    derived.with_name("sub-01_desc-spmdefaced_T1w.json").write_text(json.dumps(
        {"Defaced": True, "Description": "defaced by spm", "Sources": ["bids:raw:x"], "InstitutionName": "kept by mistake"}))
    out = tmp_path / "share"
    item = ExportItem(source, derived)
    target = export_image(item, bids, out, ScrubPolicy(), "spm")
    write_tables(bids, out, [source])
    write_description(bids, out, {"Tool": "spm_deface", "Version": "x"}, "spm", False, ScrubPolicy())
    assert item.status == "exported" and target == out / "sub-01/anat/sub-01_T1w.nii.gz"
    return out


def test_exported_image_sidecar_and_checks_pass(tmp_path: Path, bids: Path):
    out = _export_one(tmp_path, bids)
    sidecar = json.loads((out / "sub-01/anat/sub-01_T1w.json").read_text())
    assert sidecar["Defaced"] is True and sidecar["RepetitionTime"] == 2.3 and "Sources" not in sidecar
    text = json.dumps(sidecar) + (out / "sub-01/anat/sub-01_T1w.nii.gz").read_bytes().hex()
    assert [v for v in IDENTIFYING_VALUES if v in text] == [] and "kept by mistake" not in text
    header = nib.load(str(out / "sub-01/anat/sub-01_T1w.nii.gz")).header
    assert header["descrip"].item().startswith(b"defaced (spm)") and not header["aux_file"].item()
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "raw" and description["GeneratedBy"][-1]["Name"] == "defacebench"
    assert structure_problems(out) == [] and face_problems(out) == []


def test_checks_catch_what_a_shared_dataset_must_not_have(tmp_path: Path, bids: Path):
    out = _export_one(tmp_path, bids)
    write_nifti(out / "sub-02/anat/sub-02_T1w.nii.gz")  # not defaced, no sidecar, not in participants.tsv
    (out / "sub-01/anat/sub-01_desc-spm_qc.png").write_bytes(b"\x89PNG")
    (out / "sub-01/anat/sub-01_desc-spmface_T1w.nii.gz").write_bytes((out / "sub-01/anat/sub-01_T1w.nii.gz").read_bytes())
    structure = structure_problems(out)
    faces = face_problems(out)
    assert "participants.tsv lacks sub-02" in structure and "no sidecar: sub-02/anat/sub-02_T1w.nii.gz" in structure
    assert "not a BIDS path: /sub-01/anat/sub-01_desc-spm_qc.png" in structure
    assert faces == ["picture or page: sub-01/anat/sub-01_desc-spm_qc.png", "derivative: sub-01/anat/sub-01_desc-spmface_T1w.nii.gz",
                     "image not marked defaced: sub-02/anat/sub-02_T1w.nii.gz"]


def test_cli_refuses_a_foreign_out_with_one_line(tmp_path: Path, bids: Path, capsys):
    from defacebench.commands.export import main

    out = tmp_path / "taken"
    out.mkdir()
    (out / "data.csv").write_text("x")
    assert main([str(bids), str(out), "--method", "spm", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not empty" in err[0]
    assert main([str(bids), str(tmp_path / "new"), "--method", "spm,fsl"]) == 2
    assert main([str(bids), str(tmp_path / "new"), "--method", "nosuch"]) == 2
    assert not (tmp_path / "new").exists()
