#!/usr/bin/env python3
"""Run the gate tests of one mutant directory without pytest.

    python3 tests/eval/run_gate.py DIR/HumanEval_x_my [--test NAME] [--timeout S] [--file F]

Imports DIR/test_solution.py (with DIR first on sys.path, so `from solution
import ...` picks up DIR/solution.py), runs its test_* functions in source
order and prints a pytest-like report with tracebacks.  For a failing
`assert a == b` the values of both sides are shown.

Exit status: 0 all passed, 1 some test failed, 2 the test file could not be
imported (collection error), 4 usage error / no such test.
"""

import argparse
import ast
import importlib.util
import linecache
import os
import signal
import sys
import time
import traceback

WIDTH = 80


def banner(text, ch="="):
    text = " %s " % text if text else ""
    n = max(0, WIDTH - len(text))
    return ch * (n // 2) + text + ch * (n - n // 2)


class TestTimeout(BaseException):
    pass


def _alarm(*_):
    raise TestTimeout()


def short_repr(v, n=300):
    try:
        r = repr(v)
    except Exception as e:  # pragma: no cover
        r = "<repr failed: %r>" % e
    return r if len(r) <= n else r[:n - 3] + "..."


def explain_assert(test_file, lineno, frame_globals, frame_locals):
    """For `assert L == R` / `assert abs(L - R) < eps` at lineno, re-evaluate
    the operands and describe them like pytest's assertion rewriting."""
    try:
        with open(test_file) as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError):
        return []
    node = None
    for n in ast.walk(tree):
        if isinstance(n, ast.Assert) and n.lineno <= lineno <= (n.end_lineno or n.lineno):
            node = n
    if node is None or not isinstance(node.test, ast.Compare) or len(node.test.ops) != 1:
        return []
    left, right = node.test.left, node.test.comparators[0]
    op = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">",
          ast.GtE: ">="}.get(type(node.test.ops[0]), "?")

    def ev(expr):
        code = compile(ast.Expression(expr), test_file, "eval")
        signal.setitimer(signal.ITIMER_REAL, 5)
        try:
            return eval(code, frame_globals, frame_locals)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    try:
        lv, rv = ev(left), ev(right)
    except BaseException:
        return []
    lines = ["E       assert %s %s %s" % (short_repr(lv), op, short_repr(rv))]
    # name the call that produced the left value: "where X = f(args)"
    inner = left
    if (isinstance(left, ast.Call) and isinstance(left.func, ast.Name)
            and left.func.id == "abs" and left.args
            and isinstance(left.args[0], ast.BinOp)):
        inner = left.args[0].left
        try:
            iv = ev(inner)
            lines.append("E        +  where %s = %s" % (short_repr(iv), ast.unparse(inner)))
        except BaseException:
            pass
    elif isinstance(left, ast.Call):
        lines.append("E        +  where %s = %s" % (short_repr(lv), ast.unparse(left)))
    return lines


def format_failure(exc, tb, test_file, timeout):
    out = []
    frames = traceback.extract_tb(tb)
    # drop this runner's own frames
    frames = [f for f in frames if os.path.abspath(f.filename) != os.path.abspath(__file__)]
    if isinstance(exc, TestTimeout):
        for f in frames:
            out.append("%s:%d: in %s" % (os.path.basename(f.filename), f.lineno, f.name))
            if f.line:
                out.append("    " + f.line)
        out.append("E   Failed: Timeout >%gs" % timeout)
        return out, "Failed: Timeout >%gs" % timeout
    # walk the real traceback objects for locals of the test frame
    tbs = []
    t = tb
    while t is not None:
        if os.path.abspath(t.tb_frame.f_code.co_filename) != os.path.abspath(__file__):
            tbs.append(t)
        t = t.tb_next
    for i, t in enumerate(tbs):
        code = t.tb_frame.f_code
        fname = code.co_filename
        lineno = t.tb_lineno
        last = i == len(tbs) - 1
        if i == 0:
            # show the whole test function like pytest does
            first = code.co_firstlineno
            j = first
            while True:
                line = linecache.getline(fname, j)
                if not line or (j > first and line.strip() and not line.startswith((" ", "\t"))):
                    break
                if line.strip():
                    mark = ">   " if j == lineno else "    "
                    out.append(mark + line.rstrip("\n"))
                j += 1
        else:
            out.append("")
            out.append("%s:%d: in %s" % (os.path.relpath(fname), lineno, code.co_name))
            src = linecache.getline(fname, lineno).strip()
            if src:
                out.append(">   " + src)
    msg = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    if isinstance(exc, AssertionError) and len(tbs) == 1:
        extra = explain_assert(test_file, tbs[0].tb_lineno, tbs[0].tb_frame.f_globals,
                               tbs[0].tb_frame.f_locals)
        if extra:
            out.extend(extra)
            short = extra[0][len("E       "):]
        else:
            out.append("E       " + msg)
            short = msg
    else:
        for line in msg.splitlines():
            out.append("E       " + line)
        short = msg.splitlines()[-1] if msg else type(exc).__name__
    last = tbs[-1] if tbs else None
    if last is not None:
        out.append("")
        out.append("%s:%d: %s" % (os.path.relpath(last.tb_frame.f_code.co_filename),
                                  last.tb_lineno, type(exc).__name__))
    return out, short


