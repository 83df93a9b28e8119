"""pie-ls performance harness: checks that a candidate rewrite of one Python function is equivalent to the original
and measures whether it is faster. Standard library only; pie-ls writes this file into a scratch directory and runs

    python3 harness.py --root DIR --module-file REL/mod.py --function NAME --candidate-file /abs/cand_mod.py \
        [--tests REL/test_x.py ...] --out /abs/result.json [--runs 20] [--budget-s 60] [--seed 1]

Steps: (A) record the inputs the user's tests pass to the function; (B) derive larger inputs from them (or from the
type annotations when there are none) while the original stays fast enough; (C) run original and candidate on
separate copies of every input and compare return values, exceptions and argument mutations; (D) when equivalent,
time alternated A/B passes over the largest inputs and report the median old/new ratio with a bootstrap 95% CI.

With --agree (self-debug's second opinion) the two files are two fixes that pass the same tests: steps B-D are
replaced by inputs near the recorded ones (each a small change of one or two arguments: a number moved by one or
negated, an element dropped, repeated or moved, two same-typed arguments swapped) and the two versions are compared
only where both return normally. Fields: "equivalent" (they agree on every compared input), "checked_inputs",
"mismatch" (the first input where they differ, with both results).

The result is a JSON object written to --out. Exit status 0 whenever it was written (equivalent or not), 1 on an
internal error, 2 on bad arguments; the reason is one line on stderr. Nothing useful is printed on stdout.
"""
import argparse
import collections
import collections.abc
import copy
import functools
import gc
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import itertools
import json
import math
import os
import random
import signal
import sys
import time
import types
import typing
import unittest

perf_counter = time.perf_counter

MAX_RECORDED = 200          # recorded calls kept
GROW_STOP_S = 0.1           # stop growing an input once the original takes this long per call
GEN_CALL_TIMEOUT_S = 1.5    # one call of the original while generating
MAX_LADDER_STEPS = 16
MAX_ELEMS = 300_000         # stop growing past this many elements
MAX_GROW_SEEDS = 3
MAX_EDGE_SEEDS = 6
MAX_ITER_ITEMS = 1_000_000  # generator results are materialised up to this many items
BENCH_MAX_INPUTS = 3
BENCH_MIN_PASS_S = 0.02     # repeat calls inside a pass until it lasts this long (fast functions)
BENCH_MAX_PASS_S = 0.3
REPR_LIMIT = 300


class _Timeout(BaseException):
    """Raised by SIGALRM inside a call that ran past its limit (BaseException: user code's `except Exception`
    does not swallow it)."""


class _NeedDeepCopy(Exception):
    pass


class HarnessError(Exception):
    pass


_DEBUG = None  # a file: PIE_HARNESS_DEBUG=1 logs phase timings to the harness's stderr


def debug(fmt, *args):
    if _DEBUG is not None:
        try:
            _DEBUG.write(("[harness %.2f] " % perf_counter()) + (fmt % args) + "\n")
            _DEBUG.flush()
        except Exception:
            pass


_HAVE_ITIMER = hasattr(signal, "setitimer") and hasattr(signal, "SIGALRM")


_ALARM = {"fires": 0, "escape": None}
ESCAPE_AFTER_FIRES = 30     # 3 s of ignored timeouts: the code swallows them (`except BaseException`, `finally` loop)


def _on_alarm(signum, frame):
    _ALARM["fires"] += 1
    if _ALARM["fires"] > ESCAPE_AFTER_FIRES and _ALARM["escape"] is not None:
        _ALARM["escape"]()  # writes the result and ends the process
    raise _Timeout()


def _arm(seconds):
    """Arms a timer that raises _Timeout after `seconds`, then every 100 ms until disarmed (so a bare `except:`
    in user code cannot swallow it for good; code that swallows it for seconds ends the harness)."""
    if _HAVE_ITIMER and seconds is not None:
        _ALARM["fires"] = 0
        signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001), 0.1)


def _disarm():
    if not _HAVE_ITIMER:
        return
    while True:
        try:
            signal.setitimer(signal.ITIMER_REAL, 0, 0)
            return
        except _Timeout:
            continue


# ---------------------------------------------------------------------------------------------------------------
# Copies, sizes, reprs

_ATOMIC = frozenset([int, float, complex, str, bytes, bool, type(None), range, type(Ellipsis), frozenset])


def clone(value):
    """A deep copy. Plain data (lists, dicts, sets, tuples of atoms) is copied fast; anything else, or plain data
    that shares a mutable container between two places, goes through copy.deepcopy (which keeps the sharing)."""
    try:
        return _clone(value, set())
    except _NeedDeepCopy:
        return copy.deepcopy(value)


def _clone(v, seen):
    t = type(v)
    if t in _ATOMIC:
        if t is frozenset and not all(type(x) in _ATOMIC for x in v):
            raise _NeedDeepCopy()
        return v
    if t is list:
        if id(v) in seen:
            raise _NeedDeepCopy()
        seen.add(id(v))
        return [x if type(x) in _ATOMIC and type(x) is not frozenset else _clone(x, seen) for x in v]
    if t is tuple:
        return tuple(x if type(x) in _ATOMIC and type(x) is not frozenset else _clone(x, seen) for x in v)
    if t is dict:
        if id(v) in seen:
            raise _NeedDeepCopy()
        seen.add(id(v))
        return {k: (x if type(x) in _ATOMIC and type(x) is not frozenset else _clone(x, seen)) for k, x in v.items()}
    if t is set:
        if id(v) in seen:
            raise _NeedDeepCopy()
        seen.add(id(v))
        if all(type(x) in _ATOMIC for x in v):
            return set(v)
        raise _NeedDeepCopy()
    raise _NeedDeepCopy()


_NUMBERS = (int, float, bool, type(None))


def size_of(v, depth=0):
    """Number of elements (characters for strings), counted through nested containers (estimated from the first
    2000 elements of long ones)."""
    t = type(v)
    if t in (str, bytes, bytearray):
        return len(v)
    if depth > 3:
        return 1
    if t in (list, tuple, set, frozenset, dict):
        n = len(v)
        if n == 0:
            return 0
        items = v.values() if t is dict else v
        if t is list or t is tuple:
            ends = (type(v[0]), type(v[-1]))
            if ends[0] in _NUMBERS and ends[1] in _NUMBERS:
                return n  # a list of numbers (checking both ends: argument lists mix numbers and lists)
        s = sum(size_of(x, depth + 1) for x in itertools.islice(items, 2000))
        if n > 2000:
            s = s * n // 2000
        return n + s
    return 1


def short_repr(value, limit=REPR_LIMIT):
    try:
        text = _repr_limited(value, limit)
    except BaseException as e:  # a broken __repr__
        text = "<%s (repr failed: %s)>" % (type(value).__name__, type(e).__name__)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _repr_limited(v, limit, depth=0):
    t = type(v)
    if t in (list, tuple, set, frozenset) and depth < 4:
        items = []
        used = 0
        for i, x in enumerate(v):
            if used > limit:
                items.append("... (%d items)" % len(v))
                break
            r = _repr_limited(x, limit, depth + 1)
            items.append(r)
            used += len(r) + 2
        body = ", ".join(items)
        if t is list:
            return "[" + body + "]"
        if t is tuple:
            return "(" + body + ("," if len(v) == 1 else "") + ")"
        if not v:
            return t.__name__ + "()"
        return ("{" + body + "}") if t is set else "frozenset({" + body + "})"
    if t is dict and depth < 4:
        items = []
        used = 0
        for k, x in v.items():
            if used > limit:
                items.append("... (%d items)" % len(v))
                break
            r = _repr_limited(k, limit, depth + 1) + ": " + _repr_limited(x, limit, depth + 1)
            items.append(r)
            used += len(r) + 2
        return "{" + ", ".join(items) + "}"
    if t in (str, bytes) and len(v) > limit:
        return repr(v[:limit]) + "...(len %d)" % len(v)
    if isinstance(v, _Iter):
        return "<iterator yielding %s>" % _repr_limited(v.items, limit, depth)
    if isinstance(v, _Awaited):
        return "<coroutine returning %s>" % _repr_limited(v.value, limit, depth)
    return repr(v)


def describe(value, depth=0):
    """A short type-and-size description: list[2000], dict[50], str[400], int=30."""
    t = type(value)
    if t in (list, tuple, set, frozenset, dict):
        inner = ""
        if value and depth < 1:
            first = next(iter(value.values() if t is dict else value))
            if type(first) in (list, tuple, dict, set):
                inner = " of " + describe(first, depth + 1)
        return "%s[%d]%s" % (t.__name__, len(value), inner)
    if t in (str, bytes):
        return "%s[%d]" % (t.__name__, len(value))
    if t in (int, float, bool):
        return "%s=%s" % (t.__name__, short_repr(value, 20))
    return t.__name__


