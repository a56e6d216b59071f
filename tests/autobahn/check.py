#!/usr/bin/env python3
"""Verdict on an Autobahn|Testsuite `fuzzingclient` report (wstest exits 0 regardless).

    python3 tests/autobahn/check.py --report target/autobahn --agent wsgate \
        --spec target/autobahn/spec.json --suite-cases target/autobahn/suite-cases.json
    ... --markdown      # the per-group table as Markdown (for docs/conformance.md)

A run passes when
  * the agent is in `index.json` (a run that connected to nothing leaves `{}`),
  * every case the spec selects, resolved against the ids the installed suite knows
    (`--suite-cases`, dumped by run.sh), is in the report,
  * in the groups that must pass (all but 12 and 13), every case's `behavior` is OK,
    NON-STRICT or INFORMATIONAL and its `behaviorClose` OK or INFORMATIONAL,
  * in the permessage-deflate groups 12 and 13, which wsgate does not offer, every case is
    reported UNIMPLEMENTED (the suite's verdict when the server declines the extension)
    with a clean close (OK or INFORMATIONAL).
It prints a table per group (counts per behaviour) and every failing or missing case with
its description and the reason from the case's own JSON report; exit status 1 on any
failure or missing case, 2 on unusable input. Standard library only.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import sys
from collections import Counter
from pathlib import Path

PASS_BEHAVIOR = ("OK", "NON-STRICT", "INFORMATIONAL")
PASS_CLOSE = ("OK", "INFORMATIONAL")
UNIMPLEMENTED = "UNIMPLEMENTED"
# permessage-deflate: wsgate does not offer the extension, so these must be UNIMPLEMENTED.
NOT_OFFERED_GROUPS = ("12", "13")
COLUMNS = ("OK", "NON-STRICT", "INFORMATIONAL", UNIMPLEMENTED, "FAILED")


def id_tuple(case_id: str) -> tuple[int, ...]:
    """'1.2.10' -> (1, 2, 10), for numeric ordering."""
    return tuple(int(x) for x in case_id.split("."))


def resolve(patterns: list[str], known: list[str]) -> list[str]:
    """Case ids a spec's patterns select, exactly as the suite's CaseSet does it."""
    ids: list[str] = []
    for pat in patterns:
        if "*" in pat:
            rx = re.compile(pat.replace(".", r"\.").replace("*", ".*"))
            ids += sorted((k for k in known if rx.match(k)), key=id_tuple)
        else:
            ids.append(pat)
    return ids


def plain(text: str, limit: int = 400) -> str:
    """A case description or result without HTML, on one line, shortened."""
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", text or "")).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def group_of(case_id: str) -> str:
    """'6.4.1' -> '6'."""
    return case_id.split(".")[0]


def load_json(path: Path, what: str):
    """Reads a JSON file or exits 2 with a message naming it."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        print(f"check.py: cannot read {what} {path}: {err}", file=sys.stderr)
        sys.exit(2)


def verdict(case_id: str, res: dict | None) -> str | None:
    """None when the case passes, else why it does not (short)."""
    if res is None:
        return "missing: the case never ran"
    beh, close = res.get("behavior"), res.get("behaviorClose")
    if group_of(case_id) in NOT_OFFERED_GROUPS:
        if beh != UNIMPLEMENTED:
            return f"behavior {beh}, expected UNIMPLEMENTED (permessage-deflate is not offered)"
    elif beh not in PASS_BEHAVIOR:
        return f"behavior {beh}"
    if close not in PASS_CLOSE:
        return f"behaviorClose {close}"
    return None


