#!/usr/bin/env python3
"""Mutation testing for onebit: does a plausible one-line bug make a test fail?

Each mutant is one small AST edit of one source line (drop ``.detach()``, ``round``↔``floor``, ``<``↔``<=``,
an integer ±1, ``+``↔``-``, ``*``↔``/``, ``min``↔``max``, ``and``↔``or``, swapped call arguments, a
constant tweak, …). It is applied in a private copy of the tree (``git archive`` of a commit, or the
working files with ``--worktree``; the checkout itself is never written), and only the tests mapped to
its file (``TEST_MAP``) run against it, stopping at the first failure, so a mutant takes seconds. A mutant
is *killed* when a test fails, *survived* when every mapped test passes, *timeout* (unresolved: rerun it
alone) when the tests run past ``--timeout``.

    python tools/mutate.py                               # every mutant of every area (long)
    python tools/mutate.py --sample 300 --seed 1         # a seeded random sample (bounded time)
    python tools/mutate.py --area methods --area deploy  # some areas only
    python tools/mutate.py --list                        # print the mutants without running them
    python tools/mutate.py --cpp --sample 5 --build-python /tmp/nb/bin/python  # C++: a private build per mutant

Prints the kill rate per area and every survivor (file:line and its diff); ``--json`` writes the same
as data. Not run in CI: a full run takes tens of minutes. Lines marked ``# pragma: no mutate`` are skipped.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import queue
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
SRC = "src/onebit"
#: mutants known to change nothing observable, each with the reason; a survivor listed here is reported as
#: ``equivalent`` and left out of the kill rate (matched by file and the mutated line's text, not its number).
EQUIVALENT_FILE = ROOT / "tools" / "mutate_equivalent.toml"

#: area -> source files (globs relative to the repository root).
AREAS: dict[str, list[str]] = {
    "methods": [f"{SRC}/methods/*.py"],
    "nn": [f"{SRC}/nn/*.py"],
    "deploy": [f"{SRC}/deploy/*.py"],
    "train": [f"{SRC}/train/*.py"],
    "bench": [f"{SRC}/bench/metrics.py", f"{SRC}/bench/scores.py", f"{SRC}/bench/stats.py"],
}

#: source file (or glob) -> the tests that exercise it; the first match wins.
TEST_MAP: list[tuple[str, list[str]]] = [
    (f"{SRC}/methods/hbnn.py", ["tests/methods/test_hbnn.py", "tests/methods/test_option_checks.py",
                                "tests/methods/test_*.py", "tests/nn/test_layers.py"]),
    (f"{SRC}/methods/*.py", ["tests/methods/test_method_gradients.py", "tests/methods/test_*.py",
                             "tests/nn/test_layers.py", "tests/nn/test_binarize.py"]),
    (f"{SRC}/nn/summary.py", ["tests/bench/test_summary.py", "tests/nn/test_*.py"]),
    (f"{SRC}/nn/*.py", ["tests/methods/test_method_gradients.py", "tests/nn/test_*.py",
                        "tests/deploy/test_graph_fold_users.py", "tests/bench/test_summary.py",
                        "tests/models/test_model_forward.py"]),
    (f"{SRC}/deploy/kernels.py", ["tests/deploy/test_kernel_mutants.py", "tests/deploy/test_long_reductions.py",
                                  "tests/deploy/test_kernels.py", "tests/deploy/test_*_mutants.py"]),
    (f"{SRC}/deploy/onnx_export.py", ["tests/deploy/test_onnx_export.py", "tests/deploy/test_hbnn_three_planes.py",
                                      "tests/deploy/test_*_mutants.py"]),
    (f"{SRC}/deploy/lce.py", ["tests/deploy/test_lce_layouts.py", "tests/deploy/test_lce_geometry.py",
                               "tests/deploy/test_lce.py", "tests/deploy/test_hbnn_three_planes.py",
                               "tests/deploy/test_lce_channel_axis.py",
                               "tests/deploy/test_*_mutants.py"]),
    (f"{SRC}/deploy/_lce_*.py", ["tests/deploy/test_lce_layouts.py", "tests/deploy/test_lce_geometry.py",
                                  "tests/deploy/test_lce.py", "tests/deploy/test_hbnn_three_planes.py",
                                  "tests/deploy/test_lce_channel_axis.py",
                                  "tests/deploy/test_*_mutants.py"]),
    (f"{SRC}/deploy/_tflite_builder.py", ["tests/deploy/test_lce_layouts.py", "tests/deploy/test_lce.py",
                                          "tests/deploy/test_lce*.py"]),
    (f"{SRC}/deploy/_finite.py", ["tests/deploy/test_nonfinite.py", "tests/deploy/test_*_mutants.py",
                                  "tests/deploy/test_lce.py", "tests/deploy/test_onnx_export.py"]),
    # the layer description feeds all three runtimes: the packed engine, ONNX/QONNX and LCE
    (f"{SRC}/deploy/description.py", ["tests/deploy/test_description.py", "tests/deploy/test_export.py",
                                      "tests/deploy/test_onnx_export.py", "tests/deploy/test_hbnn_three_planes.py",
                                      "tests/deploy/test_*_mutants.py", "tests/deploy/test_lce.py"]),
    # (graph, packed, passes, export, fileformat, _codec, errors; test_engine_cpp.py is csrc's: no Python runs)
    (f"{SRC}/deploy/*.py", ["tests/deploy/test_graph_version.py",
                            "tests/deploy/test_graph_fold_users.py", "tests/deploy/test_graph_attributes.py",
                            "tests/deploy/test_graph_round_trip.py", "tests/deploy/test_nonfinite.py",
                            "tests/deploy/test_*_mutants.py", "tests/deploy/test_export.py",
                            "tests/deploy/test_cli_export.py", "tests/deploy/test_encoder_export.py",
                            "tests/deploy/test_hbnn_three_planes.py", "tests/deploy/test_description*.py",
                            "tests/deploy/test_plan*.py", "tests/deploy/test_lce_geometry.py",
                            "tests/deploy/test_lce_layouts.py", "tests/deploy/test_lce_channel_axis.py",
                            "tests/deploy/test_fileformat*.py", "tests/deploy/test_empty_batch.py"]),
    (f"{SRC}/train/trainer.py", ["tests/train/test_model_memory.py", "tests/train/test_distill_loss.py",
                                 "tests/train/test_schedule_values.py", "tests/train/test_trainer.py",
                                 "tests/train/test_checkpoint_data_info.py", "tests/train/test_*_mutants.py",
                                 "tests/train/test_recipe.py"]),
    (f"{SRC}/train/*.py", ["tests/train/test_recipe_bounds.py", "tests/train/test_recipe.py",
                          "tests/train/test_schedule_values.py", "tests/train/test_trainer.py",
                          "tests/train/test_*_mutants.py"]),
    (f"{SRC}/bench/metrics.py", ["tests/bench/test_metrics.py", "tests/bench/test_stats_mutants.py",
                                 "tests/bench/test_scores_*.py"]),
    (f"{SRC}/bench/scores.py", ["tests/bench/test_scores_*.py", "tests/bench/test_metrics.py"]),
    (f"{SRC}/bench/stats.py", ["tests/bench/test_stats_mutants.py", "tests/bench/test_scores_statistics.py",
                               "tests/bench/test_scores_*.py", "tests/bench/test_metrics.py"]),
    # (test_engine_cpp.py compiles csrc/ itself: tests/cpp/check.sh)
    ("csrc/*", ["tests/deploy/test_kernel_mutants.py", "tests/deploy/test_long_reductions.py",
                "tests/deploy/test_kernels.py", "tests/deploy/test_engine_cpp.py"]),
]

SWAP_NAMES = {"round": "floor", "floor": "round", "ceil": "floor", "min": "max", "max": "min",
              "amin": "amax", "amax": "amin", "any": "all", "all": "any", "sum": "mean", "mean": "sum"}
#: element-wise calls whose first two arguments commute (NaN included), so swapping them is no mutant.
SYMMETRIC = {"maximum", "minimum", "fmax", "fmin", "hypot", "logical_and", "logical_or", "logical_xor"}
SWAP_COMPARE = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
                ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In}
SWAP_BINOP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
              ast.Pow: ast.Mult, ast.Mod: ast.FloorDiv, ast.LShift: ast.RShift, ast.RShift: ast.LShift,
              ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd}


@dataclass
class Mutant:
    path: str
    line: int
    kind: str
    before: str
    after: str
    area: str = ""
    status: str = ""  # killed / survived / timeout / equivalent (a listed survivor) / stale (--rerun) / stillborn (C++)
    killer: str = ""  # the first failing test, or the reason a listed equivalent mutant changes nothing
    note: str = ""  # a warning about the result (kept out of ``killer``, which verify_killers runs as a test id)
    seconds: float = 0.0
    span: tuple[int, int, int, int] = field(default=(0, 0, 0, 0), repr=False)

    def diff(self) -> str:
        return f"-{self.before.strip()}\n+{self.after.strip()}"


# --------------------------------------------------------------------------------------------------
# Making mutants (Python)
# --------------------------------------------------------------------------------------------------
def _skipped_lines(tree: ast.Module, lines: list[str]) -> set[int]:
    """Docstrings, error messages, __all__, TYPE_CHECKING blocks, logging/printing, pragma'd lines."""
    skip = {i + 1 for i, text in enumerate(lines) if "pragma: no mutate" in text}
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and \
                isinstance(getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
            skip.update(range(body[0].lineno, body[0].end_lineno + 1))
        if isinstance(node, ast.Raise) and node.exc is not None:
            skip.update(range(node.lineno, node.end_lineno + 1))
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            skip.update(range(node.lineno, node.end_lineno + 1))
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(range(node.lineno, node.end_lineno + 1))
        if isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] in {"print", "warn", "line",
                                                                                    "set_postfix", "debug", "info"}:
            skip.update(range(node.lineno, node.end_lineno + 1))
    return skip


