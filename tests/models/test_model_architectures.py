"""The zoo's architectures are the papers': parameter counts, which layers are binary, block wiring."""

import itertools

import pytest
import torch
from torch import nn

import onebit
import onebit.models as M
from onebit.models.resnet import BasicBlock, ZeroPadShortcut
from onebit.nn import BinaryConv1d, BinaryConv2d, BinaryLayer, BinaryLinear, RSign


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def execution_order(model: nn.Module, x: torch.Tensor) -> list[nn.Module]:
    """Conv/Linear layers (binary or not) in the order a forward pass calls them."""
    order: list[nn.Module] = []
    handles = [
        m.register_forward_pre_hook(lambda mod, args: order.append(mod))
        for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))
    ]
    model.eval()
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return order


# --------------------------------------------------------------------------------------------------
# Parameter counts of the full-precision networks against the published ones
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, options, expected",
    [
        ("resnet18", {}, 11_173_962),          # CIFAR ResNet-18 with 1x1-conv shortcuts, 10 classes
        ("resnet34", {}, 21_282_122),
        ("resnet20", {}, 269_722),             # He et al.: "0.27M"
        ("resnet18_imagenet", {}, 11_689_512),  # torchvision's resnet18
        ("vit", {}, 5_717_416),                # DeiT-Tiny (timm deit_tiny_patch16_224)
    ],
)
def test_full_precision_parameter_counts(name, options, expected):
    assert n_params(M.create(name, **options)) == expected


def test_resnet20_option_b_adds_exactly_the_two_downsample_convs():
    # 1x1 convs 16->32 and 32->64 plus their BN (weight and bias).
    extra = (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    assert n_params(M.create("resnet20", shortcut="B")) == 269_722 + extra


def test_vgg_small_parameter_count_by_hand():
    convs = 3 * 128 * 9 + 128 * 128 * 9 + 128 * 256 * 9 + 256 * 256 * 9 + 256 * 512 * 9 + 512 * 512 * 9
    bns = 2 * (128 + 128 + 256 + 256 + 512 + 512)
    fc = 512 * 4 * 4 * 10 + 10
    assert n_params(M.create("vgg_small")) == convs + bns + fc


def test_reactnet_a_parameter_count_by_hand():
    chans = [32, 64, 128, 128, 256, 256] + [512] * 6 + [1024] * 2
    total = 3 * 32 * 9 + 2 * 32  # stem conv + BN
    for cin, cout in itertools.pairwise(chans):
        copies = cout // cin
        total += cin * cin * 9 + 2 * cin + 3 * cin           # 3x3 conv, BN, RPReLU (two shifts + slope)
        total += copies * (cin * cin + 2 * cin) + 3 * cout    # 1x1 conv(s) + BN, RPReLU
    total += 1024 * 1000 + 1000
    assert n_params(M.create("reactnet_a")) == total


# --------------------------------------------------------------------------------------------------
# Which layers are binary
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, options, x_shape, n_binary, binary_type",
    [
        ("resnet18", {}, (1, 3, 8, 8), 16, BinaryConv2d),
        ("resnet34", {}, (1, 3, 8, 8), 32, BinaryConv2d),
        ("resnet20", {}, (1, 3, 8, 8), 18, BinaryConv2d),
        ("resnet20", {"shortcut": "B", "bireal": True}, (1, 3, 8, 8), 18, BinaryConv2d),
        ("resnet18_imagenet", {}, (1, 3, 32, 32), 16, BinaryConv2d),
        ("resnet18_imagenet", {"bireal": True}, (1, 3, 32, 32), 16, BinaryConv2d),
        ("vgg_small", {}, (1, 3, 32, 32), 5, BinaryConv2d),
        # 13 3x3 convs + 8 single 1x1 convs + 5 doubling blocks with two 1x1 convs each.
        ("reactnet_a", {"width": 0.125, "input_size": 32}, (1, 3, 32, 32), 31, BinaryConv2d),
        ("vit", {"img_size": 8, "patch_size": 4, "dim": 8, "depth": 3, "heads": 2}, (1, 3, 8, 8), 12, BinaryLinear),
        ("mlp", {"hidden": (16, 16, 16)}, (1, 1, 28, 28), 2, BinaryLinear),
        ("conv1d", {}, (1, 1, 40), 2, BinaryConv1d),
    ],
)
def test_binary_layers_and_full_precision_ends(name, options, x_shape, n_binary, binary_type):
    model = M.create(name, method="bnn", **options)
    binary = [m for m in model.modules() if isinstance(m, BinaryLayer)]
    assert len(binary) == n_binary
    assert all(type(m) is binary_type for m in binary)
    order = execution_order(model, torch.randn(*x_shape))
    assert not isinstance(order[0], BinaryLayer), "the first layer must stay full precision"
    assert not isinstance(order[-1], BinaryLayer), "the last layer must stay full precision"
    assert type(order[-1]) is nn.Linear
    # Every binary layer is used exactly once per forward pass.
    assert sorted(map(id, (m for m in order if isinstance(m, BinaryLayer)))) == sorted(map(id, binary))


