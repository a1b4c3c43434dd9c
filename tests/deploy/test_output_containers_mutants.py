"""NaN in, NaN out for models whose forward returns a container (issue 21: ``_finite.py:116``, the dict branch
of ``mark_outputs`` called with its arguments swapped, survived the seed-47 sample).

A packed model whose forward returns a dict, a tuple or a list, run with ``nonfinite="propagate"`` on a batch
where one sample holds NaN, gives NaN rows for exactly that sample in every output of the container and
the finite run's values for the other samples; the container keeps its type and keys."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from onebit.deploy import export
from onebit.nn import BinaryLinear


class _Heads(nn.Module):
    """One binary trunk, two heads, returned as a dict, a tuple or a list."""

    def __init__(self, container: str) -> None:
        super().__init__()
        self.container = container
        self.trunk = BinaryLinear(6, 8, method="xnor")
        self.head_a = nn.Linear(8, 3)
        self.head_b = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor):
        h = self.trunk(x)
        a, b = self.head_a(h), self.head_b(h)
        if self.container == "dict":
            return {"a": a, "b": b}
        return (a, b) if self.container == "tuple" else [a, b]


@pytest.mark.parametrize("container", ["dict", "tuple", "list"])
def test_propagate_marks_every_output_of_a_container(container):
    torch.manual_seed(0)
    net = _Heads(container).eval()
    packed = export(net)
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(1))
    clean = packed(x)
    packed.nonfinite = "propagate"
    bad = x.clone()
    bad[1, 2] = float("nan")
    got = packed(bad)
    assert type(got) is type(clean)
    pairs = [(got[k], clean[k]) for k in ("a", "b")] if container == "dict" else list(zip(got, clean))
    if container == "dict":
        assert sorted(got) == ["a", "b"]
    for out, ref in pairs:
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == ref.shape
        assert torch.isnan(out[1]).all()
        assert torch.equal(out[[0, 2]], ref[[0, 2]])


@pytest.mark.parametrize("shape", [(3, 24), (3, 4, 6), (3, 2, 3, 4), (3, 1, 2, 3, 4)])
def test_inputs_of_every_rank_run_as_in_torch(shape):
    """Only 4-D (image) inputs are made channels_last before the plan runs: a 2-, 3- or 5-D input, which
    has no channels_last layout, reaches the network as it is (``export.py:61``, ``dim() == 5`` for ``== 4``
    survived the focused run of every export.py mutant)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), BinaryLinear(24, 8, method="xnor"), nn.Linear(8, 3)).eval()
    packed = export(net)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = net(x)
    got = packed(x)
    assert got.shape == want.shape == (3, 3)
    assert torch.allclose(got, want, atol=1e-5)


def _linear_net(features: int = 6) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(BinaryLinear(features, 8, method="xnor"), nn.Linear(8, 3)).eval()


def test_a_one_value_input_is_checked_too():
    """A batch of one sample with one feature (one element in all) still goes through the exact check."""
    from onebit.deploy import NonFiniteInputError

    packed = export(_linear_net(1))
    with pytest.raises(NonFiniteInputError, match="1 NaN/inf value in sample 0"):
        packed(torch.tensor([[float("nan")]]))
    packed.nonfinite = "propagate"
    assert torch.isnan(packed(torch.tensor([[float("inf")]]))).all()
    assert torch.isfinite(packed(torch.tensor([[0.5]]))).all()


@pytest.mark.parametrize("rows,shown", [
    (range(8), "8 NaN/inf values in samples 0, 1, 2, 3, 4, 5, 6, 7; "),
    (range(9), "9 NaN/inf values in samples 0, 1, 2, 3, 4, 5, 6, 7, ... (9 samples); "),
    ([4], "1 NaN/inf value in sample 4; "),
])
def test_the_error_lists_at_most_eight_samples(rows, shown):
    from onebit.deploy import NonFiniteInputError

    packed = export(_linear_net())
    x = torch.randn(12, 6, generator=torch.Generator().manual_seed(3))
    for r in rows:
        x[r, r % 6] = float("nan")
    with pytest.raises(NonFiniteInputError) as info:
        packed(x)
    assert f"packed model: the input holds {shown}" in str(info.value)