def main(argv=None):
    ap = argparse.ArgumentParser(description="Run a mutant's gate tests without pytest.")
    ap.add_argument("dir", help="mutant directory (holds solution.py and test_solution.py)")
    ap.add_argument("--test", action="append", default=[],
                    help="run only this test function (repeatable)")
    ap.add_argument("--file", default="test_solution.py", help="test file in DIR")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per test")
    ap.add_argument("-q", "--quiet", action="store_true", help="only the summary line")
    args = ap.parse_args(argv)

    d = os.path.abspath(args.dir)
    test_file = os.path.join(d, args.file)
    if not os.path.isfile(test_file):
        print("no such file: %s" % test_file, file=sys.stderr)
        return 4
    os.chdir(d)
    sys.path.insert(0, d)
    sys.dont_write_bytecode = True
    for mod in ("solution", "test_solution"):
        sys.modules.pop(mod, None)
    signal.signal(signal.SIGALRM, _alarm)

    t0 = time.time()
    say = (lambda *a: None) if args.quiet else print
    say(banner("test session starts"))
    say("rootdir: %s" % d)
    modname = os.path.splitext(args.file)[0]
    spec = importlib.util.spec_from_file_location(modname, test_file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    try:
        signal.setitimer(signal.ITIMER_REAL, args.timeout)
        try:
            spec.loader.exec_module(module)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except BaseException as exc:
        say("collected 0 items / 1 error")
        say("")
        say(banner("ERRORS"))
        say(banner("ERROR collecting %s" % args.file, "_"))
        frames = [f for f in traceback.extract_tb(exc.__traceback__)
                  if not f.filename.startswith("<")
                  and os.path.abspath(f.filename).startswith(d + os.sep)]
        say("Traceback (most recent call last):")
        say("".join(traceback.format_list(frames)).rstrip("\n"))
        say("".join(traceback.format_exception_only(type(exc), exc)).rstrip())
        say(banner("short test summary info"))
        print("ERROR %s - %s" % (args.file, "".join(
            traceback.format_exception_only(type(exc), exc)).strip().splitlines()[-1]))
        say(banner("1 error in %.2fs" % (time.time() - t0)))
        return 2

    tests = [(n, f) for n, f in vars(module).items()
             if n.startswith("test") and callable(f) and hasattr(f, "__code__")]
    tests.sort(key=lambda nf: nf[1].__code__.co_firstlineno)
    if args.test:
        missing = [t for t in args.test if t not in dict(tests)]
        if missing:
            print("no such test(s) in %s: %s (have: %s)" % (
                args.file, ", ".join(missing), ", ".join(n for n, _ in tests)), file=sys.stderr)
            return 4
        tests = [(n, f) for n, f in tests if n in args.test]
    say("collected %d items" % len(tests))
    say("")

    results = []
    for name, fn in tests:
        signal.setitimer(signal.ITIMER_REAL, args.timeout)
        try:
            try:
                fn()
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            results.append((name, None, None))
            say("%s::%s PASSED" % (args.file, name))
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            lines, short = format_failure(exc, exc.__traceback__, test_file, args.timeout)
            results.append((name, lines, short))
            say("%s::%s FAILED" % (args.file, name))

    failed = [r for r in results if r[1] is not None]
    if failed:
        say("")
        say(banner("FAILURES"))
        for name, lines, _ in failed:
            say(banner(name, "_"))
            say("")
            for line in lines:
                say(line)
        say(banner("short test summary info"))
        for name, _, short in failed:
            say("FAILED %s::%s - %s" % (args.file, name, short))
    parts = []
    if failed:
        parts.append("%d failed" % len(failed))
    if len(results) - len(failed):
        parts.append("%d passed" % (len(results) - len(failed)))
    summary = "%s in %.2fs" % (", ".join(parts) or "no tests ran", time.time() - t0)
    print(banner(summary))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
