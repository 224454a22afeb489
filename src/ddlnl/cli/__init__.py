"""``ddlnl`` command line: parse, validate, call the library. Nothing else lives here.

A user's mistake (unknown name, bad value, missing or unwritable file, a damaged input) prints one
line naming the problem and the fix and exits with status 2, before any work starts; no traceback,
no usage block. Every command checks what it needs up front: its options, its ``--set`` keys and
their types, the paths it will write (``--out``, ``--save``, ``--csv``, the cache) and the files it
will read. Every data command takes ``--seed``, ``--device`` and ``--set key=value``.

Exit status: 0 done; 1 some sweep cells failed (their tracebacks are under ROOT/errors/);
2 a user error; 3 a sweep left cells undone because other live workers hold them; 130 interrupted.

The package: :mod:`.parser` (the argument parser and its value types), :mod:`.commands` (one
``cmd_<name>`` per command, and the checks every command makes first); :func:`main` here.
"""

from __future__ import annotations

import sys
from typing import Sequence

from ..errors import UserError

from .commands import (
    cmd_baseline, cmd_config, cmd_denoise, cmd_distill, cmd_estimate, cmd_evaluate, cmd_experts,
    cmd_issues, cmd_noise, cmd_report, cmd_results, cmd_run, cmd_sweep,
)
from .parser import build_parser

# Re-exported: ``ddlnl.cli.X`` keeps working for every name of the former module.
from .parser import (  # noqa: F401
    ArgumentError, _Parser, _common, _int_list, _nonneg_int, _positive_int, _str_list,
)
from .commands import (  # noqa: F401
    EVALUATE_JOB_KEYS, _check_cache, _check_cluster, _check_inputs, _check_root, _job_from_args,
    _refuse_prefixes, _resolve, _warn, evaluate_config, evaluate_overrides,
)


COMMANDS = {"config": cmd_config, "experts": cmd_experts, "sweep": cmd_sweep, "results": cmd_results, "report": cmd_report, "run": cmd_run, "noise": cmd_noise, "baseline": cmd_baseline, "distill": cmd_distill,
            "evaluate": cmd_evaluate, "estimate": cmd_estimate, "issues": cmd_issues,
            "denoise": cmd_denoise}


def _command_of(argv: Sequence[str] | None) -> str:
    """The subcommand named in ``argv`` (for the error line when parsing itself fails)."""
    for a in (sys.argv[1:] if argv is None else argv):
        if not a.startswith("-"):
            return a if a in COMMANDS else ""
    return ""


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit status (see the module docstring)."""
    from ..errors import os_error_line

    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list == ["--version"]:  # answered before the parser imports torch and the methods
        from .. import __version__

        print(f"ddlnl {__version__}")
        return 0
    parser = build_parser()
    command = _command_of(argv)
    prefix = f"ddlnl {command}" if command else "ddlnl"
    try:
        args = parser.parse_args(argv)
    except UserError as exc:
        print(f"{prefix}: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help / --version
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help()
        print(f"ddlnl: error: no command given; choose one of {', '.join(sorted(COMMANDS))}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[args.command](args)
    except UserError as exc:
        print(f"ddlnl {args.command}: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:
        # A path the up-front checks could not foresee (a disk filling up, permissions changed
        # meanwhile): still one line, with what to do.
        print(f"ddlnl {args.command}: error: {os_error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ddlnl {args.command}: interrupted; finished steps are saved and a re-run resumes", file=sys.stderr)
        return 130


def _one_line(text: str) -> str:
    """A message that must fit one line: later lines (a library's own advice) are dropped."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else "(no message)"