def _variants(node: ast.AST) -> Iterator[tuple[str, ast.AST]]:
    """(kind, replacement node) for every mutation of ``node`` itself."""
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in {"detach", "item"} and not node.args:
            yield f"drop .{func.attr}()", func.value
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
        if name in SWAP_NAMES:
            new = copy.deepcopy(node)
            if isinstance(new.func, ast.Attribute):
                new.func.attr = SWAP_NAMES[name]
            else:
                new.func.id = SWAP_NAMES[name]
            yield f"{name} -> {SWAP_NAMES[name]}", new
        if len(node.args) >= 2 and not any(isinstance(a, ast.Starred) for a in node.args[:2]) and \
                ast.dump(node.args[0]) != ast.dump(node.args[1]) and name not in SYMMETRIC:
            new = copy.deepcopy(node)
            new.args[0], new.args[1] = new.args[1], new.args[0]
            yield "swap arguments", new
    elif isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in SWAP_COMPARE:
        new = copy.deepcopy(node)
        new.ops = [SWAP_COMPARE[type(node.ops[0])]()]
        yield "comparison", new
    elif isinstance(node, ast.BinOp) and type(node.op) in SWAP_BINOP:
        new = copy.deepcopy(node)
        new.op = SWAP_BINOP[type(node.op)]()
        yield "operator", new
    elif isinstance(node, ast.BoolOp):
        new = copy.deepcopy(node)
        new.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        yield "and/or", new
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
        yield "drop unary " + ("not" if isinstance(node.op, ast.Not) else "minus"), node.operand
    elif isinstance(node, ast.Constant) and type(node.value) in (int, float, bool):
        yield from _constant_variants(node)


