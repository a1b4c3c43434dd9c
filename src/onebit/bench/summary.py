"""Moved to :mod:`onebit.nn.summary` (it needs only methods and nn); kept here for older imports."""

from ..nn.summary import LayerSummary, Summary, summary

__all__ = ["summary", "Summary", "LayerSummary"]
