"""Properties every method must have inside every layer kind: binary values, the inference form,
registered parameters, state_dict round trips, padding semantics and clear errors."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import onebit
from onebit.methods import NotDeployableError
from onebit.methods.functional import sign
from onebit.nn import BinaryConv1d, BinaryConv2d, BinaryLinear

METHODS = onebit.methods.available()

# Parameters each method adds to a layer (besides weight and bias), by name prefix.
EXTRA_PARAMS = {
    "bnn": set(), "xnor": set(), "dorefa": set(), "bireal": set(),
    "reactnet": {"rsign_bias"}, "recu": {"alpha"}, "xnorpp": {"gamma_o", "gamma_h", "gamma_w"},
    "fda": {"weight_noise", "input_noise"},
    "biper": {"alpha"}, "irnet": set(), "hbnn": set(),
    "pcpp-bc": set(), "pcpp-pc": set(), "pcpp-bnn": set(), "pcpp-bnn+": set(), "bnn++": set(),
}

def deployable(layer):
    """The layer in its deployable state (Method.finalize: BiPer's stage 2, PC++'s hard sign; their
    tests in tests/methods check that inference raises NotDeployableError before)."""
    return onebit.finalize(layer)


def make(kind, method, **kw):
    torch.manual_seed(0)
    if kind == "conv2d":
        layer = BinaryConv2d(5, 7, 3, stride=kw.pop("stride", 1), padding=1, method=method, **kw)
        x = torch.randn(2, 5, 9, 8)
    elif kind == "conv1d":
        layer = BinaryConv1d(3, 65, 5, padding=2, method=method, **kw)
        x = torch.randn(2, 3, 11)
    else:
        layer = BinaryLinear(127, 3, method=method, **kw)
        x = torch.randn(2, 4, 127)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name in ("rsign_bias",):
                p.uniform_(-0.3, 0.3)
            if name.startswith("gamma") and not isinstance(p, nn.UninitializedParameter):
                p.uniform_(0.5, 1.5)
    layer(x)  # materialises lazily-sized state
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name.startswith("gamma"):
                p.uniform_(0.5, 1.5)
    return layer, x


def simulate(layer, x):
    """What the inference form says the layer computes, in plain torch (the oracle for export)."""
    form = layer.inference_form()
    w = form.effective_weight()
    conv = not isinstance(layer, BinaryLinear)
    def per_channel(v, ndim):
        return v if not conv else v.reshape((1, -1) + (1,) * (ndim - 2))
    q = x
    if form.binary_input:
        shifted = x if form.input_threshold is None else x + per_channel(form.input_threshold, x.dim())
        q = sign(shifted)
    if conv:
        q = F.pad(q, layer._reversed_padding_repeated_twice, value=form.pad_value)
    if form.input_scale == "mean_abs":
        dims = (-1,) if not conv else tuple(range(1, x.dim()))
        q = q * x.abs().mean(dim=dims, keepdim=True)
    if isinstance(layer, BinaryConv2d):
        y = F.conv2d(q, w, None, layer.stride, 0, layer.dilation, layer.groups)
    elif isinstance(layer, BinaryConv1d):
        y = F.conv1d(q, w, None, layer.stride, 0, layer.dilation, layer.groups)
    else:
        y = F.linear(q, w)
    if form.output_scale is not None:
        s = form.output_scale
        y = y * (s if not conv else s.reshape((1,) + tuple(s.shape) + (1,) * (y.dim() - 1 - s.dim())))
    if form.bias is not None:
        y = y + per_channel(form.bias, y.dim())
    return y


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", ["conv2d", "conv1d", "linear"])
def test_quantized_values_are_binary(method, kind):
    layer, x = make(kind, method)
    deployable(layer).eval()
    wq = layer.method.quantize_weight(layer, layer.weight).detach()
    if layer.method.multibit:  # a sum of masked ±1 planes with per-plane scales
        form = layer.inference_form()
        assert len(form.weight_planes) > 1
        assert all(((p == 1) | (p == -1)).all() for p in form.weight_planes)
        assert torch.allclose(form.effective_weight(), wq, rtol=1e-6, atol=1e-7)
    else:
        per_out = wq.reshape(wq.shape[0], -1)
        assert torch.equal(per_out.abs(), per_out.abs()[:, :1].expand_as(per_out)), "±scale per output channel"
    xq = layer.method.quantize_input(layer, x).detach()
    magnitudes = xq.abs().reshape(-1, xq.shape[-1] if kind == "linear" else xq[0].numel())
    assert torch.allclose(magnitudes, magnitudes[:, :1].expand_as(magnitudes)), "±K per sample"
    assert (xq != 0).all()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind,pad,stride", [
    ("conv2d", 0.0, 1), ("conv2d", 1.0, 2), ("conv2d", -1.0, 1), ("conv1d", 0.0, 1), ("conv1d", -1.0, 1),
    ("linear", None, None),
])
def test_inference_form_reproduces_eval_output(method, kind, pad, stride):
    kw = {} if kind == "linear" else {"pad_value": pad}
    if kind == "conv2d":
        kw["stride"] = stride
    layer, x = make(kind, method, **kw)
    deployable(layer).eval()
    with torch.no_grad():
        expected = layer(x)
        got = simulate(layer, x)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


@pytest.mark.parametrize("method", METHODS)
def test_method_parameters_are_registered_and_train(method):
    layer, x = make("conv2d", method)
    names = {n.split(".")[0] for n, _ in layer.named_parameters()} - {"weight", "bias"}
    assert names == EXTRA_PARAMS[method]
    layer.train()
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    out = layer(x)
    (out.square().mean() + onebit.extra_loss(layer)).backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    opt.step()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", ["conv2d", "linear"])
def test_state_dict_round_trip(method, kind):
    layer, x = make(kind, method)
    layer.schedule_step(3, 10)
    layer.eval()
    torch.manual_seed(123)
    fresh = type(layer)(*_ctor_args(layer), method=method, **({"padding": 1} if kind != "linear" else {}))
    fresh.load_state_dict(layer.state_dict())
    fresh.eval()
    assert torch.equal(fresh(x), layer(x))


def _ctor_args(layer):
    if isinstance(layer, BinaryLinear):
        return (layer.in_features, layer.out_features)
    return (layer.in_channels, layer.out_channels, layer.kernel_size)


@pytest.mark.parametrize("pad_value", [0.0, 1.0, -1.0])
def test_padding_is_applied_to_binarized_input(pad_value):
    layer = BinaryConv2d(2, 3, 3, padding=1, bias=False, method="bnn", pad_value=pad_value)
    x = torch.randn(1, 2, 4, 4)
    expected = F.conv2d(F.pad(sign(x), (1, 1, 1, 1), value=pad_value), sign(layer.weight))
    assert torch.equal(layer(x), expected)


def test_xnor_padding_scales_with_k():
    layer = BinaryConv2d(2, 3, 3, padding=1, bias=False, method="xnor", pad_value=1)
    x = torch.randn(2, 2, 4, 4)
    k = x.abs().mean(dim=(1, 2, 3), keepdim=True)
    alpha = layer.weight.abs().mean(dim=(1, 2, 3), keepdim=True)
    expected = F.conv2d(F.pad(sign(x), (1, 1, 1, 1), value=1.0) * k, alpha * sign(layer.weight))
    assert torch.allclose(layer(x), expected, atol=1e-5)


def test_padding_mode_pads_real_input_before_binarization():
    layer = BinaryConv2d(1, 1, 3, padding=1, padding_mode="reflect", bias=False, method="bnn")
    x = torch.randn(1, 1, 5, 5)
    expected = F.conv2d(sign(F.pad(x, (1, 1, 1, 1), mode="reflect")), sign(layer.weight))
    assert torch.equal(layer(x), expected)


def test_same_padding_and_unbatched_input():
    layer = BinaryConv2d(3, 4, 3, padding="same", method="bireal")
    x = torch.randn(3, 6, 6)
    assert layer(x).shape == (4, 6, 6)
    assert torch.allclose(layer(x), layer(x.unsqueeze(0))[0])


def test_same_shapes_as_torch_counterparts():
    conv = BinaryConv2d(3, 8, (3, 5), stride=2, padding=1, groups=1, bias=False)
    ref = nn.Conv2d(3, 8, (3, 5), stride=2, padding=1, bias=False)
    assert conv.weight.shape == ref.weight.shape and conv.bias is None
    assert isinstance(conv, nn.Conv2d)
    lin = BinaryLinear(10, 4)
    assert lin.weight.shape == nn.Linear(10, 4).weight.shape


def test_full_precision_sides():
    layer = BinaryConv2d(2, 3, 3, bias=False, method="bnn", binarize_weights=False)
    x = torch.randn(1, 2, 5, 5)
    assert torch.equal(layer(x), F.conv2d(sign(x), layer.weight))
    with pytest.raises(NotDeployableError, match="full precision"):
        layer.inference_form()
    real_act = BinaryLinear(4, 2, bias=False, method="bnn", binarize_activations=False)
    xl = torch.randn(3, 4)
    assert torch.equal(real_act(xl), F.linear(xl, sign(real_act.weight)))


def test_errors_are_clear():
    with pytest.raises(ValueError, match="unknown binarization method 'nope'; available: .*bnn"):
        BinaryConv2d(1, 1, 3, method="nope")
    with pytest.raises(ValueError, match="pad_value"):
        BinaryConv2d(1, 1, 3, method="bnn", pad_value=2)
    with pytest.raises(ValueError, match="unknown option"):
        BinaryLinear(2, 2, method="bnn", omega=3)
    with pytest.raises(ValueError, match=r"tau_min=1.5 is out of range; allowed: a number in \[0.5, 1\)"):
        BinaryLinear(2, 2, method="recu", tau_min=1.5)
    with pytest.raises(ValueError, match="tau_max"):
        onebit.methods.get("recu", tau_min=0.95, tau_max=0.9)
    with pytest.raises(ValueError, match="4-D"):
        BinaryConv2d(1, 1, 3)(torch.randn(2, 1, 1, 5, 5))
    with pytest.raises(ValueError, match="in_features=4"):
        BinaryLinear(4, 2)(torch.randn(2, 5))
