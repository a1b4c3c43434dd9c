"""Export fidelity: the packed model computes what the eval-mode PyTorch model computes, for every
deployable method, layer kind, odd channel counts, strides, padding values and kernel path; and the
file format round-trips and rejects bad files with one clear error."""

import json
import math
import random
import subprocess
import sys

import pytest
import torch
from deploy_probe import Residual, finish_training, randomize_norms
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import onebit
from onebit.deploy import ExportError, ModelFileError, export, kernels, load, save
from onebit.methods import NotDeployableError

DEPLOYABLE = onebit.methods.available()
PATHS = [k for k in kernels.available_kernels()]


def randomize_trained(model):
    randomize_norms(model)
    with torch.no_grad():
        for m in model.modules():
            for name, p in m.named_parameters(recurse=False):
                if name in ("rsign_bias", "alpha") or name.startswith("gamma"):
                    p.uniform_(-0.3, 0.3) if name == "rsign_bias" else p.uniform_(0.5, 1.5)



def conv_net(stride):
    return nn.Sequential(
        nn.Conv2d(3, 65, 3, padding=1), nn.BatchNorm2d(65), nn.Hardtanh(),
        Residual(65, stride),
        nn.Conv2d(65, 127, 3, padding=1, stride=stride), nn.BatchNorm2d(127), nn.PReLU(127),
        nn.Conv2d(127, 3, 1, bias=True), nn.BatchNorm2d(3), nn.ReLU(),
        nn.Flatten(), nn.LazyLinear(10),
    )


def linear_net():
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 127), nn.BatchNorm1d(127), nn.Hardtanh(),
                         nn.Linear(127, 65), nn.BatchNorm1d(65), nn.Hardtanh(), nn.Linear(65, 10))


def _check(model, x, method, **options):
    model(x)  # materialise lazy layers
    onebit.binarize(model, method, example_input=x, **options)
    finish_training(model, method)
    randomize_trained(model)
    model.eval()
    with torch.no_grad():
        expected = model(x)
    packed = export(model)
    assert packed.packed_layers(), "at least one layer runs on the engine"
    got = packed(x)
    scale = expected.abs().max().item()
    assert (got - expected).abs().max().item() <= 1e-4 * scale
    return packed


@pytest.mark.parametrize("method", DEPLOYABLE)
@pytest.mark.parametrize("stride,pad_value", [(1, 0.0), (2, 1.0), (1, -1.0)])
def test_conv_models_match_pytorch(method, stride, pad_value):
    if method == "xnor" and pad_value != 0:
        pad_value = 0.0  # also covered below; K-scaled ±1 padding is tested separately
    torch.manual_seed(1)
    _check(conv_net(stride), torch.randn(3, 3, 10, 6), method, pad_value=pad_value)


@pytest.mark.parametrize("method", DEPLOYABLE)
def test_linear_models_match_pytorch(method):
    torch.manual_seed(2)
    _check(linear_net(), torch.randn(5, 3, 8, 8), method)


@pytest.mark.parametrize("kernel", PATHS)
@pytest.mark.parametrize("method", ["reactnet", "xnor", "xnorpp", "hbnn"])
def test_every_kernel_path(kernel, method, monkeypatch):
    monkeypatch.setenv("ONEBIT_KERNEL", kernel)
    torch.manual_seed(3)
    _check(conv_net(2), torch.randn(2, 3, 8, 8), method, pad_value=1.0 if method != "xnor" else -1.0)


def test_conv1d_and_padding_modes():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv1d(1, 33, 5, padding=2), nn.BatchNorm1d(33), nn.Hardtanh(),
                          nn.Conv1d(33, 65, 3, padding=1, stride=2), nn.BatchNorm1d(65), nn.Hardtanh(),
                          nn.Conv1d(65, 65, 3, padding=1, padding_mode="reflect"), nn.BatchNorm1d(65),
                          nn.Hardtanh(), nn.Flatten(), nn.LazyLinear(10))
    _check(model, torch.randn(3, 1, 40), "bireal", keep_full_precision=("first", "last"))


class Fork(nn.Module):
    """A binary conv output read twice, and an addition with the block input: nothing may run in place."""

    def __init__(self, c):
        super().__init__()
        self.conv, self.bn, self.act = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.Hardtanh()

    def forward(self, x):
        y = self.bn(self.conv(x))
        return self.act(y + x) + y


