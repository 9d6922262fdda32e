from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from conftest import make_bids
from defacebench import cli
from defacebench.commands import cohort as cohort_cmd


def test_top_level_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "cohort" in out and "usage: defacebench" in out


def test_unknown_command_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown command" in err


def test_cohort_command_prints_summary_and_writes_split(tiny_bids: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "study"
    assert cli.main(["cohort", str(tiny_bids), "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert "subjects    20" in out and "age (y)     57.0 - 76.0" in out
    splits = pd.read_csv(out_dir / "splits.tsv", sep="\t")
    assert splits["split"].value_counts().to_dict() == {"train": 14, "val": 4, "test": 2}


def test_cohort_strict_rejects_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_bids(tmp_path / "bids", {"01": 70, "02": "old", "03": 72})
    out_dir = tmp_path / "study"
    assert cohort_cmd.main([str(root), "--out", str(out_dir)]) == 0
    capsys.readouterr()
    strict_out = tmp_path / "strict"
    assert cohort_cmd.main([str(root), "--out", str(strict_out), "--strict"]) == 2
    captured = capsys.readouterr()
    assert "REJECTED  sub-02_T1w: non-numeric age 'old'" in captured.out
    assert captured.err.count("\n") == 1 and "--strict" in captured.err
    assert not strict_out.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["{missing}"], "not a directory"),
        (["{bids}", "--split", "a,b"], "--split"),
        (["{bids}", "--bogus"], "unrecognized arguments"),
    ],
)
def test_cohort_bad_input_exit_2(tiny_bids: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    argv = [a.format(missing=tmp_path / "missing", bids=tiny_bids) for a in argv]
    assert cohort_cmd.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_internal_error_is_exit_1(tiny_bids: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import defacebench.cohort as cohort_mod

    def boom(*args, **kwargs):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(cohort_mod, "assign_splits", boom)
    assert cohort_cmd.main([str(tiny_bids)]) == 1
    assert "kaboom" in capsys.readouterr().err
    assert cohort_cmd.main([str(tiny_bids), "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_console_script_help_runs() -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "defacebench.cli", "--help"], capture_output=True, text=True, check=True)
    assert "commands:" in result.stdout


def test_warnings_are_one_line_without_source() -> None:
    import warnings

    from defacebench.cli import make_parser, run_command

    before = warnings.formatwarning
    warnings.formatwarning = lambda *args, **kwargs: "python's format"  # as if nothing had installed ours yet
    try:
        assert run_command(make_parser("probe", "probe"), lambda args: 0, []) == 0
        line = warnings.formatwarning("sub-01 afni: removed 0.14% of the brain", UserWarning, "/x/runner.py", 248, "return deface_subject(...)")
        assert line == "warning: sub-01 afni: removed 0.14% of the brain\n"
        other = warnings.formatwarning("old API", FutureWarning, "/x/lib.py", 7, "code")
        assert other == "FutureWarning: old API (lib.py:7)\n"
    finally:
        warnings.formatwarning = before
