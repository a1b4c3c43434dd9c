"""The input guard of the deployed runtimes (``deploy/_finite.py``; issue 21: single-file sample 9208,
hunting, not an honest sample, on a fast subset of the mapped tests): every input is checked, not only
the first finite one (mutant: ``all`` → ``any``), a complex input is refused by its index (mutant: the
arguments of ``refuse_complex`` swapped), the error lists up to eight sample indices in full (mutant:
seven), and outputs in a dict are mapped leaf by leaf (mutant: ``map_outputs``' arguments swapped)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from onebit.deploy._finite import InputTypeError, NonFiniteInputError, guard_inputs, map_outputs


def test_a_nan_in_the_second_input_alone_is_found():
    good, bad = torch.zeros(3, 4), torch.zeros(3, 4)
    bad[1, 2] = float("nan")
    with pytest.raises(NonFiniteInputError, match=r"1 NaN/inf value in sample 1;"):
        guard_inputs((good, bad), "raise", "model")
    cleaned, rows = guard_inputs((good, bad.numpy()), "propagate", "model")
    assert rows.tolist() == [False, True, False]
    assert cleaned[0] is good and np.isfinite(cleaned[1]).all()


def test_a_complex_input_is_refused_by_its_index():
    with pytest.raises(InputTypeError, match=r"^model: input 1 is complex"):
        guard_inputs((torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.complex64)), "raise", "model")


@pytest.mark.parametrize("rows", [8, 9])
def test_the_error_lists_up_to_eight_samples(rows):
    x = torch.full((12, 2), float("inf"))
    x[rows:] = 0.0
    listed = ", ".join(str(i) for i in range(8))
    suffix = f", ... ({rows} samples)" if rows > 8 else ";"
    with pytest.raises(NonFiniteInputError) as info:
        guard_inputs((x,), "raise", "model")
    assert f"{2 * rows} NaN/inf values in samples {listed}{suffix}" in str(info.value)


def test_outputs_in_a_dict_are_mapped_leaf_by_leaf():
    out = map_outputs({"a": torch.ones(2), "b": [np.zeros(2), (torch.ones(1),)]}, lambda t: t * 3)
    assert torch.equal(out["a"], torch.full((2,), 3.0)) and np.array_equal(out["b"][0], np.zeros(2))
    assert isinstance(out["b"], list) and isinstance(out["b"][1], tuple)
    assert torch.equal(out["b"][1][0], torch.full((1,), 3.0))