def chain_net():
    return nn.Sequential(
        nn.Conv2d(3, 65, 3, padding=1), nn.BatchNorm2d(65), nn.Hardtanh(),
        nn.Conv2d(65, 130, 3, padding=1, stride=2), nn.BatchNorm2d(130), nn.Hardtanh(),
        nn.Conv2d(130, 63, 3, padding=1), nn.BatchNorm2d(63), nn.PReLU(63),
        nn.Conv2d(63, 63, 1), nn.BatchNorm2d(63), nn.Hardtanh(),
        Fork(63), Residual(63, 1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(63, 10))


@pytest.mark.parametrize("kernel", PATHS)
@pytest.mark.parametrize("method", ["bireal", "reactnet", "xnor", "hbnn"])
def test_execution_plan_chains_bits_exactly(kernel, method, monkeypatch, tmp_path):
    """The plan forward() runs (bits handed from binary layer to binary layer, in-place adds and
    clamps) computes exactly what the exported graph computes, and never reaches the file."""
    from onebit.deploy.export import _ChainedBinary, _ResidualBinary

    monkeypatch.setenv("ONEBIT_KERNEL", kernel)
    torch.manual_seed(12)
    x = torch.randn(2, 3, 11, 9)
    packed = _check(chain_net(), x, method)
    plan = packed.execution_plan()
    chained = [m for m in plan.modules() if isinstance(m, _ChainedBinary)]
    if method != "xnor":  # XNOR-Net scales its input by mean|x|: it needs the floats, no chain
        assert sum(m._consumer[0] is not None for m in chained) >= 2
        assert sum(m.bits_in for m in chained) >= 2
        assert any(isinstance(m, _ResidualBinary) for m in plan.modules())  # Residual's add + Hardtanh
    with torch.no_grad():
        assert torch.equal(packed(x), packed.net(x.contiguous(memory_format=torch.channels_last)))
    assert not any("_onebit_plan" in k for k in packed.state_dict())
    path = tmp_path / "chain.onebit"
    save(packed, path)
    assert torch.equal(load(path)(x), packed(x))


class ResidualVariants(nn.Module):
    """Binary conv + BN followed by additions the engine can fuse (a channels_last shortcut, with
    and without an activation after it) and ones it must leave to torch (an NCHW shortcut, a
    broadcast per-channel tensor)."""

    def __init__(self, c):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(c, c, 3, padding=1, bias=False) for _ in range(4))
        self.bns = nn.ModuleList(nn.BatchNorm2d(c) for _ in range(4))
        self.offset = nn.Parameter(torch.randn(1, c, 1, 1))
        self.act, self.act6 = nn.Hardtanh(), nn.ReLU6()

    def forward(self, x):
        x = self.act(self.bns[0](self.convs[0](x)) + x)  # fused with its Hardtanh
        x = self.bns[1](self.convs[1](x)) + x  # fused, no activation
        x = self.act6(self.bns[2](self.convs[2](x)) + x.contiguous())  # NCHW shortcut: torch adds
        return self.act(self.bns[3](self.convs[3](x)) + self.offset)  # broadcast: torch adds


@pytest.mark.parametrize("kernel", PATHS)
def test_execution_plan_fuses_residual_additions_exactly(kernel, monkeypatch):
    from onebit.deploy.export import _ResidualBinary

    monkeypatch.setenv("ONEBIT_KERNEL", kernel)
    torch.manual_seed(14)
    x = torch.randn(2, 3, 9, 7)
    model = nn.Sequential(nn.Conv2d(3, 65, 3, padding=1), nn.BatchNorm2d(65), nn.Hardtanh(),
                          ResidualVariants(65), nn.Flatten(), nn.LazyLinear(10))
    packed = _check(model, x, "bireal")
    fused = [m for m in packed.execution_plan().modules() if isinstance(m, _ResidualBinary)]
    assert len(fused) == 4 and sum(m.clamp is not None for m in fused) == 3
    # the outputs of the first three are also the next binary conv's input: one pass writes both
    assert sum(m._bits_for[0] is not None for m in fused) == 3
    # the first two write their output over a shortcut nobody reads after them (the stem's clamped
    # BatchNorm output, the previous block's output); the NCHW copy and the parameter are left alone
    assert [m.overwrite_residual for m in fused] == [True, True, False, False]
    x_before = x.clone()
    offset = packed.net.get_submodule("3").offset.detach().clone()
    with torch.no_grad():
        assert torch.equal(packed(x), packed.net(x.contiguous(memory_format=torch.channels_last)))
        assert torch.equal(packed(x), packed(x))
    assert torch.equal(x, x_before) and torch.equal(packed.net.get_submodule("3").offset, offset)