def _constant_variants(node: ast.Constant) -> Iterator[tuple[str, ast.AST]]:
    value = node.value
    if isinstance(value, bool):
        yield "boolean", ast.Constant(not value)
    elif isinstance(value, int):
        yield "integer +1", ast.Constant(value + 1)
        if value != 0:
            yield "integer -1", ast.Constant(value - 1)
    elif value != 0.0:
        yield "constant x1.5", ast.Constant(value * 1.5)
    else:
        yield "constant 0 -> 1", ast.Constant(1.0)


def _in_annotation_or_string(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    child, parent = node, parents.get(node)
    while parent is not None:
        if isinstance(parent, ast.JoinedStr) or (isinstance(parent, (ast.arg, ast.AnnAssign)) and
                                                 getattr(parent, "annotation", None) is child):
            return True
        if isinstance(parent, ast.FunctionDef) and child is parent.returns:
            return True
        if isinstance(parent, ast.Subscript) and isinstance(parent.value, ast.Name) and \
                parent.value.id in {"tuple", "list", "dict", "Literal"}:
            return True
        child, parent = parent, parents.get(parent)
    return False


def python_mutants(tree: Path, path: str, area: str) -> list[Mutant]:
    text = (tree / path).read_text()
    lines = text.splitlines(keepends=True)
    tree = ast.parse(text)
    skip = _skipped_lines(tree, lines)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found: list[Mutant] = []
    for node in ast.walk(tree):
        if not hasattr(node, "lineno") or node.lineno in skip or node.lineno != node.end_lineno:
            continue  # one-line mutants only
        if _in_annotation_or_string(node, parents) or isinstance(getattr(node, "ctx", None), (ast.Store, ast.Del)):
            continue  # (a parenthesized expression replacing an expression always parses)
        for kind, new in _variants(node):
            line = lines[node.lineno - 1]
            b = _byte_col(line, node.col_offset)
            e = _byte_col(line, node.end_col_offset)
            replacement = ast.unparse(new)
            if isinstance(new, (ast.BinOp, ast.BoolOp, ast.Compare, ast.UnaryOp)) or kind.startswith("drop unary"):
                replacement = f"({replacement})"
            after = line[:b] + replacement + line[e:]
            if after.strip() == line.strip() or ast.dump(new) == ast.dump(node):
                continue
            found.append(Mutant(path, node.lineno, kind, line.rstrip("\n"), after.rstrip("\n"), area,
                                span=(node.lineno, b, e, 0)))
    return found


def _byte_col(line: str, col: int) -> int:
    """ast column offsets count UTF-8 bytes; convert to a str index."""
    return len(line.encode()[:col].decode(errors="ignore"))


# --------------------------------------------------------------------------------------------------
# Making mutants (C++): a few token-level edits, one per line
# --------------------------------------------------------------------------------------------------
CPP_RULES = [
    (r"(?<![<>=!])<=(?!=)", "<", "comparison"), (r"(?<![<>=!-])<(?![<=])", "<=", "comparison"),
    (r"(?<![<>=!-])>(?![>=])", ">=", "comparison"), (r">=", ">", "comparison"),
    (r"\b(\d+)\b", None, "integer +1"), (r"\+=", "-=", "operator"), (r"(?<=[\w)\]] )\+(?= [\w(])", "-", "operator"),
    (r">>", "<<", "shift"), (r"&(?=[ ]*[\w(])(?<!&&)", "|", "bit operator"),
]


def cpp_mutants(tree: Path, path: str) -> list[Mutant]:
    found: list[Mutant] = []
    for number, line in enumerate((tree / path).read_text().splitlines(), start=1):
        code = line.split("//")[0]
        if not code.strip() or code.lstrip().startswith(("#", "*", "static_assert")) or "pragma: no mutate" in line:
            continue
        for pattern, repl, kind in CPP_RULES:
            for match in re.finditer(pattern, code):
                if repl is None and code[: match.start()].endswith("alignas("):
                    continue  # alignas(N + 1) is not a power of two: it never compiles (a stillborn mutant)
                new = str(int(match.group(1)) + 1) if repl is None else repl
                after = line[: match.start()] + new + line[match.end():]
                found.append(Mutant(path, number, kind, line, after, "csrc"))
    return found


# --------------------------------------------------------------------------------------------------
# Running a mutant in a copy of the tree
# --------------------------------------------------------------------------------------------------
BOOT = """import sys
sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "ScikitBuildRedirectingFinder"]
"""


#: A pytest plugin (``-p mutate_cover``) that records which test executes which line of ``src/onebit``: one JSON
#: line per test, ``{"test": nodeid, "lines": {path: [line, ...]}}``; lines run outside any test (imports,
#: collection) go under ``"<import>"``. sys.settrace only enters onebit's own frames, so the cost is modest.
COVER_PLUGIN = """import json, os, sys, threading
import pytest

_ROOT = os.environ["MUTATE_ROOT"]
_SRC = os.path.join(_ROOT, "src", "onebit")
_out = open(os.environ["MUTATE_COVER"], "a")
_lines = set()


def _local(frame, event, arg):
    if event == "line":
        _lines.add((frame.f_code.co_filename, frame.f_lineno))
    return _local


def _global(frame, event, arg):
    if frame.f_code.co_filename.startswith(_SRC):
        _lines.add((frame.f_code.co_filename, frame.f_lineno))
        return _local
    return None


def _flush(name):
    by_file = {}
    for path, line in _lines:
        by_file.setdefault(os.path.relpath(path, _ROOT), []).append(line)
    _lines.clear()
    if by_file:
        _out.write(json.dumps({"test": name, "lines": by_file}) + "\\n")
        _out.flush()


def pytest_configure(config):
    sys.settrace(_global)
    threading.settrace(_global)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _flush("<import>")
    yield
    _flush(item.nodeid)


def pytest_sessionfinish(session):
    _flush("<import>")
"""


def make_copy(commit: str | None, dest: Path) -> None:
    """The tree at ``commit`` (``git archive``) or the working files (``commit=None``) in ``dest``, with
    the built extension, and a sitecustomize that makes every Python process import ``dest``'s onebit
    (an editable install would otherwise redirect ``import onebit`` to the checkout)."""
    if commit is not None:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    else:
        files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard"], check=True,
                               capture_output=True, text=True).stdout.split()
        for name in files:
            if (ROOT / name).is_file():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, dest / name)
    shutil.copy2(_extension(), dest / SRC / Path(_extension()).name)
    (dest / ".mutate-boot").mkdir(exist_ok=True)
    (dest / ".mutate-boot" / "sitecustomize.py").write_text(BOOT)
    (dest / ".mutate-boot" / "mutate_cover.py").write_text(COVER_PLUGIN)


