"""The TFLite flatbuffer writer (``onebit.deploy._tflite_builder``) on the schema values the exporter
writes by name, each read back by the real TFLite/LCE interpreter (issue 21: the seed-59 mutation
sample changed ``ACTIVATION["RELU6"]`` from 3 to 2, RELU_N1_TO_1's code, and no test noticed).

One-operator models built with :class:`ModelBuilder` itself: a fused activation written by its name
must run as that activation, and a padding written by its name must give that padding's output
size, whatever the interpreter's own enum values are."""

from __future__ import annotations

import numpy as np
import pytest

from onebit.deploy import lce

pytestmark = pytest.mark.skipif(not lce.LCE_PLATFORM,
                                reason="larq-compute-engine ships its interpreter for x86-64 Linux only")

# What each fused activation of the TFLite schema computes (tensorflow/lite/kernels/internal/common.h)
ACTIVATIONS = {
    "NONE": lambda x: x,
    "RELU": lambda x: np.maximum(x, 0.0),
    "RELU_N1_TO_1": lambda x: np.clip(x, -1.0, 1.0),
    "RELU6": lambda x: np.clip(x, 0.0, 6.0),
}


def _run_one_op(build) -> np.ndarray:
    """The output of a one-operator model: ``build(builder)`` adds the operator and returns its input."""
    from onebit.deploy._tflite_builder import ModelBuilder

    b = ModelBuilder()
    x = build(b)
    return lce.interpreter(b.serialize()).predict(x)[0]


def test_every_named_activation_is_the_one_the_interpreter_runs():
    from onebit.deploy._tflite_builder import ACTIVATION

    assert set(ACTIVATION) == set(ACTIVATIONS)
    x = np.linspace(-8.0, 8.0, 33, dtype=np.float32).reshape(1, 33)  # crosses -1, 0, 1 and 6

    for name, code in ACTIVATION.items():
        def build(b, code=code):
            inp, out = b.tensor(x.shape), b.tensor(x.shape)
            b.op("ADD", [inp, b.const(np.zeros(x.shape, np.float32))], [out], "AddOptions",
                 fused_activation_function=code)
            b.inputs, b.outputs = [inp], [out]
            return x

        got = _run_one_op(build)
        np.testing.assert_array_equal(got, ACTIVATIONS[name](x), err_msg=f"fused activation {name}")


@pytest.mark.parametrize("name,size", [("SAME", 2), ("VALID", 1)])
def test_every_named_padding_is_the_one_the_interpreter_runs(name, size):
    """A 2x2 max pool, stride 2, on a 3x3 image: SAME pads to 2x2 outputs, VALID keeps 1x1."""
    from onebit.deploy._tflite_builder import PADDING

    x = np.arange(9, dtype=np.float32).reshape(1, 3, 3, 1)

    def build(b):
        inp, out = b.tensor(x.shape), b.tensor((1, size, size, 1))
        b.op("MAX_POOL_2D", [inp], [out], "Pool2DOptions", padding=PADDING[name], stride_w=2, stride_h=2,
             filter_width=2, filter_height=2)
        b.inputs, b.outputs = [inp], [out]
        return x

    got = _run_one_op(build)
    want = np.array([[4.0, 5.0], [7.0, 8.0]], np.float32)[:size, :size]
    np.testing.assert_array_equal(got.reshape(size, size), want)


@pytest.mark.parametrize("new_shape", [(1, 6), (6,), (1, 1, 2, 3, 1)])
def test_a_vector_option_keeps_its_length(new_shape):
    """A RESHAPE whose target shape is its options' ``new_shape`` vector (no shape tensor): a vector of
    any length other than 4 must reach the interpreter with that length (seed-71 mutation sample:
    ``StartVector(len(value), 4, 4)`` wrote every option vector as 4 long)."""
    x = np.arange(6, dtype=np.float32).reshape(1, 2, 3)

    def build(b):
        inp, out = b.tensor(x.shape), b.tensor(new_shape)
        b.op("RESHAPE", [inp], [out], "ReshapeOptions", new_shape=list(new_shape))
        b.inputs, b.outputs = [inp], [out]
        return x

    got = _run_one_op(build)
    assert got.shape == new_shape
    np.testing.assert_array_equal(got.reshape(-1), x.reshape(-1))