def test_a_fused_block_never_overwrites_the_callers_input():
    from onebit.deploy.export import _ResidualBinary

    torch.manual_seed(15)
    x = torch.randn(2, 64, 6, 6).contiguous(memory_format=torch.channels_last)
    model = nn.Sequential(ResidualVariants(64), nn.Flatten(), nn.LazyLinear(10))
    packed = _check(model, x, "bireal", keep_full_precision=("last",))  # the first conv binary too
    fused = [m for m in packed.execution_plan().modules() if isinstance(m, _ResidualBinary)]
    # the first block's shortcut is the model's input: read, never written
    assert len(fused) == 4 and [m.overwrite_residual for m in fused] == [False, True, False, False]
    x_before = x.clone()
    with torch.no_grad():
        assert torch.equal(packed(x), packed.net(x))
    assert torch.equal(x, x_before)


def test_execution_plan_follows_net_changes():
    torch.manual_seed(13)
    x = torch.randn(1, 3, 8, 8)
    packed = _check(chain_net(), x, "bireal")
    other = _check(chain_net(), x, "bireal")
    plan = packed.execution_plan()
    assert packed.execution_plan() is plan  # cached
    packed.net = other.net
    assert packed.execution_plan() is not plan  # a new net gets a new plan
    assert torch.equal(packed(x), other(x))
    plan = packed.execution_plan()
    packed.refresh()
    assert packed.execution_plan() is not plan


def test_save_load_round_trip_and_file_size(tmp_path):
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64), nn.Hardtanh(),
                          nn.Conv2d(64, 256, 3, padding=1), nn.BatchNorm2d(256), nn.Hardtanh(),
                          nn.Conv2d(256, 256, 3, padding=1), nn.BatchNorm2d(256), nn.Hardtanh(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, 10))
    x = torch.randn(2, 3, 8, 8)
    packed = _check(model, x, "reactnet")
    path = tmp_path / "m.onebit"
    save(packed, path)
    again = load(path)
    assert torch.equal(again(x), packed(x))
    fp32 = tmp_path / "fp32.pt"
    torch.save(nn.Sequential(*[m for m in model]).state_dict(), fp32)
    assert fp32.stat().st_size / path.stat().st_size > 12  # the big layers are 1-bit now


def test_bad_files_give_one_clear_error(tmp_path):
    torch.manual_seed(6)
    packed = _check(linear_net(), torch.randn(2, 3, 8, 8), "bnn")
    good = tmp_path / "good.onebit"
    save(packed, good)
    data = good.read_bytes()
    cases = {
        "truncated": data[: len(data) // 2],
        "garbage": b"\x00\x01garbage" * 50,
        "flipped": data[:8] + bytes(b ^ 0xFF for b in data[8:200]) + data[200:],
        "empty": b"",
    }
    for name, content in cases.items():
        bad = tmp_path / f"{name}.onebit"
        bad.write_bytes(content)
        with pytest.raises(ModelFileError):
            load(bad)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, foreign)
    with pytest.raises(ModelFileError, match="not an onebit packed model"):
        load(foreign)
    with pytest.raises(ModelFileError, match="does not exist"):
        load(tmp_path / "missing.onebit")
    # a graph that names a function outside the allow-list is refused, not run
    from safetensors import safe_open
    from safetensors.torch import save as st_save

    with safe_open(str(good), framework="pt") as fh:
        meta = fh.metadata()
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    graph = json.loads(meta["graph"])
    graph["nodes"].insert(1, {"name": "evil", "op": "call_function", "target": "os.system",
                              "args": {"tuple": ["echo pwned"]}, "kwargs": {"dict": {}}})
    meta["graph"] = json.dumps(graph)
    evil = tmp_path / "evil.onebit"
    evil.write_bytes(st_save(tensors, metadata=meta))
    with pytest.raises(ModelFileError, match="does not match the SHA-256 digest"):
        load(evil)
    # the digest guards against damage, not against a crafted file: re-signed, the allow-list refuses it
    with pytest.raises(ModelFileError, match="not part of the format"):
        load(_write(evil, meta, tensors))