def _extension() -> str:
    found = subprocess.run([sys.executable, "-c", "import onebit._engine as e; print(e.__file__)"],
                           check=True, capture_output=True, text=True, cwd="/").stdout.strip()
    return found


OVERRIDE: list[str] = []  # --tests


def tests_for(path: str, tree: Path) -> list[str]:
    if OVERRIDE:
        return list(OVERRIDE)
    for pattern, tests in TEST_MAP:
        if Path(path).match(pattern) or (pattern.endswith("*") and path.startswith(pattern[:-1])):
            out = []
            for t in tests:
                out.extend(sorted(str(p.relative_to(tree)) for p in tree.glob(t)) if "*" in t else [t])
            return list(dict.fromkeys(t for t in out if (tree / t).exists()))  # in order, once each
    raise SystemExit(f"mutate.py: no tests mapped to {path}; add it to TEST_MAP")


def run_tests(tree: Path, tests: list[str], timeout: float, extra: tuple[str, ...] = ("-x",),
              env_extra: dict[str, str] | None = None) -> tuple[str, str, float]:
    """('passed' | 'failed' | 'timeout' | 'error', first failing test, seconds) of ``tests`` in ``tree``
    ('error': pytest found no such test or no tests at all, exit status 4 or 5)."""
    outcome, failed, seconds = _pytest(tree, tests, timeout, extra, env_extra)
    return outcome, failed[0] if failed else "", seconds


def _pytest(tree: Path, tests: list[str], timeout: float, extra: tuple[str, ...],
            env_extra: dict[str, str] | None) -> tuple[str, list[str], float]:
    env = dict(os.environ, PYTHONPATH=f"{tree / '.mutate-boot'}{os.pathsep}{tree / 'src'}",
               PYTHONDONTWRITEBYTECODE="1", HYPOTHESIS_PROFILE=os.environ.get("HYPOTHESIS_PROFILE", "default"),
               **(env_extra or {}))
    cmd = [sys.executable, "-m", "pytest", *extra, "-q", "-p", "no:cacheprovider", "--no-header", "-rfE", *tests]
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", [], time.perf_counter() - start
    seconds = time.perf_counter() - start
    if done.returncode == 0:
        return "passed", [], seconds
    if done.returncode in (4, 5):
        return "error", [(done.stdout + done.stderr).strip()[-300:]], seconds
    failed = re.findall(r"^(?:FAILED|ERROR) (.+?)(?: - .*)?$", done.stdout, re.M)
    return "failed", failed or [(done.stdout + done.stderr).strip().splitlines()[-1][:200]], seconds


