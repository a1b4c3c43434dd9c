"""The int8 codes that fused quantizers keep for backward are allocated by torch, so torch's profiler
(and benchmarks/train_step.py's peak-memory column) counts them: a numpy-allocated code was invisible
to it and made the clip-STE and identity-STE rows look 12 % lighter than they are."""

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from onebit.methods import functional


def _profiled_bytes(make) -> tuple[int, torch.Tensor]:
    """Bytes allocated (never freed within) while ``make()`` ran, as torch's profiler saw them."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = make()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    return sum(e.nbytes() for e in events), out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("pack", [lambda x: functional.IdentitySTE.pack(x), lambda x: functional.ClipSTE.pack(x, None)],
                         ids=["identity", "clip"])
def test_code_is_counted_by_the_profiler(pack, dtype):
    x = torch.randn(64, 1000, dtype=dtype) * 2
    allocated, code = _profiled_bytes(lambda: pack(x))
    assert code.dtype == torch.int8 and code.shape == x.shape
    assert allocated >= code.numel()  # the code itself is torch's allocation, alive at the end


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_codes_hold_the_sign_and_the_clip_mask(dtype):
    x = torch.tensor([[-2.0, -1.0, -0.5, -0.0], [0.0, 0.5, 1.0, 1.5]], dtype=dtype)
    assert functional.IdentitySTE.pack(x).tolist() == [[-1, -1, -1, 1], [1, 1, 1, 1]]
    assert functional.ClipSTE.pack(x, None).tolist() == [[-2, -1, -1, 1], [1, 1, 1, 2]]
    strided = x.t()  # a non-contiguous input gives the code of its own layout
    assert functional.IdentitySTE.pack(strided).tolist() == [[-1, 1], [-1, 1], [-1, 1], [1, 1]]