@pytest.mark.parametrize("compress", [True, False])
def test_any_damaged_byte_gives_one_clear_error(tmp_path, compress):
    """Every byte of a file matters: a flipped bit or a cut anywhere raises ModelFileError, and in
    particular never loads a silently different model (raw weight planes have no other check)."""
    torch.manual_seed(8)
    x = torch.randn(2, 3, 8, 8)
    packed = _check(fp_heavy_net(), x, "bireal")
    good = tmp_path / "good.onebit"
    save(packed, good, compress=compress)
    data = good.read_bytes()
    rng = random.Random(8)
    bad = tmp_path / "bad.onebit"
    offsets = sorted(rng.sample(range(len(data)), 150)) + [0, 7, 8, len(data) - 1]
    for offset in offsets:
        broken = bytearray(data)
        broken[offset] ^= 1 << rng.randrange(8)
        bad.write_bytes(bytes(broken))
        with pytest.raises(ModelFileError, match="bad.onebit"):
            load(bad)
    for cut in sorted(rng.sample(range(1, len(data)), 40)):
        bad.write_bytes(data[:cut])
        with pytest.raises(ModelFileError, match="bad.onebit"):
            load(bad)
    bad.write_bytes(data + b"\0")  # trailing bytes
    with pytest.raises(ModelFileError, match="bad.onebit"):
        load(bad)
    assert torch.equal(load(good)(x), packed(x))


def test_version_3_needs_its_digest(tmp_path):
    torch.manual_seed(9)
    packed = _check(linear_net(), torch.randn(2, 3, 8, 8), "bnn")
    good = tmp_path / "good.onebit"
    save(packed, good)
    metadata, tensors = _read(good)
    assert metadata["format_version"] == "3" and len(metadata["sha256"]) == 64
    del metadata["sha256"]
    with pytest.raises(ModelFileError, match="format version 3 without its 'sha256' entry"):
        load(_write(tmp_path / "unsigned.onebit", metadata, tensors, sign=False))


def test_corrupt_file_never_crashes_the_process(tmp_path):
    torch.manual_seed(7)
    packed = _check(conv_net(1), torch.randn(2, 3, 8, 8), "bireal")
    good = tmp_path / "good.onebit"
    save(packed, good)
    data = bytearray(good.read_bytes())
    for offset in range(100, len(data), max(1, len(data) // 40)):  # corrupt tensor bytes and header bytes
        data[offset] ^= 0x5A
    bad = tmp_path / "bad.onebit"
    bad.write_bytes(bytes(data))
    code = (
        "import sys, torch\n"
        "from onebit.deploy import load, ModelFileError\n"
        "try:\n"
        f"    m = load({str(bad)!r}); m(torch.randn(1, 3, 8, 8))\n"
        "except Exception as e:\n"
        "    print(type(e).__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ModelFileError"


# --------------------------------------------------------------------------------------------------
# Compressed tensors (format version 2)
# --------------------------------------------------------------------------------------------------
CODEC_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32,
                torch.int16, torch.int8, torch.uint8, torch.bool]


def _random_tensor(dtype, shape, seed):
    """Every bit pattern is fair game: random bytes viewed as ``dtype`` (NaN payloads, subnormals...)."""
    g = torch.Generator().manual_seed(seed)
    count = math.prod(shape)
    if dtype is torch.bool:
        return torch.randint(0, 2, shape, generator=g, dtype=torch.bool)
    width = torch.empty((), dtype=dtype).element_size()
    raw = torch.randint(0, 256, (count * width,), generator=g, dtype=torch.uint8)
    return raw.view(dtype).reshape(shape)


def _same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
        a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8))


@pytest.mark.parametrize("dtype", CODEC_DTYPES)
@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 5), (1,), (7,), (64, 3, 3, 3), (1000, 17)])
def test_codec_round_trip_is_bit_exact(dtype, shape):
    from onebit.deploy import _codec

    tensor = _random_tensor(dtype, shape, seed=len(shape) + 31 * CODEC_DTYPES.index(dtype))
    data, info = _codec.encode(tensor)
    assert data.dtype == torch.uint8 and data.dim() == 1
    assert info == {"codec": "shuffle+zlib", "dtype": str(dtype).split(".")[-1], "shape": list(shape)}
    info = json.loads(json.dumps(info))  # what a file gives back
    assert _same_bits(_codec.decode(data, info), tensor)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_codec_keeps_special_floats(dtype):
    from onebit.deploy import _codec

    values = torch.tensor([float("nan"), -float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e-40, 3.0])
    tensor = values.to(dtype)
    raw = tensor.view(torch.uint8).clone()
    raw[-tensor.element_size():] = 0xFF  # a NaN with every payload bit set, sign set
    tensor = raw.view(dtype)
    assert _same_bits(_codec.decode(*_codec.encode(tensor)), tensor)
    assert torch.isnan(_codec.decode(*_codec.encode(tensor))[-1])
    big = tensor.repeat(1000).reshape(8, -1, 10).transpose(0, 2)  # non-contiguous input
    assert _same_bits(_codec.decode(*_codec.encode(big)), big.contiguous())


@settings(max_examples=60, deadline=None)
@given(dtype=st.sampled_from(CODEC_DTYPES), shape=st.lists(st.integers(0, 6), max_size=4),
       seed=st.integers(0, 2**31 - 1))
