"""An ONNX export that torch.onnx cannot write fails with one ExportError naming the model and the first line
of torch's error, cut to 400 characters (issue 21: single-file mutation sample 8004 of ``onnx_export.py``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from onebit.deploy import ExportError
from onebit.deploy.onnx_export import to_onnx


@pytest.mark.parametrize("first_line", ["y" * 1000, "short cause"])
def test_a_failed_torch_export_names_the_first_line_of_its_error(monkeypatch, tmp_path, first_line):
    def failing_export(*args, **kwargs):
        raise RuntimeError(f"  {first_line}\nsecond line  ")

    monkeypatch.setattr(torch.onnx, "export", failing_export)
    with pytest.raises(ExportError) as caught:
        to_onnx(nn.Sequential(nn.Linear(3, 2)), torch.randn(1, 3), tmp_path / "net.onnx")
    message = str(caught.value)
    assert "torch.onnx could not export" in message
    assert f"(RuntimeError: {first_line[:400]}); a layer or function" in message
    assert "second line" not in message and "y" * 401 not in message
    assert not (tmp_path / "net.onnx").exists()