def describe_call(args, kwargs):
    parts = [describe(a) for a in args] + ["%s=%s" % (k, describe(v)) for k, v in kwargs.items()]
    return "(" + ", ".join(parts) + ")"


def call_repr(name, args, kwargs):
    parts = [short_repr(a) for a in args] + ["%s=%s" % (k, short_repr(v)) for k, v in kwargs.items()]
    return short_repr_text("%s(%s)" % (name, ", ".join(parts)))


def short_repr_text(text, limit=REPR_LIMIT):
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------------------------
# Calling and comparing


class _Iter:
    """A generator/iterator result, materialised."""

    __slots__ = ("items", "truncated")

    def __init__(self, items, truncated):
        self.items = items
        self.truncated = truncated


class _Awaited:
    """The value of a coroutine result (an `async def` function), run to completion."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


def _run_coroutine(coro):
    import asyncio
    return asyncio.run(coro)


def _consume(res):
    """What the benchmark does with a result: drain an iterator, run a coroutine."""
    if isinstance(res, collections.abc.Iterator):
        for _ in res:
            pass
    elif inspect.iscoroutine(res):
        _run_coroutine(res)


class Outcome:
    """What one call did. kind: ok (value, args_after), raise (exc), timeout, skip (reason)."""

    __slots__ = ("kind", "value", "args_after", "exc", "elapsed")

    def __init__(self, kind, value=None, args_after=None, exc=None, elapsed=0.0):
        self.kind = kind
        self.value = value
        self.args_after = args_after
        self.exc = exc
        self.elapsed = elapsed

    def show(self):
        if self.kind == "ok":
            return short_repr(self.value)
        if self.kind == "raise":
            return short_repr_text("raises %s: %s" % (exc_name(self.exc), short_repr_text(str(self.exc), 200)))
        if self.kind == "timeout":
            return "timed out after %.2f s" % self.elapsed
        return "skipped: %s" % self.value


def exc_name(e):
    return type(e).__qualname__


_CURRENT = {"who": None}


def invoke(fn, args, kwargs, timeout, seed, who):
    """Calls fn on the given (already copied) arguments, with a time limit, materialising iterator results.
    who: "original" or "candidate" (named in the result if the call cannot be stopped)."""
    random.seed(seed)
    _CURRENT["who"] = who
    if hasattr(fn, "cache_clear"):
        try:
            fn.cache_clear()  # an lru_cache'd function: every call starts cold, whatever ran before
        except Exception:
            pass
    t0 = perf_counter()
    try:
        try:
            _arm(timeout)
            res = fn(*args, **kwargs)
            if isinstance(res, collections.abc.Iterator):
                items = list(itertools.islice(res, MAX_ITER_ITEMS + 1))
                res = _Iter(items, len(items) > MAX_ITER_ITEMS)
            elif inspect.iscoroutine(res):
                res = _Awaited(_run_coroutine(res))
            elapsed = perf_counter() - t0
        finally:
            _disarm()
    except _Timeout:
        _disarm()
        return Outcome("timeout", elapsed=perf_counter() - t0)
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # SystemExit too: it is what the function did
        return Outcome("raise", exc=e, elapsed=perf_counter() - t0)
    return Outcome("ok", value=res, args_after=(args, kwargs), elapsed=elapsed)


def same(a, b):
    """Equivalence of two results: == with a tolerance for floats, recursively through containers; objects of
    same-named classes compare by their attributes when the class has no __eq__."""
    try:
        return _same(a, b, set(), 0)
    except RecursionError:
        try:
            return bool(a == b)
        except Exception:
            return False


def _type_key(t):
    return (t.__qualname__, t.__module__ if t.__module__ in ("builtins", "collections") else "")


def _same(a, b, seen, depth):
    if a is b:
        return True
    ta, tb = type(a), type(b)
    if ta is not tb and _type_key(ta) != _type_key(tb):
        return False
    if ta is float:
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if ta is complex:
        return _same(a.real, b.real, seen, depth) and _same(a.imag, b.imag, seen, depth)
    if ta in (int, str, bytes, bool, type(None)):
        return a == b
    key = (id(a), id(b))
    if key in seen:
        return True
    if depth > 400:
        return a == b
    seen.add(key)
    if ta is _Iter:
        return a.truncated == b.truncated and _same(a.items, b.items, seen, depth + 1)
    if ta is _Awaited:
        return _same(a.value, b.value, seen, depth + 1)
    if isinstance(a, (list, tuple)) and ta.__eq__ in (list.__eq__, tuple.__eq__):
        if len(a) != len(b):
            return False
        if hasattr(a, "_fields") and a._fields != getattr(b, "_fields", None):
            return False
        for x, y in zip(a, b):
            if not (x is y or _same(x, y, seen, depth + 1)):
                return False
        return True
    if isinstance(a, dict) and ta.__eq__ is dict.__eq__:
        if len(a) != len(b):
            return False
        if isinstance(a, collections.OrderedDict) and list(a) != list(b):
            return False
        for k, x in a.items():
            if k not in b:
                return False
            if not _same(x, b[k], seen, depth + 1):
                return False
        if isinstance(a, collections.defaultdict) and a.default_factory is not b.default_factory:
            fa, fb = a.default_factory, b.default_factory
            if getattr(fa, "__qualname__", fa) != getattr(fb, "__qualname__", fb):
                return False
        return True
    if isinstance(a, (set, frozenset)):
        try:
            return a == b
        except Exception:
            return False
    eq = getattr(ta, "__eq__", None)
    if ta is tb and eq is not object.__eq__:
        try:
            return bool(a == b)
        except Exception:
            return repr(a) == repr(b)
    if eq is not object.__eq__:
        try:
            if a == b:
                return True
        except Exception:
            pass
    # Same-named classes without a usable __eq__ (or defined twice): compare the state.
    sa, sb = _state(a), _state(b)
    if sa is None or sb is None:
        try:
            return bool(a == b)
        except Exception:
            return repr(a) == repr(b)
    return _same(sa, sb, seen, depth + 1)


def _state(obj):
    state = {}
    d = getattr(obj, "__dict__", None)
    if isinstance(d, dict):
        state.update(d)
    for klass in type(obj).__mro__:
        slots = getattr(klass, "__slots__", ())
        if isinstance(slots, str):
            slots = (slots,)
        for slot in slots:
            if slot in ("__dict__", "__weakref__"):
                continue
            try:
                state[slot] = getattr(obj, slot)
            except AttributeError:
                pass
    if not state and d is None:
        return None
    return state


def compare_outcomes(old, new):
    """None when equivalent, otherwise (expected, got) strings."""
    if new.kind == "timeout":
        return old.show(), new.show()
    if old.kind == "raise" or new.kind == "raise":
        if old.kind == "raise" and new.kind == "raise":
            if exc_name(old.exc) == exc_name(new.exc):
                return None
        return old.show(), new.show()
    if not same(old.value, new.value):
        return old.show(), new.show()
    if not same(old.args_after, new.args_after):
        return ("arguments afterwards: %s" % short_repr(_args_view(old.args_after)),
                "arguments afterwards: %s" % short_repr(_args_view(new.args_after)))
    return None


def _args_view(args_after):
    args, kwargs = args_after
    return list(args) + ["%s=%s" % (k, short_repr(v, 80)) for k, v in kwargs.items()] if kwargs else list(args)


# ---------------------------------------------------------------------------------------------------------------
# Inputs


class Input:
    __slots__ = ("args", "kwargs", "origin", "family", "step", "old", "new", "old_time", "new_time")

    def __init__(self, args, kwargs, origin, family=None, step=0):
        self.args = args
        self.kwargs = kwargs
        self.origin = origin        # "recorded" or "generated"
        self.family = family        # (seed index, family name) for ladder inputs, else None
        self.step = step
        self.old = None
        self.new = None
        self.old_time = None
        self.new_time = None

    def fresh(self):
        return clone(self.args), clone(self.kwargs)


def _is_monotone(xs):
    try:
        if len(xs) < 2:
            return False
        inc = all(xs[i] <= xs[i + 1] for i in range(len(xs) - 1))
        dec = inc or all(xs[i] >= xs[i + 1] for i in range(len(xs) - 1))
        return inc or dec
    except Exception:
        return False


def _numbers_in(values, depth=0, acc=None):
    if acc is None:
        acc = ([], [])
    for v in values:
        t = type(v)
        if t is int:
            acc[0].append(v)
        elif t is float:
            if math.isfinite(v):
                acc[1].append(v)
        elif t in (list, tuple, set, frozenset) and depth < 3:
            _numbers_in(v, depth + 1, acc)
        elif t is dict and depth < 3:
            _numbers_in(v.keys(), depth + 1, acc)
            _numbers_in(v.values(), depth + 1, acc)
    return acc


class Spans:
    """How far apart derived copies of numbers are placed: past the range of the numbers in the input, so the copies
    are new values (and sorted data stays sorted, indices stay consistent)."""

    def __init__(self, args, kwargs):
        containers = [v for v in list(args) + list(kwargs.values()) if type(v) in (list, tuple, set, frozenset, dict)]
        ints, floats = _numbers_in(containers)
        self.i = 1
        if ints:
            lo, hi = min(ints), max(ints)
            self.i = (hi + 1) if lo >= 0 else (hi - lo + 1)
        self.f = 1.0
        if floats:
            lo, hi = min(floats), max(floats)
            self.f = (hi + 1.0) if lo >= 0 else (hi - lo + 1.0)
        # Keys of top-level mappings are "nodes": nested dicts keyed by them (weighted graphs) get derived keys too;
        # other nested dicts are records ({"id": .., "name": ..}) whose keys stay.
        self.node_keys = set()
        for v in containers:
            if type(v) is dict:
                self.node_keys.update(v.keys())


def _suffix(s, c):
    alphabet = sorted(set(s))
    if len(alphabet) < 2:
        return alphabet[0] * c if alphabet else ""
    digits = []
    b = len(alphabet)
    while True:
        digits.append(alphabet[c % b])
        c //= b
        if c == 0:
            break
    return "".join(reversed(digits))


def derive(x, c, spans):
    """A new value made from x for copy number c (c=0: x itself). Deterministic, so references between parts of
    an input (graph keys and neighbour lists) stay consistent."""
    t = type(x)
    if c == 0:
        return x if t in _ATOMIC else clone(x)
    if t is bool or x is None:
        return x
    if t is int:
        return x + c * spans.i
    if t is float:
        return x + c * spans.f
    if t is str:
        return x + _suffix(x, c)
    if t is bytes:
        return x + bytes(_suffix(x.decode("latin-1"), c), "latin-1")
    if t is tuple:
        return tuple(derive(e, c, spans) for e in x)
    if t is list:
        return [derive(e, c, spans) for e in x]
    if t is dict:
        return {(derive(k, c, spans) if k in spans.node_keys else k): derive(v, c, spans) for k, v in x.items()}
    if t in (set, frozenset):
        return t(derive(e, c, spans) for e in x)
    return clone(x)


def scale(v, k, mode, spans, rng, depth=0):
    """v grown about k times. mode 'repeat': copies of the elements (sorted lists stay sorted); mode 'distinct':
    derived new elements. Lists of lists grow in both dimensions; nested tuples and strings are records, kept."""
    t = type(v)
    if t is list:
        inner = [scale(e, k, mode, spans, rng, depth + 1) if type(e) is list and depth < 1 else e for e in v]
        if mode == "repeat":
            if _is_monotone(v):
                return [clone(e) if type(e) not in _ATOMIC else e for e in inner for _ in range(k)]
            return [clone(e) if type(e) not in _ATOMIC else e for _ in range(k) for e in inner]
        return [derive(e, c, spans) for c in range(k) for e in inner]
    if depth > 0:
        return v
    if t is tuple:
        return tuple(scale(list(v), k, mode, spans, rng, depth))
    if t is str:
        if mode == "repeat" or not v:
            return v * k
        alphabet = sorted(set(v))
        return "".join(rng.choice(alphabet) for _ in range(len(v) * k))
    if t is bytes:
        return v * k
    if t is dict:
        out = dict((kk, clone(vv)) for kk, vv in v.items())
        for c in range(1, k):
            for kk, vv in v.items():
                out.setdefault(derive(kk, c, spans), derive(vv, c, spans))
        return out
    if t in (set, frozenset):
        return t(derive(e, c, spans) for c in range(k) for e in v)
    return clone(v)


_CONTAINERS = (list, tuple, str, bytes, dict, set, frozenset)


def _is_container(v):
    return type(v) in _CONTAINERS


def _size_int(v):
    return type(v) is int and 0 <= v <= 10_000_000


def seed_weight(args, kwargs):
    """How big a call is: its elements, plus the value of size-like ints (fib(25) is bigger than fib(3))."""
    values = list(args) + list(kwargs.values())
    return size_of(values) + sum(min(v, 10_000_000) for v in values if _size_int(v))


def edge_variants(args, kwargs):
    """Small out-of-the-way inputs made from a recorded one: empty containers, one element, half, mixed signs."""
    out = []
    names = list(range(len(args))) + list(kwargs)

    def get(n):
        return args[n] if isinstance(n, int) else kwargs[n]

    def build(change):
        a = [change(i, x) for i, x in enumerate(args)]
        kw = {n: change(n, x) for n, x in kwargs.items()}
        return a, kw

    conts = [n for n in names if _is_container(get(n)) and len(get(n)) > 0]
    if not conts:
        return out
    out.append(("empty", build(lambda n, x: type(x)() if n in conts else clone(x))))
    if len(conts) == 1:
        def cut(x, m):
            if type(x) is dict:
                return dict(itertools.islice(((k, clone(v)) for k, v in x.items()), m))
            if type(x) in (set, frozenset):
                return type(x)(itertools.islice(x, m))
            return clone(x[:m])
        n0 = conts[0]
        ln = len(get(n0))
        if ln > 1:
            out.append(("one", build(lambda n, x: cut(x, 1) if n == n0 else clone(x))))
        if ln > 3:
            out.append(("half", build(lambda n, x: cut(x, ln // 2) if n == n0 else clone(x))))

    def signs(x, depth=0):
        t = type(x)
        if t is list and x and depth < 2:
            nums = [e for e in x if type(e) in (int, float)]
            if len(nums) == len(x):
                if _is_monotone(x):
                    mid = (min(x) + max(x)) / 2
                    shift = (int(mid) + 1) if all(type(e) is int for e in x) else mid + 0.5
                    return [e - shift for e in x]
                return [-e if i % 2 else e for i, e in enumerate(x)]
            return [signs(e, depth + 1) for e in x]
        if t is tuple and depth < 2:
            return tuple(signs(e, depth + 1) for e in x)
        return clone(x)

    ints, floats = _numbers_in([get(n) for n in conts if type(get(n)) in (list, tuple)])
    if ints or floats:
        out.append(("signs", build(lambda n, x: signs(x) if n in conts else clone(x))))
    return out


# ---- inputs near the recorded ones (--agree) ------------------------------------------------------------------

NEAR_PER_CALL = 40          # variants tried per recorded call
NEAR_MAX = 240              # variants in all
NEAR_CALL_TIMEOUT_S = 1.0


def _near_value(v, rng, depth=0):
    """v changed a little: the kind of input a test writer would try next to v."""
    t = type(v)
    if t is bool:
        return not v
    if t is int:
        return rng.choice([v + 1, v - 1, v + 2, v - 2, -v, 0, 1, v * 2, v // 2, v + rng.randint(-10, 10)])
    if t is float:
        return rng.choice([v + 1.0, v - 1.0, -v, 0.0, v * 2, v / 2, v + rng.uniform(-3, 3), round(v)])
    if t is str:
        if not v:
            return rng.choice(["a", " ", "A", "1"])
        i = rng.randrange(len(v))
        op = rng.randrange(6)
        if op == 0:
            return v[:i] + v[i + 1:]
        if op == 1:
            return v[:i] + v[i] + v[i:]
        if op == 2 and len(v) > 1:
            j = min(i + 1, len(v) - 1) if i + 1 < len(v) else i - 1
            a, b = sorted((i, j))
            return v[:a] + v[b] + v[a + 1:b] + v[a] + v[b + 1:]
        if op == 3:
            return v[:i] + v[i].swapcase() + v[i + 1:]
        if op == 4:
            return v[::-1]
        return v[:i] + rng.choice(sorted(set(v))) + v[i:]
    if t in (list, tuple):
        x = [clone(e) for e in v]
        ops = ["append"]
        if x:
            ops += ["drop", "repeat", "element", "element", "shuffle", "reverse"]
        op = rng.choice(ops)
        if op == "append":
            x.append(_near_value(clone(x[-1]), rng, depth + 1) if x else 0)
        elif op == "drop":
            del x[rng.randrange(len(x))]
        elif op == "repeat":
            i = rng.randrange(len(x))
            x.insert(i, clone(x[i]))
        elif op == "element" and depth < 3:
            i = rng.randrange(len(x))
            x[i] = _near_value(x[i], rng, depth + 1)
        elif op == "shuffle":
            rng.shuffle(x)
        elif op == "reverse":
            x.reverse()
        return t(x)
    if t is dict and v:
        x = dict((k, clone(e)) for k, e in v.items())
        k = rng.choice(list(x))
        if rng.random() < 0.3 and len(x) > 1:
            del x[k]
        elif depth < 3:
            x[k] = _near_value(x[k], rng, depth + 1)
        return x
    if t in (set, frozenset) and v:
        x = set(v)
        if rng.random() < 0.5:
            x.discard(rng.choice(sorted(x, key=repr)))
        else:
            x.add(_near_value(rng.choice(sorted(x, key=repr)), rng, depth + 1))
        return t(x)
    return clone(v)


def near_variants(calls, rng):
    """Inputs near the recorded calls, deduplicated (by repr) against each other and the calls themselves."""
    seen = set()
    for a, kw in calls:
        try:
            seen.add(repr((a, kw)))
        except Exception:
            pass
    out = []
    for a, kw in calls:
        names = list(range(len(a))) + list(kw)
        if not names:
            continue
        made = 0
        for _ in range(NEAR_PER_CALL * 3):
            if made >= NEAR_PER_CALL or len(out) >= NEAR_MAX:
                break
            na, nkw = [clone(x) for x in a], dict((k, clone(x)) for k, x in kw.items())
            same_typed = [(i, j) for i in range(len(na)) for j in range(i + 1, len(na)) if type(na[i]) is type(na[j])]
            if same_typed and rng.random() < 0.15:
                i, j = rng.choice(same_typed)
                na[i], na[j] = na[j], na[i]
            else:
                for n in rng.sample(names, min(len(names), rng.choice([1, 1, 2]))):
                    if isinstance(n, int):
                        na[n] = _near_value(na[n], rng)
                    else:
                        nkw[n] = _near_value(nkw[n], rng)
            try:
                key = repr((na, nkw))
            except Exception:
                continue
            if key in seen or len(key) > 20000:
                continue
            seen.add(key)
            out.append((na, nkw))
            made += 1
    return out


# ---- inputs from annotations ----------------------------------------------------------------------------------


class _Unsupported(Exception):
    pass


def _gen_value(ann, rng, n, top, special_p=0.2):
    origin = typing.get_origin(ann)
    targs = typing.get_args(ann)
    special = not top and rng.random() < special_p  # elements: often a value that edge cases hinge on
    if ann is int:
        if special:
            return rng.choice((0, 1, -1, 2, 100))
        return rng.randint(0, n) if top else rng.randint(-50, 100)
    if ann is float:
        if special:
            return rng.choice((0.0, 1.0, -1.0, 0.5))
        return round(rng.uniform(0, n), 3) if top else round(rng.uniform(-100, 100), 3)
    if ann is bool:
        return rng.random() < 0.5
    if ann is str:
        if special:
            return rng.choice(("", "a", " ", "A"))
        length = n if top else rng.randint(0, 8)
        return "".join(rng.choice("abcdefghij") for _ in range(length))
    if ann is bytes:
        return bytes(rng.randrange(256) for _ in range(n if top else rng.randint(0, 8)))
    if ann in (list, tuple, set, dict, frozenset):
        origin, targs = ann, ()
    if origin in (list, collections.abc.Sequence, collections.abc.Iterable, collections.abc.MutableSequence,
                  collections.abc.Collection):
        elem = targs[0] if targs else int
        return [_gen_value(elem, rng, n, False, special_p) for _ in range(n if top else rng.randint(0, 4))]
    if origin in (set, frozenset, collections.abc.Set):
        elem = targs[0] if targs else int
        items = {_gen_value(elem, rng, n, False, special_p) for _ in range(n if top else rng.randint(0, 4))}
        return frozenset(items) if origin is frozenset else set(items)
    if origin is tuple:
        if not targs:
            targs = (int, Ellipsis)
        if len(targs) == 2 and targs[1] is Ellipsis:
            return tuple(_gen_value(targs[0], rng, n, False, special_p) for _ in range(n if top else rng.randint(0, 4)))
        return tuple(_gen_value(a, rng, n, False, special_p) for a in targs)
    if origin in (dict, collections.abc.Mapping, collections.abc.MutableMapping):
        kt, vt = targs if len(targs) == 2 else (str, int)
        return {_gen_value(kt, rng, n, False, special_p): _gen_value(vt, rng, n, False, special_p) for _ in range(n if top else rng.randint(0, 4))}
    if origin is typing.Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        options = [a for a in targs if a is not type(None)]
        if options:
            return _gen_value(options[0], rng, n, top, special_p)
    raise _Unsupported(repr(ann))


def inputs_from_annotations(fn, rng):
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return [], "the function's signature cannot be read"
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        hints = getattr(fn, "__annotations__", {}) or {}
    params = []
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.default is not p.empty:
            continue
        ann = hints.get(p.name, p.empty)
        if ann is p.empty or isinstance(ann, str):
            return [], "parameter %r has no usable type annotation" % p.name
        params.append(p)
    out = []
    try:
        for n, special_p in ((0, 0.2), (1, 0.2), (3, 0.2), (6, 0.2), (10, 0.2), (10, 1.0), (16, 0.2), (16, 0.5)):
            args, kwargs = [], {}
            for p in params:
                v = _gen_value(hints[p.name], rng, n, True, special_p)
                if p.kind == p.KEYWORD_ONLY:
                    kwargs[p.name] = v
                else:
                    args.append(v)
            out.append((args, kwargs))
    except _Unsupported as e:
        return [], "unsupported type annotation %s" % e
    return out, None


# ---------------------------------------------------------------------------------------------------------------
# Importing


def module_name_for(root, module_file):
    rel = os.path.relpath(os.path.abspath(module_file), os.path.abspath(root))
    parts = rel[:-3].split(os.sep) if rel.endswith(".py") else rel.split(os.sep)
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    if parts and not parts[0].startswith("..") and all(p.isidentifier() for p in parts):
        return ".".join(parts)
    return None


class _SameFileFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Any import that resolves to the original module's file (under whatever name: `slow`, `pkg.slow`, with or
    without `src.`) gets the one module object the harness patched."""

    def __init__(self, path, module):
        self.path = os.path.realpath(path)
        self.module = module
        self.stem = os.path.splitext(os.path.basename(path))[0]

    def find_spec(self, fullname, path, target=None):
        last = fullname.rpartition(".")[2]
        if last != self.stem and not (self.stem == "__init__" and last == os.path.basename(os.path.dirname(self.path))):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not spec.origin:
            return None
        try:
            if os.path.realpath(spec.origin) != self.path:
                return None
        except OSError:
            return None
        return importlib.util.spec_from_loader(fullname, self, origin=spec.origin)

    def create_module(self, spec):
        return self.module

    def exec_module(self, module):
        pass


