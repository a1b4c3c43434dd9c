"""The inference form's padding value (single-file mutation sample ``--seed 4008``, not an honest sample: the
real-activation case's ``else 0.0`` turned ``1.0`` survived): a binary input is padded with the layer's
``pad_value``; real activations are zero-padded by the layer whatever ``pad_value`` says, so the form
handed to the exporters says 0 for them."""

from __future__ import annotations

import pytest

from onebit.nn import BinaryConv2d


@pytest.mark.parametrize("method", ["bnn", "xnor"])
@pytest.mark.parametrize("pad_value", [0.0, -1.0, 1.0])
def test_the_inference_form_pads_real_activations_with_zeros(method, pad_value):
    real = BinaryConv2d(2, 3, 3, padding=1, method=method, binarize_activations=False, pad_value=pad_value)
    form = real.inference_form()
    assert not form.binary_input and form.pad_value == 0.0
    binary = BinaryConv2d(2, 3, 3, padding=1, method=method, pad_value=pad_value)
    form = binary.inference_form()
    assert form.binary_input and form.pad_value == pad_value
