"""pie-ls's fallback Python test runner, used when pytest is not installed.

Runs top-level `test_*` functions and unittest.TestCase tests of the given files, prints each failure with its
traceback (and, for a failing `assert a == b`, the values of both sides, as pytest does), then a pytest -rA style
summary: `PASSED file::name` / `FAILED file::name - Error: message`. Exit 0 when all passed, 1 when any failed,
5 when no test was collected.

    python3 pie_runtest.py FILE [NAME | Class::name]
    python3 pie_runtest.py --dir DIR
"""
import ast
import importlib.util
import inspect
import os
import sys
import traceback
import unittest


def collect_files(argv):
    if argv and argv[0] == "--dir":
        root = argv[1] if len(argv) > 1 else "."
        found = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in ("__pycache__", "venv", "node_modules"))
            for f in sorted(filenames):
                if f.endswith(".py") and (f.startswith("test_") or f.endswith("_test.py")):
                    found.append(os.path.normpath(os.path.join(dirpath, f)))
        return found, None
    if not argv:
        print("usage: pie_runtest.py FILE [NAME] | --dir DIR", file=sys.stderr)
        sys.exit(4)
    return [argv[0]], (argv[1] if len(argv) > 1 else None)


def load(path):
    directory = os.path.dirname(os.path.abspath(path))
    for p in (os.getcwd(), directory):
        if p not in sys.path:
            sys.path.insert(0, p)
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def explain_assert(tb, path):
    """For `assert left OP right` failing in `path`, the values of both sides, evaluated in the failing frame."""
    frame = None
    lineno = None
    while tb is not None:
        if os.path.abspath(tb.tb_frame.f_code.co_filename) == os.path.abspath(path):
            frame, lineno = tb.tb_frame, tb.tb_lineno
        tb = tb.tb_next
    if frame is None:
        return None
    try:
        source = open(path, encoding="utf-8").read()
        tree = ast.parse(source)
    except Exception:
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.Assert) and node.lineno <= lineno <= (node.end_lineno or node.lineno):
            test = node.test
            if isinstance(test, ast.Compare) and len(test.ops) == 1:
                left_src = ast.get_source_segment(source, test.left)
                right_src = ast.get_source_segment(source, test.comparators[0])
                op = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Is: "is", ast.In: "in"}.get(type(test.ops[0]), "?")
                try:
                    left = eval(compile(ast.Expression(test.left), path, "eval"), frame.f_globals, frame.f_locals)
                    right = eval(compile(ast.Expression(test.comparators[0]), path, "eval"), frame.f_globals, frame.f_locals)
                except Exception:
                    return None
                return "E       assert %s %s %s\nE        where the left side is `%s`" % (short(left), op, short(right), left_src)
            return "E       assert %s" % ast.get_source_segment(source, test)
    return None


def short(value, limit=300):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def cases(module, path, wanted):
    out = []
    for name, obj in vars(module).items():
        if name.startswith("test") and inspect.isfunction(obj) and obj.__module__ == module.__name__:
            out.append((name, obj, None))
        elif inspect.isclass(obj) and issubclass(obj, unittest.TestCase) and obj.__module__ == module.__name__:
            for method in unittest.TestLoader().getTestCaseNames(obj):
                out.append(("%s::%s" % (name, method), obj, method))
    if wanted:
        out = [c for c in out if c[0] == wanted or c[0].endswith("::" + wanted)]
    return out


def run_case(name, obj, method, path):
    if method is None:
        params = [p for p in inspect.signature(obj).parameters.values() if p.default is inspect.Parameter.empty]
        if params:
            return "ERROR", "needs pytest fixtures (%s); install pytest to run it" % ", ".join(p.name for p in params), None
        try:
            obj()
            return "PASSED", None, None
        except Exception as e:
            return "FAILED", "%s: %s" % (type(e).__name__, e), sys.exc_info()
    result = unittest.TestResult()
    obj(method).run(result)
    problems = result.failures + result.errors
    if problems:
        return "FAILED", problems[0][1].strip().splitlines()[-1], problems[0][1]
    if result.skipped:
        return "SKIPPED", result.skipped[0][1], None
    return "PASSED", None, None


def main(argv):
    files, wanted = collect_files(argv)
    summary = []
    for path in files:
        rel = os.path.relpath(path)
        try:
            module = load(path)
        except Exception as e:
            print("_" * 20, "ERROR collecting", rel, "_" * 20)
            traceback.print_exc()
            summary.append(("ERROR", rel, "%s: %s" % (type(e).__name__, e)))
            continue
        for name, obj, method in cases(module, path, wanted):
            status, message, info = run_case(name, obj, method, path)
            node = "%s::%s" % (rel, name)
            if status in ("FAILED", "ERROR"):
                print("_" * 20, name, "_" * 20)
                if isinstance(info, tuple):
                    etype, evalue, tb = info
                    frames = traceback.extract_tb(tb)
                    # Drop this runner's own frames.
                    frames = [f for f in frames if os.path.basename(f.filename) != os.path.basename(__file__)]
                    print("Traceback (most recent call last):")
                    print("".join(traceback.format_list(frames)), end="")
                    print("".join(traceback.format_exception_only(etype, evalue)), end="")
                    if etype is AssertionError:
                        explained = explain_assert(tb, path)
                        if explained:
                            print(explained)
                elif isinstance(info, str):
                    print(info)
                elif message:
                    print(message)
            summary.append((status, node, message))
    print("=" * 20, "short test summary info", "=" * 20)
    for status, node, message in summary:
        print("%s %s%s" % (status, node, " - " + message.splitlines()[0] if message else ""))
    failed = sum(1 for s in summary if s[0] in ("FAILED", "ERROR"))
    passed = sum(1 for s in summary if s[0] == "PASSED")
    print("%d failed, %d passed" % (failed, passed))
    if not summary:
        return 5
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