def test_codec_round_trip_property(dtype, shape, seed):
    from onebit.deploy import _codec

    tensor = _random_tensor(dtype, tuple(shape), seed)
    assert _same_bits(_codec.decode(*_codec.encode(tensor)), tensor)


def test_codec_rejects_every_inconsistency():
    from onebit.deploy import _codec

    tensor = torch.randn(300, 20)
    data, info = _codec.encode(tensor)
    raw = data.numpy().tobytes()

    def as_tensor(b):
        return torch.frombuffer(bytearray(b), dtype=torch.uint8) if b else torch.zeros(0, dtype=torch.uint8)

    bad_infos = [
        ("unknown codec", dict(info, codec="shuffle+lz4")),
        ("unknown dtype", dict(info, dtype="complex64")),
        ("not a list", dict(info, shape="300x20")),
        ("non-negative", dict(info, shape=[300, -20])),
        ("non-negative integers", dict(info, shape=[300.0, 20])),
        ("non-negative integers", dict(info, shape=[True, 6000])),
        ("decompresses to 24000 bytes.*needs 25200", dict(info, shape=[300, 21])),  # too short
        ("decompresses to 24000 bytes.*needs 48000", dict(info, dtype="float64")),
        ("more than the 23996 bytes", dict(info, shape=[5999])),  # too long: stops decompressing there
        ("cannot come from", dict(info, shape=[2**40, 2**20])),  # must not try to allocate that
        ("keys", dict(info, level=9)),
        ("keys", {"codec": "shuffle+zlib", "dtype": "float32"}),
        ("not an object", ["shuffle+zlib", "float32", [300, 20]]),
    ]
    for reason, bad in bad_infos:
        with pytest.raises(ValueError, match=reason):
            _codec.decode(data, bad)
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 0x10
    bad_data = [
        ("corrupt|decompresses|truncated", as_tensor(bytes(flipped))),
        ("truncated", as_tensor(raw[:-10])),
        ("cannot come from 0 compressed bytes", as_tensor(b"")),
        ("5 bytes follow", as_tensor(raw + b"\x00junk")),
        ("corrupt", as_tensor(raw[:-1] + bytes([raw[-1] ^ 1]))),  # Adler-32 check
        ("1-D uint8", data.to(torch.int16)),
        ("1-D uint8", data[:len(data) // 2 * 2].reshape(2, -1)),
        ("corrupt", as_tensor(b"\x00" * 64)),
    ]
    for reason, bad in bad_data:
        with pytest.raises(ValueError, match=reason):
            _codec.decode(bad, info)
    with pytest.raises(ValueError, match="cannot come from"):
        _codec.decode(data, dict(info, shape=[2**40, 2**20]))
    with pytest.raises(ValueError, match="unknown codec"):
        _codec.decode(data, dict(info, codec="gzip"))
    bools = _codec.encode(torch.full((10,), 7, dtype=torch.uint8))[0]
    with pytest.raises(ValueError, match="bool"):
        _codec.decode(bools, {"codec": "shuffle+zlib", "dtype": "bool", "shape": [10]})


def fp_heavy_net():
    """Binary middle, full-precision first conv and a 256x64 classifier (16384 fp32 weights)."""
    return nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64), nn.Hardtanh(),
                         nn.Conv2d(64, 256, 3, padding=1), nn.BatchNorm2d(256), nn.Hardtanh(),
                         nn.Conv2d(256, 256, 3, padding=1), nn.BatchNorm2d(256), nn.Hardtanh(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, 64))


def _read(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata()), {k: fh.get_tensor(k) for k in fh.keys()}


def _write(path, metadata, tensors, *, sign=True):
    """Writes a crafted file; with ``sign``, a version-3 file gets the digest of what it now holds
    (what a tool writing a consistent but wrong file would do), so the checks after the digest run."""
    from safetensors.torch import save as st_save

    from onebit.deploy.export import DIGEST_KEY, content_digest

    metadata = dict(metadata)
    if sign and metadata.get("format_version") == "3":
        metadata[DIGEST_KEY] = content_digest(metadata, tensors)
    path.write_bytes(st_save(tensors, metadata=metadata))
    return path


