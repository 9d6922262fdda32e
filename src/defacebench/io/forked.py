"""A part of one task on the machine's other core: a forked helper process (issue 21).

One scan's pipeline is a chain of steps on one core, and the longest steps (ANTs
registrations, N4) hold Python's GIL, so a thread cannot run beside them. When the
process is the only worker (``--jobs 1``, or a single scan), :class:`Forked` runs an
independent step in a forked child instead, while this process goes on with the next
ones: the child starts with a copy-on-write image of this process (no inputs to pickle,
nothing to import) and sends back only its result. In a local worker of ``--jobs N``
(one thread each, :func:`defacebench.engine.limit_threads`) or a Dask worker every core
is already busy, so the step runs here, in turn, as before: the same code on the same
inputs either way, so the same values.
"""

from __future__ import annotations

import os
import pickle
import select
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

__all__ = ["Forked", "spare_cores"]

#: A helper that has not answered in this many seconds is killed and its work redone here.
FORK_TIMEOUT_S = 900.0


def _usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def spare_cores() -> int:
    """Cores beside this process's own that a task running here may give a helper process.

    The usable cores minus one, at most ``OMP_NUM_THREADS`` minus one (a local worker
    of ``--jobs N`` has 1: :func:`defacebench.engine.limit_threads`); 0 in a Dask worker
    (it may run other tasks beside this one) and off Linux (no ``fork``).
    """
    if not sys.platform.startswith("linux"):
        return 0
    if "distributed" in sys.modules:
        try:
            sys.modules["distributed"].get_worker()
            return 0
        except ValueError:  # not in a worker
            pass
    cores = _usable_cores()
    try:
        cores = min(cores, int(os.environ.get("OMP_NUM_THREADS", "") or cores))
    except ValueError:
        pass
    return max(0, cores - 1)


class Forked:
    """``func(*args)`` computed in a forked child while this process goes on, or here.

    With a spare core (:func:`spare_cores`, when ``fork`` is None) the child starts at
    once; :meth:`result` waits for its answer. Without one, or when the child dies or
    does not answer within :data:`FORK_TIMEOUT_S`, :meth:`result` computes it here.
    Warnings the child raised are re-issued here. ``wall_s`` and ``cpu_s`` are the
    seconds ``func`` took where it ran: a child's CPU seconds are not in this process's
    ``time.process_time()``.
    """

    def __init__(self, func: Callable[..., Any], *args: Any, fork: bool | None = None) -> None:
        self.func, self.args = func, args
        self.forked = bool(spare_cores() > 0 if fork is None else fork)
        self.wall_s = self.cpu_s = 0.0
        self._pid: int | None = None
        self._read: int | None = None
        self._answer: tuple | None = None
        if self.forked:
            read, write = os.pipe()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)  # Python >= 3.12 warns on fork with threads
                    pid = os.fork()
            except OSError:  # no process to be had (memory, process limit): computed here when asked
                os.close(read)
                os.close(write)
                self.forked = False
                return
            if pid == 0:  # the child: compute, send, leave without the parent's clean-ups
                try:
                    os.close(read)
                    with os.fdopen(write, "wb") as pipe:
                        pipe.write(self._pickled(self._compute()))
                finally:
                    os._exit(0)
            os.close(write)
            self._pid, self._read = pid, read

    def cancel(self) -> None:
        """Stop the child, if any (its value is not needed)."""
        if getattr(self, "_pid", None) is not None:
            try:
                os.kill(self._pid, 9)  # type: ignore[arg-type]
                os.waitpid(self._pid, 0)  # type: ignore[arg-type]
                os.close(self._read)  # type: ignore[arg-type]
            except OSError:
                pass
            self._pid = self._read = None
            self.forked = False

    __del__ = cancel  # never asked for: do not leave the child behind

    def _compute(self) -> tuple:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                outcome: tuple[bool, Any] = (True, self.func(*self.args))
            except Exception as exc:
                outcome = (False, exc)
            seconds = (time.perf_counter() - wall, time.process_time() - cpu)
        return outcome, seconds, [(str(w.message), w.category, w.filename, w.lineno) for w in caught]

    @staticmethod
    def _pickled(answer: tuple) -> bytes:
        try:
            return pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # an unpicklable value or exception: its text
            (_, value), seconds, notes = answer
            return pickle.dumps(((False, RuntimeError(repr(value))), seconds, notes))

    def _receive(self, timeout_s: float) -> tuple | None:
        """The child's answer; None when it died or timed out (then it is killed)."""
        chunks, deadline = [], time.monotonic() + timeout_s
        try:
            while select.select([self._read], [], [], max(0.0, deadline - time.monotonic()))[0]:
                chunk = os.read(self._read, 1 << 20)  # type: ignore[arg-type]
                if not chunk:
                    break
                chunks.append(chunk)
            else:
                os.kill(self._pid, 9)  # type: ignore[arg-type]
                return None
        finally:
            os.close(self._read)  # type: ignore[arg-type]
            os.waitpid(self._pid, 0)  # type: ignore[arg-type]
            self._pid = self._read = None
        try:
            return pickle.loads(b"".join(chunks))
        except Exception:  # nothing or a part: it died
            return None

    def result(self, timeout_s: float = FORK_TIMEOUT_S) -> Any:
        """The value of ``func(*args)`` (computed once); raises what ``func`` raised."""
        if self._answer is None:
            answer = self._receive(timeout_s) if self._pid is not None else None
            if answer is None:
                self.forked = False
                answer = self._compute()
            (_, _), (self.wall_s, self.cpu_s), notes = self._answer = answer
            for message, category, filename, lineno in notes:
                warnings.warn_explicit(message, category, filename, lineno)
        (ok, value), _, _ = self._answer
        if not ok:
            raise value
        return value
