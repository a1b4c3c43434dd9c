"""HBNN's default mix over bitwidths beyond the paper's 1, 2 and 3 (seed-61 mutation survivor of
tools/mutate.py, issue 21: ``PAPER_MIX.get(b, 0.0)`` → ``1.0``): the paper's 1.4-bit setting puts 70/20/10 %
of the weights at 1/2/3 bits and none at any other allowed bitwidth."""

from __future__ import annotations

import pytest
import torch

from onebit.methods import get
from onebit.methods.hbnn import average_bits, paper_mix
from onebit.nn import BinaryLinear


def test_the_paper_mix_gives_other_bitwidths_nothing():
    assert paper_mix((1, 2, 3)) == (0.7, 0.2, 0.1)
    assert paper_mix((1, 2, 3, 4)) == (0.7, 0.2, 0.1, 0.0)
    assert paper_mix((1, 2, 3, 5, 8)) == (0.7, 0.2, 0.1, 0.0, 0.0)
    method = get("hbnn", bits=(1, 2, 3, 4))
    assert method.target_mix == (0.7, 0.2, 0.1, 0.0)
    assert method.target_average == pytest.approx(1.4)


def test_a_layer_with_a_fourth_bitwidth_uses_the_papers_mix():
    torch.manual_seed(0)
    layer = BinaryLinear(100, 10, method="hbnn", bits=(1, 2, 3, 4))
    assert average_bits(layer) == pytest.approx(1.4)  # 700 / 200 / 100 of the 1000 weights, none at 4 bits


def _hbnn_flags_with(monkeypatch, engine) -> tuple[bool, bool]:
    """(_HBNN_KERNEL, _KERNEL_MAX_ABS) of a fresh copy of hbnn.py imported against ``engine`` as
    functional's engine (registering nothing: the real hbnn stays the registered one)."""
    import importlib.util
    import sys

    import onebit.methods.base as base
    import onebit.methods.functional as functional
    import onebit.methods.hbnn as real

    monkeypatch.setattr(functional, "_engine", engine)
    monkeypatch.setattr(base, "register", lambda cls: cls)
    spec = importlib.util.spec_from_file_location("onebit.methods._hbnn_probe", real.__file__)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # (dataclasses look their module up)
    spec.loader.exec_module(module)
    return module._HBNN_KERNEL, module._KERNEL_MAX_ABS


def _kernel(doc: str | None):
    def hbnn_binarize(*args):
        raise AssertionError("not called at import")

    hbnn_binarize.__doc__ = doc
    return hbnn_binarize


@pytest.mark.parametrize(("engine", "flags"), [
    (None, (False, False)),  # a source tree without the engine
    ("no kernel", (False, False)),  # an engine built before the HBNN kernel
    ("no doc", (True, False)),
    ("hbnn_binarize(mode, x_addr, ...)", (True, False)),  # built before the kernel reported max |x|
    ("hbnn_binarize(mode, ..., max_abs_addr)", (True, True)),
])
def test_the_native_paths_follow_the_engines_hbnn_kernel(monkeypatch, engine, flags):
    """The kernel is used only where the engine has it, and its max |x| (the clip STE's skipped pass)
    only where the kernel's signature names max_abs_addr; an engine without the kernel imports cleanly."""
    from types import SimpleNamespace

    if engine is not None:
        doc = None if engine == "no doc" else engine
        engine = SimpleNamespace() if engine == "no kernel" else SimpleNamespace(hbnn_binarize=_kernel(doc))
    assert _hbnn_flags_with(monkeypatch, engine) == flags