@dataclass
class Coverage:
    """What the unmutated run of one mapped test set saw: the tests that fail anyway (left out of every
    mutant's run), and which tests execute each line of ``src/onebit`` (a mutant then runs only those)."""

    files: list[str]
    outcome: str = ""
    failing: list[str] = field(default_factory=list)
    lines: dict[tuple[str, int], list[str]] = field(default_factory=dict)

    def selection(self, m: Mutant) -> list[str]:
        """The node ids that execute ``m``'s line (in run order), or every test of the set when none
        does in a test (a line run at import, in a subprocess, or not at all)."""
        chosen = [t for t in self.lines.get((m.path, m.line), []) if t not in self.failing]
        if chosen:
            return chosen
        broken = {f for f in self.failing if "::" not in f}  # a file that does not even collect
        return [f for f in self.files if f not in broken] + \
            [arg for f in self.failing if "::" in f for arg in ("--deselect", f)]


COVERAGE: dict[tuple[str, ...], Coverage] = {}  # mapped test set -> its unmutated run (filled by _check_baseline)


def measure(tree: Path, files: list[str], timeout: float, coverage: bool) -> Coverage:
    """Run ``files`` unmutated (all of them, no -x), recording per-test line coverage unless not ``coverage``."""
    result = Coverage(list(files))
    log = Path(tempfile.mkstemp(prefix="cover-", suffix=".jsonl", dir=tree.parent)[1])
    extra = ("-p", "mutate_cover", "--continue-on-collection-errors") if coverage else \
        ("--continue-on-collection-errors",)
    result.outcome, failed, seconds = _pytest(tree, files, timeout, extra,
                                              {"MUTATE_ROOT": str(tree), "MUTATE_COVER": str(log)})
    result.failing = failed if result.outcome == "failed" else []
    for row in map(json.loads, log.read_text().splitlines()):
        if row["test"] == "<import>":
            continue
        for path, numbers in row["lines"].items():
            for number in numbers:
                result.lines.setdefault((path, number), []).append(row["test"])
    log.unlink()
    print(f"baseline {result.outcome} in {seconds:.0f}s ({len(result.failing)} failing, left out"
          f"{': ' + ' '.join(result.failing[:5]) if result.failing else ''}): {' '.join(files)}", flush=True)
    return result


def apply(tree: Path, m: Mutant) -> str:
    """Write the mutant into ``tree``; returns the original text to restore."""
    target = tree / m.path
    original = target.read_text()
    lines = original.splitlines(keepends=True)
    assert lines[m.line - 1].rstrip("\n") == m.before, f"{m.path}:{m.line} changed since the mutants were made"
    lines[m.line - 1] = m.after + "\n"
    target.write_text("".join(lines))
    return original


BUILD_PYTHON = [sys.executable]  # --build-python: the interpreter cmake builds against (it needs nanobind)


def check_build_python(python: str) -> None:
    """The extension is built against ``python`` (same version as the tests' interpreter, nanobind
    installed), into a build folder of the copy: the installed extension is never rebuilt or replaced."""
    probe = "import sys, nanobind; print(sys.version_info[:2])"
    found = subprocess.run([python, "-c", probe], capture_output=True, text=True)
    if found.returncode != 0:
        raise SystemExit(f"mutate.py: --cpp builds with {python}, which cannot import nanobind; make a venv of "
                         "the same Python with nanobind (python -m venv /tmp/nb && /tmp/nb/bin/pip install "
                         "nanobind) and pass --build-python /tmp/nb/bin/python")
    if found.stdout.strip() != str(tuple(sys.version_info[:2])):
        raise SystemExit(f"mutate.py: --build-python {python} is Python {found.stdout.strip()}, the tests run "
                         f"on {tuple(sys.version_info[:2])}: the extension would not load")


def _rebuild(tree: Path, build: Path) -> bool:
    """Build the extension from ``tree``'s csrc into ``build`` and copy it into ``tree`` (only there)."""
    if not (build / "build.ninja").exists() and not (build / "Makefile").exists():
        subprocess.run(["cmake", "-S", str(tree), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                        f"-DPython_EXECUTABLE={BUILD_PYTHON[0]}"], check=True, capture_output=True)
    done = subprocess.run(["cmake", "--build", str(build), "-j2"], capture_output=True)
    if done.returncode != 0:
        return False
    for so in build.glob("_engine*.so"):
        shutil.copy2(so, tree / SRC / so.name)
    return True