def test_compressed_files_load_bit_exact_and_are_smaller(tmp_path):
    from onebit.deploy.export import FORMAT_VERSION

    torch.manual_seed(14)
    x = torch.randn(2, 3, 8, 8)
    packed = _check(fp_heavy_net(), x, "reactnet")
    small, raw = tmp_path / "small.onebit", tmp_path / "raw.onebit"
    save(packed, small)
    save(packed, raw, compress=False)
    assert small.stat().st_size < raw.stat().st_size
    assert FORMAT_VERSION == 3
    meta_small, stored = _read(small)
    meta_raw, _ = _read(raw)
    assert meta_small["format_version"] == meta_raw["format_version"] == "3"
    assert json.loads(meta_raw["encoding"]) == {}
    encoding = json.loads(meta_small["encoding"])
    assert "11/weight" in encoding  # the classifier compresses ...
    assert all(stored[k].dtype == torch.uint8 and stored[k].dim() == 1 for k in encoding)
    planes = [k for k in stored if "plane" in k]
    assert planes and not any(k in encoding for k in planes)  # ... random weight bits do not
    assert not any(stored[k].numel() < 4096 for k in encoding)  # small tensors stay raw
    expected = packed(x)
    state = packed.net.state_dict()
    for path in (small, raw):
        again = load(path)
        assert torch.equal(again(x), expected)
        loaded = again.net.state_dict()
        assert loaded.keys() == state.keys()
        assert all(_same_bits(loaded[k], state[k].contiguous()) for k in state)
    again_small = tmp_path / "again.onebit"
    save(packed, again_small)
    # the same choices and bytes every time (safetensors orders the metadata entries at random, so
    # compare the parsed entries rather than the files)
    meta_again, stored_again = _read(again_small)
    assert meta_again == meta_small and stored_again.keys() == stored.keys()
    assert all(_same_bits(stored_again[k], stored[k]) for k in stored)
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temporary behind


def test_version_1_and_2_files_still_load(tmp_path):
    from onebit.deploy.export import FORMAT_NAME
    from onebit.deploy.graph import graph_to_json

    torch.manual_seed(15)
    x = torch.randn(2, 3, 8, 8)
    packed = _check(fp_heavy_net(), x, "bireal")
    # exactly what save() wrote in format version 1: raw tensors, no "encoding" entry
    description, tensors = graph_to_json(packed.net)
    metadata = {"format": FORMAT_NAME, "format_version": "1", "graph": json.dumps(description),
                "meta": json.dumps({"note": "v1"})}
    old = _write(tmp_path / "v1.onebit", metadata, {k: v.contiguous() for k, v in tensors.items()})
    again = load(old)
    assert torch.equal(again(x), packed(x)) and again.meta == {"note": "v1"}
    newer = _write(tmp_path / "v4.onebit", dict(metadata, format_version="4"), tensors)
    with pytest.raises(ModelFileError, match="format version 4; this onebit reads versions 1, 2 and 3"):
        load(newer)
    v2 = _write(tmp_path / "v2ok.onebit", dict(metadata, format_version="2", encoding="{}"), tensors)
    assert torch.equal(load(v2)(x), packed(x))  # version 2: no digest to check
    no_encoding = _write(tmp_path / "v2.onebit", dict(metadata, format_version="2"), tensors)
    with pytest.raises(ModelFileError, match="not a readable onebit packed model.*'encoding'"):
        load(no_encoding)


