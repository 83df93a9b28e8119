#!/usr/bin/env python3
"""Write JavaScript mutants for the self-debug benchmark (`pie-ls bench selfdebug`, language from the files).

    python3 tests/eval/make_js_mutants.py --out DIR

Twelve small HumanEval-style problems ported to JavaScript by hand (CommonJS, `node:test`), each with ONE mutation
of the families of `make_mutants.py`, written before any run of the self-debug loop on them. Per mutant,
DIR/js_<n>_<name>/:
    solution.js         the mutated function with its JSDoc, exported
    solution.test.js    the user's tests: one `node:test` test per documented example
    full_test.js        `node full_test.js` exits 0 iff every hidden case passes (kept from the loop)
    meta.json           {"language": "javascript", "entry_point", "family", "mutation"}

A mutant is kept only if the canonical function passes both test files and the mutant fails both (checked with
node here; the script exits 1 otherwise). Stdlib only.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

# (name, doc, canonical body, visible examples, hidden cases, (old, new), family)
# Examples and cases are (JS argument list, JS expected value).
PROBLEMS = [
    (
        "hasCloseElements",
        "Whether any two numbers of the list are closer to each other than the threshold.",
        "function hasCloseElements(numbers, threshold) {\n  for (let i = 0; i < numbers.length; i++) {\n    for (let j = 0; j < numbers.length; j++) {\n      if (i !== j && Math.abs(numbers[i] - numbers[j]) < threshold) {\n        return true;\n      }\n    }\n  }\n  return false;\n}",
        [("[1.0, 2.0, 3.0], 0.5", "false"), ("[1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3", "true")],
        [("[1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3", "true"), ("[1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.05", "false"), ("[1.0, 2.0, 5.9, 4.0, 5.0], 0.95", "true"), ("[1.1, 2.2, 3.1, 4.1, 5.1], 0.5", "false")],
        ("i !== j", "i === j"),
        "comparison",
    ),
    (
        "belowZero",
        "Given deposits (positive) and withdrawals (negative) on an account that starts at zero, whether the balance\n * ever falls below zero.",
        "function belowZero(operations) {\n  let balance = 0;\n  for (const op of operations) {\n    balance += op;\n    if (balance < 0) {\n      return true;\n    }\n  }\n  return false;\n}",
        [("[1, 2, 3]", "false"), ("[1, 2, -4, 5]", "true"), ("[1, 2, -3]", "false")],
        [("[]", "false"), ("[1, 2, -3, 1, 2, -3]", "false"), ("[1, -1, 2, -2, 5, -5, 4, -5]", "true"), ("[1, -2, 2, -2, 5, -5, 4, -4]", "true")],
        ("balance < 0", "balance <= 0"),
        "comparison",
    ),
    (
        "sumProduct",
        "The sum and the product of the numbers, as [sum, product]; [0, 1] for an empty list.",
        "function sumProduct(numbers) {\n  let sum = 0;\n  let product = 1;\n  for (const n of numbers) {\n    sum += n;\n    product *= n;\n  }\n  return [sum, product];\n}",
        [("[]", "[0, 1]"), ("[1, 2, 3, 4]", "[10, 24]")],
        [("[1, 1, 1]", "[3, 1]"), ("[100, 0]", "[100, 0]"), ("[3, 5, 7]", "[15, 105]"), ("[10]", "[10, 10]")],
        ("let product = 1;", "let product = 0;"),
        "off_by_one",
    ),
    (
        "intersperse",
        "The list with the delimiter inserted between every two consecutive elements.",
        "function intersperse(numbers, delimiter) {\n  const out = [];\n  for (let i = 0; i < numbers.length; i++) {\n    if (i > 0) {\n      out.push(delimiter);\n    }\n    out.push(numbers[i]);\n  }\n  return out;\n}",
        [("[], 4", "[]"), ("[1, 2, 3], 4", "[1, 4, 2, 4, 3]")],
        [("[5, 6, 3, 2], 8", "[5, 8, 6, 8, 3, 8, 2]"), ("[2, 2, 2], 2", "[2, 2, 2, 2, 2]"), ("[7], 1", "[7]")],
        ("if (i > 0)", "if (i > 1)"),
        "off_by_one",
    ),
    (
        "maxElement",
        "The largest element of a non-empty list.",
        "function maxElement(list) {\n  let best = list[0];\n  for (const x of list) {\n    if (x > best) {\n      best = x;\n    }\n  }\n  return best;\n}",
        [("[1, 2, 3]", "3"), ("[5, 3, -5, 2, -3, 3, 9, 0, 123, 1, -10]", "123")],
        [("[5, 3, -5, 2, -3, 3, 9, 0, 124, 1, -10]", "124"), ("[-4, -2, -9]", "-2"), ("[7]", "7")],
        ("if (x > best)", "if (x < best)"),
        "comparison",
    ),
    (
        "fib",
        "The n-th Fibonacci number (fib(1) = fib(2) = 1).",
        "function fib(n) {\n  let a = 0;\n  let b = 1;\n  for (let i = 0; i < n; i++) {\n    const next = a + b;\n    a = b;\n    b = next;\n  }\n  return a;\n}",
        [("10", "55"), ("1", "1"), ("8", "21")],
        [("11", "89"), ("12", "144"), ("2", "1"), ("20", "6765")],
        ("return a;", "return b;"),
        "return_variable",
    ),
    (
        "isPalindrome",
        "Whether the text reads the same backwards.",
        "function isPalindrome(text) {\n  for (let i = 0; i < text.length; i++) {\n    if (text[i] !== text[text.length - 1 - i]) {\n      return false;\n    }\n  }\n  return true;\n}",
        [("''", "true"), ("'aba'", "true"), ("'zbcd'", "false")],
        [("'aaaaa'", "true"), ("'xywyx'", "true"), ("'xywyz'", "false"), ("'xywzx'", "false")],
        ("text[text.length - 1 - i]", "text[text.length - i]"),
        "off_by_one",
    ),
    (
        "incrList",
        "The list with every element increased by one.",
        "function incrList(list) {\n  return list.map((x) => x + 1);\n}",
        [("[1, 2, 3]", "[2, 3, 4]"), ("[5, 3, 5, 2, 3, 3, 9, 0, 123]", "[6, 4, 6, 3, 4, 4, 10, 1, 124]")],
        [("[]", "[]"), ("[3, 2, 1]", "[4, 3, 2]"), ("[-1]", "[0]")],
        ("x + 1", "x - 1"),
        "arithmetic",
    ),
    (
        "pairsSumToZero",
        "Whether two distinct elements of the list sum to zero.",
        "function pairsSumToZero(list) {\n  for (let i = 0; i < list.length; i++) {\n    for (let j = i + 1; j < list.length; j++) {\n      if (list[i] + list[j] === 0) {\n        return true;\n      }\n    }\n  }\n  return false;\n}",
        [("[1, 3, 5, 0]", "false"), ("[2, 4, -5, 3, 5, 7]", "true"), ("[1]", "false")],
        [("[1, 3, -2, 1]", "false"), ("[1, 2, 3, 7]", "false"), ("[-3, 9, -1, 3, 2, 30]", "true"), ("[0, 5]", "false")],
        ("let j = i + 1", "let j = i"),
        "off_by_one",
    ),
    (
        "removeVowels",
        "The text without its vowels (a, e, i, o, u, either case).",
        "function removeVowels(text) {\n  let out = '';\n  for (const c of text) {\n    if (!'aeiouAEIOU'.includes(c)) {\n      out += c;\n    }\n  }\n  return out;\n}",
        [("''", "''"), ("'abcdef'", "'bcdf'"), ("'aaBAA'", "'B'")],
        [("'zbcd'", "'zbcd'"), ("'fedcba'", "'fdcb'"), ("'eeeee'", "''"), ("'acBAA'", "'cB'")],
        ("if (!'aeiouAEIOU'.includes(c))", "if ('aeiouAEIOU'.includes(c))"),
        "drop_not",
    ),
    (
        "monotonic",
        "Whether the list never decreases or never increases.",
        "function monotonic(list) {\n  let up = true;\n  let down = true;\n  for (let i = 1; i < list.length; i++) {\n    if (list[i] < list[i - 1]) up = false;\n    if (list[i] > list[i - 1]) down = false;\n  }\n  return up || down;\n}",
        [("[1, 2, 4, 20]", "true"), ("[1, 20, 4, 10]", "false"), ("[4, 1, 0, -10]", "true")],
        [("[1, 2, 4, 10]", "true"), ("[4, 1, 1, 0]", "true"), ("[1, 2, 3, 2, 5, 60]", "false"), ("[9, 9, 9, 9]", "true")],
        ("return up || down;", "return up && down;"),
        "and_or_swap",
    ),
    (
        "median",
        "The median of a non-empty list (the mean of the two middle values when the length is even).",
        "function median(list) {\n  const s = [...list].sort((a, b) => a - b);\n  const mid = Math.floor(s.length / 2);\n  if (s.length % 2 === 1) {\n    return s[mid];\n  }\n  return (s[mid - 1] + s[mid]) / 2;\n}",
        [("[3, 1, 2, 4, 5]", "3"), ("[-10, 4, 6, 1000, 10, 20]", "8")],
        [("[5]", "5"), ("[6, 5]", "5.5"), ("[8, 1, 3, 9, 9, 2, 7]", "7")],
        ("return (s[mid - 1] + s[mid]) / 2;", "return (s[mid] + s[mid]) / 2;"),
        "wrong_variable",
    ),
]


def source(name, doc, body):
    return f"/**\n * {doc}\n */\n{body}\n\nmodule.exports = {{ {name} }};\n"


def visible_tests(name, examples):
    lines = ["const test = require('node:test');", "const assert = require('node:assert');", f"const {{ {name} }} = require('./solution');", ""]
    for i, (args, expected) in enumerate(examples, 1):
        lines.append(f"test('example {i}', () => {{\n  assert.deepStrictEqual({name}({args}), {expected});\n}});\n")
    return "\n".join(lines)


def hidden_tests(name, cases):
    checks = "\n".join(f"check(() => {name}({args}), {expected}, {json.dumps(f'{name}({args})')});" for args, expected in cases)
    return (
        "const assert = require('node:assert');\n"
        f"const {{ {name} }} = require('./solution');\n"
        "let failed = 0;\n"
        "function check(run, expected, label) {\n"
        "  try { assert.deepStrictEqual(run(), expected); } catch (e) { failed++; console.log(`FAIL ${label}: ${e.message.split('\\n')[0]}`); }\n"
        "}\n"
        f"{checks}\n"
        "process.exit(failed ? 1 : 0);\n"
    )


def passes(dir_, *cmd):
    return subprocess.run(cmd, cwd=dir_, capture_output=True, timeout=30).returncode == 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    out = ap.parse_args().out
    os.makedirs(out, exist_ok=True)
    bad = 0
    for n, (name, doc, body, examples, cases, (old, new), family) in enumerate(PROBLEMS, 1):
        assert body.count(old) == 1, f"{name}: the mutation must match once"
        visible = list(examples)
        hidden = list(examples) + list(cases)
        with tempfile.TemporaryDirectory() as tmp:
            for f, text in [("solution.js", source(name, doc, body)), ("solution.test.js", visible_tests(name, visible)), ("full_test.js", hidden_tests(name, hidden))]:
                open(os.path.join(tmp, f), "w").write(text)
            canonical_ok = passes(tmp, "node", "--test", "solution.test.js") and passes(tmp, "node", "full_test.js")
        mutant = source(name, doc, body.replace(old, new))
        dir_ = os.path.join(out, f"js_{n}_{name}")
        shutil.rmtree(dir_, ignore_errors=True)
        os.makedirs(dir_)
        files = {"solution.js": mutant, "solution.test.js": visible_tests(name, visible), "full_test.js": hidden_tests(name, hidden)}
        for f, text in files.items():
            open(os.path.join(dir_, f), "w").write(text)
        meta = {"language": "javascript", "entry_point": name, "family": family, "mutation": f"{family}: {old!r} -> {new!r}"}
        open(os.path.join(dir_, "meta.json"), "w").write(json.dumps(meta, indent=2) + "\n")
        mutant_fails = not passes(dir_, "node", "--test", "solution.test.js") and not passes(dir_, "node", "full_test.js")
        ok = canonical_ok and mutant_fails
        bad += not ok
        print(f"{dir_}: {family:<16} canonical {'passes' if canonical_ok else 'FAILS'}, mutant {'fails both' if mutant_fails else 'PASSES one'}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
