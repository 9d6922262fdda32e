"""Write ``STUDY/report.html``: one self-contained page (images base64-embedded, no network).

Reads only what earlier stages left on disk (paths from :mod:`defacebench.layout`): the
analysis results (``results/*.csv``, ``results/analysis.json``, ``figures/*.png``), plus
``splits.tsv``, the deface derivatives' ``qc.tsv``, ``failures.tsv`` and
``dataset_description.json`` when present. The page is :data:`.template.PAGE` filled with
the fragments of :mod:`.sections`, :mod:`.embed` and the findings of :mod:`.findings`.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import string
from pathlib import Path

from defacebench import __version__, layout
from defacebench.conditions import condition_kind
from defacebench.io.atomic import write_text_atomic
from defacebench.io.errors import InputError
from defacebench.report import sections
from defacebench.report.cohort_power import power_note
from defacebench.report.embed import figures_html
from defacebench.report.evaluation import abs_saliency_html, evaluation_section
from defacebench.report.findings import conclusions
from defacebench.report.formatting import read_csv
from defacebench.report.privacy import draw_frontier, frontier_points, frontier_sentence, privacy_section
from defacebench.report.template import PAGE


def source_dataset(study_dir: str | Path) -> Path | None:
    """The raw BIDS dataset the study was defaced from, as the deface derivatives record it.

    The first ``SourceDatasets`` URL of ``derivatives/defacebench/dataset_description.json``
    (a relative one is taken from that folder, as BIDS does); None when there is no record.
    """
    description = layout.deface_description(study_dir)
    try:
        sources = json.loads(description.read_text()).get("SourceDatasets", [])
    except (OSError, ValueError, AttributeError):
        return None
    for source in sources if isinstance(sources, list) else []:
        url = str(source.get("URL", "")) if isinstance(source, dict) else ""
        if url:
            path = Path(url.removeprefix("file://"))
            return path if path.is_absolute() else description.parent / path
    return None


def simulated_cohort(study_dir: str | Path) -> bool:
    """Whether the study's cohort is the simulated one: its source dataset has the simulator's
    ground truth (``derivatives/simulation``). False when the source is unknown or gone."""
    source = source_dataset(study_dir)
    return source is not None and layout.simulation_dir(source).is_dir()


def write_report(study_dir: str | Path, individual_figures: bool = False, out: str | Path | None = None, title: str | None = None) -> Path:
    """Render ``STUDY/report.html`` (or ``out``) from the analysis results; returns its path.

    Parameters
    ----------
    study_dir : path
        The analysed study.
    individual_figures : bool
        Embed ``figures/individual_example.png`` (one person's scan, drawn beforehand by
        :func:`defacebench.analysis.stage.draw_individual_example`). Without it any such
        file is deleted, so an identifying image never lingers beside a shared report.
    out : path, optional
        Where to write the page instead of ``STUDY/report.html``.
    title : str, optional
        Page title (default: the study directory's name).

    Raises
    ------
    InputError
        When the analysis has not been run (no ``results/table1.csv``).
    """
    study_dir = Path(study_dir)
    table1 = read_csv(layout.result_table(study_dir, "table1"))
    null = read_csv(layout.result_table(study_dir, "null_baseline"))
    if table1 is None or null is None or table1.empty:
        raise InputError("no analysis results (results/table1.csv); run `defacebench analyse` first", study_dir)
    summary_path = layout.result_table(study_dir, "summary")
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    pairwise = read_csv(layout.result_table(study_dir, "pairwise"))
    omnibus = read_csv(layout.result_table(study_dir, "omnibus"))
    saliency = read_csv(layout.result_table(study_dir, "saliency"))
    bias = read_csv(layout.result_table(study_dir, "bias_corrected"))
    if not individual_figures:
        layout.figure_file(study_dir, "individual_example").unlink(missing_ok=True)

    conditions = list(table1["condition"])
    key_pairs = [(d, ref) for d in conditions if condition_kind(d) == "defaced" for ref in ("raw", "skullstripped") if ref in conditions]
    privacy = read_csv(layout.privacy_table(study_dir))  # issue 19: the privacy axis
    points = frontier_points(privacy, table1, pairwise) if privacy is not None and not privacy.empty else None
    if points is not None and not points.empty:
        draw_frontier(points, layout.privacy_figure(study_dir))
    signal = read_csv(layout.result_table(study_dir, "face_signal"))
    power = read_csv(layout.result_table(study_dir, "power"))
    findings = conclusions(table1, pairwise, null, saliency, simulated=simulated_cohort(study_dir), face_signal=signal, power=power,
                           ablation=read_csv(layout.evaluation_table(study_dir, "face_ablation")),
                           occlusion=read_csv(layout.evaluation_table(study_dir, "occlusion")), frontier=frontier_sentence(points))
    page = string.Template(PAGE).substitute(
        title=html.escape(title or f"defacebench report: {study_dir.resolve().name}"),
        subtitle=html.escape(f"How much do MRI defacing algorithms change brain-age predictions of a 3D CNN? Study directory {study_dir.resolve()}"),
        conclusions="\n".join(f"<li>{s}</li>" for s in findings),
        cohort=sections.cohort_section(study_dir, summary) + sections.input_checks_html(study_dir),
        methods=sections.methods_section(study_dir, summary),
        table1=sections.table1_html(table1),
        omnibus=sections.omnibus_html(omnibus),
        key_pairs=sections.pairs_html(pairwise, key_pairs, power) if key_pairs else "<p>No defaced condition to compare.</p>",
        null_table=sections.null_html(null, power),
        face_signal=sections.face_signal_html(signal, power),
        power_note=power_note(power),
        training_age=f"{summary.get('training_mean_age', float('nan')):.1f} years",
        n_pairs=0 if pairwise is None else len(pairwise),
        pairwise=sections.pairs_html(pairwise, power=power),
        bias_section=sections.bias_html(bias),
        figures=figures_html(study_dir, abs_saliency_html(saliency) or sections.saliency_html(saliency)),  # issue 20: shares that cannot cancel
        face_use=evaluation_section(study_dir),
        privacy=privacy_section(study_dir, points),
        qc=sections.qc_html(study_dir),
        version=__version__,
        date=_dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
    )
    return write_text_atomic(Path(out) if out else layout.report_file(study_dir), page)
