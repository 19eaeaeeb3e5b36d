"""The command line: `edgedistill COMMAND`. Each group of commands is a module with its parsers and
functions: pipeline (run, plan, ls, gc), devices (verify, target, bench, ingest), quantize, release
(gate), sweep. Heavy libraries (torch, onnxruntime) are imported inside the commands that need them, so `ls`,
`gate` and errors stay fast.

Exit codes: 0 success; 1 a gate failed (or an internal error); 2 a problem with the input (config,
data, files, a damaged bundle or result, a busy store, a full disk), printed as one line of at most
core.errors.MAX_ERROR characters naming it, with the traceback only under --debug; 130 interrupted.
"""
from __future__ import annotations

import argparse
import errno
import sys
import traceback
from pathlib import Path

from edgedistill.cli import devices, pipeline, quantize, release, sweep
from edgedistill.cli.args import Parser, UsageError, default_store
from edgedistill.core.errors import EdgeDistillError, GateFailed, one_line


def build_parser() -> argparse.ArgumentParser:
    def global_args(p: argparse.ArgumentParser, default) -> argparse.ArgumentParser:
        # accepted before and after the sub-command; SUPPRESS keeps a sub-command from resetting them
        p.add_argument("--debug", action="store_true", default=default if default is argparse.SUPPRESS else False,
                       help="show tracebacks")
        p.add_argument("--store", type=Path, default=default,
                       help="artifact store folder (default: $EDGEDISTILL_STORE or ./artifacts)")
        p.add_argument("--devices", type=Path, default=default, metavar="FILE",
                       help="devices file: name -> target, threads, arch, python, notes (default: $EDGEDISTILL_DEVICES, "
                            "or ./devices.yaml)")
        p.add_argument("--trust-code", action="append", metavar="MODULE", default=default if default is argparse.SUPPRESS else [],
                       help="let python:<module>:<function> architectures import this module (or its sub-modules); "
                            "repeatable; also $EDGEDISTILL_TRUST_CODE=mod1,mod2. Configs never run code on their own")
        return p

    common = global_args(Parser(add_help=False), argparse.SUPPRESS)
    ap = global_args(Parser(
        prog="edgedistill", description="Fine-tune, distill, export, quantize, benchmark and bundle a model for the edge."), None)
    sub = ap.add_subparsers(dest="command", required=True, parser_class=Parser)

    for group in (pipeline, devices, quantize, release, sweep):
        group.add_parsers(sub, common)
    return ap


def main(argv: list[str] | None = None) -> int:
    from edgedistill.core import config

    try:
        a = build_parser().parse_args(argv)
    except UsageError as e:
        print(f"edgedistill: error: {one_line(str(e))}", file=sys.stderr)
        return e.exit_code
    a.store = a.store or default_store()
    config.TRUSTED_CODE[:] = a.trust_code or []
    try:
        return a.fn(a)
    except GateFailed as e:
        print(f"edgedistill: {e}", file=sys.stderr)
        return e.exit_code
    except (EdgeDistillError, OSError) as e:
        if a.debug:
            traceback.print_exc()
        if isinstance(e, EdgeDistillError):
            msg = str(e)
        elif e.errno in (errno.ENOSPC, errno.EDQUOT):
            msg = f"no space left on device while writing {e.filename or 'a file'}; free some space and run again"
        else:
            msg = f"{e.strerror or e}: {e.filename or ''}".rstrip(": ")
        print(f"edgedistill: error: {one_line(msg)}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    except KeyboardInterrupt:
        print("edgedistill: interrupted; finished stages are kept, a rerun resumes from the last checkpoint", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: say so in one line, the traceback under --debug
        if a.debug:
            raise
        print(f"edgedistill: internal error: {one_line(f'{type(e).__name__}: {e}')} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1
