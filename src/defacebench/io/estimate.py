"""Time before work: one line saying how long a long stage will take, and what would be faster.

A stage measures a short warm-up on this machine (a few training steps, the first scan of a
cohort), multiplies by the work ahead and prints one line before the rest starts, e.g.::

    estimate: train 10 condition(s) x 3 run(s) x up to 100 epochs of 940 scans on cpu (2 threads): about 3.1 weeks (measured 2.9 s per training sample)

When that is over :data:`SLOW_S` on a CPU it adds lines naming what would be faster (a GPU,
a Dask cluster, a lighter profile); ``--quiet`` keeps it to the one line. Nothing waits for an
answer: the stage goes on, and its progress bars keep showing the time left.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

#: Above this many seconds on a CPU the estimate says what would be faster.
SLOW_S = 3600.0

_UNITS = ((7 * 86400.0, "weeks"), (86400.0, "days"), (3600.0, "h"), (60.0, "min"))


def format_duration(seconds: float) -> str:
    """``"40 s"``, ``"12 min"``, ``"3.4 h"``, ``"2.1 days"``, ``"3.1 weeks"``."""
    if not seconds == seconds or seconds == float("inf"):  # nan or inf
        return "unknown"
    for size, unit in _UNITS:
        if seconds >= 2 * size or (unit == "min" and seconds >= 90):
            value = seconds / size
            return f"{value:.0f} {unit}" if value >= 10 else f"{value:.1f} {unit}"
    return f"{max(seconds, 0):.0f} s"


@dataclass(frozen=True)
class Estimate:
    """How long a stage's remaining work should take on this machine.

    Attributes
    ----------
    stage : str
        ``"train"``, ``"deface"``, ``"preprocess"``.
    seconds : float
        Estimated wall time of the work ahead.
    work : str
        The work ahead in words (``"80 scans left"``).
    device : str
        Where it runs (``"cpu (2 threads)"``, ``"2 local processes"``, a GPU's name).
    measured : str
        What the warm-up measured (``"14 s for sub-001"``).
    on_cpu : bool
        Whether it runs on CPUs (only then is :attr:`advice` shown).
    advice : tuple of str
        What would be faster, one option per line.
    """

    stage: str
    seconds: float
    work: str
    device: str
    measured: str
    on_cpu: bool = True
    advice: tuple[str, ...] = field(default_factory=tuple)

    def line(self) -> str:
        """The one line."""
        return f"estimate: {self.stage} {self.work} on {self.device}: about {format_duration(self.seconds)} ({self.measured})"

    def lines(self, quiet: bool = False, slow_s: float | None = None) -> list[str]:
        """The line, plus the faster options when slower than ``slow_s`` (default
        :data:`SLOW_S`) on a CPU (not with ``quiet``)."""
        slow_s = SLOW_S if slow_s is None else slow_s
        out = [self.line()]
        if not quiet and self.on_cpu and self.seconds > slow_s and self.advice:
            out.append(f"estimate: that is over {format_duration(slow_s)} on a CPU; faster:")
            out += [f"  - {a}" for a in self.advice]
        return out


def print_estimate(estimate: Estimate | None, quiet: bool = False, log: Callable[[str], None] | None = None) -> None:
    """Print an estimate's lines (stdout, flushed); nothing for ``None``."""
    if estimate is None:
        return
    say = log or (lambda text: print(text, flush=True))
    for text in estimate.lines(quiet):
        say(text)
    sys.stdout.flush()


def parallel_advice(jobs: int, cores: int, scheduler: str | None) -> list[str]:
    """Faster options for a per-scan stage: more local processes, a Dask cluster."""
    out = []
    if jobs < cores:
        out.append(f"more local processes: --jobs {cores} (this machine has {cores} cores; running {jobs})")
    if not scheduler:
        out.append("a Dask cluster (e.g. SLURM through dask-jobqueue): --scheduler tcp://HOST:8786 or a scheduler file (docs/cluster.md)")
    return out


def task_estimate(stage: str, seconds_per_task: float, remaining: int, key: str, jobs: int, scheduler: str | None, cores: int,
                  advice: Sequence[str] = ()) -> Estimate:
    """Estimate of ``remaining`` per-scan tasks from one measured task of ``seconds_per_task``."""
    if scheduler:
        where, seconds = "a Dask cluster (time for one worker; divide by the workers)", seconds_per_task * remaining
    else:
        parallel = max(1, min(jobs, remaining))
        where = f"{parallel} local process{'es' if parallel != 1 else ''}"
        seconds = seconds_per_task * -(-remaining // parallel)
    return Estimate(stage, seconds, f"{remaining} scan(s) left", where, f"measured {seconds_per_task:.1f} s for {key}",
                    advice=tuple([*parallel_advice(jobs, cores, scheduler), *advice]))
