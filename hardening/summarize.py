#!/usr/bin/env python3
"""Summarises schemathesis NDJSON event streams, one per role and mode, into a Markdown table.

Usage: summarize.py REPORT_DIR ROLE... > summary.md
Each run's events are in REPORT_DIR/<role>-<mode>.ndjson; rows go by role (in the order given),
then in the order the runs were made. Exit status 1 when any run has a failure, a server error,
a timeout or another error, or did not finish (no EngineFinished).
"""

import json
import os
import sys


def read_events(path):
    with open(path, encoding="utf-8") as file:
        for line in file:
            line = line.strip()
            if line:
                yield json.loads(line)


def summarize(path):
    """Counts for one run: operations, cases, failing checks, 5xx, timeouts, other errors."""
    operations, cases, accepted = set(), 0, 0
    failures, server_errors, timeouts, errors = [], 0, 0, []
    finished = False
    for event in read_events(path):
        kind, body = next(iter(event.items()))
        if kind == "ScenarioFinished":
            recorder = body["recorder"]
            if recorder.get("cases"):
                operations.add(recorder["label"])
            cases += len(recorder.get("cases", {}))
            for case_id, checks in recorder.get("checks", {}).items():
                for check in checks:
                    if check["status"] == "failure":
                        failures.append(f'{recorder["label"]}: {check["name"]} (case {case_id})')
            for interaction in recorder.get("interactions", {}).values():
                response = interaction.get("response")
                if response and response["status_code"] >= 500:
                    server_errors += 1
                if response and 200 <= response["status_code"] < 300:
                    accepted += 1
        elif kind == "NonFatalError":
            text = json.dumps(body)
            if "timed out" in text.lower() or "timeout" in text.lower():
                timeouts += 1
            else:
                errors.append(body.get("label", "?") + ": " + body.get("info", {}).get("title", text[:200]))
        elif kind == "FatalError":
            errors.append("fatal: " + json.dumps(body)[:300])
        elif kind == "EngineFinished":
            finished = True
    return {
        "operations": len(operations),
        "cases": cases,
        "accepted": accepted,
        "failures": failures,
        "server_errors": server_errors,
        "timeouts": timeouts,
        "errors": errors if finished else errors + ["the run did not finish"],
    }


def runs(report_dir, roles):
    """(role, mode, path) of every run, by role, then in the order they were made."""
    found = []
    for name in os.listdir(report_dir):
        if name.endswith(".ndjson"):
            role, _, mode = name[: -len(".ndjson")].partition("-")
            if role in roles:
                path = os.path.join(report_dir, name)
                found.append((roles.index(role), os.path.getmtime(path), role, mode, path))
    return [(role, mode, path) for _, _, role, mode, path in sorted(found)]


def main():
    report_dir, roles = sys.argv[1], sys.argv[2:]
    rows, details, clean = [], [], True
    totals = {"operations": 0, "cases": 0, "accepted": 0, "failures": 0, "server_errors": 0, "timeouts": 0, "errors": 0}
    for role, mode, path in runs(report_dir, roles):
        s = summarize(path)
        counts = {
            "operations": s["operations"],
            "cases": s["cases"],
            "accepted": s["accepted"],
            "failures": len(s["failures"]),
            "server_errors": s["server_errors"],
            "timeouts": s["timeouts"],
            "errors": len(s["errors"]),
        }
        for key, value in counts.items():
            totals[key] += value
        if any(counts[k] for k in ("failures", "server_errors", "timeouts", "errors")):
            clean = False
            details += [f"- {role} / {mode}: {line}" for line in s["failures"] + s["errors"]]
        rows.append((role, mode, counts))
    print(
        "| role | mode | operations tested | test cases | 2xx answers | failures | server errors "
        "| timeouts | errors |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for role, mode, c in rows:
        print(
            f'| {role} | {mode} | {c["operations"]} | {c["cases"]} | {c["accepted"]} | {c["failures"]} '
            f'| {c["server_errors"]} | {c["timeouts"]} | {c["errors"]} |'
        )
    t = totals
    print(
        f'| **all** | | {t["operations"]} | {t["cases"]} | {t["accepted"]} | {t["failures"]} | {t["server_errors"]} '
        f'| {t["timeouts"]} | {t["errors"]} |'
    )
    if details:
        print("\nFailures and errors:\n")
        print("\n".join(details))
    sys.exit(0 if clean else 1)


if __name__ == "__main__":
    main()