def run_mutant(tree: Path, m: Mutant, timeout: float, build: Path | None) -> None:
    original = apply(tree, m)
    try:
        if build is not None and not _rebuild(tree, build):
            m.status, m.killer = "stillborn", "does not compile (no test needed: left out of the rate)"
            return
        files = tests_for(m.path, tree)
        cover = COVERAGE.get(tuple(files))
        chosen = cover.selection(m) if cover is not None else files
        outcome, killer, m.seconds = run_tests(tree, chosen, timeout)
        if outcome == "error" and chosen != files:  # a node id pytest cannot find again: run the files
            outcome, killer, m.seconds = run_tests(tree, cover.selection(Mutant("", 0, "", "", "")), timeout)
        m.status = {"passed": "survived", "failed": "killed", "timeout": "timeout", "error": "error"}[outcome]
        m.killer = killer
    finally:
        (tree / m.path).write_text(original)


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------
def collect(tree: Path, areas: list[str], cpp: bool) -> list[Mutant]:
    """The mutants of ``tree``'s sources (the copy that will be mutated, so lines always match)."""
    mutants: list[Mutant] = []
    for area in areas:
        for pattern in AREAS[area]:
            for path in sorted(tree.glob(pattern)):
                mutants.extend(python_mutants(tree, str(path.relative_to(tree)), area))
    if cpp:
        for path in sorted(tree.glob("csrc/*.cpp")) + sorted(tree.glob("csrc/*.h")):
            mutants.extend(cpp_mutants(tree, str(path.relative_to(tree))))
    return mutants


def summary(mutants: list[Mutant]) -> dict[str, dict[str, float]]:
    """Per area (and ``overall``): the count of each status, total, and the kill rate in percent: killed over
    killed + timeout + survived (a timeout is unresolved, not a kill; equivalent, stillborn and error
    mutants are left out)."""
    rows: dict[str, dict[str, float]] = {}
    for m in mutants:
        for area in (m.area, "overall"):
            row = rows.setdefault(area, {"killed": 0, "timeout": 0, "survived": 0, "equivalent": 0, "error": 0,
                                         "stillborn": 0, "total": 0})
            row["total"] += 1
            row[m.status] = row.get(m.status, 0) + 1
    for row in rows.values():
        counted = row["killed"] + row["timeout"] + row["survived"]
        row["kill_rate"] = round(100 * row["killed"] / counted, 1) if counted else float("nan")
    return dict(sorted(rows.items(), key=lambda item: (item[0] == "overall", item[0])))


