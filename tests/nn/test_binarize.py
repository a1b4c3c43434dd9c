"""binarize() on models it has never seen: a CNN, an MLP and a transformer block, with every method."""

import warnings

import pytest
import torch
from torch import nn

import onebit
from onebit.nn import BinaryConv2d, BinaryLayer, BinaryLinear

METHODS = onebit.methods.available()


def small_cnn():
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 17, 3, padding=1, stride=2), nn.BatchNorm2d(17), nn.Hardtanh(),
        nn.Conv2d(17, 32, 3, padding=1), nn.BatchNorm2d(32), nn.Hardtanh(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )


def small_mlp():
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, 48), nn.BatchNorm1d(48), nn.Hardtanh(),
        nn.Linear(48, 48), nn.BatchNorm1d(48), nn.Hardtanh(), nn.Linear(48, 10),
    )


class Block(nn.Module):
    """A pre-norm transformer block with attention written from nn.Linear, as in ViT/DeiT."""

    def __init__(self, dim=32, heads=4):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, dim=-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm2(x))))


class Transformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(8, 32)
        self.block = Block()
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.block(self.embed(x)).mean(dim=1))


MODELS = {
    "cnn": (small_cnn, lambda: torch.randn(8, 3, 8, 8)),
    "mlp": (small_mlp, lambda: torch.randn(8, 1, 8, 8)),
    "transformer": (Transformer, lambda: torch.randn(8, 6, 8)),
}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("arch", list(MODELS))
def test_binarize_and_take_an_optimizer_step(method, arch):
    build, data = MODELS[arch]
    torch.manual_seed(0)
    model = build()
    reference = {n: p.detach().clone() for n, p in model.named_parameters()}
    x = data()
    out = onebit.binarize(model, method, example_input=x)
    assert out is model
    layers = onebit.nn.binary_layers(model)
    assert layers, "something was binarized"
    for name, layer in layers:  # weights copied
        assert torch.equal(layer.weight, reference[f"{name}.weight"])
    model.train()
    onebit.schedule_step(model, 0, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    y = torch.randint(0, 10, (x.shape[0],))
    loss = nn.functional.cross_entropy(model(x), y) + onebit.extra_loss(model)
    assert torch.isfinite(loss)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"zero gradient on {name}"
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_first_and_last_are_kept_and_other_choices():
    model = small_cnn()
    onebit.binarize(model, "bnn")
    assert type(model[0]) is nn.Conv2d and type(model[11]) is nn.Linear
    assert isinstance(model[3], BinaryConv2d) and isinstance(model[6], BinaryConv2d)
    assert model[3].onebit_name == "3"

    model = small_cnn()
    onebit.binarize(model, "bnn", keep_full_precision=None)
    assert isinstance(model[0], BinaryConv2d) and isinstance(model[11], BinaryLinear)

    model = small_cnn()
    onebit.binarize(model, "bnn", keep_full_precision=[nn.Linear, "6"])
    assert isinstance(model[0], BinaryConv2d) and isinstance(model[3], BinaryConv2d)
    assert type(model[6]) is nn.Conv2d and type(model[11]) is nn.Linear

    model = Transformer()
    onebit.binarize(model, "xnor", keep_full_precision=("first", "last", "block.q*"))
    assert type(model.block.qkv) is nn.Linear and isinstance(model.block.fc1, BinaryLinear)


def test_first_last_by_execution_order():
    class HeadFirst(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(8, 2)  # registered first, runs last
            self.stem = nn.Linear(4, 8)
            self.mid = nn.Linear(8, 8)

        def forward(self, x):
            return self.head(self.mid(self.stem(x)))

    model = onebit.binarize(HeadFirst(), "bnn", example_input=torch.randn(2, 4))
    assert type(model.stem) is nn.Linear and type(model.head) is nn.Linear
    assert isinstance(model.mid, BinaryLinear)


def test_options_reach_layers_and_errors():
    model = onebit.binarize(small_cnn(), "recu", tau_min=0.8, pad_value=-1)
    assert model[3].method.tau_min == 0.8 and model[3].pad_value == -1.0
    with pytest.raises(ValueError, match="matches no Conv/Linear layer"):
        onebit.binarize(small_cnn(), "bnn", keep_full_precision=["backbone.conv9"])
    with pytest.raises(ValueError, match="unknown binarization method"):
        onebit.binarize(small_cnn(), "bogus")
    with pytest.raises(ValueError, match="unknown option"):
        onebit.binarize(small_cnn(), "bnn", tau=3)


def test_single_layer_and_already_binary_layers():
    conv = nn.Conv2d(2, 4, 3)
    new = onebit.binarize(conv, "bnn")
    assert isinstance(new, BinaryConv2d) and torch.equal(new.weight, conv.weight)
    model = onebit.binarize(small_mlp(), "bnn", keep_full_precision=None)
    count = len(onebit.nn.binary_layers(model))
    onebit.binarize(model, "xnor", keep_full_precision=None)
    assert len(onebit.nn.binary_layers(model)) == count
    assert all(layer.method.name == "bnn" for _, layer in onebit.nn.binary_layers(model))


def test_torch_transformer_layer_warns_about_attention():
    layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
    model = nn.Sequential(nn.Linear(4, 16), layer, nn.Linear(16, 3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        onebit.binarize(model, "bnn")
    assert any("MultiheadAttention" in str(w.message) for w in caught)
    assert isinstance(layer.linear1, BinaryLinear) and not isinstance(layer.self_attn.out_proj, BinaryLayer)
    assert model(torch.randn(2, 5, 4)).shape == (2, 5, 3)


def test_schedule_step_validation_and_extra_loss_default():
    model = small_mlp()
    assert onebit.extra_loss(model).item() == 0.0
    with pytest.raises(ValueError, match="epochs"):
        onebit.schedule_step(model, 0, 0)
    with pytest.raises(ValueError, match="epoch=5"):
        onebit.schedule_step(model, 5, 4)