def main() -> int:
    """Checks the report, prints the summary and failures; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--report", type=Path, default=Path("target/autobahn"),
                    help="wstest's outdir (holds index.json)")
    ap.add_argument("--agent", default="wsgate", help="the agent name of the spec's server")
    ap.add_argument("--spec", type=Path, help="the spec given to wstest (default: REPORT/spec.json)")
    ap.add_argument("--suite-cases", type=Path,
                    help="case ids the installed suite knows (default: REPORT/suite-cases.json)")
    ap.add_argument("--markdown", action="store_true",
                    help="print the per-group table as Markdown instead of plain text")
    args = ap.parse_args()

    spec = load_json(args.spec or args.report / "spec.json", "spec")
    suite = load_json(args.suite_cases or args.report / "suite-cases.json", "suite case list")
    index = load_json(args.report / "index.json", "report index")

    known = [c["id"] for c in suite["cases"]]
    descriptions = {c["id"]: c["description"] for c in suite["cases"]}
    categories = suite.get("categories", {})
    excluded = set(resolve(spec.get("exclude-cases", []), known))
    expected = [c for c in resolve(spec["cases"], known) if c not in excluded]
    unknown = [c for c in expected if c not in descriptions]
    if not expected or unknown:
        print(f"check.py: the spec selects no case, or cases this suite lacks: {unknown}",
              file=sys.stderr)
        return 2

    results = index.get(args.agent)
    problems: list[str] = []
    if not results:
        problems.append(f"agent {args.agent!r} is not in {args.report / 'index.json'} "
                        f"(agents: {sorted(index) or 'none: wstest connected to nothing'})")
        results = {}

    groups: dict[str, dict] = {}
    failures: list[tuple[str, str]] = []
    for case_id in expected:
        g = groups.setdefault(group_of(case_id), {"cases": 0, "beh": Counter(), "close": Counter(),
                                                  "failed": 0, "missing": 0})
        g["cases"] += 1
        res = results.get(case_id)
        why = verdict(case_id, res)
        if res is not None:
            beh = res.get("behavior")
            g["beh"][beh if beh in COLUMNS else "FAILED"] += 1
            g["close"][res.get("behaviorClose")] += 1
        else:
            g["missing"] += 1
        if why:
            g["failed"] += 1
            failures.append((case_id, why))
    extra = sorted(set(results) - set(expected), key=id_tuple)

    rows = []
    for gid in sorted(groups, key=int):
        g = groups[gid]
        close = ", ".join(f"{k} {v}" for k, v in sorted(g["close"].items(), key=lambda kv: -kv[1]))
        if g["missing"]:
            close += (", " if close else "") + f"missing {g['missing']}"
        status = "pass" if not g["failed"] else f"FAIL ({g['failed']})"
        if gid in NOT_OFFERED_GROUPS and not g["failed"]:
            status = "pass (not offered)"
        rows.append([f"{gid} {categories.get(gid, '')}".strip(), str(g["cases"])]
                    + [str(g["beh"][c]) for c in COLUMNS] + [close, status])
    total = [sum(groups[g]["cases"] for g in groups)] + [
        sum(groups[g]["beh"][c] for g in groups) for c in COLUMNS]
    n_failed = len(failures)
    rows.append(["Total"] + [str(x) for x in total]
                + ["", "pass" if not n_failed and not problems else f"FAIL ({n_failed})"])
    header = ["Group", "Cases"] + list(COLUMNS) + ["Close behaviour", "Verdict"]

    out = sys.stdout
    version = suite.get("version", "?")
    if args.markdown:
        out.write(f"Autobahn|Testsuite {version}, agent `{args.agent}`, "
                  f"{len(expected)} cases, {len(results)} reported.\n\n")
        out.write("| " + " | ".join(header) + " |\n")
        out.write("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header) - 2))
                  + "|---|---|\n")
        for r in rows:
            if r[0] == "Total":
                r = [f"**{x}**" if x else "" for x in r]
            out.write("| " + " | ".join(r) + " |\n")
    else:
        out.write(f"Autobahn|Testsuite {version}: agent {args.agent}, "
                  f"{len(expected)} cases expected, {len(results)} in the report\n\n")
        widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
        for r in [header] + rows:
            out.write("  ".join(x.ljust(w) if i in (0, 7, 8) else x.rjust(w)
                                for i, (x, w) in enumerate(zip(r, widths))).rstrip() + "\n")

    err = sys.stderr if args.markdown else sys.stdout
    for p in problems:
        err.write(f"\nFAIL: {p}\n")
    if extra:
        err.write(f"\nnote: cases in the report that the spec did not select: {extra}\n")
    missing = [c for c, _ in failures if c not in results]
    if missing:
        err.write(f"\n{len(missing)} case(s) missing from the report (never ran): "
                  f"{', '.join(missing[:40])}{', ...' if len(missing) > 40 else ''}\n")
    failed = [(c, why) for c, why in failures if c in results]
    if failed:
        err.write(f"\n{len(failed)} failing case(s):\n")
    for case_id, why in failed:
        res = results[case_id]
        err.write(f"\n- case {case_id}: {why}\n")
        detail = {}
        report = res.get("reportfile")
        if report and (args.report / report).is_file():
            detail = load_json(args.report / report, "case report")
        desc = detail.get("description") or descriptions.get(case_id, "")
        err.write(f"    description: {plain(desc)}\n")
        if detail.get("expectation"):
            err.write(f"    expectation: {plain(detail['expectation'])}\n")
        err.write(f"    observed: behavior {res.get('behavior')}, "
                  f"close {res.get('behaviorClose')}, remote close code "
                  f"{res.get('remoteCloseCode')}, duration {res.get('duration')} ms\n")
        if detail.get("result"):
            err.write(f"    result: {plain(detail['result'])}\n")
        if detail.get("resultClose"):
            err.write(f"    close: {plain(detail['resultClose'])}\n")
        if detail and not detail.get("wasClean", True):
            err.write(f"    not clean: {plain(str(detail.get('wasNotCleanReason')))}\n")
        if report:
            err.write(f"    details: {args.report / report.replace('.json', '.html')}\n")

    if problems or failures:
        err.write(f"\nAUTOBAHN: FAILED ({len(failed)} failed, {len(missing)} missing"
                  f"{'; ' + '; '.join(problems) if problems else ''})\n")
        return 1
    err.write(f"\nAUTOBAHN: all {len(expected)} cases passed\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
