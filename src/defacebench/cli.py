"""The ``defacebench`` command line: one entry point, one subcommand per stage.

Each subcommand lives in ``defacebench.commands.<name>`` and exposes
``main(argv=None) -> int`` so tests call it directly. Heavy libraries (torch, ANTsPy,
deepbet) are imported inside the commands, so ``defacebench --help`` is instant.

Exit codes: 0 success, 2 bad input (one line on stderr), 1 internal error.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import traceback
from collections.abc import Callable, Sequence

from defacebench import __version__
from defacebench.io.errors import InputError, one_line_warnings

#: Subcommands in pipeline order: name -> one-line summary. A command is listed
#: once its module ``defacebench.commands.<name>`` exists.
COMMANDS: dict[str, str] = {
    "cohort": "summarise a BIDS dataset or manifest, list rejected scans, write the train/val/test split",
    "simulate": "write a simulated ageing cohort of T1w head MRIs (BIDS, with ground truth)",
    "deface": "deface every scan with AFNI, FSL, pydeface, SPM and quickshear methods (defaced + face-only)",
    "privacy": "how identifiable is each method's output: face detection and identification on head renders",
    "preprocess": "bias-correct, skull-strip, register to MNI and build the model-ready condition stores",
    "train": "train the brain-age 3D CNN on each condition store and predict held-out ages",
    "analyse": "statistics, saliency and figures from trained runs",
    "evaluate": "score every trained model on every condition: cross-condition MAE, dBrainAGE, face ablation",
    "score": "score an external TorchScript or ONNX brain-age model on the raw and defaced conditions",
    "report": "write the self-contained HTML report",
    "run": "the whole study: deface -> privacy -> preprocess -> train -> evaluate -> analyse -> report (resumes)",
    "demo": "simulate a small cohort and run the demo study end to end on a CPU",
    "export": "write the shareable BIDS dataset: defaced images, scrubbed sidecars, chosen table columns",
}

EXIT_OK, EXIT_ERROR, EXIT_INPUT = 0, 1, 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error message and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def make_parser(name: str, description: str) -> ArgumentParser:
    """A subcommand parser with the options every command shares (``--debug``)."""
    parser = ArgumentParser(
        prog=f"defacebench {name}",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    return parser


def run_command(parser: ArgumentParser, body: Callable[[argparse.Namespace], int | None], argv: Sequence[str] | None) -> int:
    """Parse ``argv`` and run ``body``, turning errors into exit codes.

    :class:`InputError` -> exit 2 with one line on stderr; any other exception ->
    exit 1 with one line (the full traceback with ``--debug``).
    """
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return int(exc.code or 0)
    if not args.debug:
        one_line_warnings()
    try:
        return int(body(args) or 0)
    except InputError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # internal error: keep it to one line unless debugging
        if args.debug:
            traceback.print_exc()
        print(f"{parser.prog}: internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)", file=sys.stderr)
        return EXIT_ERROR


def available_commands() -> dict[str, str]:
    """The subset of :data:`COMMANDS` whose module exists in this installation."""
    return {name: text for name, text in COMMANDS.items() if importlib.util.find_spec(f"defacebench.commands.{name}")}


def _top_help(commands: dict[str, str]) -> str:
    width = max(map(len, commands), default=8)
    rows = "\n".join(f"  {name:<{width}}  {text}" for name, text in commands.items())
    return (
        f"usage: defacebench <command> [options]\n\n"
        f"defacebench {__version__}: how much do MRI defacing algorithms change what a 3D CNN\n"
        f"learns about brain age, and how much age sits in the face they remove?\n\n"
        f"commands:\n{rows}\n\n"
        f"Run 'defacebench <command> --help' for a command's options.\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``defacebench <command> ...`` to ``defacebench.commands.<command>.main``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = available_commands()
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(_top_help(commands), end="")
        return EXIT_OK if argv else EXIT_INPUT
    if argv[0] == "--version":
        print(f"defacebench {__version__}")
        return EXIT_OK
    name, rest = argv[0], argv[1:]
    if name not in commands:
        print(f"defacebench: error: unknown command {name!r}; choose from {', '.join(commands)}", file=sys.stderr)
        return EXIT_INPUT
    module = importlib.import_module(f"defacebench.commands.{name}")
    return int(module.main(rest))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
