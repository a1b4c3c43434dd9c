"""Input dtypes at the deployed runtimes: a complex input is refused with one clear error everywhere
(numpy's float32 conversion in LCE's ``predict`` used to drop the imaginary part with only a warning and
answer for another input; torch and onnxruntime failed deep inside), and the packed engine takes
float16/float64 as ``run_onnx`` and LCE do, by converting to float32."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_nonfinite import lce_runner, onnx_runner

from onebit import OnebitError, models
from onebit.deploy import InputTypeError, export


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return models.create("mlp", num_classes=10, method="bnn", in_channels=1, input_shape=(1, 8, 8),
                         hidden=[32, 32]).eval()


def images() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(3, 1, 8, 8)


def test_packed_model_refuses_complex_input_in_one_line():
    expected = r"packed model: input 0 is complex \(torch.complex64\).*real part"
    with pytest.raises(InputTypeError, match=expected) as info:
        export(mlp())(images().to(torch.complex64))
    assert isinstance(info.value, OnebitError) and isinstance(info.value, TypeError)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64, torch.bfloat16])
def test_packed_model_converts_other_floats_to_float32(dtype):
    packed, x = export(mlp()), images().to(dtype)
    expected = packed(x.float())
    out = packed(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


@pytest.mark.parametrize("runtime", ["onnx", "lce"])
def test_onnx_and_lce_refuse_complex_input(tmp_path, runtime):
    net, x = mlp(), images()
    run, _ = lce_runner(tmp_path, net, x) if runtime == "lce" else onnx_runner(tmp_path, net, x, "float")
    with pytest.raises(InputTypeError, match=r"input 0 is complex"):
        run(x.to(torch.complex64))
    assert np.isfinite(run(x)).all()  # the same runner takes the real input
