"""A tiny study with a brain, a scalp and a face whose age signal can be planted in the face
(face ageing on) or in the brain (face ageing off), with one defacer's stores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from defacebench.io.store import write_condition, write_index

from model_stores import STORE_AFFINE

SHAPE = (22, 26, 20)


def regions(shape: tuple[int, int, int] = SHAPE) -> dict[str, np.ndarray]:
    """The fixed head (ellipsoid), brain (ball inside it) and face (front slab of the head)."""
    grid = np.indices(shape, dtype=np.float32)
    centre = (np.array(shape, np.float32) - 1) / 2
    head = sum(((g - c) / (s / 2 - 0.5)) ** 2 for g, c, s in zip(grid, centre, shape)) <= 1.0
    brain = sum((g - c) ** 2 for g, c in zip(grid, centre - np.array([0, 2, 0]))) <= (min(shape) / 2 - 4) ** 2
    face = head & (grid[1] >= shape[1] - 7) & ~brain
    return {"head": head, "brain": brain, "face": face}


def face_images(ages: np.ndarray, face_ageing: bool, seed: int, shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """Raw heads: scalp 0.4, brain 1.0 with a dark core (ventricles), face 0.4 with a bright nose.

    Instance norm makes the network blind to an image's overall intensity, so the age
    signal is planted in shapes: with ``face_ageing`` the nose's radius follows age and the
    core's is random; without, the core's radius follows age and the nose's is random."""
    rng = np.random.default_rng(seed)
    r = regions(shape)
    grid = np.indices(shape, dtype=np.float32)
    centre = (np.array(shape, np.float32) - 1) / 2 - np.array([0, 2, 0])
    nose_at = np.array([(shape[0] - 1) / 2, shape[1] - 3.5, (shape[2] - 1) / 2], np.float32)
    dist = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre)))
    nose_dist = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, nose_at)))
    frac = np.clip((ages - 50.0) / 40.0, 0, 1)
    random = rng.uniform(0, 1, len(ages))
    nose = 1.0 + 2.5 * (frac if face_ageing else random)
    core = 0.8 + 2.5 * (random if face_ageing else frac)
    out = np.zeros((len(ages), *shape), np.float32)
    for i in range(len(ages)):
        image = np.where(r["head"], 0.4, 0.0) + rng.normal(0, 0.03, shape)
        image = np.where(r["brain"], 1.0 - 0.8 / (1 + np.exp((dist - core[i]) / 0.5)), image)
        image = np.where(r["face"], 0.4 + 0.6 / (1 + np.exp((nose_dist - nose[i]) / 0.5)) + rng.normal(0, 0.03, shape), image)
        out[i] = image * r["head"]
    return out.astype(np.float32)


def make_face_study(study: Path, face_ageing: bool, n: int = 100, seed: int = 0, grid: str = "tiny", method: str = "fsl") -> Path:
    """A study with ``raw``, ``face-<method>`` and ``defaced-<method>`` stores (60/20/20 % split)."""
    rng = np.random.default_rng(seed)
    ages = np.round(rng.uniform(50, 90, n), 1)
    split = np.array(["train"] * int(0.6 * n) + ["val"] * int(0.2 * n) + ["test"] * (n - int(0.6 * n) - int(0.2 * n)))
    index = pd.DataFrame({"participant_id": [f"sub-{i:03d}" for i in range(n)], "session_id": "", "run": "", "age": ages, "split": split})
    write_index(study, grid, index)
    raw = face_images(ages, face_ageing, seed + 1)
    face = raw * regions()["face"]
    for condition, images in (("raw", raw), (f"face-{method}", face), (f"defaced-{method}", raw - face), ("skullstripped", raw * regions()["brain"])):
        write_condition(study, grid, condition, images, index, STORE_AFFINE)
    return study
