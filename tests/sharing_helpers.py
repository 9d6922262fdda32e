"""Helpers of the sharing tests: a realistic Siemens sidecar, identifying header text, a moved T2w."""

from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np

#: What dcm2niix writes for a Siemens MPRAGE (values invented, shapes real).
SIEMENS_SIDECAR: dict[str, object] = {
    "Modality": "MR", "MagneticFieldStrength": 3, "ImagingFrequency": 123.259, "Manufacturer": "Siemens",
    "ManufacturersModelName": "Prisma_fit", "InstitutionName": "St Elsewhere University Hospital",
    "InstitutionAddress": "Hauptstrasse 17,Heidelberg,District,DE,69120", "DeviceSerialNumber": "166038",
    "StationName": "AWP166038", "InstitutionalDepartmentName": "Department of Neuroradiology Mueller",
    "BodyPartExamined": "BRAIN", "PatientPosition": "HFS", "ProcedureStepDescription": "Neuro_Brain",
    "SoftwareVersions": "syngo MR E11", "MRAcquisitionType": "3D", "SeriesDescription": "t1_mprage_sag_p2_iso",
    "ProtocolName": "t1_mprage_sag_p2_iso", "ScanningSequence": "GR_IR", "SequenceVariant": "SK_SP_MP",
    "ScanOptions": "IR", "SequenceName": "*tfl3d1_16ns", "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND", "NORM"],
    "SeriesNumber": 5, "AcquisitionTime": "09:41:12.345000", "AcquisitionDateTime": "2019-03-14T09:41:12.345000",
    "AcquisitionDate": "2019-03-14", "ContentTime": "09:47:33.120000", "AcquisitionNumber": 1,
    "SliceThickness": 1, "EchoTime": 0.00226, "RepetitionTime": 2.3, "InversionTime": 0.9, "FlipAngle": 8,
    "PartialFourier": 1, "BaseResolution": 256, "ReceiveCoilName": "HeadNeck_64", "ReceiveCoilActiveElements": "HC1-7",
    "SeriesInstanceUID": "1.3.12.2.1107.5.2.43.166038.2019031409411234567890",
    "StudyInstanceUID": "1.3.12.2.1107.5.2.43.166038.30000019031407452345600000012",
    "ReferringPhysicianName": "Dr^Hans^Weberling", "PerformingPhysicianName": "Dr^Anna^Schmidtova",
    "OperatorsName": "KLAUS^MEYERHOFF", "PatientName": "DOE^JANE^QUINTESSA", "PatientID": "PAT-0042-HD",
    "PatientBirthDate": "1951-07-02", "PatientSex": "F", "PatientWeight": 63.5,
    "ConversionSoftware": "dcm2niix", "ConversionSoftwareVersion": "v1.0.20220720",
}
#: The fields the issue names, plus every Patient field.
IDENTIFYING_FIELDS = (
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "StationName", "DeviceSerialNumber",
    "AcquisitionTime", "AcquisitionDateTime", "AcquisitionDate", "ContentTime", "SeriesInstanceUID", "StudyInstanceUID",
    "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName", "PatientName", "PatientID",
    "PatientBirthDate", "PatientSex", "PatientWeight", "PatientPosition",
)
#: Values long and odd enough that finding one in a written file (even in compressed voxels) means a leak.
IDENTIFYING_VALUES = tuple(str(SIEMENS_SIDECAR[k]) for k in IDENTIFYING_FIELDS if len(str(SIEMENS_SIDECAR[k])) >= 6)
#: What dcm2niix puts in the NIfTI header: text fields and the sidecar as an extension.
HEADER_TEXT = {"descrip": "TE=2.3;Time=94112.345;phase=1", "aux_file": "St Elsewhere", "db_name": "AWP166038"}


def add_siemens_metadata(image: Path, extra: dict | None = None) -> dict:
    """Give ``image`` a Siemens sidecar beside it and identifying header text + extension; return the sidecar."""
    sidecar = {**SIEMENS_SIDECAR, **(extra or {})}
    image.with_name(image.name.replace(".nii.gz", ".json")).write_text(json.dumps(sidecar, indent=2))
    img = nib.load(str(image))
    out = nib.Nifti1Image(np.asarray(img.dataobj), img.affine, header=img.header.copy())
    for key, value in HEADER_TEXT.items():
        out.header[key] = value.encode()
    out.header.extensions.append(nib.nifti1.Nifti1Extension(6, json.dumps(sidecar).encode()))
    nib.save(out, str(image))
    return sidecar


def readable_bytes(path: Path) -> list[bytes]:
    """Every byte a reader of ``path`` sees: gzip and zip (``.npz``) members decompressed."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        return [gzip.decompress(raw)]
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return [raw] + [archive.read(name) for name in archive.namelist()]
    return [raw]


def leaks(root: Path, fields=IDENTIFYING_FIELDS, values=IDENTIFYING_VALUES) -> dict[str, list[str]]:
    """Files under ``root`` holding an identifying field name (text files) or value (any file)."""
    found: dict[str, list[str]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        hits = []
        for blob in readable_bytes(path):
            hits += [v for v in values if v.encode() in blob]
            if path.suffix in {".json", ".tsv", ".csv", ".txt", ".html", ".md"} or path.name.endswith(".nii.gz") or path.suffix == ".nii":
                head = blob if not path.name.endswith((".nii", ".nii.gz")) else blob[: int(np.frombuffer(blob[108:112], "<f4")[0])]
                hits += [f for f in fields if f.encode() in head]
        if hits:
            found[str(path.relative_to(root))] = sorted(set(hits))
    return found


def moved_inverted(img: nib.Nifti1Image, angles_deg=(8.0, -5.0, 6.0), shift_mm=(6.0, -4.0, 5.0)) -> tuple[nib.Nifti1Image, np.ndarray]:
    """A contrast-inverted copy of a head moved rigidly: (image on the same grid, matrix T1w world -> copy world)."""
    from scipy.spatial.transform import Rotation

    from defacebench.imaging.masks import head_mask
    from defacebench.imaging.resample import resample_to

    move = np.eye(4)
    move[:3, :3] = Rotation.from_euler("xyz", angles_deg, degrees=True).as_matrix()
    centre = img.affine[:3, :3] @ ((np.array(img.shape[:3]) - 1) / 2) + img.affine[:3, 3]
    move[:3, 3] = centre - move[:3, :3] @ centre + np.asarray(shift_mm)
    data = np.asarray(img.dataobj, dtype=np.float32)
    moved = resample_to(data, move, img.affine, img.shape[:3], order=1, source_affine=img.affine)
    head = head_mask(moved)
    top = float(np.percentile(moved[head], 99))
    inverted = np.where(head, np.clip(1.15 * top - moved, 0.05 * top, None), 0.0).astype(np.float32)
    return nib.Nifti1Image(inverted, img.affine), move
