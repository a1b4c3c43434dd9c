"""Larq Compute Engine export: the flatbuffer written by ``to_lce`` runs in LCE's real interpreter
(its ``interpreter_wrapper_lite`` extension, loaded without TensorFlow) and computes what the
eval-mode PyTorch model computes, for every deployable method, strides 1/2, odd channel counts,
every padding value, residual adds, BatchNorm and PReLU; what LCE cannot express fails with one
ExportError naming the layer."""

import numpy as np
import pytest
import torch
from deploy_probe import finish_training, randomize_norms
from torch import nn

import onebit
from onebit.deploy import ExportError, export, lce
from onebit.nn import BinaryConv1d, BinaryConv2d, RPReLU, RSign

# LCE publishes interpreter wheels for x86-64 Linux only; there the `export` extra installs it, so a
# missing wheel fails these tests instead of skipping them.
pytestmark = pytest.mark.skipif(
    not lce.LCE_PLATFORM,
    reason="larq-compute-engine ships its interpreter for x86-64 Linux only",
)
METHODS = onebit.methods.available()




def randomize(model):
    """Trained-looking BatchNorm statistics, PReLU slopes, thresholds and learnable scales, so that
    neither the folding nor the thresholds can pass by accident."""
    randomize_norms(model)
    with torch.no_grad():
        for m in model.modules():
            for name, p in m.named_parameters(recurse=False):
                if name == "rsign_bias" or (name == "bias" and not isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d,
                                                                                     nn.BatchNorm1d))):
                    p.uniform_(-0.3, 0.3)
                elif name == "alpha" or name.startswith("gamma"):
                    p.uniform_(0.5, 1.5)


class Block(nn.Module):
    """A binary ResNet block: conv → BN (+ shortcut) → activation."""

    def __init__(self, c_in, c_out, stride, act):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = act
        self.short = nn.Identity()
        if (stride, c_in) != (1, c_out):
            self.short = nn.Sequential(nn.AvgPool2d(3, 2, 1), nn.Conv2d(c_in, c_out, 1, bias=False),
                                       nn.BatchNorm2d(c_out))

    def forward(self, x):
        return self.act(self.bn(self.conv(x)) + self.short(x))


def cnn():
    """Stem 3 → 65 channels, a stride-1 residual block (PReLU), a stride-2 block to 33 channels
    (Hardtanh), a plain binary conv with BN + PReLU, global pool and a linear head."""
    return nn.Sequential(
        nn.Conv2d(3, 65, 3, padding=1, bias=False), nn.BatchNorm2d(65), nn.PReLU(65),
        Block(65, 65, 1, nn.PReLU(65)),
        Block(65, 33, 2, nn.Hardtanh()),
        nn.Conv2d(33, 65, 3, padding=1), nn.BatchNorm2d(65), nn.PReLU(65),
        nn.Conv2d(65, 3, 3, padding=1), nn.BatchNorm2d(3),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 10),
    )


def run_lce(model, x, **options):
    """LCE's output for a (N, C, H, W) or (N, F) input, in torch's layout."""
    # LCE's reference kernel refuses SAME zero padding with odd channel counts: use the explicit form.
    data = lce.to_lce_bytes(model, x, lce_zero_padding=not options.get("use_reference_bconv", False))
    interp = lce.interpreter(data, **options)
    xin = x.permute(0, 2, 3, 1) if x.dim() == 4 else x
    return torch.from_numpy(interp.predict(xin.numpy())[0])


def sign_margin(model, x):
    """The smallest |input + threshold| of any binarized activation, relative to that input's scale.

    Fp32 layers computed by different kernels (TFLite's vs torch's) differ by ~1e-7 relative, so an
    activation within that distance of 0 may take the other sign — a genuine tie, not an export
    error. The comparison is therefore made on inputs whose binarized activations keep a margin."""
    from onebit.nn.layers import BinaryLayer

    margins = []

    def hook(layer, args):
        a = args[0]
        thr = layer.method.input_threshold(layer)
        if thr is not None:
            a = a + layer.channel_view(thr, a.dim())
        mag = a.abs()
        nonzero = mag[mag > 0]  # exact zeros (clamps, padding) are exact in both engines
        if nonzero.numel():
            margins.append((nonzero.min() / mag.max()).item())

    handles = [m.register_forward_pre_hook(hook) for m in model.modules()
               if isinstance(m, BinaryLayer) and m.binarize_activations]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return min(margins, default=1.0)


