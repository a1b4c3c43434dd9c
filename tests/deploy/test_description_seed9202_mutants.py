"""The layer description's bit unpacking and its per-channel output scale (issue 21: single-file sample 9202
of ``deploy/description.py``, hunting, not an honest sample): ``unpack_bits`` refuses bytes of another type
or count with its one ValueError (mutant: only when both were wrong), and a per-channel output scale (ReCU's
mean |W| per output channel, a ``(C,)`` vector) is not a spatial one (mutant: ``dim() >= 1``), so the packed
engine fuses it into its epilogue (and can hand bits on) and the LCE file folds it into the bconv."""

from __future__ import annotations

import pytest
import torch
from deploy_probe import finish_training, randomize_norms
from torch import nn

import onebit
from onebit.deploy import export, lce
from onebit.deploy.description import describe, pack_bits, unpack_bits
from onebit.deploy.packed import PackedBinary
from onebit.nn import BinaryConv2d


def test_unpack_bits_refuses_another_byte_type_or_count():
    signs = torch.tensor([1.0, -1.0, -1.0, 1.0, 1.0, 1.0, -1.0, 1.0, -1.0])  # 9 bits: two bytes
    data = pack_bits(signs)
    assert torch.equal(unpack_bits(data, (3, 3)), signs.reshape(3, 3))
    with pytest.raises(ValueError, match="does not hold 9 elements"):
        unpack_bits(data.to(torch.int8), (3, 3))  # the right count, not bytes
    with pytest.raises(ValueError, match="does not hold 9 elements"):
        unpack_bits(data[:1], (3, 3))  # bytes, one short
    with pytest.raises(ValueError, match="does not hold 9 elements"):
        unpack_bits(torch.cat([data, data]), (3, 3))  # bytes, two too many


def _recu_net() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Hardtanh(),
                          nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Hardtanh(),
                          nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Hardtanh(),
                          nn.Flatten(), nn.Linear(8 * 8 * 8, 5))
    onebit.binarize(model, "recu")
    finish_training(model, "recu")
    randomize_norms(model)
    return model.eval()


def test_a_per_channel_output_scale_is_not_spatial():
    layer = BinaryConv2d(4, 6, 3, 1, 1, method="recu").eval()
    d = describe(layer)
    assert d.output_scale is not None and tuple(d.output_scale.shape) == (6,)
    assert not d.spatial_output_scale


def test_a_recu_layer_fuses_its_scale_on_the_engine_and_in_the_lce_file():
    model = _recu_net()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    packed = export(model)
    layers = [m for m in packed.modules() if isinstance(m, PackedBinary)]
    assert len(layers) == 2 and all(m.emits_bits() for m in layers)  # the scale sits in the fused epilogue
    with torch.no_grad():
        want = model(x)
        assert (packed(x) - want).abs().max().item() <= 1e-4 * want.abs().max().item()
    if lce.LCE_PLATFORM:
        got = torch.from_numpy(lce.interpreter(lce.to_lce_bytes(model, x)).predict(x.permute(0, 2, 3, 1).numpy())[0])
        assert (got - want).abs().max().item() <= 1e-4 * max(1.0, want.abs().max().item())


def test_the_description_detaches_what_a_method_hands_it(monkeypatch):
    """A method's inference form may hold a parameter itself (a third-party method's bias): the frozen
    description keeps a detached copy, so a packed model's output never tracks the trained layer."""
    layer = BinaryConv2d(4, 6, 3, 1, 1, method="bnn", bias=True).eval()
    form = layer.inference_form()
    form.bias = layer.bias  # the Parameter, requires_grad=True
    monkeypatch.setattr(layer.method, "inference", lambda _layer: form)
    d = describe(layer)
    assert d.epilogue.post_bias is not layer.bias and not d.epilogue.post_bias.requires_grad
    assert torch.equal(d.epilogue.post_bias, layer.bias.detach())


@pytest.mark.parametrize("groups", [1, 2])
def test_the_file_names_groups_only_for_a_grouped_conv(groups):
    """An ungrouped conv's stored config is the one written before grouped convs had a file form (no
    ``groups`` entry); a grouped one says how many."""
    config, _ = describe(BinaryConv2d(4, 6, 3, 1, 1, method="bnn", groups=groups).eval()).to_file()
    assert config.get("groups") == (groups if groups != 1 else None)
