"""`edgedistill gate`: a bundle against a budgets file, as a table, JSON or JUnit XML; exit 1 if a budget fails."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def cmd_gate(a: argparse.Namespace) -> int:
    from edgedistill.release.gate import (
        check,
        check_device_names,
        enforce,
        format_table,
        load_budgets,
        load_report,
        to_json,
        write_junit,
    )
    from edgedistill.runtime.devices import devices_file

    budgets = load_budgets(Path(a.budgets))
    report = load_report(Path(a.bundle))
    check_device_names(budgets, report, devices_file(a.devices))
    rows = check(report, budgets, load_report(Path(a.baseline)) if a.baseline else None, bundle=a.bundle)
    print(json.dumps(to_json(rows, a.bundle, a.budgets), indent=2) if a.json else format_table(rows))
    if a.junit:
        write_junit(rows, Path(a.bundle), Path(a.junit))
    enforce(rows)
    return 0


def add_parsers(sub, common: argparse.ArgumentParser) -> None:
    """This group's sub-commands on the parser's sub-parsers (common: the global options)."""
    p = sub.add_parser("gate", parents=[common], help="check a bundle against a budgets file (exit 1 if one fails)")
    p.add_argument("bundle", help="bundle folder, e.g. artifacts/bundles/quickstart/v1")
    p.add_argument("--budgets", required=True, help="budgets YAML")
    p.add_argument("--baseline", metavar="BUNDLE", help="also fail on regressions against this previous release "
                   "(thresholds: the budgets file's regression section)")
    p.add_argument("--json", action="store_true", help="print the checks as JSON instead of a table")
    p.add_argument("--junit", metavar="FILE", help="also write the checks as JUnit XML (one test case per budget)")
    p.set_defaults(fn=cmd_gate)