def away_from_ties(model, shape, seed):
    """A random input (seeded) whose binarized activations are not within 3e-6 (relative) of a sign tie."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    for _ in range(50):
        x = torch.randn(shape, generator=gen)
        if sign_margin(model, x) > 3e-6:
            return x
    raise AssertionError("no tie-free input found")


def check(model, x, **options):
    model.eval()
    if sign_margin(model, x) <= 3e-6:
        x = away_from_ties(model, tuple(x.shape), 0)
    with torch.no_grad():
        expected = model(x)
    got = run_lce(model, x, **options)
    assert got.shape == expected.shape
    err = (got - expected).abs().max().item()
    scale = expected.abs().max().item()
    assert scale > 0
    assert err <= 1e-4 * scale, f"max abs diff {err:.3g} vs output scale {scale:.3g}"


def binarized_cnn(method, x, **options):
    torch.manual_seed(0)
    model = cnn()
    onebit.binarize(model, method, example_input=x, **options)
    finish_training(model, method)
    randomize(model)
    return model


# Each method with one padding case, the cases rotating so that every method family meets every one:
# odd sizes (9) put stride 2 on TFLite's SAME geometry, even ones (8) need the explicit padding paths.
CASES = [(0.0, 8), (1.0, 9), (-1.0, 8), (0.0, 9), (1.0, 8), (-1.0, 9)]


@pytest.mark.parametrize("method,pad_value,size", [(m, *CASES[i % len(CASES)]) for i, m in enumerate(METHODS)])
def test_every_method_matches_pytorch(method, pad_value, size):
    torch.manual_seed(1)
    x = torch.randn(2, 3, size, size)
    check(binarized_cnn(method, x, pad_value=pad_value), x)


@pytest.mark.parametrize("method", ["bnn", "xnor", "reactnet", "hbnn", "pcpp-bc"])
def test_linear_layers_match_pytorch(method):
    torch.manual_seed(2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 65), nn.BatchNorm1d(65), nn.Hardtanh(),
                          nn.Linear(65, 33), nn.BatchNorm1d(33), nn.PReLU(33), nn.Linear(33, 7))
    onebit.binarize(model, method)
    finish_training(model, method)
    randomize(model)
    check(model, torch.randn(4, 3, 4, 4))


@pytest.mark.parametrize("options", [dict(num_threads=2), dict(use_indirect_bgemm=True), dict(use_xnnpack=True),
                                     dict(use_indirect_bgemm=True, use_xnnpack=True), dict(use_reference_bconv=True)])
@pytest.mark.parametrize("pad_value", [0.0, 1.0])
def test_interpreter_options_agree(options, pad_value):
    torch.manual_seed(3)
    x = torch.randn(1, 3, 8, 8)
    check(binarized_cnn("reactnet", x, pad_value=pad_value), x, **options)


class ReActBlock(nn.Module):
    """ReActNet-style pieces the exporter translates: RSign, RPReLU, LearnableBias, torch.cat,
    max-pooling, mean and arithmetic with numbers."""

    def __init__(self):
        super().__init__()
        self.sign = RSign(8)
        self.conv = BinaryConv2d(8, 8, 3, 1, 1, method="bnn", pad_value=1.0)
        self.bn = nn.BatchNorm2d(8)
        self.act = RPReLU(16)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        y = self.bn(self.conv(self.sign(x)))
        y = self.act(torch.cat([y, x * 0.5 - 1.0], dim=1))
        y = self.pool(y)
        return self.head(y.mean(dim=(2, 3)) / 2.0)


def test_reactnet_pieces_and_functions():
    torch.manual_seed(4)
    model = ReActBlock()
    randomize(model)
    check(model, torch.randn(2, 8, 6, 6))


@pytest.mark.parametrize("name,options,shape", [
    ("resnet18_imagenet", {"bireal": True}, (2, 3, 32, 32)),  # down to 1x1: LCE's SAME-0 bug path
    ("resnet20", {}, (2, 3, 16, 16)),
    ("reactnet_a", {"width": 0.25, "input_size": 32}, (1, 3, 32, 32)),
])
def test_zoo_models(name, options, shape):
    import onebit.models

    torch.manual_seed(5)
    model = onebit.models.create(name, num_classes=10, method="bireal" if name != "reactnet_a" else "reactnet",
                                 **options)
    x = torch.randn(shape)
    model(x)
    randomize(model)
    check(model, x)


def test_file_round_trip_and_packed_input(tmp_path):
    torch.manual_seed(6)
    x = torch.randn(1, 3, 8, 8)
    model = binarized_cnn("bireal", x).eval()
    path = lce.to_lce(export(model), x, tmp_path / "m.tflite")
    assert path.read_bytes()[4:8] == b"TFL3"
    assert not [p for p in tmp_path.iterdir() if p.name != "m.tflite"], "no temporary file is left behind"
    interp = lce.interpreter(path)
    assert interp.input_shapes == [(1, 8, 8, 3)] and interp.output_shapes == [(1, 10)]
    with torch.no_grad():
        expected = model(x)
    got = interp.predict(x.permute(0, 2, 3, 1).numpy())[0]
    assert np.abs(got - expected.numpy()).max() <= 1e-4 * expected.abs().max().item()
    with pytest.raises(ValueError, match="NHWC"):
        interp.predict(x.numpy())


def test_filter_bit_packing_follows_lce():
    """Channel 32·w + i is bit i of word w, set for −1; unused high bits stay 0."""
    signs = np.ones((2, 33, 1, 1), np.float32)
    signs[0, 0] = signs[0, 31] = signs[1, 32] = -1
    packed = lce.pack_filter(signs)
    assert packed.shape == (2, 1, 1, 2) and packed.dtype == np.int32
    assert packed[0, 0, 0, 0] == np.int32(np.uint32(1 | 1 << 31).view(np.int32))
    assert packed[0, 0, 0, 1] == 0 and packed[1, 0, 0, 0] == 0 and packed[1, 0, 0, 1] == 1


def test_what_lce_cannot_express_is_named():
    x = torch.randn(1, 4, 8, 8)
    grouped = nn.Sequential(nn.Conv2d(4, 8, 3), nn.Conv2d(8, 8, 3, groups=2), nn.Conv2d(8, 4, 3))
    onebit.binarize(grouped, "bnn")
    with pytest.raises(ExportError, match="layer '1'.*groups=2"):
        lce.to_lce_bytes(grouped, x)
    depthwise = nn.Sequential(nn.Conv2d(4, 8, 3), nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 4, 3))
    onebit.binarize(depthwise, "bnn")
    with pytest.raises(ExportError, match="layer '1'.*depthwise"):
        lce.to_lce_bytes(depthwise, x)
    reflect = nn.Sequential(nn.Conv2d(4, 8, 3), BinaryConv2d(8, 8, 3, padding=1, padding_mode="reflect"),
                            nn.Conv2d(8, 4, 3))
    with pytest.raises(ExportError, match="layer '1'.*padding_mode='reflect'"):
        lce.to_lce_bytes(reflect, x)
    conv1d = nn.Sequential(BinaryConv1d(4, 8, 3))
    with pytest.raises(ExportError, match="layer '0'.*Conv1d"):
        lce.to_lce_bytes(conv1d, torch.randn(1, 4, 16))
    hetero = nn.Sequential(nn.Linear(16, 8), nn.Linear(8, 8), nn.Linear(8, 2))
    onebit.binarize(hetero, "hbnn", activations="hetero")
    with pytest.raises(ExportError, match="layer '1'.*multi-bit activations"):
        lce.to_lce_bytes(hetero, torch.randn(2, 16))
    norm = nn.Sequential(nn.Linear(16, 8), nn.LayerNorm(8), nn.Linear(8, 8), nn.Linear(8, 2))
    onebit.binarize(norm, "bnn")
    with pytest.raises(ExportError, match="LayerNorm"):
        lce.to_lce_bytes(norm, torch.randn(2, 16))
    with pytest.raises(TypeError, match="example_input"):
        lce.to_lce_bytes(norm, [1, 2])
    with pytest.raises(ValueError, match="TFL3"):
        lce.interpreter(b"not a model")


def op_counts(data):
    """How many times each operator (builtin code or custom name) appears in a flatbuffer."""
    from tflite.Model import Model

    model = Model.GetRootAs(data, 0)
    graph = model.Subgraphs(0)
    names = []
    for i in range(graph.OperatorsLength()):
        code = model.OperatorCodes(graph.Operators(i).OpcodeIndex())
        names.append(code.CustomCode().decode() if code.CustomCode() else code.BuiltinCode())
    return {n: names.count(n) for n in set(names)}


def test_bitpacked_output_with_thresholds():
    """conv → BN (negative and zero scales) → Hardtanh/PReLU (→ max-pool) → binary conv: the bconvs
    write bits through per-channel thresholds and the max-pool runs on bits, as LCE's converter does."""
    torch.manual_seed(7)
    model = nn.Sequential(
        nn.Conv2d(3, 40, 3, padding=1),
        BinaryConv2d(40, 37, 3, 1, 1, method="bireal", pad_value=1.0), nn.BatchNorm2d(37), nn.Hardtanh(),
        BinaryConv2d(37, 33, 3, 2, 1, method="bireal", pad_value=1.0), nn.BatchNorm2d(33), nn.PReLU(33),
        nn.MaxPool2d(2),
        BinaryConv2d(33, 8, 3, 1, 1, method="bnn", pad_value=1.0),
        nn.Flatten(), nn.Linear(8 * 4, 4),
    )
    randomize(model)
    with torch.no_grad():
        model[2].weight[:5].uniform_(-1.5, -0.5)  # negative multipliers: filters flipped
        model[2].weight[5] = 0.0                  # zero multiplier: the sign of the bias alone
        model[5].weight[:4].uniform_(-1.5, -0.5)
    x = torch.randn(2, 3, 8, 8)
    assert op_counts(lce.to_lce_bytes(nn.Sequential(*model[:8]), x)).get("LceBMaxPool2d") is None  # real output
    counts = op_counts(lce.to_lce_bytes(model, x))
    assert counts["LceBconv2d"] == 3 and counts["LceQuantize"] == 1 and counts["LceBMaxPool2d"] == 1
    check(model, x)
