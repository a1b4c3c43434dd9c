"""The live progress bar (seed-71 mutation sample, issue 21: ``leave=False`` -> ``True`` left every
epoch's finished bar on the terminal and no test noticed, because tests never run on a terminal)."""

from __future__ import annotations

import io
import sys

from onebit.train.trainer import _Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _finished_bar(monkeypatch) -> str:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    bar = _Progress(enabled=True).bar(total=3, desc="stage 1 epoch 1")
    for _ in range(3):
        bar.update(1)
    bar.close()
    return terminal.getvalue()


def test_a_finished_epoch_bar_is_cleared_from_the_terminal(monkeypatch):
    shown = _finished_bar(monkeypatch)
    assert "stage 1 epoch 1" in shown  # it was drawn on the terminal
    assert not shown.endswith("\n")  # and erased at the end (carriage return), not left on its own line
    assert shown.endswith("\r")


def test_without_a_terminal_no_bar_is_drawn(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    bar = _Progress(enabled=True).bar(total=3, desc="stage 1 epoch 1")
    bar.update(3)
    bar.close()
    assert sys.stderr.getvalue() == ""
