from __future__ import annotations

from pathlib import Path

import pytest

from defacebench.config import condition_names, get_preset, load_config
from defacebench.io.errors import InputError


def test_paper_preset_has_the_ten_conditions_four_geometry_controls_and_three_refaced_heads() -> None:
    config = get_preset("paper")
    assert len(config.conditions) == 17 and config.conditions[-3:] == ("defaced-afnireface", "defaced-afnirefaceplus", "defaced-mrireface")
    assert config.conditions[:2] == ("raw", "skullstripped")
    assert "face-pydeface" in config.conditions and "defaced-spm" in config.conditions


def test_load_config_overrides_and_rejects_typos(tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    path.write_text('preset = "demo"\nmethods = ["afni", "spm"]\nruns = 2\n')
    config = load_config(path)
    assert config.name == "demo" and config.runs == 2 and config.grid == "mni4mm"
    assert config.conditions == condition_names(("afni", "spm"))
    path.write_text("rnus = 2\n")
    with pytest.raises(InputError, match="unknown config key"):
        load_config(path)
    with pytest.raises(InputError, match="unknown preset"):
        get_preset("nope")
