#!/usr/bin/env python3
"""Sanity-check generated mutants: with the canonical solution put back, the
gate tests (via run_gate.py) and full_test.py must pass; as generated, both
must fail.

    python3 tests/eval/check_canonical.py DIR --data ~/.cache/pie-ls/data/HumanEval.jsonl.gz [--n 10 | --all]

Mutants are picked evenly spread over DIR/index.json.  Exit 1 if any check fails.
"""

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd, cwd, timeout=60):
    try:
        p = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout, env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
        return p.returncode, p.stdout.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        return "timeout", ""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--data", required=True)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--all", action="store_true")
    args = ap.parse_args(argv)

    data = os.path.expanduser(args.data)
    opener = gzip.open if data.endswith(".gz") else open
    with opener(data, "rt", encoding="utf-8") as f:
        probs = {p["task_id"]: p for p in map(json.loads, filter(str.strip, f))}
    with open(os.path.join(args.dir, "index.json")) as f:
        index = json.load(f)
    if args.all or args.n >= len(index):
        picked = index
    else:
        step = len(index) / float(args.n)
        picked = [index[int(i * step)] for i in range(args.n)]

    gate = [sys.executable, os.path.join(HERE, "run_gate.py"), "."]
    full = [sys.executable, "full_test.py"]
    bad = 0
    print("%-22s %-16s %-11s %-11s %-11s %-11s" % (
        "mutant", "family", "mut gate", "mut full", "canon gate", "canon full"))
    tmp = tempfile.mkdtemp(prefix="check_canonical_")
    try:
        for e in picked:
            src = os.path.join(args.dir, e["dir"])
            rc_mg, _ = run(gate + ["-q"], src)
            rc_mf, _ = run(full, src)
            work = os.path.join(tmp, e["dir"])
            shutil.copytree(src, work)
            p = probs[e["task_id"]]
            with open(os.path.join(work, "solution.py"), "w") as f:
                f.write(p["prompt"] + p["canonical_solution"])
            rc_cg, out_cg = run(gate, work)
            rc_cf, out_cf = run(full, work)
            ok = rc_mg == 1 and rc_mf != 0 and rc_cg == 0 and rc_cf == 0
            bad += not ok

            def fmt(rc, want_pass):
                good = (rc == 0) if want_pass else (rc != 0)
                return "%s(rc=%s)" % ("pass" if rc == 0 else "fail", rc) + ("" if good else "!")
            print("%-22s %-16s %-11s %-11s %-11s %-11s%s" % (
                e["dir"], e.get("family", "?"), fmt(rc_mg, False), fmt(rc_mf, False),
                fmt(rc_cg, True), fmt(rc_cf, True), "" if ok else "   <-- PROBLEM"))
            if rc_cg != 0:
                print(out_cg)
            if rc_cf != 0:
                print(out_cf)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d/%d mutants OK (mutant fails gate+full, canonical passes gate+full)" % (
        len(picked) - bad, len(picked)))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
