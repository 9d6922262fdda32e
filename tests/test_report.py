"""The HTML report: renders, embeds every image, fetches nothing, states generated findings."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
from test_metrics import make_study

from defacebench.cli import main as cli_main
from defacebench.report.html import conclusions, write_report


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
    text = (study / "report.html").read_text()
    parser = Collector()
    parser.feed(text)
    assert len(parser.images) >= 3
    assert all(src.startswith("data:image/png;base64,") for src in parser.images)
    assert all(value.startswith("data:") or value.startswith("#") for _, _, value in parser.urls)
    assert not re.search(r"https?://", text)  # nothing fetched, not even fonts or scripts
    body = " ".join(parser.text)
    for needed in ("Table 1", "one-way ANOVA", "Friedman", "Holm", "null baseline", "sub-999", "registration failed"):
        assert needed in body, needed
    assert "AFNI face-only" in body and "beat the null baseline" in body
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
    from defacebench.report.html import saliency_sentence

    table = pd.DataFrame({"condition": ["raw", "skullstripped"], "face_share": [0.0, float("nan")], "brain_share": [0.004, float("nan")],
                          "other_share": [0.996, float("nan")], "positive_fraction": [0.03, 0.0]}).set_index("condition")
    raw = saliency_sentence(table, "raw")
    assert "0% lies in the region the defacers remove" in raw and "100% elsewhere" in raw and "raw head model" in raw
    assert "positive values are 3% of the map's absolute saliency" in raw
    assert "no positive part" in saliency_sentence(table, "skullstripped")
    assert saliency_sentence(table, "face-afni") is None


def test_a_small_face_only_gain_is_not_read_as_age_in_the_face(tmp_path: Path) -> None:
    study = _analysed(tmp_path)
    res = study / "results"
    table1, pairwise, null = (pd.read_csv(res / f) for f in ("table1.csv", "pairwise_tests.csv", "null_baseline.csv"))
    faces = null["condition"].str.startswith("face-")
    best = table1[table1["condition"].str.startswith("face-")].sort_values("mae_mean")["condition"].iloc[0]
    null.loc[faces, "beats_null"] = True
    text = " ".join(conclusions(table1, pairwise, null))
    assert "The removed face carries age information" in text and "need not come from the face" not in text
    null.loc[null["condition"] == best, "improvement_pct"] = 6.0  # as the no-face-ageing control measured
    text = " ".join(conclusions(table1, pairwise, null))
    assert "but by little" in text and "need not come from the face" in text and "carries age information" not in text
