#!/usr/bin/env python3
"""Generate buggy HumanEval mutants for evaluating the self-debug action.

    python3 tests/eval/make_mutants.py --data ~/.cache/pie-ls/data/HumanEval.jsonl.gz \
        --out DIR [--limit 130] [--seed 7] [--per-problem 1] [--workers 2]

For every problem the full solution (prompt + canonical_solution) gets ONE
AST-located mutation, applied as a text edit at the node's exact offsets (so
comments, formatting and the docstring stay as written).  Families:

    comparison       < <-> <=, > <-> >=, == <-> !=
    off_by_one       integer constant +-1, range() argument +-1, slice bound +-1
    arithmetic       + <-> -, * <-> //, / -> *, % -> //, ** -> *  (also augmented +=, ...)
    wrong_variable   a local variable read replaced by another local of the function
    and_or_swap      and <-> or
    drop_not         `not x` -> `x`, `not in` -> `in`, `is not` -> `is`
    return_variable  `return x` -> `return y` / `return f(x)` -> `return x`

A mutant is kept only if it compiles, fails the dataset's full test
(check(entry_point), 10 s timeout), and fails the "gate" tests built from the
docstring examples, which the canonical solution must pass.  Mutants that hang
are only used when nothing else is found for a problem.

Output, per kept mutant, DIR/HumanEval_<n>_m<k>/:
    solution.py       mutated prompt + solution (importable)
    test_solution.py  gate tests (one function per docstring example)
    full_test.py      `python3 full_test.py` exits 0 iff the dataset test passes
    meta.json         {"task_id","entry_point","mutation","gate_tests",...}
plus DIR/index.json listing every mutant.

--limit N: the number of mutants wanted.  One pass with --per-problem mutants
per problem; if that gives more than N the list is cut (problem order), if it
gives fewer, extra mutants (of another family when possible) are taken from the
problems in order until N is reached.  Without --limit everything found is kept.

Stdlib only; at most --workers (default 2) worker processes.
"""

import argparse
import ast
import gzip
import io
import json
import multiprocessing
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tokenize
from collections import Counter, OrderedDict

FAMILIES = [
    "comparison",
    "off_by_one",
    "arithmetic",
    "wrong_variable",
    "and_or_swap",
    "drop_not",
    "return_variable",
]

FULL_TIMEOUT = 10.0  # seconds for check(entry_point)
GATE_TEST_TIMEOUT = 3.0  # seconds per gate test while screening
MAX_TRIES = 40  # mutants evaluated per problem at most
FIRST_ROUND_PER_FAMILY = 4  # candidates per family before falling back to the rest

# --------------------------------------------------------------------------
# Subprocess runner: evaluates gate tests and/or the full test in a directory
# holding solution.py, test_solution.py and full_test.py.
# --------------------------------------------------------------------------

RUNNER = r'''
import sys, os, json, signal, contextlib, resource
mode, out, gate_timeout, full_timeout = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
try:
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
except Exception:
    pass
sys.setrecursionlimit(3000)
class _Timeout(BaseException):
    pass
def _alarm(*_):
    raise _Timeout()
signal.signal(signal.SIGALRM, _alarm)
sys.path.insert(0, os.getcwd())
res = {"gate": {}, "full": None, "import": None, "hang": False}
def dump():
    with open(out, "w") as f:
        json.dump(res, f)
def run(fn, t):
    signal.setitimer(signal.ITIMER_REAL, t)
    try:
        fn()
        return "pass"
    except _Timeout:
        return "timeout"
    except BaseException as e:
        return "fail: " + type(e).__name__
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
devnull = open(os.devnull, "w")
with contextlib.redirect_stdout(devnull), contextlib.redirect_stderr(devnull):
    mod = {}
    def _imp():
        import test_solution
        mod["m"] = test_solution
    st = run(_imp, 5.0)
    if st != "pass":
        res["import"] = st
        res["hang"] = st == "timeout"
        dump()
        sys.exit(0)
    T = mod["m"]
    names = [n for n in vars(T) if n.startswith("test_") and callable(getattr(T, n))]
    names.sort(key=lambda n: getattr(T, n).__code__.co_firstlineno)
    for n in names:
        st = run(getattr(T, n), gate_timeout)
        res["gate"][n] = st
        if st == "timeout":
            res["hang"] = True
            break
    dump()
    gate_failed = any(v != "pass" for v in res["gate"].values())
    if mode == "all" or (mode == "mutant" and gate_failed and not res["hang"]):
        src = open("full_test.py").read()
        code = compile(src, "full_test.py", "exec")
        st = run(lambda: exec(code, {"__name__": "__main__"}), full_timeout)
        res["full"] = st
        res["hang"] = res["hang"] or st == "timeout"
        dump()
'''