@pytest.mark.parametrize("name", ["resnet18", "resnet20", "resnet18_imagenet"])
def test_resnet_binary_convs_are_the_3x3_ones_and_downsamples_stay_real(name):
    model = M.create(name, method="bnn", **({"shortcut": "B"} if name == "resnet20" else {}))
    for mod_name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            if isinstance(m, BinaryLayer):
                assert m.kernel_size == (3, 3) and ".conv" in mod_name
            else:
                assert mod_name == "conv1" or ".shortcut." in mod_name, mod_name
    downsample = [m for n, m in model.named_modules() if ".shortcut." in n and isinstance(m, nn.Conv2d)]
    assert len(downsample) == (2 if name == "resnet20" else 3)


def test_method_and_layer_options_reach_every_binary_layer():
    model = M.create("resnet20", method="recu", tau_min=0.9, tau_max=0.95, binarize_weights=False, pad_value=1)
    layers = [m for m in model.modules() if isinstance(m, BinaryLayer)]
    assert all(m.method.tau_min == 0.9 and m.method.tau_max == 0.95 for m in layers)
    assert all(not m.binarize_weights and m.pad_value == 1.0 for m in layers)
    vit = M.create("vit", method="xnor", img_size=8, patch_size=4, dim=8, depth=1, heads=2,
                   binarize_activations=False, pad_value=-1)
    assert all(not m.binarize_activations for m in vit.modules() if isinstance(m, BinaryLayer))


def test_method_instance_is_accepted():
    method = onebit.methods.get("fda", omega=0.2)
    model = M.create("conv1d", method=method)
    assert all(m.method.omega == 0.2 for m in model.modules() if isinstance(m, BinaryLayer))
    # options given next to an instance are applied on top of its own
    model = M.create("conv1d", method=method, noise_adaptation=False)
    assert all(m.method.omega == 0.2 and not m.method.noise_adaptation
               for m in model.modules() if isinstance(m, BinaryLayer))


# --------------------------------------------------------------------------------------------------
# ResNet blocks
# --------------------------------------------------------------------------------------------------
def _zero_bn(bn: nn.BatchNorm2d) -> None:
    nn.init.zeros_(bn.weight)
    nn.init.zeros_(bn.bias)


@pytest.mark.parametrize("bireal", [False, True])
def test_basic_block_wiring(bireal):
    from onebit.models._layers import LayerFactory

    torch.manual_seed(0)
    block = BasicBlock(8, 8, 1, LayerFactory(None), "identity", "A", bireal).eval()
    _zero_bn(block.bn2)  # the second conv's branch contributes nothing
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        out = block(x)
        first = block.bn1(block.conv1(x))
    if bireal:
        # the shortcut around conv2 carries conv1's branch plus its own shortcut
        torch.testing.assert_close(out, first + x)
    else:
        torch.testing.assert_close(out, x)


def test_zero_pad_shortcut_pools_and_pads_channels():
    x = torch.arange(2 * 4 * 4 * 4, dtype=torch.float32).reshape(2, 4, 4, 4)
    out = ZeroPadShortcut(4, 8, 2)(x)
    assert out.shape == (2, 8, 2, 2)
    torch.testing.assert_close(out[:, 2:6], nn.functional.avg_pool2d(x, 2))
    assert out[:, :2].abs().sum() == 0 and out[:, 6:].abs().sum() == 0
    odd = ZeroPadShortcut(4, 8, 2)(torch.randn(1, 4, 5, 5))
    assert odd.shape == (1, 8, 3, 3)  # as a stride-2, padding-1 3x3 conv: ceil(5 / 2)


def test_shortcut_a_has_no_downsample_parameters():
    model = M.create("resnet20", shortcut="A")
    assert not any(".shortcut." in n for n, _ in model.named_parameters())


def test_bireal18_uses_avgpool_then_1x1_conv_downsample():
    model = M.create("resnet18_imagenet", method="bnn", bireal=True)
    ds = model.layers[1][0].shortcut
    assert isinstance(ds[0], nn.AvgPool2d) and ds[1].stride == (1, 1) and ds[1].kernel_size == (1, 1)
    assert all(b.bireal for b in model.modules() if isinstance(b, BasicBlock))
    # Bi-Real Net's only nonlinearity is the sign: no activation modules by default when binary.
    assert not any(isinstance(m, (nn.Hardtanh, nn.ReLU, nn.PReLU)) for m in model.modules())
    assert any(isinstance(m, nn.ReLU) for m in M.create("resnet18_imagenet", bireal=True).modules())