def test_corrupt_compressed_tensors_give_one_clear_error(tmp_path):
    torch.manual_seed(16)
    x = torch.randn(2, 3, 8, 8)
    packed = _check(fp_heavy_net(), x, "reactnet")
    good = tmp_path / "good.onebit"
    save(packed, good)
    metadata, tensors = _read(good)
    encoding = json.loads(metadata["encoding"])
    name = "11/weight"
    info = encoding[name]

    def with_info(**changes):
        return dict(metadata, encoding=json.dumps(dict(encoding, **{name: dict(info, **changes)})))

    payload = tensors[name]
    flipped = payload.clone()
    flipped[len(flipped) // 2] ^= 0x41
    cases = {
        "flipped bytes": (metadata, dict(tensors, **{name: flipped})),
        "truncated": (metadata, dict(tensors, **{name: payload[:-20].clone()})),
        "trailing bytes": (metadata, dict(tensors, **{name: torch.cat([payload, payload[:5]])})),
        "wrong shape": (with_info(shape=[64, 255]), tensors),
        "unknown codec": (with_info(codec="shuffle+zstd"), tensors),
        "unknown dtype": (with_info(dtype="float8"), tensors),
        "huge shape": (with_info(shape=[2**31, 2**31, 2**31]), tensors),
        "negative shape": (with_info(shape=[-64, -256]), tensors),
        "missing tensor": (dict(metadata, encoding=json.dumps(dict(encoding, ghost=info))), tensors),
        "not json": (dict(metadata, encoding="{not json"), tensors),
        "not a map": (dict(metadata, encoding="[1, 2]"), tensors),
        "bad info": (dict(metadata, encoding=json.dumps(dict(encoding, **{name: "shuffle+zlib"}))), tensors),
    }
    for case, (meta, stored) in cases.items():
        bad = _write(tmp_path / f"{case.replace(' ', '_')}.onebit", meta, stored)
        with pytest.raises(ModelFileError, match=f"{bad.name} is not a readable onebit packed model"):
            load(bad)
    # same element count, other shape: decodes, and the graph refuses it
    bad = _write(tmp_path / "transposed.onebit", with_info(shape=[256, 64]), tensors)
    with pytest.raises(ModelFileError, match="transposed.onebit"):
        load(bad)
    # the compressed bytes corrupted in place, one byte at a time at many offsets
    data = good.read_bytes()
    start = data.index(payload.numpy().tobytes())
    for offset in range(start, start + len(payload), max(1, len(payload) // 25)):
        broken = bytearray(data)
        broken[offset] ^= 0x5A
        bad = tmp_path / "in_place.onebit"
        bad.write_bytes(bytes(broken))
        with pytest.raises(ModelFileError, match="does not match the SHA-256 digest"):
            load(bad)


def depthwise_net(stride):
    """MobileNet-style: depthwise 3x3 / 5x5 binary convs (odd channel count) between 1x1 ones."""
    return nn.Sequential(
        nn.Conv2d(3, 65, 3, padding=1), nn.BatchNorm2d(65), nn.Hardtanh(),
        nn.Conv2d(65, 65, 3, padding=1, stride=stride, groups=65), nn.BatchNorm2d(65), nn.Hardtanh(),
        nn.Conv2d(65, 65, 5, padding=2, groups=65, bias=True), nn.BatchNorm2d(65), nn.PReLU(65),
        nn.Conv2d(65, 63, 1), nn.BatchNorm2d(63), nn.Hardtanh(),
        nn.Flatten(), nn.LazyLinear(10),
    )


@pytest.mark.parametrize("method", DEPLOYABLE)
@pytest.mark.parametrize("stride,pad_value", [(1, 0.0), (2, 1.0), (1, -1.0)])
def test_depthwise_models_match_pytorch(method, stride, pad_value, tmp_path):
    from onebit.deploy.packed import PackedBinary

    torch.manual_seed(6)
    x = torch.randn(3, 3, 10, 7)
    packed = _check(depthwise_net(stride), x, method, pad_value=pad_value)
    layers = [m for m in packed.net.modules() if isinstance(m, PackedBinary)]
    if layers:  # (weight-only methods run in torch: PackedBinaryWeightOnly with groups)
        assert sum(isinstance(m.packed, kernels.PackedDepthwiseWeights) for m in layers) == 2
    path = tmp_path / "dw.onebit"
    save(packed, path)
    again = load(path)
    assert [m.config.get("groups") for m in again.net.modules() if hasattr(m, "config")].count(65) == 2
    assert torch.equal(again(x), packed(x))
    if method == "bnn" and stride == 1 and pad_value == 0.0:  # a file whose groups contradict its weights
        metadata, tensors = _read(path)
        metadata["graph"] = metadata["graph"].replace('"groups": 65', '"groups": 5', 1)
        assert '"groups": 5' in metadata["graph"]
        with pytest.raises(ModelFileError, match="groups=5"):
            load(_write(tmp_path / "bad.onebit", metadata, tensors))


@pytest.mark.parametrize("kernel", PATHS)
@pytest.mark.parametrize("method", ["bireal", "reactnet", "xnor"])
def test_depthwise_chains_bits_exactly(kernel, method, monkeypatch):
    """Bits handed into and out of depthwise layers give exactly the unchained graph's output."""
    from onebit.deploy.export import _ChainedBinary

    monkeypatch.setenv("ONEBIT_KERNEL", kernel)
    torch.manual_seed(14)
    x = torch.randn(2, 3, 9, 9)
    packed = _check(depthwise_net(2), x, method, pad_value=-1.0)
    chained = [m for m in packed.execution_plan().modules() if isinstance(m, _ChainedBinary)]
    if method != "xnor":
        dw = [m for m in chained if isinstance(m.layer.packed, kernels.PackedDepthwiseWeights)]
        assert any(m.bits_in for m in dw) and any(m._consumer[0] is not None for m in dw)
    with torch.no_grad():
        assert torch.equal(packed(x), packed.net(x.contiguous(memory_format=torch.channels_last)))


def test_depthwise_conv1d_matches_pytorch():
    torch.manual_seed(7)
    model = nn.Sequential(nn.Conv1d(1, 33, 5, padding=2), nn.BatchNorm1d(33), nn.Hardtanh(),
                          nn.Conv1d(33, 33, 3, padding=1, stride=2, groups=33), nn.BatchNorm1d(33), nn.Hardtanh(),
                          nn.Conv1d(33, 33, 5, padding=2, groups=33), nn.BatchNorm1d(33), nn.Hardtanh(),
                          nn.Flatten(), nn.LazyLinear(10))
    _check(model, torch.randn(3, 1, 40), "reactnet", pad_value=1.0)


def test_undeployable_layers_are_named():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, groups=2), nn.Conv2d(8, 4, 3))
    onebit.binarize(model, "bnn")
    with pytest.raises(NotDeployableError, match="layer '1'.*groups=2"):
        export(model)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 16, 3, groups=8),
                          nn.Conv2d(16, 4, 3))
    onebit.binarize(model, "bnn")  # depthwise layer '1' deploys; '2' (channel multiplier 2) does not
    with pytest.raises(NotDeployableError, match=r"layer '2'.*groups=8 \(in_channels=8, out_channels=16\)"):
        export(model)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3), nn.Conv2d(8, 4, 3))
    onebit.binarize(model, "bnn", binarize_weights=False)
    with pytest.raises(NotDeployableError, match="layer '1'.*full precision"):
        export(model)

    class Untraceable(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 4)
            self.c = nn.Linear(4, 4)

        def forward(self, x):
            h = self.b(self.a(x))
            if h.sum() > 0:  # data-dependent control flow
                h = -h
            return self.c(h)

    with pytest.raises(ExportError, match="could not trace"):
        export(onebit.binarize(Untraceable(), "bnn"))
    stage1 = onebit.binarize(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)), "biper")
    with pytest.raises(NotDeployableError, match="layer '1'.*stage"):
        export(stage1)
    midway = onebit.binarize(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)), "bnn++")
    onebit.schedule_step(midway, 3, 10)
    with pytest.raises(NotDeployableError, match="layer '1'"):
        export(midway)