def run_dir(d, mode, n_gate):
    """Run the RUNNER in directory d. Returns the result dict."""
    out = os.path.join(d, "_result.json")
    if os.path.exists(out):
        os.remove(out)
    limit = 5.0 + GATE_TEST_TIMEOUT * max(1, n_gate) + FULL_TIMEOUT + 5.0
    killed = False
    try:
        subprocess.run(
            [sys.executable, "-I", "-S", "-B", "-c", RUNNER, mode, out,
             str(GATE_TEST_TIMEOUT), str(FULL_TIMEOUT)],
            cwd=d, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, timeout=limit)
    except subprocess.TimeoutExpired:
        killed = True
    res = None
    if os.path.exists(out):
        try:
            with open(out) as f:
                res = json.load(f)
        except ValueError:
            res = None
    if res is None:
        res = {"gate": {}, "full": None, "import": "crash", "hang": killed}
    if killed:
        res["hang"] = True
        if res.get("full") is None and mode != "gate":
            res["full"] = "timeout"
    return res


# --------------------------------------------------------------------------
# Docstring example parsing
# --------------------------------------------------------------------------

def match_paren(text, i):
    """Index of the bracket closing text[i], string-aware; -1 if none."""
    depth = 0
    quote = None
    k = i
    while k < len(text):
        c = text[k]
        if quote:
            if c == "\\":
                k += 2
                continue
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                return k
        elif c == "\n" and depth == 0:
            return -1
        k += 1
    return -1


def _literal(chunk):
    """literal_eval chunk, refusing bare (unparenthesised) tuples."""
    chunk = chunk.strip()
    if not chunk:
        raise ValueError("empty")
    node = ast.parse(chunk, mode="eval").body
    if isinstance(node, ast.Tuple):
        if not chunk.startswith("(") or match_paren(chunk, 0) != len(chunk) - 1:
            raise ValueError("bare tuple")
    return ast.literal_eval(node)


_WORDS = {"true": True, "false": False, "none": None}


def literal_prefix(text):
    """(value, length) for the longest prefix of text that is a literal, or None."""
    t = text.strip()
    m = re.match(r"(true|false|none)\b", t, re.I)
    if m and not re.match(r"(True|False|None)\b", t):
        return _WORDS[m.group(1).lower()], m.end()
    for end in range(len(t), 0, -1):
        if t[end - 1] == "." and (end == len(t) or t[end].isspace()):
            continue  # a sentence period, not "1." the float
        try:
            return _literal(t[:end]), end
        except Exception:
            continue
    return None


def parse_expected(text):
    """Parse the expected value written after a call; returns (ok, value)."""
    t = text.strip()
    if t.endswith("."):
        t = t[:-1].rstrip()  # sentence period: "should return 16."
    if not t:
        return False, None
    try:
        return True, _literal(t)
    except Exception:
        pass
    # "19 - 5 - 6 = 8", "1 + 9 + 0 + 0 = 10": the value after the last '='.
    if re.search(r"[^=!<>]=[^=]", t):
        r = literal_prefix(t.rsplit("=", 1)[1])
        if r is not None:
            return True, r[0]
    r = literal_prefix(t)
    if r is not None:
        return True, r[0]
    return False, None


def parse_assignments(text):
    """'arr = [1, 2], k = 3' / 'grid : [[..]]\\n cap : 1' -> [(name, value)] or None."""
    out = []
    rest = text
    while True:
        m = re.match(r"\s*,?\s*([A-Za-z_]\w*)\s*[=:]\s*", rest)
        if not m:
            break
        r = literal_prefix(rest[m.end():])
        if r is None:
            break
        val, n = r
        out.append((m.group(1), val))
        rest = rest[m.end():].strip()[n:]
    return out, rest


def function_params(fn):
    a = fn.args
    return [x.arg for x in a.posonlyargs + a.args]


def is_docstring_stmt(s):
    return (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant)
            and isinstance(s.value.value, str))


def get_entry(tree, entry):
    fns = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == entry]
    return fns[-1] if fns else None


def build_call(entry, params, assigns):
    names = [n for n, _ in assigns]
    if names and all(n in params for n in names) and len(set(names)) == len(names):
        vals = dict(assigns)
        if [p for p in params if p in vals] != params[:len(vals)]:
            return None
        args = [repr(vals[p]) for p in params[:len(vals)]]
    elif len(assigns) == len(params):
        args = [repr(v) for _, v in assigns]
    else:
        return None
    return "%s(%s)" % (entry, ", ".join(args))