def test_activation_defaults_and_choices():
    assert any(isinstance(m, nn.Hardtanh) for m in M.create("resnet20", method="bnn").modules())
    assert not any(isinstance(m, nn.Hardtanh) for m in M.create("resnet20").modules())
    assert any(isinstance(m, nn.ReLU) for m in M.create("resnet20").modules())
    model = M.create("resnet20", method="bnn", activation="rprelu")
    assert sum(type(m).__name__ == "RPReLU" for m in model.modules()) == 1 + 2 * 9
    model = M.create("vgg_small", activation="prelu")
    assert sum(isinstance(m, nn.PReLU) for m in model.modules()) == 6


# --------------------------------------------------------------------------------------------------
# ReActNet-A
# --------------------------------------------------------------------------------------------------
def test_reactnet_block_duplicates_the_input_when_doubling_channels():
    model = M.create("reactnet_a", width=0.125, input_size=32).eval()
    block = model.blocks[1]  # 8 -> 16 channels, stride 2
    assert len(block.pointwise) == 2 and block.pointwise[0].out_channels == 8
    for bn in block.bn2:
        _zero_bn(bn)
    nn.init.zeros_(block.act2.shift_out.bias)
    x = torch.randn(2, 8, 8, 8)
    with torch.no_grad():
        out = block(x)
    assert out.shape == (2, 16, 4, 4)
    # both halves are RPReLU(h) of the same shortcut h (the slopes are per channel and equal at init)
    torch.testing.assert_close(out[:, :8], out[:, 8:])


@pytest.mark.parametrize("input_size, final", [(224, 7), (32, 2)])
def test_reactnet_stem_stride_follows_input_size(input_size, final):
    model = M.create("reactnet_a", width=0.0625, input_size=input_size).eval()
    shapes = []
    model.pool.register_forward_pre_hook(lambda mod, args: shapes.append(args[0].shape) and None)
    with torch.no_grad():
        model(model.example_input(1))
    assert shapes[0][-2:] == (final, final)
    assert model.stem[0].stride == ((2, 2) if input_size == 224 else (1, 1))


def test_reactnet_method_uses_the_layers_own_rsign():
    model = M.create("reactnet_a", method="reactnet", width=0.125, input_size=8)
    binary = [m for m in model.modules() if isinstance(m, BinaryLayer)]
    assert all(m.rsign_bias.shape == (m.in_channels,) for m in binary)
    # no second threshold in front of the binary convs
    assert not any(isinstance(m, RSign) for m in model.modules())
    # the threshold is live: moving it changes the output
    model.eval()
    x = model.example_input(2)
    with torch.no_grad():
        before = model(x)
        binary[3].rsign_bias.fill_(0.7)
        assert not torch.allclose(before, model(x))


def test_reactnet_width_keeps_channel_doubling():
    for width in (0.1, 0.3, 0.75, 1.5):
        model = M.create("reactnet_a", width=width, input_size=8)
        for block in model.blocks:
            cin, cout = block.conv3x3.in_channels, block.act2.prelu.num_parameters
            assert cout in (cin, 2 * cin)


# --------------------------------------------------------------------------------------------------
# ViT
# --------------------------------------------------------------------------------------------------
def test_vit_attention_matches_torch_multihead_attention():
    torch.manual_seed(0)
    vit = M.create("vit", img_size=8, patch_size=4, dim=12, depth=1, heads=3).eval()
    attn = vit.blocks[0].attn
    mha = nn.MultiheadAttention(12, 3, batch_first=True).eval()
    with torch.no_grad():
        mha.in_proj_weight.copy_(attn.qkv.weight)
        mha.in_proj_bias.copy_(attn.qkv.bias)
        mha.out_proj.weight.copy_(attn.proj.weight)
        mha.out_proj.bias.copy_(attn.proj.bias)
        x = torch.randn(2, 5, 12)
        torch.testing.assert_close(attn(x), mha(x, x, x, need_weights=False)[0], rtol=1e-5, atol=1e-5)


def test_vit_binary_layers_and_full_precision_embedding_and_head():
    vit = M.create("vit", method="bnn", img_size=8, patch_size=4, dim=8, depth=2, heads=2)
    binary = {n for n, m in vit.named_modules() if isinstance(m, BinaryLayer)}
    expected = {f"blocks.{i}.{p}" for i in range(2) for p in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")}
    assert binary == expected
    assert type(vit.patch_embed) is nn.Conv2d and type(vit.head) is nn.Linear
    assert vit.pos_embed.shape == (1, 5, 8)


def test_models_reject_inputs_they_were_not_built_for():
    with pytest.raises(ValueError, match="img_size=16"):
        M.create("vit", img_size=8, patch_size=4, dim=8, depth=1, heads=2)(torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match="input_size=16"):
        M.create("vgg_small")(torch.randn(2, 3, 16, 16))
    with pytest.raises(ValueError, match="built for"):
        M.create("conv1d")(torch.randn(2, 1, 41))
    with pytest.raises(ValueError, match="built for"):
        M.create("mlp", hidden=(8,))(torch.randn(2, 1, 8, 8))
