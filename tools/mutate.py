"""Mutation testing of the modules that hold respawn's guarantees (`make mutate`).

Two steps, the fast one first (docs/TESTING.md explains both):

1. The named mutations. Each documented guarantee is broken on purpose, one at a time, in a
   temporary copy of the project (never in the working tree), and the test named for that
   guarantee must fail. The six tests must pass on the unbroken copy first.
2. mutmut over the functions that hold the guarantees (`[tool.mutmut]` in pyproject.toml
   names the files and the test folders; PATTERNS below the functions), on SQLite. Then a
   summary per module, and every survivor (or mutant no test covers) that docs/TESTING.md
   does not explain is listed. The run fails on a named mutation that no test caught or on
   an unexplained survivor.

Usage: python tools/mutate.py [--named-only | --no-named] [--reuse | --survivors] [--postgres]
(--survivors keeps the previous verdicts and runs again only the mutants that were not killed:
after new tests, a mutant killed before stays killed.)
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "TESTING.md"
POSTGRES_VARS = ("RESPAWN_TEST_POSTGRES_URL", "RESPAWN_REQUIRE_POSTGRES")
COPIED = ("app", "tests", "migrations", "docs", "policy.yaml", "pyproject.toml")
GUARANTEES = "tests/core/test_guarantees.py"


@dataclass(frozen=True)
class Named:
    """A deliberate bug: `old` (exactly once in `path`) becomes `new`; `test` must fail."""

    what: str
    path: str
    old: str
    new: str
    test: str


NAMED = (
    Named(
        "runs.set_status: the run-level rank guard forced true",
        "app/core/runs.py",
        "    if rank > status_rank(run.status):\n",
        "    if True:\n",
        "tests/core/test_ingest.py::test_a_single_run_never_goes_back",
    ),
    Named(
        "stats.counted_restarts: manual restarts counted against budgets",
        "app/core/stats.py",
        "        Restart.counts_against_budget.is_(True),\n",
        "",
        f"{GUARANTEES}::test_manual_restarts_do_not_use_up_budgets",
    ),
    Named(
        "stats.counted_restarts: cancelled restarts counted against budgets",
        "app/core/stats.py",
        "        Restart.state.in_(BUDGET_RESTART_STATES),\n",
        "",
        f"{GUARANTEES}::test_cancelled_restarts_do_not_use_up_budgets",
    ),
    Named(
        "outbox.record_result: the lease check never refuses",
        "app/core/outbox.py",
        "    if restart.state != RestartState.IN_FLIGHT or restart.lease_owner != worker:\n",
        "    if False:\n",
        f"{GUARANTEES}::test_an_answer_is_recorded_only_while_the_lease_is_held",
    ),
    Named(
        "deliveries.document_deliveries: fetched documents stored unredacted",
        "app/core/deliveries.py",
        "Delivery(document, redact(payload), delivery_key(document, payload), None)",
        "Delivery(document, payload, delivery_key(document, payload), None)",
        f"{GUARANTEES}::test_documents_respawn_fetches_are_redacted_before_storage",
    ),
    Named(
        "runs.set_status: any other run wins, an older one too",
        "app/core/runs.py",
        "    if run_index > execution.run_index or (\n",
        "    if run_index != execution.run_index or (\n",
        f"{GUARANTEES}::test_a_late_document_never_moves_an_execution_back_to_an_older_run",
    ),
)

# The functions mutated, as mutmut names their mutants (module.x_function__mutmut_N, and
# module.xǁClassǁmethod__mutmut_N). stats.py: only what the decisions read; views.py: only
# the access checks. docs/TESTING.md says why.
PATTERNS = (
    "app.core.ingest.*",
    "app.core.inbox.*",
    "app.core.runs.*",
    "app.core.deliveries.*",
    "app.core.decisions.*",
    "app.core.outbox.*",
    "app.core.lifecycle.*",
    "app.core.history.*",
    *(
        f"app.core.stats.x_{name}__mutmut_*"
        for name in (
            "as_utc",
            "counted_restarts",
            "budget_count",
            "budget_usage",
            "restart_outcomes",
            "pauses_for",
            "pause_reason",
        )
    ),
    "app.redact.*",
    "app.policy.gates.*",
    "app.policy.timing.*",
    "app.policy.matching.*",
    "app.web.admin.auth.*",
    "app.web.admin.views.x__guard__mutmut_*",
    "app.web.admin.views.x__require_operator__mutmut_*",
    "app.web.admin.views.x_safe_next__mutmut_*",
)
MUTANT = re.compile(r"^(?P<module>[\w.]+)\.x[_ǁ](?P<function>[\wǁ]+?)__mutmut_\d+$")
EXPLAINED = re.compile(r"`(app\.[\w.ǁ]+__mutmut_\d+)`")
COLUMNS = ("killed", "survived", "no tests", "timeout")


def run_quietly(args: list[str], cwd: Path, env: dict[str, str], log: Path) -> int:
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(args)}\n")
        out.flush()
        return subprocess.run(
            args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
        ).returncode


def copy_project(into: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis")
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, into / name, ignore=ignore)
        else:
            shutil.copy2(source, into / name)


def named_mutations(log: Path) -> bool:
    """Apply each named mutation to a temporary copy; True when every one was caught."""
    print("Named mutations (each must make its guarantee's test fail)")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    pytest = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-x"]
    with tempfile.TemporaryDirectory(prefix="respawn-named-") as tmp:
        work = Path(tmp)
        copy_project(work)
        where = subprocess.run(
            [sys.executable, "-c", "import app; print(app.__file__)"],
            cwd=work, env=env, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        if not Path(where).resolve().is_relative_to(work.resolve()):
            raise SystemExit(f"the copy is not what runs: app is imported from {where}")
        tests = sorted({m.test for m in NAMED})
        if run_quietly([*pytest, *tests], work, env, log) != 0:
            print(f"  the named tests do not pass on the unbroken source (see {log})")
            return False
        caught = True
        for mutation in NAMED:
            path = work / mutation.path
            original = path.read_text()
            found = original.count(mutation.old)
            if found != 1:
                raise SystemExit(
                    f"{mutation.path}: expected the line to break exactly once, found it "
                    f"{found} times; update tools/mutate.py:\n{mutation.old!r}"
                )
            path.write_text(original.replace(mutation.old, mutation.new))
            try:
                code = run_quietly([*pytest, mutation.test], work, env, log)
            finally:
                path.write_text(original)
            # 1: tests failed. Anything else (an import error, no test collected) proves nothing.
            verdict = "caught" if code == 1 else f"NOT CAUGHT (pytest exit {code})"
            caught &= code == 1
            print(f"  {verdict:8}  {mutation.what}\n            by {mutation.test}")
    return caught


def mutmut_bin() -> str:
    return str(Path(sys.executable).parent / "mutmut")


def run_mutmut(reuse: bool, postgres: bool, log: Path, names: list[str] | None = None) -> None:
    if not reuse:
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    env = dict(os.environ)
    if not postgres:
        for name in POSTGRES_VARS:
            env.pop(name, None)
    where = "SQLite and PostgreSQL" if postgres else "SQLite"
    print(f"mutmut over the guarantee functions, on {where} (progress in {log})")
    started = time.monotonic()
    if names is not None:
        print(f"  again: the {len(names)} mutants not killed last time")
    code = run_quietly(
        [mutmut_bin(), "run", *(PATTERNS if names is None else names)], ROOT, env, log
    )
    print(f"  finished in {(time.monotonic() - started) / 60:.1f} min")
    if code != 0:
        raise SystemExit(f"mutmut run failed (exit {code}); see {log}")


def mutant_results() -> dict[str, str]:
    out = subprocess.run(
        [mutmut_bin(), "results", "--all", "true"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    results = {}
    for line in out.splitlines():
        name, _, status = line.strip().partition(": ")
        if status and any(fnmatch.fnmatchcase(name, p) for p in PATTERNS):
            results[name] = status
    return results


def summarise(results: dict[str, str]) -> bool:
    """Print the table and the unexplained survivors; True when there are none."""
    by_module: dict[str, Counter[str]] = defaultdict(Counter)
    for name, status in results.items():
        match = MUTANT.match(name)
        by_module[match["module"] if match else "?"][status] += 1
    header = f"{'module':24} {'mutants':>7} " + " ".join(f"{c:>8}" for c in COLUMNS)
    print(f"\n{header} {'other':>6}\n{'-' * len(header)} ------")
    total: Counter[str] = Counter()
    for module in sorted(by_module):
        counts = by_module[module]
        total.update(counts)
        other = sum(counts.values()) - sum(counts[c] for c in COLUMNS)
        row = " ".join(f"{counts[c]:>8}" for c in COLUMNS)
        print(f"{module:24} {sum(counts.values()):>7} {row} {other:>6}")
    other = sum(total.values()) - sum(total[c] for c in COLUMNS)
    row = " ".join(f"{total[c]:>8}" for c in COLUMNS)
    print(f"{'all':24} {sum(total.values()):>7} {row} {other:>6}")

    explained = set(EXPLAINED.findall(DOC.read_text())) if DOC.exists() else set()
    open_ = sorted(n for n, s in results.items() if s not in ("killed", "timeout"))
    unexplained = [n for n in open_ if n not in explained]
    print(f"\n{len(open_) - len(unexplained)} survivors explained in docs/TESTING.md")
    if unexplained:
        print(f"{len(unexplained)} NOT explained (mutmut show NAME):")
        for name in unexplained:
            print(f"  {name}: {results[name]}")
    return not unexplained


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--named-only", action="store_true", help="only the named mutations")
    which.add_argument("--no-named", action="store_true", help="skip the named mutations")
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--reuse", action="store_true", help="keep mutants/ (and rerun them all)")
    again.add_argument(
        "--survivors", action="store_true", help="keep the verdicts; rerun only the survivors"
    )
    parser.add_argument("--postgres", action="store_true", help="mutmut on PostgreSQL too")
    args = parser.parse_args(argv)

    os.chdir(ROOT)
    log = Path(tempfile.gettempdir()) / "respawn-mutate.log"
    log.write_text("")
    ok = True
    if not args.no_named:
        ok &= named_mutations(log)
    if not args.named_only:
        names = None
        if args.survivors:
            names = [n for n, s in mutant_results().items() if s not in ("killed", "timeout")]
        if names != []:
            run_mutmut(args.reuse or args.survivors, args.postgres, log, names)
        ok &= summarise(mutant_results())
    print("\nmutation testing:", "passed" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