def report(mutants: list[Mutant]) -> str:
    out = [f"{'area':<10} {'killed':>7} {'timeout':>8} {'survived':>9} {'equivalent':>11} {'error':>6} "
           f"{'stillborn':>10} {'total':>6} {'kill rate':>10}"]
    for area, row in summary(mutants).items():
        out.append(f"{area:<10} {row['killed']:>7} {row['timeout']:>8} {row['survived']:>9} {row['equivalent']:>11} "
                   f"{row['error']:>6} {row['stillborn']:>10} {row['total']:>6} {row['kill_rate']:>9.1f}%")
    out.append("(kill rate = killed / (killed + timeout + survived): a timeout is unresolved until rerun alone with "
               "a longer --timeout (on a busy machine it may be a slow survivor); equivalent mutants, errors (whose "
               "killer fails unmutated too) and stillborn C++ mutants (that do not compile) are left out)")
    for status in ("survived", "timeout", "equivalent", "error", "stillborn", "stale"):
        chosen = [m for m in mutants if m.status == status]
        if chosen or status == "survived":
            out.append(f"\n{status} ({len(chosen)}):")
        for m in chosen:
            why = f"  -- {m.killer}" if status in ("equivalent", "error", "stillborn", "stale") else ""
            out.append(f"{m.path}:{m.line} [{m.kind}]{why}\n" + "\n".join("    " + d for d in m.diff().splitlines()))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    areas = args.area or ([] if args.cpp else sorted(AREAS))
    OVERRIDE[:] = args.tests or []
    BUILD_PYTHON[:] = [args.build_python]
    known = load_equivalents(args.equivalent)
    commit = "working files" if args.worktree else _describe(args.commit)
    with tempfile.TemporaryDirectory(prefix="onebit-mutate-") as tmp:
        tree = Path(tmp) / "tree"
        tree.mkdir()
        make_copy(None if args.worktree else args.commit, tree)
        mutants = rerun_mutants(tree, args.rerun) if args.rerun else _chosen(tree, areas, args)
        if args.list:
            for m in mutants:
                print(f"{m.path}:{m.line} [{m.kind}]\n" + "\n".join("    " + d for d in m.diff().splitlines()))
            print(f"{len(mutants)} mutants")
            return 0
        cpp = any(m.path.startswith("csrc/") for m in mutants)
        builds = [Path(tmp) / f"build{i}" for i in range(args.jobs)] if cpp else [None] * args.jobs
        if cpp:
            check_build_python(BUILD_PYTHON[0])
        if cpp and not _rebuild(tree, builds[0]):
            raise SystemExit("mutate.py: the unmutated extension does not build (cmake, nanobind needed)")
        broken = set() if args.no_baseline else \
            _check_baseline(tree, [m for m in mutants if m.status != "stale"], args.baseline_timeout, args.jobs,
                            not args.no_coverage)
        if broken:
            print(f"skipping the {sum(tuple(tests_for(m.path, tree)) in broken for m in mutants)} mutants whose "
                  "tests fail unmutated", flush=True)
            mutants = [m for m in mutants if tuple(tests_for(m.path, tree)) not in broken]
        print(f"{len(mutants)} mutants of {commit}, {args.jobs} at a time", flush=True)
        _run_all(tree, mutants, builds, args.timeout, known)
        if args.no_baseline:
            verify_killers(tree, [m for m in mutants if m.status == "killed"], args.baseline_timeout)
        mutants = [copy.copy(m) for m in mutants if m.status]  # a snapshot: mutants still running are left out
    print()
    print(report(mutants))
    if args.json:
        data = {"summary": {"commit": commit, "command": " ".join(["tools/mutate.py", *(argv or sys.argv[1:])]),
                            "areas": summary(mutants)},
                "mutants": [asdict(m) for m in mutants]}
        args.json.write_text(json.dumps(data, indent=1))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--area", action="append", choices=sorted(AREAS), help="areas to mutate (default: all)")
    parser.add_argument("--file", action="append", default=[], help="only mutants of these source files")
    parser.add_argument("--line", type=int, action="append", default=[], help="only mutants of these line "
                        "numbers (with --file: check one mutant against new tests)")
    parser.add_argument("--sample", type=int, default=None, help="run a random sample of this many mutants")
    parser.add_argument("--per-area", type=int, help="a random sample of this many mutants from each area "
                        "(stratified: every area gets a kill rate of its own)")
    parser.add_argument("--slice", help="START:STOP of the chosen mutants (in file order), e.g. to run the "
                        "tail of a sample in a second process")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample (default 0)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds before a mutant's tests count as "
                        "killed by timeout (default 300)")
    parser.add_argument("--commit", default="HEAD", help="the commit to mutate (default HEAD)")
    parser.add_argument("--worktree", action="store_true", help="mutate the working files instead of a commit")
    parser.add_argument("--cpp", action="store_true", help="mutate csrc/ (each mutant rebuilds the extension in a "
                        "build folder of its copy; the installed one is never touched)")
    parser.add_argument("--build-python", default=sys.executable, help="with --cpp: the Python that cmake builds "
                        "against; it must import nanobind and match the tests' Python version (default: this one)")
    parser.add_argument("--tests", nargs="+", help="run these tests (paths or node ids) for every mutant instead "
                        "of TEST_MAP's (e.g. a quick subset when the mapped files are slow)")
    parser.add_argument("--list", action="store_true", help="print the mutants and exit")
    parser.add_argument("--json", type=Path, help="write a summary (commit, command, per-area counts) and every "
                        "mutant with its outcome to this file")
    parser.add_argument("--rerun", type=Path, help="run again the survivors (timeouts, listed equivalents) of an "
                        "earlier --json file, found by their line's text (e.g. with --worktree, to check that "
                        "new tests kill them)")
    parser.add_argument("--no-baseline", action="store_true", help="skip running the mapped tests unmutated "
                        "first (much faster on a busy machine); instead every test that killed a mutant is run "
                        "unmutated at the end, and a mutant whose killer fails there too counts as an error")
    parser.add_argument("--no-coverage", action="store_true", help="run every mapped test for each mutant "
                        "(default: only the tests that execute its line, found by one traced unmutated run)")
    parser.add_argument("--baseline-timeout", type=float, default=1800.0, help="seconds for the unmutated, "
                        "traced run of a mapped test set (default 1800)")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run at a time, each in its own copy")
    parser.add_argument("--equivalent", type=Path, default=EQUIVALENT_FILE, help="the list of known equivalent "
                        f"mutants (default {EQUIVALENT_FILE.relative_to(ROOT)})")
    return parser


def _chosen(tree: Path, areas: list[str], args: argparse.Namespace) -> list[Mutant]:
    mutants = collect(tree, areas, args.cpp)
    if args.file:
        mutants = [m for m in mutants if m.path in args.file]
    if args.line:
        mutants = [m for m in mutants if m.line in args.line]
    if args.per_area is not None:
        by_area: dict[str, list[Mutant]] = {}
        for m in mutants:
            by_area.setdefault(m.area, []).append(m)
        rng = random.Random(args.seed)
        mutants = [m for area in sorted(by_area) for m in rng.sample(by_area[area], min(args.per_area,
                                                                                         len(by_area[area])))]
    elif args.sample is not None and args.sample < len(mutants):
        mutants = random.Random(args.seed).sample(mutants, args.sample)
    mutants = sorted(mutants, key=lambda m: (m.path, m.line))
    if args.slice:
        start, _, stop = args.slice.partition(":")
        mutants = mutants[int(start or 0):int(stop) if stop else None]
    return mutants


def _describe(commit: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", commit], check=True,
                          capture_output=True, text=True).stdout.strip()


