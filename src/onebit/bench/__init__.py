"""Benchmarking: complexity summaries of binarized models (BiBench's theoretical-complexity track)."""

from .summary import LayerSummary, Summary, summary

__all__ = ["LayerSummary", "Summary", "summary"]