def extract_examples(prompt, entry, defined):
    """Return a list of (call_src, expected_value, style)."""
    tree = ast.parse(prompt)
    fn = get_entry(tree, entry)
    if fn is None:
        return []
    docs = [s.value.value for s in fn.body if is_docstring_stmt(s)]
    if not docs:
        return []
    doc = docs[0]
    lines = doc.split("\n")
    examples = []

    # 1. doctest style
    i = 0
    while i < len(lines):
        s = lines[i].strip()
        if s.startswith(">>>"):
            src = s[3:].strip()
            j = i + 1
            while j < len(lines) and lines[j].strip().startswith("..."):
                src += "\n" + lines[j].strip()[3:]
                j += 1
            exp = []
            while (j < len(lines) and lines[j].strip()
                   and not lines[j].strip().startswith(">>>")):
                exp.append(lines[j].strip())
                j += 1
            i = j
            try:
                node = ast.parse(src, mode="eval").body
            except SyntaxError:
                continue
            called = {n.func.id for n in ast.walk(node)
                      if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
            if not called & defined:
                continue
            call = ast.get_source_segment(src, node) or src
            if "\n" in call:
                call = ast.unparse(node)
            if exp:
                ok, val = parse_expected(" ".join(exp))
            else:
                ok, val = True, None
            # ">>> f(x) == y" with no output line (or "True"): call f(x), expect y
            if (isinstance(node, ast.Compare) and len(node.ops) == 1
                    and isinstance(node.ops[0], ast.Eq) and ok and val in (None, True)
                    and isinstance(node.left, ast.Call)):
                try:
                    val = ast.literal_eval(node.comparators[0])
                    call = ast.get_source_segment(src, node.left) or ast.unparse(node.left)
                    if "\n" in call:
                        call = ast.unparse(node.left)
                except ValueError:
                    pass
            if ok:
                examples.append((call, val, "doctest"))
            continue
        i += 1
    if examples:
        return examples

    params = function_params(fn)
    # 2. "f(args) ==> result", "f(args) should return result", "f(x) = y", ...
    sep = re.compile(r"[ \t]*(?:#[ \t]*)?(==>|=>|==|->|\u279e|\u2192|=|should\s+return|returns?)[ \t]*",
                     re.I)
    for m in re.finditer(r"(?<![\w.])%s\s*\(" % re.escape(entry), doc):
        open_i = m.end() - 1
        close_i = match_paren(doc, open_i)
        if close_i < 0:
            continue
        call = doc[m.start():close_i + 1]
        try:
            node = ast.parse(call, mode="eval").body
        except SyntaxError:
            continue
        if not isinstance(node, ast.Call):
            continue
        if any(isinstance(a, ast.Name) for a in node.args) and all(
                isinstance(a, (ast.Name, ast.Constant)) for a in node.args):
            # "is_happy(abcd) => True": bare words stand for strings
            node.args = [ast.Constant(a.id) if isinstance(a, ast.Name) else a
                         for a in node.args]
            call = ast.unparse(node)
        if "\n" in call:
            call = ast.unparse(node)
        line_end = doc.find("\n", close_i)
        rest = doc[close_i + 1: line_end if line_end >= 0 else len(doc)]
        sm = sep.match(rest)
        if not sm:
            continue
        ok, val = parse_expected(rest[sm.end():])
        if ok:
            examples.append((call, val, "arrow"))

    # 3. "For lst = [1,2,3] the output should be 14"
    for line in lines:
        m = re.search(r"\bFor\s+(.*?)[\s,]*the\s+(?:output|result)\s+should\s+be\s+(.*)$", line)
        if not m:
            continue
        assigns, _ = parse_assignments(m.group(1))
        if not assigns:
            continue
        call = build_call(entry, params, assigns)
        ok, val = parse_expected(m.group(2))
        if call and ok:
            examples.append((call, val, "for-output"))

    # 4. "Input: arr = [..], k = 3 \n Output: [..]"
    for m in re.finditer(r"Input\s*:(.*?)Output\s*:([^\n]*)", doc, re.S):
        inp, outp = m.group(1), m.group(2)
        assigns, rest = parse_assignments(inp)
        if assigns and rest.strip(" \t\n,") == "":
            call = build_call(entry, params, assigns)
        else:
            try:
                call = "%s(%r)" % (entry, _literal(inp)) if len(params) == 1 else None
            except Exception:
                call = None
        ok, val = parse_expected(outp)
        if call and ok:
            examples.append((call, val, "input-output"))

    seen = set()
    uniq = []
    for call, val, style in examples:
        key = (call, repr(val))
        if key not in seen:
            seen.add(key)
            uniq.append((call, val, style))
    return uniq


def gate_test_source(imports, tests, names):
    out = ["from solution import %s" % ", ".join(imports)]
    for name, (call, val, _style) in zip(names, tests):
        out.append("")
        out.append("")
        out.append("def %s():" % name)
        if isinstance(val, float):
            out.append("    assert abs(%s - %s) < 1e-6" % (call, "(%r)" % val if val < 0 else repr(val)))
        else:
            out.append("    assert %s == %r" % (call, val))
    return "\n".join(out) + "\n"


def full_test_source(entry, test_code, defined):
    used = set(re.findall(r"[A-Za-z_]\w*", test_code))
    extra = sorted(n for n in defined if n != entry and n in used)
    head = "from solution import %s\n\n\n" % ", ".join([entry] + extra)
    return head + test_code.strip("\n") + "\n\n\ncheck(%s)\n" % entry


# --------------------------------------------------------------------------
# Mutations
# --------------------------------------------------------------------------

class Source:
    def __init__(self, text):
        self.text = text
        self.lines = text.split("\n")
        self.starts = [0]
        for ln in self.lines:
            self.starts.append(self.starts[-1] + len(ln) + 1)
        self.tokens = []
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type in (tokenize.OP, tokenize.NAME):
                (r1, c1), (r2, c2) = tok.start, tok.end
                self.tokens.append((tok.string, self.starts[r1 - 1] + c1,
                                    self.starts[r2 - 1] + c2))

    def off(self, lineno, col_bytes):
        line = self.lines[lineno - 1]
        col = len(line.encode("utf-8")[:col_bytes].decode("utf-8", "replace"))
        return self.starts[lineno - 1] + col

    def span(self, node):
        return (self.off(node.lineno, node.col_offset),
                self.off(node.end_lineno, node.end_col_offset))

    def seg(self, node):
        a, b = self.span(node)
        return self.text[a:b]

    def find_token(self, a, b, strings):
        for idx, (s, ts, te) in enumerate(self.tokens):
            if a <= ts < b and s in strings:
                return idx
        return None

    def line_of(self, pos):
        lo, hi = 0, len(self.starts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.starts[mid] <= pos:
                lo = mid
            else:
                hi = mid - 1
        return lo + 1


CMP_FLIP = {ast.Lt: ("<", "<="), ast.LtE: ("<=", "<"), ast.Gt: (">", ">="),
            ast.GtE: (">=", ">"), ast.Eq: ("==", "!="), ast.NotEq: ("!=", "==")}
ARITH = {ast.Add: ("+", "-"), ast.Sub: ("-", "+"), ast.Mult: ("*", "//"),
         ast.FloorDiv: ("//", "*"), ast.Div: ("/", "*"), ast.Mod: ("%", "//"),
         ast.Pow: ("**", "*")}
NO_PAREN_BINOPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow)
ATOMS = (ast.Name, ast.Call, ast.Attribute, ast.Subscript, ast.Constant)
SEQ_DISPLAYS = (ast.List, ast.Tuple, ast.ListComp, ast.JoinedStr, ast.Dict, ast.Set,
                ast.GeneratorExp, ast.SetComp, ast.DictComp)


def short(text, n=40):
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n - 3] + "..."


