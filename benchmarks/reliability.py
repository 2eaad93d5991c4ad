"""Run every hostile input and fault of benchmarks/reliability_cases.py through the CLI; write the report.

    python benchmarks/reliability.py -o reports/reliability [--only TEXT]

One process per case (under its timeout, so a hang is an outcome, not a stuck script), each in an
empty temp folder. Per case: exit code, one error line?, traceback?, partial files left?, seconds.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgefa.benchmarks.machine import machine_facts, machine_line, script_command, versions_line  # noqa: E402
from edgefa.benchmarks.reliability_cases import CASES, CLASSES, run_case  # noqa: E402
from edgefa.fileio import write_md_json  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", required=True, help="report path without suffix (writes .md and .json)")
    ap.add_argument("--only", help="run only the cases whose name contains this text")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    outcomes = []
    for case in CASES:
        if args.only and args.only not in case.name:
            continue
        root = Path(tempfile.mkdtemp(prefix="edgefa-reliability-"))
        try:
            outcome = run_case(case, root)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        outcome["line"] = outcome["line"].replace(str(root), "TMP")  # no machine paths in the report
        outcome["partial"] = [p.replace(str(root), "TMP") for p in outcome["partial"]]
        print(f"{'ok  ' if outcome['ok'] else 'FAIL'} {case.klass:>7} {case.name} ({outcome['seconds']} s)", flush=True)
        outcomes.append(outcome)
    facts = machine_facts()
    record = {"command": script_command(argv), "machine": machine_line(facts), "versions": versions_line(facts),
              "seconds": round(time.perf_counter() - start, 1), "classes": CLASSES, "cases": outcomes,
              "passed": sum(o["ok"] for o in outcomes), "failed": sum(not o["ok"] for o in outcomes)}
    print(f"wrote {write_md_json(args.output, record, markdown(record))} and .json")
    return 0 if record["failed"] == 0 else 1


def markdown(record: dict) -> str:
    lines = ["# Reliability: hostile inputs and faults (issue #24)", "",
             f"Command: `{record['command']}`  ", f"Machine: {record['machine']}  ", f"Versions: {record['versions']}  ",
             f"{record['passed']} of {record['passed'] + record['failed']} cases pass; took {record['seconds']} s.", "",
             "Each case runs `edgefa ...` in its own process, in an empty folder, under a timeout. It passes with "
             "the expected exit code, one error line on stderr naming the file and the problem, no traceback, no "
             "final-named or temp file of the failed output left behind, and no hang. The kill case kills `edgefa "
             "bench` with SIGKILL once its worker runs and passes when the worker is gone within 5 s; the job-file case "
             "expects exit 1 (its model file is missing) and checks that a killed run's leftover is removed. Cases with "
             "exit 0 (a NaN label, stale temp files) check the run's output instead of an error line; argparse's own "
             "errors print their usage lines first (one line: n/a, the error is the last line). Case table: "
             "`benchmarks/reliability_cases.py` (also run by `tests/test_reliability.py`).", ""]
    for klass, title in record["classes"].items():
        rows = [o for o in record["cases"] if o["class"] == klass]
        if not rows:
            continue
        passed = sum(o["ok"] for o in rows)
        lines += [f"## Class {klass}: {title} ({passed}/{len(rows)} pass)" if klass[0].isdigit()
                  else f"## {title[0].upper()}{title[1:]} ({passed}/{len(rows)} pass)", "",
                  "| case | outcome | exit | one line | traceback | partial files | s | stderr |",
                  "|---|---|---|---|---|---|---|---|"]
        for o in rows:
            verdict = "pass" if o["ok"] else f"**FAIL**: {o.get('why') or ('hung' if o['hung'] else 'see row')}"
            exit_code = "timeout" if o["hung"] else o["exit"]
            stderr = o["line"].replace("|", "\\|")
            if "workers" in o:
                stderr = f"{o['workers']} worker(s) seen, {o['orphans']} left running"
            lines.append(f"| {o['case']} | {verdict} | {exit_code} | {('yes' if o['one_line'] else 'no') if o['one_line_expected'] else 'n/a'} | "
                         f"{'yes' if o['traceback'] else 'no'} | {', '.join(o['partial']) or 'none'} | "
                         f"{o['seconds']} | {stderr} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
