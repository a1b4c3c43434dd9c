"""Method behaviour that no other test reached (survivors of tools/mutate.py's fresh samples)."""

from __future__ import annotations

import torch

from onebit.nn import BinaryLinear


def test_recu_fan_in_of_one_standardizes_to_finite_values():
    """ReCU standardizes each weight row by its unbiased variance; a row of one weight has none, so
    onebit takes the biased value 0 there (recu.unbiased_var) instead of torch's NaN."""
    torch.manual_seed(0)
    layer = BinaryLinear(1, 3, method="recu")
    x = torch.randn(4, 1, requires_grad=True)
    out = layer(x)
    out.sum().backward()
    assert torch.isfinite(out).all()
    assert torch.isfinite(layer.weight.grad).all() and torch.isfinite(x.grad).all()


def test_approx_sign_saturates_outside_the_unit_interval():
    """Bi-Real's ApproxSign (Eq. 6) is −1 below −1 and +1 above 1, with derivative 2 − 2|x| inside and 0
    outside (a survivor of tools/mutate.py seed 31: the lower clamp bound moved to −1.5)."""
    from onebit.methods.functional import approx_sign

    x = torch.tensor([-1.25, -1.0, -0.5, 0.5, 1.0, 1.25], requires_grad=True)
    y = approx_sign(x)
    y.sum().backward()
    assert y.tolist() == [-1.0, -1.0, -0.75, 0.75, 1.0, 1.0]
    assert x.grad.tolist() == [0.0, 0.0, 1.0, 1.0, 0.0, 0.0]


def test_extra_fp_ops_count_each_inference_hook():
    """Method.extra_fp_ops (BiBench's complexity track): a multiply per output element for an output scale
    (RecU's α, BiPer's, XNOR-Net++'s Γ), an add per input element for an activation threshold (ReActNet's
    RSign), a multiply-add per input element for XNOR-Net's runtime input scale K, nothing for plain sign
    (BNN), and no activation hooks at all when activations stay real (a survivor of tools/mutate.py seed 41:
    the threshold's `is not None` turned round)."""
    inputs, outputs = 10, 3
    expected = {"bnn": 0, "reactnet": inputs, "xnor": 2 * inputs, "recu": outputs, "biper": outputs,
                "xnorpp": outputs}
    for name, want in expected.items():
        layer = BinaryLinear(4, 3, method=name)
        assert layer.method.extra_fp_ops(layer, inputs, outputs) == want, name
    for name in ("reactnet", "xnor"):
        weight_only = BinaryLinear(4, 3, method=name, binarize_activations=False)
        assert weight_only.method.extra_fp_ops(weight_only, inputs, outputs) == 0, name