@pytest.mark.parametrize("name,options,shape", [
    ("resnet20", {}, (2, 3, 32, 32)),
    ("resnet18_imagenet", {"bireal": True}, (2, 3, 64, 64)),
    ("vgg_small", {"input_size": 16}, (2, 3, 16, 16)),
    ("reactnet_a", {"width": 0.25, "input_size": 32}, (2, 3, 32, 32)),
    ("conv1d", {}, (2, 1, 40)),
    ("mlp", {"hidden": (64, 65, 63), "input_shape": (1, 8, 8)}, (3, 1, 8, 8)),
])
@pytest.mark.parametrize("method", ["reactnet", "xnor", "hbnn", "irnet", "pcpp-bnn"])
def test_zoo_models_export(name, options, shape, method):
    import onebit.models

    torch.manual_seed(8)
    model = onebit.models.create(name, num_classes=10, method=method, **options)
    x = torch.randn(shape)
    model(x)
    randomize_trained(model)
    model.eval()
    with torch.no_grad():
        expected = model(x)
    got = export(model)(x)
    assert (got - expected).abs().max().item() <= 1e-4 * expected.abs().max().item()


@pytest.mark.parametrize("method", ["dorefa", "reactnet", "xnor", "hbnn"])
def test_vit_layers_match_one_by_one(method):
    """In a ViT, Linear → GELU → binary Linear passes exact integer zeros (GELU(0) = 0) to the next
    sign; torch's float accumulation leaves ±1e-9 noise there, so a whole-network comparison flips
    signs at those ties by chance. Each packed layer must still reproduce its PyTorch layer."""
    import onebit.models

    torch.manual_seed(9)
    model = onebit.models.create("vit", num_classes=10, method=method, img_size=16, patch_size=4, dim=32,
                                 depth=2, heads=2).eval()
    x = torch.randn(2, 3, 16, 16)
    seen = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, (i[0], o)))
             for n, m in model.named_modules() if isinstance(m, onebit.nn.BinaryLayer)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    packed = dict(export(model).net.named_modules())
    assert len(seen) == 8
    for name, (inp, out) in seen.items():
        assert (packed[name](inp) - out).abs().max().item() <= 1e-5 * out.abs().max().item(), name


def test_hbnn_hetero_activations_are_refused():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 4, 1))
    onebit.binarize(model, onebit.methods.get("hbnn", activations="hetero"))
    model(torch.randn(2, 3, 8, 8))
    with pytest.raises(NotDeployableError, match="activations='hetero'"):
        export(model.eval())
