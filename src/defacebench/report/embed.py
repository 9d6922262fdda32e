"""The report's figures: each PNG of ``STUDY/figures/`` base64-embedded with its caption, so
the page needs no other file and no network."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from defacebench import layout

#: Caption of each figure of :data:`defacebench.layout.FIGURES`.
FIGURE_CAPTIONS: dict[str, str] = {
    "fig1_removed_regions": "Fig. 1. Where each defacer removes tissue: for every voxel in MNI space, the share of scans in which the method removed it (cohort frequency, maximum projections), over the MNI152 template and the cohort's head outline.",
    "fig4_errors": "Fig. 4. Per-subject absolute error (mean over runs) per condition; diamonds mark the MAE, the dashed line the null baseline. df = defaced, f = face-only, fm = face mask (geometry control), ss = skull-stripped.",
    "face_signal": "Face signal: per method, the MAE of face-only and of its geometry control (an average face placed by the subject's head registration, within the removal region, same brain registration) minus the null baseline's, with paired 95 % bootstrap CIs (mean prediction over runs). Below 0: better than predicting the mean age. Face-only shows age in the tissue only where it also beats its control.",
    "predicted_vs_true": "Predicted (mean over runs) against true age of the test scans; the dashed line is perfect prediction.",
    "fig3_saliency": "Fig. 3. Mean Grad-CAM of the last conv block over the test scans, signed (red raises, blue lowers the predicted age), for the raw head, the skull-stripped brain and each face-only condition.",
    "training_curves": "Training curves: validation MAE and training loss per epoch, one line per run.",
    "individual_example": "One test scan in every condition (shown because --individual-figures was given: this image can identify a person).",
}


def embed_png(path: Path) -> str:
    """``data:image/png;base64,...`` URI of a PNG file."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def figures_html(study_dir: Path, saliency_table: str) -> str:
    """Every figure the study has, embedded in :data:`defacebench.layout.FIGURES` order with its
    caption; ``saliency_table`` follows Fig. 3."""
    parts = []
    for stem in layout.FIGURES:
        path = layout.figure_file(study_dir, stem)
        if not path.is_file():
            continue
        parts.append(f'<figure><img alt="{html.escape(stem)}" src="{embed_png(path)}"><figcaption>{html.escape(FIGURE_CAPTIONS[stem])}</figcaption></figure>')
        if stem == "fig3_saliency" and saliency_table:
            parts.append(saliency_table)
    return "\n".join(parts) or "<p>No figures (run <code>defacebench analyse</code>).</p>"