def import_original(root, module_file):
    name = module_name_for(root, module_file)
    module = None
    errors = []
    if name:
        try:
            module = importlib.import_module(name)
            if os.path.realpath(getattr(module, "__file__", "") or "") != os.path.realpath(module_file):
                errors.append("%s resolved to %s" % (name, getattr(module, "__file__", None)))
                module = None
        except Exception as e:
            errors.append("%s: %s" % (type(e).__name__, e))
            module = None
            sys.modules.pop(name, None)
    if module is None:
        stem = os.path.splitext(os.path.basename(module_file))[0]
        name = stem if stem.isidentifier() and stem not in sys.modules else "_pie_original"
        spec = importlib.util.spec_from_file_location(name, module_file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException as e:
            sys.modules.pop(name, None)
            raise ImportError("%s: %s" % (type(e).__name__, e)) from None
    sys.meta_path.insert(0, _SameFileFinder(module_file, module))
    return module


def import_candidate(path, original):
    package = original.__name__.rpartition(".")[0] if not hasattr(original, "__path__") else original.__name__
    name = (package + "._pie_candidate") if package else "_pie_candidate"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    # Classes of the module are the original's, so isinstance checks and == between old and new results work.
    for attr, obj in list(vars(module).items()):
        if isinstance(obj, type) and obj.__module__ == name:
            mine = getattr(original, attr, None)
            if isinstance(mine, type) and mine.__qualname__ == obj.__qualname__:
                setattr(module, attr, mine)
    return module


# ---------------------------------------------------------------------------------------------------------------
# Step A: record calls from the user's tests


class Recorder:
    def __init__(self, orig, deadline):
        self.orig = orig
        self.deadline = deadline
        self.calls = []
        self.keys = set()
        self.depth = 0
        self.closed = False

    def wrapper(self):
        rec = self
        orig = self.orig

        @functools.wraps(orig)
        def recorded(*args, **kwargs):
            if rec.closed or perf_counter() > rec.deadline:
                raise _Timeout()
            if rec.depth == 0 and len(rec.calls) < MAX_RECORDED:
                rec.add(args, kwargs)
            rec.depth += 1
            try:
                return orig(*args, **kwargs)
            finally:
                rec.depth -= 1

        return recorded

    def add(self, args, kwargs):
        try:
            snap = (clone(list(args)), clone(dict(kwargs)))
        except Exception:
            return
        try:
            if size_of(snap[0]) + size_of(snap[1]) < 20000:
                key = repr(snap)
                if key in self.keys:
                    return
                self.keys.add(key)
        except Exception:
            pass
        self.calls.append(snap)


def _pytest_stub():
    """A tiny stand-in for pytest so that test files importing it (raises, approx, mark.parametrize, fixture) load
    and run without it."""
    stub = types.ModuleType("pytest")

    class _Raises:
        def __init__(self, expected, match=None):
            self.expected = expected
            self.match = match
            self.value = None

        def __enter__(self):
            return self

        def __exit__(self, et, ev, tb):
            if et is None:
                raise AssertionError("DID NOT RAISE %r" % (self.expected,))
            if not issubclass(et, self.expected):
                return False
            self.value = ev
            if self.match is not None:
                import re
                if not re.search(self.match, str(ev)):
                    raise AssertionError("pattern %r not found in %r" % (self.match, str(ev)))
            return True

    def raises(expected, *args, **kwargs):
        if args and callable(args[0]):
            with _Raises(expected):
                args[0](*args[1:], **kwargs)
            return None
        return _Raises(expected, kwargs.get("match"))

    class _Approx:
        def __init__(self, expected, rel=None, abs=None):
            self.expected, self.rel, self.abs = expected, rel, abs

        def _close(self, a, b):
            if isinstance(b, (list, tuple)):
                return isinstance(a, (list, tuple)) and len(a) == len(b) and all(self._close(x, y) for x, y in zip(a, b))
            if isinstance(b, dict):
                return isinstance(a, dict) and a.keys() == b.keys() and all(self._close(a[k], b[k]) for k in b)
            try:
                return math.isclose(a, b, rel_tol=self.rel if self.rel is not None else 1e-6,
                                    abs_tol=self.abs if self.abs is not None else 1e-12)
            except TypeError:
                return a == b

        def __eq__(self, other):
            return self._close(other, self.expected)

    class _Skip(Exception):
        pass

    def skip(reason=""):
        raise _Skip(reason)

    def fixture(*args, **kwargs):
        def mark(f):
            f._pie_fixture = True
            return f
        if args and callable(args[0]):
            return mark(args[0])
        return mark

    class _Mark:
        def __getattr__(self, name):
            if name == "parametrize":
                def parametrize(argnames, argvalues, **kw):
                    names = [a.strip() for a in argnames.split(",")] if isinstance(argnames, str) else list(argnames)

                    def deco(f):
                        f._pie_params = getattr(f, "_pie_params", []) + [(names, list(argvalues))]
                        return f
                    return deco
                return parametrize

            def marker(*args, **kw):
                if len(args) == 1 and callable(args[0]) and not kw:
                    return args[0]
                return lambda f: f
            return marker

    stub.raises = raises
    stub.approx = lambda expected, rel=None, abs=None: _Approx(expected, rel, abs)
    stub.skip = skip
    stub.fixture = fixture
    stub.mark = _Mark()
    stub.param = lambda *values, **kw: values if len(values) != 1 else values[0]
    return stub


def _param_sets(fn):
    sets = [dict()]
    for names, values in reversed(getattr(fn, "_pie_params", [])):
        new = []
        for base in sets:
            for v in values:
                vals = (v,) if len(names) == 1 else tuple(v)
                d = dict(base)
                d.update(zip(names, vals))
                new.append(d)
        sets = new
    return sets


def _function_calls(fn, module):
    """The ways to call one test function: one per parametrize combination, with simple fixtures filled in."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    calls = []
    for params in _param_sets(fn):
        kwargs = dict(params)
        ok = True
        for p in sig.parameters.values():
            if p.name in kwargs or p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            fixture = getattr(module, p.name, None)
            if callable(fixture) and getattr(fixture, "_pie_fixture", False):
                kwargs[p.name] = _FixtureValue(fixture)
            else:
                ok = False
        if ok:
            calls.append(functools.partial(_call_with_fixtures, fn, kwargs))
    return calls


class _FixtureValue:
    def __init__(self, fixture):
        self.fixture = fixture


def _call_with_fixtures(fn, kwargs):
    fn(**{k: (v.fixture() if isinstance(v, _FixtureValue) else v) for k, v in kwargs.items()})


def _collect_fallback(root, files, target):
    """Imports the test files and lists their tests as zero-argument callables. A test file that is the target
    module itself (tests next to the code) is not imported again."""
    tests = []
    for i, path in enumerate(files):
        directory = os.path.dirname(path)
        if directory not in sys.path:
            sys.path.insert(1, directory)
        if os.path.realpath(path) == os.path.realpath(getattr(target, "__file__", "") or ""):
            module = target
        else:
            name = module_name_for(root, path)
            if not name or name in sys.modules:
                name = "_pie_test_%d" % i
            try:
                spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                spec.loader.exec_module(module)
            except _Timeout:
                raise
            except BaseException:
                continue
        if callable(getattr(module, "setup_module", None)):
            tests.append(module.setup_module)
        for attr, obj in list(vars(module).items()):
            try:
                if attr.startswith("test") and inspect.isfunction(obj):
                    tests.extend(_function_calls(obj, module))
                elif inspect.isclass(obj) and issubclass(obj, unittest.TestCase):
                    for test in unittest.defaultTestLoader.loadTestsFromTestCase(obj):
                        tests.append(functools.partial(test.run, unittest.TestResult()))
                elif inspect.isclass(obj) and attr.startswith("Test"):
                    for mname in sorted(dir(obj)):
                        if mname.startswith("test") and callable(getattr(obj, mname, None)):
                            tests.append(functools.partial(_run_class_test, obj, mname, module))
            except Exception:
                continue
    return tests


def _run_class_test(klass, mname, module):
    inst = klass()
    method = getattr(inst, mname)
    if callable(getattr(inst, "setup_method", None)):
        inst.setup_method(method)
    for call in _function_calls(method, module):
        call()


def run_tests_fallback(root, files, rec, deadline, target):
    stub_installed = False
    if "pytest" not in sys.modules:
        sys.modules["pytest"] = _pytest_stub()
        stub_installed = True
    try:
        tests = _collect_fallback(root, files, target)
        for i, test in enumerate(tests):
            left = deadline - perf_counter()
            if left <= 0.05:
                return
            # Each test gets a fair share of what is left, so one slow test does not starve the others.
            limit = max(0.2, left / (len(tests) - i))
            try:
                try:
                    _arm(min(limit, left))
                    test()
                finally:
                    _disarm()
            except _Timeout:
                _disarm()
            except BaseException:
                pass
    finally:
        if stub_installed:
            sys.modules.pop("pytest", None)


def run_tests_pytest(pytest, files, deadline):
    class PerTestLimit:
        """A pytest plugin: each test gets a fair share of the time left (its call phase is interrupted after)."""

        def __init__(self):
            self.left_tests = 1

        def pytest_collection_modifyitems(self, session, config, items):
            self.left_tests = max(1, len(items))

        @pytest.hookimpl(hookwrapper=True)
        def pytest_runtest_call(self, item):
            left = deadline - perf_counter()
            limit = max(0.2, left / max(1, self.left_tests))
            self.left_tests -= 1
            _arm(max(0.05, min(limit, left)))
            try:
                yield
            finally:
                _disarm()

    # A backstop for collection and fixtures: the whole run stops a little after the deadline.
    _arm(max(0.1, deadline - perf_counter()) + 2.0)
    try:
        pytest.main(files + ["-q", "-p", "no:cacheprovider", "-p", "no:randomly"], plugins=[PerTestLimit()])
    finally:
        _disarm()


def record_inputs(module, name, root, tests, deadline, fds):
    orig = getattr(module, name)
    rec = Recorder(orig, deadline)
    setattr(module, name, rec.wrapper())
    files = []
    for t in tests:
        p = t if os.path.isabs(t) else os.path.join(root, t)
        if os.path.isfile(p):
            files.append(os.path.abspath(p))
    try:
        if files and deadline - perf_counter() > 0:
            try:
                try:
                    import pytest  # type: ignore
                except Exception:
                    pytest = None
                if pytest is not None and hasattr(pytest, "main") and hasattr(pytest, "hookimpl"):
                    run_tests_pytest(pytest, files, deadline)
                else:
                    run_tests_fallback(root, files, rec, deadline, module)
            except _Timeout:
                _disarm()
            except BaseException:
                _disarm()
    finally:
        rec.closed = True
        setattr(module, name, orig)
        _restore_fds(fds)
    return rec.calls


def _restore_fds(fds):
    """pytest's fd capture may be left in place when interrupted: put stdout/stderr back as the harness set them."""
    try:
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
    except OSError:
        pass
    sys.stdout = fds[2]
    sys.stderr = fds[3]
    sys.stdin = fds[4]


# ---------------------------------------------------------------------------------------------------------------
# The run


class Harness:
    def __init__(self, opts):
        self.opts = opts
        self.t_start = perf_counter()
        self.deadline = self.t_start + opts.budget_s
        self.rng = random.Random(opts.seed)
        self.result = {
            "equivalent": False, "reason": None, "mismatch": None, "no_inputs": False,
            "recorded_inputs": 0, "generated_inputs": 0, "checked_inputs": 0,
            "speedup": None, "ci_low": None, "ci_high": None, "runs": 0,
            "old_ms": None, "new_ms": None, "bench_input": "",
        }

    def at(self, fraction):
        return self.t_start + self.opts.budget_s * fraction

    def left(self):
        return self.deadline - perf_counter()

    # -- Step B ---------------------------------------------------------------------------------------------------

    def probe_old(self, inp, timeout):
        """Runs the original on a fresh copy of inp's arguments, remembering the outcome for Step C."""
        try:
            args, kwargs = inp.fresh()
        except Exception:
            inp.old = Outcome("skip", value="the arguments cannot be copied")
            return inp.old
        out = invoke(self.old_fn, args, kwargs, timeout, self.opts.seed, "original")
        debug("old %s %s%s: %s %.4fs", inp.origin, inp.family or "", describe_call(inp.args, inp.kwargs), out.kind, out.elapsed)
        if out.kind == "raise" and isinstance(out.exc, (RecursionError, MemoryError)):
            out = Outcome("skip", value=exc_name(out.exc), elapsed=out.elapsed)
        if out.kind == "ok":
            try:
                pristine = (inp.args, inp.kwargs)
                if same(list(out.args_after[0]), pristine[0]) and same(out.args_after[1], pristine[1]):
                    out.args_after = None  # unchanged: compare against the pristine copy later
            except Exception:
                pass
        inp.old = out
        inp.old_time = out.elapsed
        return out

    def old_args_after(self, inp):
        if inp.old.args_after is None:
            return (list(inp.args), inp.kwargs)
        a, kw = inp.old.args_after
        return (list(a), kw)

    def grow(self, seeds, gen_deadline):
        generated = []
        grow_seeds = seeds[:MAX_GROW_SEEDS]
        for si, (args, kwargs) in enumerate(grow_seeds):
            if perf_counter() > gen_deadline:
                break
            spans = Spans(args, kwargs)
            values = list(args) + list(kwargs.values())
            has_cont = any(_is_container(v) and len(v) > 0 for v in values)
            int_pos = [i for i, v in enumerate(args) if _size_int(v)]
            int_kw = [k for k, v in kwargs.items() if _size_int(v)]
            families = []
            if has_cont:
                families += ["distinct", "repeat"]
            if int_pos or int_kw:
                families.append("int")
            for fam in families:
                prev = None            # (level, time) of the previous step
                step = 0
                k = 1
                level = 0.0            # int family: each int grows by level * its base increment
                base_inc = {}
                for i in int_pos:
                    base_inc[i] = max(1, args[i] // 8)
                for kk in int_kw:
                    base_inc[kk] = max(1, kwargs[kk] // 8)
                next_level = 1.0
                while step < MAX_LADDER_STEPS and perf_counter() < gen_deadline:
                    step += 1
                    try:
                        if fam == "int":
                            level = next_level
                            a = [v + int(round(base_inc[i] * level)) if i in base_inc else clone(v)
                                 for i, v in enumerate(args)]
                            kw = {kk: (v + int(round(base_inc[kk] * level)) if kk in base_inc else clone(v))
                                  for kk, v in kwargs.items()}
                        else:
                            k *= 2
                            rng = random.Random(self.opts.seed * 1000003 + si * 101 + k)
                            a = [scale(v, k, fam, spans, rng) for v in args]
                            kw = {kk: scale(v, k, fam, spans, rng) for kk, v in kwargs.items()}
                    except Exception:
                        break
                    if size_of(a) + size_of(kw) > MAX_ELEMS * 2:
                        break
                    inp = Input(a, kw, "generated", family=(si, fam), step=step)
                    timeout = min(GEN_CALL_TIMEOUT_S, max(0.05, gen_deadline - perf_counter() + 0.5))
                    out = self.probe_old(inp, timeout)
                    if out.kind in ("timeout", "skip"):
                        break
                    generated.append(inp)
                    if out.kind == "raise":
                        break
                    t = out.elapsed
                    if t >= GROW_STOP_S:
                        break
                    n_elems = size_of(a) + size_of(kw)
                    if n_elems > MAX_ELEMS or (n_elems > 50_000 and t < 0.002):
                        break  # too big, or the original does not even look at every element (an early exit)
                    if fam == "int":
                        # Double the increment, unless an exponential fit of the last two steps says that would
                        # take the call past the target: then take the largest step the fit allows.
                        step_up = level
                        if prev is not None and prev[1] > 0.0005 and t > prev[1]:
                            g = math.log(t / prev[1]) / (level - prev[0])
                            step_up = min(step_up, math.log(3 * GROW_STOP_S / t) / g)
                        min_step = 1.0 / max(base_inc.values())
                        if step_up < min_step:
                            break
                        next_level = level + max(step_up, min_step)
                    elif prev is not None and prev[1] > 0.002:
                        if t * max(1.0, t / prev[1]) > GEN_CALL_TIMEOUT_S:
                            break
                    prev = (level, t)
        return generated

    # -- Main -----------------------------------------------------------------------------------------------------

    def run(self):
        o = self.opts
        r = self.result
        root = os.path.abspath(o.root)
        module_file = o.module_file if os.path.isabs(o.module_file) else os.path.join(root, o.module_file)
        module_file = os.path.abspath(module_file)
        if not os.path.isfile(module_file):
            raise HarnessError("module file not found: %s" % module_file)
        if not os.path.isfile(o.candidate_file):
            raise HarnessError("candidate file not found: %s" % o.candidate_file)
        os.chdir(root)
        # The harness's own folder (sys.path[0]) must not shadow the user's modules.
        here = os.path.dirname(os.path.abspath(__file__))
        sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here or here == root]
        for p in (os.path.dirname(module_file), root):
            if p in sys.path:
                sys.path.remove(p)
            sys.path.insert(0, p)

        try:
            module = import_original(root, module_file)
        except BaseException as e:
            r["reason"] = "the original module failed to import: %s" % short_repr_text(str(e), 200)
            return
        fn = getattr(module, o.function, None)
        if not callable(fn):
            r["reason"] = "the original module has no top-level function %r" % o.function
            return
        self.old_fn = fn

        # Step A
        _CURRENT["who"] = "tests"
        recorded = record_inputs(module, o.function, root, o.tests or [], self.at(0.3), self.fds)
        setattr(module, o.function, fn)
        r["recorded_inputs"] = len(recorded)

        try:
            cand = import_candidate(os.path.abspath(o.candidate_file), module)
        except BaseException as e:
            r["reason"] = "the candidate failed to import: %s: %s" % (type(e).__name__, short_repr_text(str(e), 200))
            return
        new_fn = getattr(cand, o.function, None)
        if not callable(new_fn):
            r["reason"] = "the candidate has no top-level function %r" % o.function
            return
        self.new_fn = new_fn

        debug("step A done: %d recorded", len(recorded))
        if o.agree:
            self.agree(recorded)
            return
        # Step B
        inputs = [Input(a, kw, "recorded") for a, kw in recorded]
        gen_deadline = self.at(0.5)
        for inp in inputs:
            if perf_counter() > gen_deadline + 0.15 * o.budget_s:
                break
            self.probe_old(inp, min(GEN_CALL_TIMEOUT_S * 4, max(0.1, self.left() * 0.2)))
        inputs = [i for i in inputs if i.old is not None]

        seeds_src = [i for i in inputs if i.old.kind == "ok"] or inputs
        seeds_src = sorted(seeds_src, key=lambda i: -seed_weight(i.args, i.kwargs))
        seeds = self.pick_seeds([(i.args, i.kwargs) for i in seeds_src])
        generated = []
        annotation_reason = None
        if not seeds:
            base, annotation_reason = inputs_from_annotations(fn, self.rng)
            for a, kw in base:
                inp = Input(a, kw, "generated")
                out = self.probe_old(inp, GEN_CALL_TIMEOUT_S)
                if out.kind in ("ok", "raise"):
                    generated.append(inp)
            ok_base = [i for i in generated if i.old.kind == "ok"]
            seeds = [(i.args, i.kwargs) for i in sorted(ok_base, key=lambda i: -seed_weight(i.args, i.kwargs))]
            seeds = self.pick_seeds(seeds)
        if not inputs and not generated:
            r["no_inputs"] = True
            r["reason"] = ("no inputs: the tests recorded no call of %s and it has no usable type annotations (%s)"
                           % (o.function, annotation_reason or "no tests given"))
            return
        for si, (a, kw) in enumerate(seeds[:MAX_EDGE_SEEDS]):
            if perf_counter() > gen_deadline:
                break
            for _label, (ea, ekw) in edge_variants(a, kw):
                inp = Input(ea, ekw, "generated")
                out = self.probe_old(inp, min(GEN_CALL_TIMEOUT_S, max(0.05, gen_deadline - perf_counter() + 0.3)))
                if out.kind in ("ok", "raise"):
                    generated.append(inp)
        generated += self.grow(seeds, gen_deadline)
        r["generated_inputs"] = len(generated)

        debug("step B done: %d generated", len(generated))
        # Step C
        checked = [i for i in inputs if i.old.kind in ("ok", "raise")]
        # Is the original deterministic? (a few cheap recorded inputs, run twice)
        for inp in [i for i in checked if i.old.kind == "ok" and i.old_time < 0.05][:5]:
            args, kwargs = inp.fresh()
            again = invoke(self.old_fn, args, kwargs, max(1.0, inp.old_time * 20), o.seed, "original")
            if again.kind != "ok":
                continue
            old_after = self.old_args_after(inp)
            if not same(inp.old.value, again.value) or not same(old_after, (list(again.args_after[0]), again.args_after[1])):
                r["reason"] = "the original function is not deterministic: two calls with %s returned %s and %s" % (
                    call_repr(o.function, inp.args, inp.kwargs), inp.old.show(), again.show())
                return
        checked += sorted((i for i in generated if i.old.kind in ("ok", "raise")), key=lambda i: i.old_time)
        check_deadline = self.deadline - max(2.0, 0.25 * o.budget_s)
        n_checked = 0
        for inp in checked:
            if perf_counter() > check_deadline:
                r["checked_inputs"] = n_checked
                done = [i for i in checked if i.new is not None]
                t_old = sum(i.old_time for i in done)
                t_new = sum(i.new_time for i in done)
                hint = ("the candidate is slower on the inputs checked so far" if t_new > 1.5 * t_old
                        else "the original is slow: a larger --budget-s would let the check finish")
                r["reason"] = ("time budget exhausted after checking %d of %d inputs (%s)"
                               % (n_checked, len(checked), hint))
                return
            try:
                args, kwargs = inp.fresh()
            except Exception:
                continue
            timeout = max(1.0, 20 * inp.old_time)
            timeout = min(timeout, max(0.2, check_deadline - perf_counter() + 1.0))
            new = invoke(self.new_fn, args, kwargs, timeout, o.seed, "candidate")
            debug("new %s%s: %s %.4fs (old %.4fs)", inp.family or "", describe_call(inp.args, inp.kwargs), new.kind, new.elapsed, inp.old_time)
            inp.new = new
            inp.new_time = new.elapsed
            old = inp.old
            if old.kind == "ok" and old.args_after is None:
                old = Outcome("ok", value=old.value, args_after=(inp.args, inp.kwargs), elapsed=old.elapsed)
            if new.kind == "ok":
                new = Outcome("ok", value=new.value, args_after=(list(new.args_after[0]), new.args_after[1]), elapsed=new.elapsed)
            if old.kind == "ok":
                old = Outcome("ok", value=old.value, args_after=(list(old.args_after[0]), old.args_after[1]), elapsed=old.elapsed)
            n_checked += 1
            diff = compare_outcomes(old, new)
            if diff is not None:
                what = {"timeout": "the candidate timed out", "raise": "the candidate raised"}.get(new.kind)
                if new.kind == "raise" and old.kind == "raise":
                    what = "the candidate raised a different exception"
                if new.kind == "ok":
                    what = "the candidate's result differs" if old.kind == "ok" and not same(old.value, new.value) else \
                        ("the candidate mutates its arguments differently" if old.kind == "ok" else "the candidate did not raise")
                self.mismatch(n_checked, "%s on a %s input" % (what, inp.origin), inp, diff)
                return
        if not self.checked(n_checked, "no input could be checked (the original timed out, recursed too deep or could not be copied on all of them)"):
            return

        debug("step C done: %d checked", n_checked)
        # Step D
        self.mutating = any(i.old.kind == "ok" and i.old.args_after is not None for i in checked if i.old is not None)
        self.old_iter = any(i.old.kind == "ok" and isinstance(i.old.value, (_Iter, _Awaited)) for i in checked)
        self.new_iter = any(i.new is not None and i.new.kind == "ok" and isinstance(i.new.value, (_Iter, _Awaited))
                            for i in checked)
        bench = [i for i in checked if i.old.kind == "ok" and i.new is not None and i.new.kind == "ok"]
        # free memory held by results
        for i in checked:
            i.old = Outcome(i.old.kind, elapsed=i.old.elapsed)
            i.new = Outcome(i.new.kind, elapsed=i.new.elapsed) if i.new is not None else None
        gc.collect()
        self.benchmark(bench)

    def agree(self, recorded):
        """--agree: do the two versions return the same near the recorded inputs? Only inputs on which both return
        normally count (which one should raise on an input the tests never show is not for this check to say)."""
        r = self.result
        if not recorded:
            r["no_inputs"] = True
            r["reason"] = "the tests recorded no call of %s" % self.opts.function
            return
        inputs = [Input(a, kw, "recorded") for a, kw in recorded]
        inputs += [Input(a, kw, "generated") for a, kw in near_variants(recorded, self.rng)]
        r["recorded_inputs"] = len(recorded)
        r["generated_inputs"] = len(inputs) - len(recorded)
        n_checked = 0
        for inp in inputs:
            if self.left() < 0.5:
                break
            old = self.probe_old(inp, NEAR_CALL_TIMEOUT_S)
            if old.kind != "ok":
                continue
            try:
                args, kwargs = inp.fresh()
            except Exception:
                continue
            new = invoke(self.new_fn, args, kwargs, NEAR_CALL_TIMEOUT_S, self.opts.seed, "candidate")
            if new.kind != "ok":
                continue
            n_checked += 1
            diff = compare_outcomes(Outcome("ok", value=old.value, args_after=self.old_args_after(inp)),
                                    Outcome("ok", value=new.value, args_after=(list(new.args_after[0]), new.args_after[1])))
            if diff is not None:
                self.mismatch(n_checked, "the two versions differ on a %s input" % inp.origin, inp, diff)
                return
        self.checked(n_checked, "no input on which both versions return normally")

    def mismatch(self, n_checked, reason, inp, diff):
        """Records the first input on which the two versions differ (diff: compare_outcomes's pair)."""
        r = self.result
        r["checked_inputs"] = n_checked
        r["reason"] = reason
        r["mismatch"] = {"input": call_repr(self.opts.function, inp.args, inp.kwargs), "expected": diff[0], "got": diff[1]}

    def checked(self, n_checked, none_reason):
        """Records a comparison that found no difference: equivalent if it compared anything at all."""
        r = self.result
        r["checked_inputs"] = n_checked
        if n_checked == 0:
            r["reason"] = none_reason
            return False
        r["equivalent"] = True
        return True

    def pick_seeds(self, calls):
        """The largest calls, preferring different shapes (argument types, keywords)."""
        picked, shapes, rest = [], set(), []
        for a, kw in calls:
            shape = (tuple(type(x).__name__ for x in a), tuple(sorted(kw)))
            if shape in shapes:
                rest.append((a, kw))
            else:
                shapes.add(shape)
                picked.append((a, kw))
        return (picked + rest)[:MAX_EDGE_SEEDS]

    # -- Step D ---------------------------------------------------------------------------------------------------

    def choose_bench(self, bench, target_pass):
        groups = collections.OrderedDict()
        for inp in bench:
            key = inp.family if inp.family is not None else ("single", id(inp))
            groups.setdefault(key, []).append(inp)
        reps = []
        for key, members in groups.items():
            members.sort(key=lambda i: i.old_time)
            reps.append((max(m.old_time for m in members), members))
        reps.sort(key=lambda x: -x[0])
        chosen_groups = [m for _, m in reps[:BENCH_MAX_INPUTS]]
        if not chosen_groups:
            return []
        per = target_pass / len(chosen_groups)
        chosen = []
        for members in chosen_groups:
            fit = [m for m in members if max(m.old_time, m.new_time or 0) <= per]
            chosen.append(fit[-1] if fit else members[0])
        # Drop groups that now cost far more than the budget allows (keep at least one).
        chosen.sort(key=lambda i: -i.old_time)
        while len(chosen) > 1 and sum(max(i.old_time, i.new_time) for i in chosen) > 2 * target_pass:
            chosen.pop(0)
        return chosen

    def run_pass(self, fn, calls, consume):
        _CURRENT["who"] = "benchmark"
        gc.collect()
        gc.disable()
        try:
            random.seed(self.opts.seed)
            t0 = perf_counter()
            if consume:
                for a, kw in calls:
                    _consume(fn(*a, **kw))
            else:
                for a, kw in calls:
                    fn(*a, **kw)
            return perf_counter() - t0
        finally:
            gc.enable()

    def make_calls(self, chosen, reps):
        if self.mutating:
            return [inp.fresh() for _ in range(reps) for inp in chosen]
        base = [inp.fresh() for inp in chosen]
        return base * reps

    def benchmark(self, bench):
        o = self.opts
        r = self.result
        margin = 0.3
        bench_budget = self.left() - margin
        runs = max(1, o.runs)
        if not bench or bench_budget <= 0.05:
            r["reason"] = "no time left to benchmark" if bench else "no input on which both versions return normally"
            return
        target_pass = min(BENCH_MAX_PASS_S, max(0.005, bench_budget / (runs * 2.5)))
        chosen = self.choose_bench(bench, target_pass)
        r["bench_input"] = short_repr_text("; ".join(
            "%s%s%s" % (o.function, describe_call(i.args, i.kwargs),
                        "" if i.family is None else (" [int step %d]" % i.step if i.family[1] == "int"
                                                         else " [%s x%d]" % (i.family[1], 2 ** i.step)))
            for i in chosen), 300)
        for fn in (self.old_fn, self.new_fn):
            if hasattr(fn, "cache_clear"):
                fn.cache_clear()
        try:
            _arm(max(2.0, self.left()))
            try:
                # Warm-up (one pass each), then the repeat count.
                t_old = self.run_pass(self.old_fn, self.make_calls(chosen, 1), self.old_iter)
                t_new = self.run_pass(self.new_fn, self.make_calls(chosen, 1), self.new_iter)
                fast, slow = max(min(t_old, t_new), 1e-7), max(t_old, t_new, 1e-7)
                reps = max(1, min(int(math.ceil(BENCH_MIN_PASS_S / fast)), int(BENCH_MAX_PASS_S / slow)))
                c0 = perf_counter()
                calls = self.make_calls(chosen, reps)
                copy_cost = (perf_counter() - c0) if self.mutating else 0.0
                pair = (t_old + t_new) * reps + 2 * copy_cost + 0.002
                runs_eff = max(3, min(runs, int((self.left() - margin) / pair)))
                olds, news, ratios = [], [], []
                for k in range(runs_eff):
                    if k >= 3 and self.left() < margin + pair:
                        break
                    order = ("old", "new") if k % 2 == 0 else ("new", "old")
                    times = {}
                    for which in order:
                        if self.mutating or calls is None:
                            calls = self.make_calls(chosen, reps)
                        fn, consume = (self.old_fn, self.old_iter) if which == "old" else (self.new_fn, self.new_iter)
                        if hasattr(fn, "cache_clear"):
                            fn.cache_clear()
                        times[which] = self.run_pass(fn, calls, consume)
                        if self.mutating:
                            calls = None
                    olds.append(times["old"] / reps)
                    news.append(times["new"] / reps)
                    ratios.append(times["old"] / max(times["new"], 1e-9))
            finally:
                _disarm()
        except _Timeout:
            _disarm()
            olds = olds if "olds" in locals() else []
            news = news if "news" in locals() else []
            ratios = ratios if "ratios" in locals() else []
        except BaseException as e:
            r["reason"] = "the benchmark failed: %s: %s" % (type(e).__name__, short_repr_text(str(e), 200))
            return
        if not ratios:
            r["reason"] = "no time left to benchmark"
            return
        r["runs"] = len(ratios)
        r["speedup"] = round(median(ratios), 4)
        lo, hi = bootstrap_ci(ratios, random.Random(o.seed))
        r["ci_low"], r["ci_high"] = round(lo, 4), round(hi, 4)
        r["old_ms"] = round(median(olds) * 1000, 4)
        r["new_ms"] = round(median(news) * 1000, 4)


def median(xs):
    s = sorted(xs)
    n = len(s)
    if n == 0:
        return float("nan")
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def bootstrap_ci(xs, rng, resamples=2000):
    n = len(xs)
    meds = sorted(median([xs[rng.randrange(n)] for _ in range(n)]) for _ in range(resamples))
    return meds[int(0.025 * resamples)], meds[int(0.975 * resamples) - 1]


def parse_args(argv):
    p = argparse.ArgumentParser(description="pie-ls: check and time a faster version of a Python function")
    p.add_argument("--root", required=True)
    p.add_argument("--module-file", required=True)
    p.add_argument("--function", required=True)
    p.add_argument("--candidate-file", required=True)
    p.add_argument("--tests", nargs="*", action="extend", default=[],
                   help="test files (relative to --root or absolute); repeatable")
    p.add_argument("--out", required=True)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--budget-s", type=float, default=60.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--agree", action="store_true",
                   help="compare two fixes near the recorded inputs only (no growing, no benchmark)")
    opts = p.parse_args(argv)
    # Resolve every path now: the harness changes into --root before running user code.
    opts.root = os.path.abspath(opts.root)
    opts.candidate_file = os.path.abspath(opts.candidate_file)
    opts.out = os.path.abspath(opts.out)
    if not os.path.isabs(opts.module_file):
        opts.module_file = os.path.join(opts.root, opts.module_file)
    opts.tests = [t if os.path.isabs(t) else os.path.join(opts.root, t) for t in opts.tests]
    if opts.runs < 1 or opts.budget_s <= 0:
        p.error("--runs must be >= 1 and --budget-s > 0")
    return opts


def main(argv):
    opts = parse_args(argv)
    real_stderr = sys.stderr
    saved = (os.dup(1), os.dup(2))
    devnull_fd = os.open(os.devnull, os.O_RDWR)
    # User code prints nothing anywhere we read: stdout (Python and fd level) and stderr go to /dev/null, stdin is
    # empty; the harness keeps its own copy of stderr for its one-line error.
    err = os.fdopen(os.dup(2), "w")
    global _DEBUG
    if os.environ.get("PIE_HARNESS_DEBUG"):
        _DEBUG = err
    os.dup2(devnull_fd, 1)
    os.dup2(devnull_fd, 2)
    sink = open(os.devnull, "w")
    sys.stdout = sink
    sys.stderr = sink
    sys.stdin = open(os.devnull, "r")
    if _HAVE_ITIMER:
        signal.signal(signal.SIGALRM, _on_alarm)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
        want = 256 * 1024 * 1024
        if soft != resource.RLIM_INFINITY and soft < want and (hard == resource.RLIM_INFINITY or hard >= want):
            resource.setrlimit(resource.RLIMIT_STACK, (want, hard))
    except Exception:
        pass
    h = Harness(opts)
    h.fds = (devnull_fd, devnull_fd, sink, sink, sys.stdin)

    def escape():
        """Code that keeps swallowing the timeout cannot be stopped from inside: write the verdict and leave."""
        who = _CURRENT["who"]
        r = h.result
        r["equivalent"] = False
        r["speedup"] = r["ci_low"] = r["ci_high"] = r["old_ms"] = r["new_ms"] = None
        r["runs"] = 0
        r["reason"] = {
            "candidate": "the candidate kept running after its time limit (it swallows the timeout)",
            "original": "the original function kept running after its time limit (it swallows the timeout)",
            "tests": "a test kept running after its time limit (it swallows the timeout)",
        }.get(who, "the code kept running after its time limit (it swallows the timeout)")
        try:
            with open(opts.out, "w", encoding="utf-8") as f:
                f.write(json.dumps(r, indent=1, default=str))
            code = 0
        except BaseException:
            code = 1
        os._exit(code)

    _ALARM["escape"] = escape
    code = 0
    try:
        try:
            h.run()
        except HarnessError:
            raise
        except _Timeout:
            _disarm()
            h.result["equivalent"] = False
            h.result["reason"] = h.result["reason"] or "interrupted by a stray timer"
        out = json.dumps(h.result, indent=1, allow_nan=False, default=str)
        tmp = opts.out + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(out)
        os.replace(tmp, opts.out)
    except BaseException as e:
        _disarm()
        msg = "%s: %s" % (type(e).__name__, e) if not isinstance(e, HarnessError) else str(e)
        err.write("pie-ls harness error: %s\n" % msg.replace("\n", " ")[:500])
        err.flush()
        code = 1
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        sys.stderr = real_stderr
    return code


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush() if sys.stdout else None
    os._exit(code)