def scope_nodes(fn):
    """Nodes in fn's own scope (not nested defs, lambdas, classes, comprehensions)."""
    stack = [s for s in fn.body]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda,
                             ast.ClassDef, ast.ListComp, ast.SetComp, ast.DictComp,
                             ast.GeneratorExp)):
            continue
        stack.extend(ast.iter_child_nodes(node))


def enumerate_mutations(text, entry):
    """All candidate mutations of the entry function body.

    Each is a dict(family, desc, line, edits=[(start, end, replacement)])."""
    tree = ast.parse(text)
    fn = get_entry(tree, entry)
    if fn is None:
        return []
    src = Source(text)
    body = [s for s in fn.body if not is_docstring_stmt(s)]
    parents = {}
    nodes = []
    for stmt in body:
        for node in ast.walk(stmt):
            nodes.append(node)
            for ch in ast.iter_child_nodes(node):
                parents[ch] = node
    in_fstring = set()
    for node in nodes:
        if isinstance(node, ast.JoinedStr):
            in_fstring.update(ast.walk(node))
    nodes = [n for n in nodes if n not in in_fstring and hasattr(n, "lineno")]

    # locals of the function: parameters + names bound in the function scope
    a = fn.args
    params = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
    params += [x.arg for x in (a.vararg, a.kwarg) if x is not None]
    first_def = {p: 0 for p in params}
    funcs = set()
    for node in scope_nodes(fn):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            if node.id not in first_def or first_def[node.id] > node.lineno:
                first_def[node.id] = node.lineno
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            funcs.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for al in node.names:
                funcs.add((al.asname or al.name).split(".")[0])
    local_vars = {v: ln for v, ln in first_def.items() if v not in funcs and v != "_"}

    muts = []

    def add(family, desc, node_or_pos, edits):
        line = node_or_pos if isinstance(node_or_pos, int) else node_or_pos.lineno
        muts.append({"family": family, "desc": desc, "line": line, "edits": edits})

    def tok_edit(idx, new):
        s, ts, te = src.tokens[idx]
        return (ts, te, new)

    def plus_minus(node, what):
        if (isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub))
                and isinstance(node.right, ast.Constant)):
            return  # "n + 1": the constant itself is mutated instead
        a_, b_ = src.span(node)
        seg = text[a_:b_]
        if isinstance(node, ATOMS) or (isinstance(node, ast.BinOp)
                                       and isinstance(node.op, NO_PAREN_BINOPS)):
            wrapped = None
        else:
            wrapped = "(" + seg + ")"
        for delta in ("+ 1", "- 1"):
            if wrapped is None:
                edits = [(b_, b_, " " + delta)]
            else:
                edits = [(a_, b_, wrapped + " " + delta)]
            add("off_by_one", "%s %s -> %s %s" % (what, short(seg), short(seg), delta),
                node, edits)

    for node in nodes:
        # ---- comparison
        if isinstance(node, ast.Compare):
            left = node.left
            for op, right in zip(node.ops, node.comparators):
                if type(op) in CMP_FLIP:
                    old, new = CMP_FLIP[type(op)]
                    la, lb = src.span(left)
                    ra, rb = src.span(right)
                    idx = src.find_token(lb, ra, {old})
                    if idx is not None:
                        add("comparison", "'%s' -> '%s'" % (old, new), node,
                            [tok_edit(idx, new)])
                elif isinstance(op, (ast.NotIn, ast.IsNot)):
                    la, lb = src.span(left)
                    ra, rb = src.span(right)
                    idx = src.find_token(lb, ra, {"not"})
                    if idx is not None:
                        if isinstance(op, ast.NotIn):
                            # delete 'not ' up to the 'in' token
                            e = (src.tokens[idx][1], src.tokens[idx + 1][1], "")
                            add("drop_not", "'not in' -> 'in'", node, [e])
                        else:
                            e = (src.tokens[idx - 1][2], src.tokens[idx][2], "")
                            add("drop_not", "'is not' -> 'is'", node, [e])
                left = right
        # ---- arithmetic
        elif isinstance(node, ast.BinOp) and type(node.op) in ARITH:
            if any(isinstance(x, SEQ_DISPLAYS) or
                   (isinstance(x, ast.Constant) and isinstance(x.value, (str, bytes)))
                   for x in (node.left, node.right)):
                continue
            old, new = ARITH[type(node.op)]
            la, lb = src.span(node.left)
            ra, rb = src.span(node.right)
            idx = src.find_token(lb, ra, {old})
            if idx is not None:
                add("arithmetic", "'%s' -> '%s'" % (old, new), node, [tok_edit(idx, new)])
        elif isinstance(node, ast.AugAssign) and type(node.op) in ARITH:
            if isinstance(node.value, SEQ_DISPLAYS) or (
                    isinstance(node.value, ast.Constant)
                    and isinstance(node.value.value, (str, bytes))):
                continue
            old, new = ARITH[type(node.op)]
            la, lb = src.span(node.target)
            ra, rb = src.span(node.value)
            idx = src.find_token(lb, ra, {old + "="})
            if idx is not None:
                add("arithmetic", "'%s=' -> '%s='" % (old, new), node,
                    [tok_edit(idx, new + "=")])
        # ---- and/or
        elif isinstance(node, ast.BoolOp):
            old, new = ("and", "or") if isinstance(node.op, ast.And) else ("or", "and")
            edits = []
            for v1, v2 in zip(node.values, node.values[1:]):
                idx = src.find_token(src.span(v1)[1], src.span(v2)[0], {old})
                if idx is None:
                    edits = []
                    break
                edits.append(tok_edit(idx, new))
            if edits:
                add("and_or_swap", "'%s' -> '%s'" % (old, new), node, edits)
        # ---- drop not
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            a_, b_ = src.span(node)
            idx = src.find_token(a_, a_ + 1, {"not"})
            if idx is not None and idx + 1 < len(src.tokens):
                e = (src.tokens[idx][1], src.tokens[idx + 1][1], "")
                add("drop_not", "'not %s' -> '%s'" % (short(src.seg(node.operand)),
                                                      short(src.seg(node.operand))),
                    node, [e])
        # ---- integer constants
        elif (isinstance(node, ast.Constant) and type(node.value) is int):
            a_, b_ = src.span(node)
            par = parents.get(node)
            for delta in (1, -1):
                nv = node.value + delta
                if nv < 0 and isinstance(par, ast.UnaryOp):
                    continue
                add("off_by_one", "constant %s -> %s" % (text[a_:b_], nv), node,
                    [(a_, b_, str(nv))])
        # ---- range() arguments
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "range"):
            for arg in node.args:
                if isinstance(arg, ast.Constant) or (
                        isinstance(arg, ast.UnaryOp) and isinstance(arg.operand, ast.Constant)):
                    continue
                plus_minus(arg, "range bound")
        # ---- slice bounds
        if isinstance(node, ast.Slice):
            for b in (node.lower, node.upper):
                if b is None or isinstance(b, ast.Constant) or (
                        isinstance(b, ast.UnaryOp) and isinstance(b.operand, ast.Constant)):
                    continue
                plus_minus(b, "slice bound")
        # ---- wrong variable
        if (isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)
                and node.id in local_vars):
            par = parents.get(node)
            if isinstance(par, ast.Call) and par.func is node:
                continue
            if isinstance(par, ast.Return):
                continue  # handled by return_variable
            for v, ln in sorted(local_vars.items()):
                if v != node.id and ln < node.lineno:
                    a_, b_ = src.span(node)
                    add("wrong_variable", "'%s' -> '%s'" % (node.id, v), node, [(a_, b_, v)])
        # ---- return a different variable
        if isinstance(node, ast.Return) and node.value is not None:
            val = node.value
            a_, b_ = src.span(val)
            if isinstance(val, ast.Name):
                if val.id in local_vars:
                    for v, ln in sorted(local_vars.items()):
                        if v != val.id and ln < node.lineno:
                            add("return_variable", "'return %s' -> 'return %s'" % (val.id, v),
                                node, [(a_, b_, v)])
            elif not isinstance(val, ast.Constant):
                used = sorted({n.id for n in ast.walk(val) if isinstance(n, ast.Name)
                               and isinstance(n.ctx, ast.Load) and n.id in local_vars
                               and local_vars[n.id] < node.lineno})
                for v in used:
                    add("return_variable", "'return %s' -> 'return %s'" % (short(text[a_:b_]), v),
                        node, [(a_, b_, v)])
    return muts