class _BatchMixing(nn.Module):
    """A network whose every output row reads the whole batch (a batch mean): the value a bad input is
    replaced by reaches the good samples' outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(6, 6)
        self.binary = BinaryLinear(6, 4, method="xnor")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        return self.binary(h) + h.mean(0, keepdim=True)[:, :4]


def test_bad_values_are_replaced_by_zero_before_the_network_runs():
    """Under ``propagate`` the bad samples' NaN/inf values are replaced by 0 (documented in _finite.py):
    the good samples' outputs are those of the network on that zeroed batch."""
    torch.manual_seed(0)
    net = _BatchMixing().eval()
    packed = export(net)
    packed.nonfinite = "propagate"
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(4))
    x[1, 2], x[3, 0], x[3, 5] = float("nan"), float("inf"), -float("inf")
    got = packed(x)
    assert torch.isnan(got[[1, 3]]).all()
    zeroed = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    with torch.no_grad():
        want = net(zeroed)
    torch.testing.assert_close(got[[0, 2]], want[[0, 2]], rtol=1e-5, atol=1e-5)
    ones = torch.nan_to_num(x, nan=1.0, posinf=1.0, neginf=1.0)
    with torch.no_grad():
        assert not torch.allclose(net(ones)[[0, 2]], want[[0, 2]], atol=1e-3)  # the check can tell them apart



@pytest.mark.parametrize("kind", ["torch", "numpy"])
def test_the_policy_on_scalars_arrays_and_outputs_that_are_not_per_sample(kind):
    """``guard_inputs``/``mark_outputs``, the one policy every runtime (packed, ONNX, LCE) calls, on a
    0-d input, a numpy batch, and outputs whose first dimension is not the batch (NaN as a whole)."""
    import numpy as np

    from onebit.deploy._finite import NonFiniteInputError, guard_inputs, mark_outputs

    def make(v):
        return torch.tensor(v, dtype=torch.float32) if kind == "torch" else np.asarray(v, dtype=np.float32)

    scalar = make(float("nan"))
    with pytest.raises(NonFiniteInputError, match="1 NaN/inf value in sample 0"):
        guard_inputs((scalar,), "raise", "x")
    (cleaned,), bad = guard_inputs((scalar,), "propagate", "x")
    assert float(cleaned) == 0.0 and bad.tolist() == [True]
    batch = make([[1.0, 2.0], [float("inf"), 0.0], [3.0, -float("inf")]])
    with pytest.raises(NonFiniteInputError, match="2 NaN/inf values in samples 1, 2;"):
        guard_inputs((batch, make([0.5, 0.5, 0.5])), "raise", "x")
    (cleaned, other), bad = guard_inputs((batch, make([0.5, 0.5, 0.5])), "propagate", "x")
    assert bad.tolist() == [False, True, True] and other.tolist() == [0.5, 0.5, 0.5]
    assert cleaned.tolist() == [[1.0, 2.0], [0.0, 0.0], [3.0, 0.0]]
    per_sample, pooled, zero_d = make([[1.0], [2.0], [3.0]]), make([5.0, 6.0]), make(7.0)
    marked = mark_outputs([per_sample, pooled, zero_d, make([1, 2, 3]).astype(np.int64) if kind == "numpy"
                           else torch.tensor([1, 2, 3])], bad)
    assert marked[0][0].tolist() == [1.0] and np.isnan(np.asarray(marked[0][1:])).all()
    assert np.isnan(np.asarray(marked[1])).all() and np.isnan(float(marked[2]))
    assert marked[3].tolist() == [1, 2, 3]  # integer outputs cannot hold NaN: left as they are
    assert per_sample.tolist() == [[1.0], [2.0], [3.0]]  # the caller's outputs are not modified
    args = (batch, None, 2.5, "mode", np.arange(3))  # arguments that are not float arrays pass unchecked
    (_, *rest), bad = guard_inputs(args, "propagate", "x")
    assert rest[:3] == [None, 2.5, "mode"] and rest[3].tolist() == [0, 1, 2] and bad.tolist() == [False, True, True]
