"""The HTML report: renders, embeds every image, fetches nothing, states generated findings,
and quotes the simulation's numbers only for the simulated cohort."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
from model_stores import make_blob_store
from test_metrics import make_study

from defacebench import layout
from defacebench.cli import main as cli_main
from defacebench.io.bids import write_dataset_description
from defacebench.report.embed import FIGURE_CAPTIONS
from defacebench.report.findings import MARGIN_CAVEAT, REGISTRATION_CAVEAT, SIMULATED_REGISTRATION_CAVEAT, conclusions, saliency_sentence
from defacebench.report.page import simulated_cohort, source_dataset, write_report


class Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str, str]] = []
        self.images: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        for key, value in attrs:
            if key in ("src", "href", "data", "poster") and value:
                self.urls.append((tag, key, value))
        if tag == "img":
            self.images.append(dict(attrs).get("src", ""))

    def handle_data(self, data) -> None:
        self.text.append(data)


def _analysed(tmp_path: Path, **kwargs) -> Path:
    study = make_study(tmp_path, **kwargs)
    fail = study / "derivatives" / "defacebench"
    fail.mkdir(parents=True)
    (fail / "failures.tsv").write_text("key\tstage\treason\nsub-999\tdeface-afni\tregistration failed\n")
    assert cli_main(["analyse", str(study), "--bootstrap", "200"]) == 0
    return study


def test_report_is_self_contained(tmp_path: Path) -> None:
    study = _analysed(tmp_path, null_conditions=("face-fsl",))
    assert cli_main(["report", str(study)]) == 0
    text = layout.report_file(study).read_text()
    parser = Collector()
    parser.feed(text)
    assert len(parser.images) >= 3
    assert all(src.startswith("data:image/png;base64,") for src in parser.images)
    assert all(value.startswith("data:") or value.startswith("#") for _, _, value in parser.urls)
    assert not re.search(r"https?://", text)  # nothing fetched, not even fonts or scripts
    body = " ".join(parser.text)
    for needed in ("Table 1", "one-way ANOVA", "Friedman", "Holm", "null baseline", "sub-999", "registration failed"):
        assert needed in body, needed
    assert "beat the null baseline" in body and "no geometry control" in body
    assert not (study / "figures" / "individual_example.png").exists()


def test_conclusions_follow_the_numbers(tmp_path: Path) -> None:
    study = _analysed(tmp_path, null_conditions=("face-afni", "face-fsl"))
    res = study / "results"
    lines = conclusions(pd.read_csv(res / "table1.csv"), pd.read_csv(res / "pairwise_tests.csv"), pd.read_csv(res / "null_baseline.csv"))
    text = " ".join(lines)
    assert "No face-only condition beats the null baseline" in text
    assert re.search(r"against [0-9.]+ years \([0-9]+ % (lower|higher), paired Holm p", text), text
    assert "<b>AFNI</b> costs the least accuracy" in text  # planted: defaced-afni has less noise than defaced-fsl


def test_report_errors(tmp_path: Path, capsys) -> None:
    assert cli_main(["report", str(tmp_path)]) == 2
    assert "run `defacebench analyse` first" in capsys.readouterr().err
    assert cli_main(["analyse", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no trained runs" in err and len(err.splitlines()) == 1
    assert write_report  # API importable


def test_saliency_sentence_gives_every_share_or_says_there_is_none() -> None:
    table = pd.DataFrame({"condition": ["raw", "skullstripped"], "face_share": [0.0, float("nan")], "brain_share": [0.004, float("nan")],
                          "other_share": [0.996, float("nan")], "positive_fraction": [0.03, 0.0]}).set_index("condition")
    raw = saliency_sentence(table, "raw")
    assert "0% lies in the region the defacers remove" in raw and "100% elsewhere" in raw and "raw head model" in raw
    assert "positive values are 3% of the map's absolute saliency" in raw
    assert "no positive part" in saliency_sentence(table, "skullstripped")
    assert saliency_sentence(table, "face-afni") is None


def test_face_only_beating_the_null_is_no_claim_without_beating_its_control(tmp_path: Path) -> None:
    study = _analysed(tmp_path)
    res = study / "results"
    table1, pairwise, null = (pd.read_csv(res / f) for f in ("table1.csv", "pairwise_tests.csv", "null_baseline.csv"))
    signal = pd.read_csv(res / "face_signal.csv")
    assert list(signal["method"]) == ["afni", "fsl"] and signal["facemask_mae"].isna().all()  # this study trained no control
    text = " ".join(conclusions(table1, pairwise, null, face_signal=signal))
    assert signal["beats_null"].all() and "no geometry control" in text and "carries age" not in text
    assert REGISTRATION_CAVEAT in text and "simulat" not in text  # a real cohort: no simulated numbers
    assert SIMULATED_REGISTRATION_CAVEAT in " ".join(conclusions(table1, pairwise, null, simulated=True, face_signal=signal))
    # with controls: the claim only where face-only beats its own mask
    signal["facemask_mae"] = [9.0, 3.0]
    signal["geometry_explained_pct"] = [10.0, 95.0]
    signal["face_vs_mask_p_holm"] = [0.001, 0.4]
    signal["beats_geometry"] = [True, False]
    signal["tissue_signal"] = [True, False]
    text = " ".join(conclusions(table1, pairwise, null, face_signal=signal))
    assert "The removed face carries age information beyond where it sits: for AFNI," in text and MARGIN_CAVEAT in text
    assert "For FSL, face-only beats the null but not its geometry control, which reaches this share of the face-only gain: FSL 95 % (face-only" in text
    assert "learned nothing" not in text
    signal.loc[0, "facemask_mae"] = signal.loc[0, "null_mae"]  # a control at the null: the claim says what it rests on
    text = " ".join(conclusions(table1, pairwise, null, face_signal=signal))
    assert "The geometry control of AFNI learned nothing (MAE within 1 % of the null)" in text and "carries age information" in text
    signal["tissue_signal"] = [False, False]
    text = " ".join(conclusions(table1, pairwise, null, face_signal=signal))
    assert "carries age" not in text and "none beats its own geometry control" in text


def _small_face_gain(study: Path) -> None:
    """Rewrite the null-baseline table so the best face-only condition beats the null by 6 %."""
    path = study / "results" / "null_baseline.csv"
    null = pd.read_csv(path)
    faces = null["condition"].str.startswith("face-")
    null.loc[faces, "beats_null"] = True
    null.loc[faces, "improvement_pct"] = 6.0
    null.to_csv(path, index=False)


def test_the_simulation_is_quoted_only_for_the_simulated_cohort(tmp_path: Path) -> None:
    (tmp_path / "study").mkdir()
    study = _analysed(tmp_path / "study")
    _small_face_gain(study)
    assert source_dataset(study) is None and not simulated_cohort(study)  # no record of the source
    write_report(study)
    text = layout.report_file(study).read_text()
    assert REGISTRATION_CAVEAT in text and SIMULATED_REGISTRATION_CAVEAT not in text

    real = tmp_path / "real-bids"
    real.mkdir()
    write_dataset_description(layout.derivatives_dir(study), "defaced", source=str(real))
    assert source_dataset(study) == real and not simulated_cohort(study)
    write_report(study)
    assert SIMULATED_REGISTRATION_CAVEAT not in layout.report_file(study).read_text()

    layout.simulation_dir(real).mkdir(parents=True)  # the simulator's ground truth: a simulated cohort
    assert simulated_cohort(study)
    write_report(study)
    assert SIMULATED_REGISTRATION_CAVEAT in layout.report_file(study).read_text()

    layout.deface_description(study).write_text(json.dumps({"SourceDatasets": [{"URL": "../../../real-bids"}]}))
    assert source_dataset(study).resolve() == real.resolve() and simulated_cohort(study)  # relative to the derivatives folder


def test_every_figure_has_a_caption() -> None:
    assert list(FIGURE_CAPTIONS) == list(layout.FIGURES)


def test_individual_figure_only_on_request(tmp_path: Path) -> None:
    study = make_study(tmp_path, runs=1, conditions=("raw", "skullstripped"))
    make_blob_store(study, n=20, shape=(12, 14, 13), grid="tiny", conditions=("raw", "skullstripped"))
    assert cli_main(["analyse", str(study), "--bootstrap", "200", "--grid", "tiny", "--no-saliency"]) == 0
    figure = layout.figure_file(study, "individual_example")
    assert not figure.exists()  # the analysis never draws one person by itself
    assert cli_main(["report", str(study), "--individual-figures"]) == 0
    text = layout.report_file(study).read_text()
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and 'alt="individual_example"' in text and "can identify a person" in text
    assert cli_main(["report", str(study)]) == 0
    assert not figure.exists() and 'alt="individual_example"' not in layout.report_file(study).read_text()