def apply_edits(text, edits):
    for a, b, rep in sorted(edits, key=lambda e: e[0], reverse=True):
        text = text[:a] + rep + text[b:]
    return text


def order_candidates(muts, rng, rotation, preferred=None, avoid_families=()):
    """First round: the preferred family (up to 2*FIRST_ROUND_PER_FAMILY
    candidates), then up to FIRST_ROUND_PER_FAMILY of each other family, family
    order rotated per problem; then everything else, shuffled."""
    by_fam = OrderedDict((f, []) for f in FAMILIES)
    for m in muts:
        by_fam[m["family"]].append(m)
    for f in by_fam:
        rng.shuffle(by_fam[f])
    fams = FAMILIES[rotation:] + FAMILIES[:rotation]
    if preferred in fams:
        fams.remove(preferred)
        fams.insert(0, preferred)
    fams = [f for f in fams if f not in avoid_families] + [f for f in fams if f in avoid_families]
    first, rest = [], []
    for i, f in enumerate(fams):
        n = FIRST_ROUND_PER_FAMILY * (2 if i == 0 and f == preferred else 1)
        first.extend(by_fam[f][:n])
        rest.extend(by_fam[f][n:])
    rng.shuffle(rest)
    return first + rest


# --------------------------------------------------------------------------
# Per-problem worker
# --------------------------------------------------------------------------

