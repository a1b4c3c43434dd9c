"""Benchmarking: BiBench's tracks on onebit's own runner (``onebit bench``), a results database, the
leaderboard and report (``onebit report``), and complexity summaries of binarized models."""

from .db import ResultsDB, RunRecord
from .report import write_report
from .runner import run_suite
from .scores import Leaderboard, MissingBaselineError, leaderboard, print_leaderboard
from .suite import Suite, SuiteError, builtin_suites, load_suite
from .summary import LayerSummary, Summary, summary

__all__ = ["LayerSummary", "Leaderboard", "MissingBaselineError", "ResultsDB", "RunRecord", "Suite", "SuiteError",
           "Summary", "builtin_suites", "leaderboard", "load_suite", "print_leaderboard", "run_suite", "summary",
           "write_report"]
