"""The cohort's privacy tables from every scan's features: detection, identification, residual face."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from defacebench.privacy.identify import descriptor_distances, gallery_for, rate_summary, true_rank

__all__ = ["ATTACKS", "RANKS", "method_table", "residual_table", "scan_rows"]

#: Identification ranks reported (rank-1 and rank-5, as in face-recognition studies).
RANKS = (1, 5)
#: The attacker's descriptors: dlib's face network on the shaded render, and the surface's shape
#: (its depth map: an attacker holding a 3D face scan or another MRI), features-file arrays.
ATTACKS: dict[str, str] = {"face": "descriptors", "surface": "surfaces"}


def scan_rows(features: dict[str, dict[str, np.ndarray]], persons: dict[str, str], sessions: dict[str, str | None] | None = None) -> pd.DataFrame:
    """One row per scan and method: face found (any view, front view), rank of the true person, gallery kind.

    Parameters
    ----------
    features : dict
        Scan key -> its features file's arrays (:func:`defacebench.privacy.scan.load_features`).
    persons : dict
        Scan key -> person (BIDS subject label).
    sessions : dict, optional
        Scan key -> session label (the gallery prefers another session of the person).
    """
    keys = [k for k in features if k in persons]
    if not keys:
        return pd.DataFrame(columns=["scan", "person", "method", "face_found", "front_found", *[f"{a}_rank" for a in ATTACKS],
                                     "gallery_size", "same_scan_gallery"])
    who = [persons[k] for k in keys]
    # (scans, views, d): row 0 of every features file is the raw head
    raw = {attack: np.stack([features[k][array][0] for k in keys]) for attack, array in ATTACKS.items()}
    rows = []
    for i, key in enumerate(keys):
        f = features[key]
        gallery = gallery_for(who, i, None if sessions is None else [sessions.get(k) for k in keys])
        for m, method in enumerate(f["methods"].tolist()):
            row = {"scan": key, "person": who[i], "method": method, "face_found": bool(f["found"][m].any()),
                   "front_found": bool(f["found"][m][0])}
            for attack, array in ATTACKS.items():
                distances = descriptor_distances(f[array][m], raw[attack][list(gallery.scans)])
                row[f"{attack}_rank"] = true_rank(distances, gallery.own, seed=i)
            rows.append({**row, "gallery_size": len(gallery.scans), "same_scan_gallery": gallery.same_scan})
    return pd.DataFrame(rows)


def method_table(rows: pd.DataFrame, methods: Sequence[str]) -> pd.DataFrame:
    """Per method: detection rate and, per attack, rank-1 / rank-5 identification rates with 95 % Wilson CIs, beside chance."""
    out = []
    for method in methods:
        sub = rows[rows["method"] == method]
        if sub.empty:
            continue
        row: dict = {"method": method, "n_scans": len(sub), "n_people": int(sub["person"].nunique()),
                     "gallery_size": int(sub["gallery_size"].max())}
        detection = rate_summary(sub["face_found"].to_numpy())
        row.update({"detection_rate": detection["rate"], "detection_ci_low": detection["ci_low"], "detection_ci_high": detection["ci_high"]})
        for k in RANKS:
            row[f"rank{k}_chance"] = min(k, row["gallery_size"]) / row["gallery_size"]
            for attack in ATTACKS:
                s = rate_summary((sub[f"{attack}_rank"] <= k).to_numpy())
                row.update({f"{attack}_rank{k}_rate": s["rate"], f"{attack}_rank{k}_ci_low": s["ci_low"],
                            f"{attack}_rank{k}_ci_high": s["ci_high"]})
        row["same_scan_gallery"] = bool(sub["same_scan_gallery"].any())
        out.append(row)
    return pd.DataFrame(out)


def residual_table(features: dict[str, dict[str, np.ndarray]]) -> pd.DataFrame:
    """Per method and facial region: raw skin area summed over scans, and the share each method leaves."""
    totals: dict[tuple[str, str], list[float]] = {}
    for f in features.values():
        regions = f["regions"].tolist()
        for m, method in enumerate(f["methods"].tolist()):
            for r, region in enumerate(regions):
                pair = totals.setdefault((method, region), [0.0, 0.0])
                pair[0] += float(f["skin_mm2"][r])
                pair[1] += float(f["left_mm2"][m][r])
    rows = [{"method": m, "region": r, "skin_mm2": s, "left_mm2": left, "left_share": left / s if s else float("nan")}
            for (m, r), (s, left) in totals.items()]
    return pd.DataFrame(rows)