def write(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def process_problem(job):
    prob, seed, want, preferred, tmp_root = job
    task_id = prob["task_id"]
    num = int(task_id.split("/")[1])
    entry = prob["entry_point"]
    result = {"task_id": task_id, "num": num, "mutants": [], "skip": None,
              "dropped_examples": 0, "tries": 0, "hanging_rejected": 0}
    solution = prob["prompt"] + prob["canonical_solution"]
    if not solution.endswith("\n"):
        solution += "\n"
    try:
        tree = ast.parse(solution)
    except SyntaxError as e:
        result["skip"] = "canonical solution does not parse: %s" % e
        return result
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}

    examples = extract_examples(prob["prompt"], entry, defined)
    if not examples:
        result["skip"] = "no parsable docstring examples"
        return result

    d = tempfile.mkdtemp(prefix="mut_%d_" % num, dir=tmp_root)
    try:
        called = set()
        for call, _v, _s in examples:
            try:
                called |= {n.id for n in ast.walk(ast.parse(call, mode="eval"))
                           if isinstance(n, ast.Name)}
            except SyntaxError:
                pass
        imports = [entry] + sorted((called & defined) - {entry})
        cand_names = ["test_example_%d" % (i + 1) for i in range(len(examples))]
        full_src = full_test_source(entry, prob["test"], defined)
        write(os.path.join(d, "solution.py"), solution)
        write(os.path.join(d, "test_solution.py"),
              gate_test_source(imports, examples, cand_names))
        write(os.path.join(d, "full_test.py"), full_src)
        res = run_dir(d, "all", len(examples))
        if res.get("import"):
            result["skip"] = "gate tests do not import with the canonical solution (%s)" % res["import"]
            return result
        if res.get("full") != "pass":
            result["skip"] = "canonical solution fails full_test.py (%s)" % res.get("full")
            return result
        kept = [ex for ex, n in zip(examples, cand_names) if res["gate"].get(n) == "pass"]
        result["dropped_examples"] = len(examples) - len(kept)
        if not kept:
            result["skip"] = "canonical solution fails all %d parsed examples" % len(examples)
            return result
        called = set()
        for call, _v, _s in kept:
            called |= {n.id for n in ast.walk(ast.parse(call, mode="eval"))
                       if isinstance(n, ast.Name)}
        imports = [entry] + sorted((called & defined) - {entry})
        gate_names = ["test_example_%d" % (i + 1) for i in range(len(kept))]
        gate_src = gate_test_source(imports, kept, gate_names)
        write(os.path.join(d, "test_solution.py"), gate_src)

        muts = enumerate_mutations(solution, entry)
        if not muts:
            result["skip"] = "no mutation sites in the function body"
            return result
        rng = random.Random("%s:%s" % (seed, task_id))
        rotation = (num + seed) % len(FAMILIES)
        orig_dump = ast.dump(tree)
        accepted, crashing, hanging = [], [], []
        seen_texts = set()
        tries = 0
        queue = order_candidates(muts, rng, rotation, preferred)
        while queue and len(accepted) < want and tries < MAX_TRIES:
            m = queue.pop(0)
            mutated = apply_edits(solution, m["edits"])
            if mutated in seen_texts:
                continue
            seen_texts.add(mutated)
            try:
                compile(mutated, "solution.py", "exec")
                mtree = ast.parse(mutated)
            except (SyntaxError, ValueError):
                continue
            if ast.dump(mtree) == orig_dump:
                continue
            tries += 1
            write(os.path.join(d, "solution.py"), mutated)
            r = run_dir(d, "mutant", len(kept))
            gate_failed = bool(r.get("import")) or any(v != "pass" for v in r["gate"].values())
            if not gate_failed:
                continue
            if r.get("hang"):
                hanging.append((m, mutated))
                continue
            if r.get("full") in (None, "pass"):
                continue
            if any(("TypeError" in str(v) or "AttributeError" in str(v))
                   for v in r["gate"].values()):
                # type confusion (a str used as an index, list.append on an int, ...):
                # unrealistic, keep only as a fallback
                crashing.append((m, mutated))
                continue
            accepted.append((m, mutated, None))
            # prefer a different family for the next one
            fams = {x[0]["family"] for x in accepted}
            queue = order_candidates(queue, rng, rotation, avoid_families=fams)
        result["tries"] = tries
        result["hanging_rejected"] = len(hanging)
        result["typeerror_rejected"] = len(crashing)
        while len(accepted) < want and crashing:
            m, mutated = crashing.pop(0)
            accepted.append((m, mutated, "type_error"))
        while len(accepted) < want and hanging:
            m, mutated = hanging.pop(0)
            accepted.append((m, mutated, "hangs"))
        if not accepted:
            result["skip"] = "no mutant fails the gate tests and the full test (%d tried, %d sites)" % (
                tries, len(muts))
            return result
        for m, mutated, fallback in accepted:
            result["mutants"].append({
                "family": m["family"],
                "mutation": "%s: %s, line %d" % (m["family"], m["desc"], m["line"]),
                "solution": mutated,
                "test_solution": gate_src,
                "full_test": full_src,
                "gate_tests": gate_names,
                "hangs": fallback == "hangs",
                "fallback": fallback,
            })
        return result
    finally:
        shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def load(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        probs = [json.loads(line) for line in f if line.strip()]
    probs.sort(key=lambda p: int(p["task_id"].split("/")[1]))
    return probs


def assign_families(probs, seed):
    """Pick a preferred mutation family per problem so that the families are
    spread evenly: problems with the fewest available families choose first,
    each taking its least-used available family."""
    avail = {}
    for p in probs:
        try:
            muts = enumerate_mutations(p["prompt"] + p["canonical_solution"] + "\n",
                                       p["entry_point"])
        except SyntaxError:
            muts = []
        avail[p["task_id"]] = {m["family"] for m in muts}
    counts = Counter()
    preferred = {}
    order = sorted(probs, key=lambda p: (len(avail[p["task_id"]]),
                                         int(p["task_id"].split("/")[1])))
    for p in order:
        fams = avail[p["task_id"]]
        if not fams:
            continue
        num = int(p["task_id"].split("/")[1])
        rot = (num + seed) % len(FAMILIES)
        ranked = FAMILIES[rot:] + FAMILIES[:rot]
        best = min((f for f in ranked if f in fams), key=lambda f: (counts[f], ranked.index(f)))
        preferred[p["task_id"]] = best
        counts[best] += 1
    return preferred


def run_pool(jobs, workers):
    if workers <= 1:
        for j in jobs:
            yield process_problem(j)
        return
    ctx = multiprocessing.get_context("fork" if hasattr(os, "fork") else "spawn")
    with ctx.Pool(workers) as pool:
        for r in pool.imap(process_problem, jobs, chunksize=1):
            yield r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="HumanEval.jsonl(.gz)")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--limit", type=int, default=None,
                    help="number of mutants wanted (cut or topped up); default: all found")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--per-problem", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2, help="worker processes (max 2)")
    ap.add_argument("--problems", default=None,
                    help="comma-separated problem numbers to restrict to (debugging)")
    args = ap.parse_args(argv)
    workers = max(1, min(2, args.workers))
    t0 = time.time()

    probs = load(os.path.expanduser(args.data))
    if args.problems:
        wanted = {int(x) for x in args.problems.split(",")}
        probs = [p for p in probs if int(p["task_id"].split("/")[1]) in wanted]

    out = os.path.abspath(os.path.expanduser(args.out))
    os.makedirs(out, exist_ok=True)
    for name in os.listdir(out):
        if re.match(r"HumanEval_\d+_m\d+$", name):
            shutil.rmtree(os.path.join(out, name))
    if os.path.exists(os.path.join(out, "index.json")):
        os.remove(os.path.join(out, "index.json"))

    tmp_root = tempfile.mkdtemp(prefix="pie_mutants_")
    try:
        results = {}
        preferred = assign_families(probs, args.seed)
        jobs = [(p, args.seed, args.per_problem, preferred.get(p["task_id"]), tmp_root)
                for p in probs]
        for r in run_pool(jobs, workers):
            results[r["num"]] = r
            if sys.stderr.isatty():
                sys.stderr.write("\r%d/%d problems" % (len(results), len(jobs)))
                sys.stderr.flush()
        if sys.stderr.isatty():
            sys.stderr.write("\n")

        # flat list in problem order
        chosen = []  # (num, k, mutant)
        for num in sorted(results):
            for k, m in enumerate(results[num]["mutants"], 1):
                chosen.append((num, k, m))
        topped_up = 0
        cut = []
        if args.limit is not None and len(chosen) > args.limit:
            # drop from the most common family first, seeded choice within it
            rng = random.Random("cut:%s" % args.seed)
            while len(chosen) > args.limit:
                fam = Counter(m["family"] for _, _, m in chosen)
                top = max(FAMILIES, key=lambda f: (fam[f], -FAMILIES.index(f)))
                victims = [i for i, (_, _, m) in enumerate(chosen) if m["family"] == top]
                cut.append(chosen.pop(rng.choice(victims))[0])
            cut.sort()
        elif args.limit is not None and len(chosen) < args.limit:
            deficit = args.limit - len(chosen)
            extra_jobs = [(p, args.seed, args.per_problem + 1, preferred.get(p["task_id"]), tmp_root)
                          for p in probs
                          if results[int(p["task_id"].split("/")[1])]["mutants"]]
            extra = []
            for r in run_pool(extra_jobs, workers):
                if len(r["mutants"]) > args.per_problem:
                    extra.append((r["num"], args.per_problem + 1, r["mutants"][args.per_problem]))
                    if len(extra) >= deficit:
                        break
            topped_up = len(extra)
            chosen.extend(extra)
            chosen.sort(key=lambda x: (x[0], x[1]))
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)

    probs_by_num = {int(p["task_id"].split("/")[1]): p for p in probs}
    index = []
    for num, k, m in chosen:
        p = probs_by_num[num]
        name = "HumanEval_%d_m%d" % (num, k)
        d = os.path.join(out, name)
        os.makedirs(d)
        write(os.path.join(d, "solution.py"), m["solution"])
        write(os.path.join(d, "test_solution.py"), m["test_solution"])
        write(os.path.join(d, "full_test.py"), m["full_test"])
        meta = OrderedDict([
            ("task_id", p["task_id"]),
            ("entry_point", p["entry_point"]),
            ("mutation", m["mutation"]),
            ("gate_tests", m["gate_tests"]),
            ("family", m["family"]),
            ("hangs", m["hangs"]),
        ])
        write(os.path.join(d, "meta.json"), json.dumps(meta, indent=2) + "\n")
        entry = OrderedDict([("dir", name)])
        entry.update(meta)
        index.append(entry)
    write(os.path.join(out, "index.json"), json.dumps(index, indent=2) + "\n")

    # ---- summary
    elapsed = time.time() - t0
    fam = Counter(e["family"] for e in index)
    print("kept %d mutants from %d problems (of %d) -> %s" % (
        len(index), len({e["task_id"] for e in index}), len(probs), out))
    print("per family:")
    for f in FAMILIES:
        print("  %-16s %4d" % (f, fam.get(f, 0)))
    nhang = sum(1 for e in index if e["hangs"])
    print("hanging mutants used (no non-hanging one found): %d" % nhang)
    print("type-confusion mutants used (TypeError/AttributeError on the gate, no better one found): %d"
          % sum(1 for _, _, m in chosen if m["fallback"] == "type_error"))
    if topped_up:
        print("second mutants added to reach --limit: %d" % topped_up)
    if cut:
        print("problems cut by --limit %d (from the most common families): %d (%s)" % (
            args.limit, len(cut), ", ".join("HumanEval/%d" % n for n in cut)))
    skipped = [(n, results[n]["skip"]) for n in sorted(results) if results[n]["skip"]]
    print("skipped problems: %d" % len(skipped))
    reasons = Counter(re.sub(r"\s*\(.*\)$", "", re.sub(r"\d+ parsed", "N parsed", s))
                      for _, s in skipped)
    for reason, c in reasons.most_common():
        print("  %3d  %s" % (c, reason))
    for n, s in skipped:
        print("       HumanEval/%d: %s" % (n, s))
    dropped = sum(r["dropped_examples"] for r in results.values())
    print("docstring examples dropped because the canonical solution fails them: %d" % dropped)
    gates = [len(e["gate_tests"]) for e in index]
    if gates:
        print("gate tests per mutant: min %d, mean %.1f, max %d" % (
            min(gates), sum(gates) / len(gates), max(gates)))
    print("mutants evaluated: %d; elapsed %.1f s" % (
        sum(r["tries"] for r in results.values()), elapsed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
