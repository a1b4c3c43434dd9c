"""A binarized BERT-style encoder (Linear layers, GELU, LayerNorm, multi-head self-attention with a
padding mask, a classifier on the first token), written by hand as a user would, exports through
torch.fx, matches PyTorch and round-trips through the file format (issue 20, item 6)."""

import math

import pytest
import torch
from torch import nn

import onebit
from onebit.deploy import export, load, save


class EncoderLayer(nn.Module):
    def __init__(self, d, heads, ff):
        super().__init__()
        self.heads, self.scale = heads, 1.0 / math.sqrt(d // heads)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ff1, self.ff2, self.act = nn.Linear(d, ff), nn.Linear(ff, d), nn.GELU()

    def forward(self, x, mask):
        b, t, d = x.shape
        h = self.heads
        q = self.q(x).view(b, t, h, d // h).transpose(1, 2)
        k = self.k(x).view(b, t, h, d // h).transpose(1, 2)
        v = self.v(x).view(b, t, h, d // h).transpose(1, 2)
        attention = torch.softmax(q @ k.transpose(-1, -2) * self.scale + mask, dim=-1) @ v
        x = self.ln1(x + self.o(attention.transpose(1, 2).reshape(b, t, d)))
        return self.ln2(x + self.ff2(self.act(self.ff1(x))))


class Encoder(nn.Module):
    def __init__(self, d=32, heads=2, ff=64, layers=2, classes=3):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(d, heads, ff) for _ in range(layers))
        self.head = nn.Linear(d, classes)

    def forward(self, x, mask):
        additive = (1.0 - mask[:, None, None, :]) * -1e4  # padded tokens get no attention
        for layer in self.layers:
            x = layer(x, additive)
        return self.head(x[:, 0])


@pytest.mark.parametrize("method", ["bireal", "reactnet", "xnor", "hbnn"])
def test_binarized_encoder_exports_and_matches_pytorch(method, tmp_path):
    torch.manual_seed(0)
    model = Encoder()
    x, mask = torch.randn(2, 5, 32), torch.ones(2, 5)
    mask[1, 3:] = 0
    onebit.binarize(model, method, example_input=(x, mask))
    model.eval()
    with torch.no_grad():
        expected = model(x, mask)
    packed = export(model)
    assert len(packed.packed_layers()) == 11  # every Linear but the first (q of layer 0) and the head
    got = packed(x, mask)
    assert (got - expected).abs().max().item() <= 1e-4 * expected.abs().max().item()
    save(packed, tmp_path / "encoder.onebit")
    assert torch.equal(load(tmp_path / "encoder.onebit")(x, mask), got)


class CheckedEncoder(Encoder):
    """The encoder behind a check on the input's shape, as Hugging Face models have: torch.fx cannot
    trace a Python `if` on a shape, torch.export can."""

    def forward(self, x, mask):
        if x.shape[1] > 512:
            raise ValueError("sequences longer than 512 tokens")
        return super().forward(x, mask)


def test_an_encoder_torch_fx_cannot_trace_is_captured_with_torch_export(tmp_path):
    from onebit.deploy import ExportError

    torch.manual_seed(1)
    model = CheckedEncoder(layers=1)
    x, mask = torch.randn(2, 5, 32), torch.ones(2, 5)
    mask[0, 4:] = 0
    onebit.binarize(model, "reactnet", example_input=(x, mask))
    model.eval()
    with torch.no_grad():
        expected = model(x, mask)
    with pytest.raises(ExportError, match="could not trace CheckedEncoder.*pass example_input="):
        export(model)
    packed = export(model, example_input=(x, mask))
    assert len(packed.packed_layers()) == 5  # k, v, o, ff1, ff2 (q is the first layer: kept real)
    got = packed(x, mask)
    assert (got - expected).abs().max().item() <= 1e-4 * expected.abs().max().item()
    x2, mask2 = torch.randn(2, 5, 32), torch.ones(2, 5)  # another input of the captured shape
    with torch.no_grad():
        assert (packed(x2, mask2) - model(x2, mask2)).abs().max().item() <= 1e-4 * model(x2, mask2).abs().max().item()
    with pytest.raises(ExportError, match="captured with torch.export"):
        save(packed, tmp_path / "encoder.onebit")


def test_a_small_hugging_face_bert_exports_through_torch_export():
    """BertForSequenceClassification built from a config (no download), binarized: torch.fx stops at
    its input checks; with example_input it is captured by torch.export and matches PyTorch."""
    transformers = pytest.importorskip("transformers")
    from onebit.deploy import ExportError

    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=16, num_labels=3)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config).eval()
    ids, attention = torch.randint(0, 100, (2, 6)), torch.ones(2, 6, dtype=torch.long)
    attention[1, 4:] = 0
    inputs = {"input_ids": ids, "attention_mask": attention}
    onebit.binarize(model, "reactnet", example_input=inputs)
    model.eval()
    with torch.no_grad():
        expected = model(**inputs).logits
    with pytest.raises(ExportError, match="could not trace BertForSequenceClassification"):
        export(model)
    packed = export(model, example_input=inputs)
    assert len(packed.packed_layers()) == 6  # every Linear but the first (the query) and the classifier
    got = packed(**inputs).logits
    assert (got - expected).abs().max().item() <= 1e-4 * expected.abs().max().item()
