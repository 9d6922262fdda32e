"""The whole study as one resumable chain of stages that read and write disk.

cohort -> deface -> privacy -> preprocess -> train -> evaluate -> analyse -> report, each stage a ``defacebench``
command run with the study's configuration. Every stage skips what is already done,
so rerunning the same command after a crash resumes where it stopped.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from defacebench import layout
from defacebench.conditions import condition_kind, deface_methods, parse_condition
from defacebench.config import StudyConfig
from defacebench.io.atomic import write_text_atomic
from defacebench.io.errors import InputError


@dataclass(frozen=True)
class Stage:
    """One step of the study: a name and the command line it runs."""

    name: str
    command: str
    argv: tuple[str, ...]

    def run(self) -> int:
        import importlib

        module = importlib.import_module(f"defacebench.commands.{self.command}")
        main: Callable[[Sequence[str]], int] = module.main
        return int(main(list(self.argv)))


def study_stages(
    source: Path,
    out: Path,
    config: StudyConfig,
    *,
    jobs: int | None = None,
    scheduler: str | None = None,
    device: str = "auto",
    individual_figures: bool = False,
    progress: bool = True,
) -> list[Stage]:
    """The stages of a study on ``source`` written to ``out``, configured by ``config``."""
    methods = ",".join(config.methods)
    defacers = ",".join(deface_methods([parse_condition(c) for c in config.conditions], config.methods, config.face_placement))
    cluster = ["--scheduler", scheduler] if scheduler else []  # issue 21: training runs are Dask tasks too
    parallel = [*(["--jobs", str(jobs)] if jobs else []), *cluster]
    quiet = [] if progress else ["--no-progress"]
    split = ",".join(str(f) for f in config.split_fractions)

    def train(name: str, conditions: Sequence[str], runs: int) -> Stage:
        return Stage(name, "train", (str(out), "--profile", config.profile, "--grid", config.grid, "--runs", str(runs), "--device", device,
                                     "--seed", str(config.seed), "--conditions", *conditions, *cluster, *quiet))

    face_kinds = ("face", "facemask")
    face = [c for c in config.conditions if condition_kind(c) in face_kinds]
    face_runs = config.face_runs if config.face_runs is not None else config.runs
    if face and face_runs != config.runs:
        others = [c for c in config.conditions if c not in face]
        training = ([train("train", others, config.runs)] if others else []) + [train("train-face", face, face_runs)]
    else:
        training = [train("train", config.conditions, config.runs)]
    # issue 19: how identifiable each method's output is, right after defacing
    privacy = [] if config.privacy_scans == "none" else [
        Stage("privacy", "privacy", (str(out), "--methods", methods, "--scans", config.privacy_scans,
                                     # a BIDS folder (the demo's is simulated after the stages are planned), not a manifest
                                     *(["--source", str(source)] if Path(source).suffix.lower() not in (".csv", ".tsv") else []),
                                     *parallel, *quiet))]
    return [
        Stage("cohort", "cohort", (str(source), "--out", str(out), "--split", split, "--seed", str(config.seed), *parallel, *quiet)),
        Stage("deface", "deface", (str(source), str(out), "--methods", defacers, *parallel, *quiet)),
        *privacy,
        Stage(
            "preprocess",
            "preprocess",
            (str(source), str(out), "--grid", config.grid, "--methods", methods, "--conditions", *config.conditions,
             *(["--face-placement", config.face_placement] if config.face_placement != "brain" else []), *parallel, *quiet),
        ),
        *training,
        Stage("evaluate", "evaluate", (str(out), "--grid", config.grid, "--seed", str(config.seed), "--device", device)),
        Stage("analyse", "analyse", (str(out), "--grid", config.grid, "--seed", str(config.seed), "--device", device)),
        Stage("report", "report", (str(out), *(["--individual-figures"] if individual_figures else []))),
    ]


def record_config(out: Path, config: StudyConfig) -> None:
    """Write ``OUT/study.json``; refuse to resume a study made with another configuration.

    A setting added after the study was started counts as its default there (a study
    recorded without ``face_runs`` resumes with the same ``face_runs = None``).
    """
    path = layout.study_config(out)
    current = json.loads(json.dumps(config.to_dict()))
    if path.is_file():
        defaults = json.loads(json.dumps(StudyConfig().to_dict()))
        previous = {**{k: defaults[k] for k in current if k not in ("name",)}, **json.loads(path.read_text())}
        if previous != current:
            changed = sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))
            raise InputError(
                f"{out} holds a study made with other settings ({', '.join(changed)}); use a new OUT or delete it",
                path,
            )
        return
    write_text_atomic(path, json.dumps(current, indent=2) + "\n")


def run_study(stages: Sequence[Stage], log: Callable[[str], None] | None = None) -> int:
    """Run the stages in order; stop at the first that fails (exit code != 0)."""
    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    start = time.perf_counter()
    for i, stage in enumerate(stages, 1):
        log(f"== [{i}/{len(stages)}] {stage.name}: defacebench {stage.command} {' '.join(stage.argv)}")
        t0 = time.perf_counter()
        code = stage.run()
        log(f"== [{i}/{len(stages)}] {stage.name} finished in {time.perf_counter() - t0:.0f} s (exit {code})")
        if code != 0:
            log(f"== stopped at stage {stage.name!r}; fix the problem above and rerun the same command to resume")
            return code
    log(f"== study finished in {time.perf_counter() - start:.0f} s")
    return 0


def run_and_report(stages: Sequence[Stage], out: Path) -> int:
    """Run the stages; on success print where the report is."""
    code = run_study(stages)
    if code == 0:
        print(f"report: {layout.report_file(out).resolve()}")
    return code