def _run_all(tree: Path, mutants: list[Mutant], builds: list[Path | None], timeout: float,
             known: list[dict[str, str]]) -> None:
    """Run ``mutants`` (not the stale ones), ``len(builds)`` at a time, each worker in its own copy of ``tree``."""
    todo = [m for m in mutants if m.status != "stale"]
    trees: queue.Queue[tuple[Path, Path | None]] = queue.Queue()
    for i, build in enumerate(builds):
        copy_ = tree if i == 0 else tree.with_name(f"tree{i}")
        if i:
            shutil.copytree(tree, copy_, symlinks=True)
        trees.put((copy_, build))
    done = [0]

    def one(m: Mutant) -> None:
        where, build = trees.get()
        try:
            run_mutant(where, m, timeout, build if m.path.startswith("csrc/") else None)
            reason = equivalence(m, known)
            if m.status == "survived" and reason:
                m.status, m.killer = "equivalent", reason
            elif reason:
                m.note = "listed as equivalent, but a test fails: check the list"
        finally:
            trees.put((where, build))
        done[0] += 1
        print(f"[{done[0]}/{len(todo)}] {m.status:<10} {m.seconds:5.1f}s {m.path}:{m.line} [{m.kind}] "
              f"{m.killer}{f'  ({m.note})' if m.note else ''}", flush=True)

    pool = ThreadPoolExecutor(len(builds))
    try:
        for future in [pool.submit(one, m) for m in todo]:
            future.result()
    except KeyboardInterrupt:  # Ctrl-C: report the mutants run so far (those still running are left out)
        print("interrupted", flush=True)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def verify_killers(tree: Path, killed: list[Mutant], timeout: float) -> None:
    """Without a baseline run, check afterwards that each killing test passes unmutated: run every distinct
    killer once on the unmutated copy; a mutant whose killer fails there too gets status ``error``."""
    killers = sorted({m.killer for m in killed if m.killer.startswith("tests/")})  # node ids or test files
    if not killers:
        return
    outcome, failed, seconds = _pytest(tree, killers, timeout, (), None)
    bad = set(failed) if outcome == "failed" else set(killers) if outcome != "passed" else set()
    print(f"killers verified unmutated: {len(killers)} tests, {outcome} in {seconds:.0f}s"
          f"{' (failing: ' + ' '.join(sorted(bad)) + ')' if bad else ''}", flush=True)
    for m in killed:
        if m.killer in bad or any(m.killer.startswith(b + "::") for b in bad):
            m.status, m.killer = "error", f"its killer {m.killer} fails (or did not run) unmutated too"


def load_equivalents(path: Path) -> list[dict[str, str]]:
    """The ``[[mutant]]`` entries (path, before, after, reason) of the equivalence list, if it exists."""
    if not path.exists():
        return []
    entries = tomllib.loads(path.read_text()).get("mutant", [])
    for entry in entries:
        missing = {"path", "before", "after", "reason"} - set(entry)
        if missing:
            raise SystemExit(f"mutate.py: {path}: an entry lacks {sorted(missing)}: {entry}")
    return entries


def _squash(code: str) -> str:
    return " ".join(code.split())


def equivalence(m: Mutant, known: list[dict[str, str]]) -> str:
    """The reason ``m`` is listed as equivalent, or ``""``."""
    for entry in known:
        if entry["path"] == m.path and _squash(entry["before"]) == _squash(m.before) and \
                _squash(entry["after"]) == _squash(m.after):
            return entry["reason"]
    return ""


def rerun_mutants(tree: Path, path: Path) -> list[Mutant]:
    """The survivors and equivalents saved in an earlier ``--json`` file, re-located in ``tree`` by their
    line's text (status ``stale`` where that line is gone or no longer unique near its old place)."""
    data = json.loads(path.read_text())
    saved = data["mutants"] if isinstance(data, dict) else data
    mutants = []
    for d in saved:
        if d["status"] not in ("survived", "timeout", "equivalent"):
            continue
        m = Mutant(d["path"], d["line"], d["kind"], d["before"], d["after"], d["area"])
        lines = (tree / m.path).read_text().splitlines() if (tree / m.path).exists() else []
        hits = [i + 1 for i, line in enumerate(lines) if line == m.before]
        if len(hits) > 1:
            hits = [min(hits, key=lambda i: abs(i - m.line))]
        if hits:
            m.line = hits[0]
        else:
            m.status, m.killer = "stale", "the mutated line is no longer in the file"
        mutants.append(m)
    return mutants


def _check_baseline(tree: Path, mutants: list[Mutant], timeout: float, jobs: int,
                    coverage: bool) -> set[tuple[str, ...]]:
    """Run each mapped test set unmutated (recording coverage); returns the sets with no usable run (a
    timeout: their mutants would all look killed). Tests that fail unmutated are left out of every run."""
    sets = sorted({tuple(tests_for(m.path, tree)) for m in mutants})
    with ThreadPoolExecutor(jobs) as pool:  # read-only runs: they can share the one copy
        runs = list(pool.map(lambda files: measure(tree, list(files), timeout, coverage), sets))
    COVERAGE.update(zip(sets, runs))
    return {files for files, run in zip(sets, runs) if run.outcome in ("timeout", "error")}


if __name__ == "__main__":
    sys.exit(main())
