"""The packed-model file, checked from outside (issue 21, deploy area: ``fileformat.py`` had never been
sampled; its digest and compression thresholds only ever met themselves in a save/load round trip).

* The ``sha256`` entry is the digest the module docstring specifies, recomputed here independently from
  the file's raw metadata and stored tensors: every entry but ``sha256`` and every stored tensor (name,
  ``dtype[shape]``, bytes), sorted by name, each field prefixed with its length as 8 little-endian bytes. A
  writer that hashed anything else (another length width, the digest entry itself, a tensor in another
  order or layout) would still round-trip through its own ``load`` but fail every other reader.
* A tensor is stored compressed from 4096 elements on, when that saves at least 2%: a 4096-element
  compressible weight is compressed, a 4095-element one and a barely compressible one stay raw."""

from __future__ import annotations

import hashlib
import json

import torch
from torch import nn

from onebit.deploy import export, load, save
from onebit.nn import BinaryLinear


def _read_raw(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata()), {k: fh.get_tensor(k) for k in fh.keys()}


def _expected_digest(metadata: dict[str, str], stored: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()

    def field(data: bytes) -> None:
        h.update(len(data).to_bytes(8, "little") + data)

    for key in sorted(k for k in metadata if k != "sha256"):
        field(key.encode("utf-8"))
        field(metadata[key].encode("utf-8"))
    for name in sorted(stored):
        t = stored[name]
        field(name.encode("utf-8"))
        field((str(t.dtype).split(".")[-1] + str(list(t.shape))).encode("utf-8"))
        field(t.contiguous().numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes())
    return h.hexdigest()


def _model() -> nn.Sequential:
    """Full-precision layers of 4095 (65x63) and 4096 (64x64) weights around a binary one; the two big
    weights hold a few distinct values (compressible), the last one float32 words of random bytes (finite:
    the exponent byte avoids 0 and 255), which deflate cannot shrink by 2%."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 65), nn.Linear(65, 63), BinaryLinear(63, 64, method="xnor"),
                          nn.Linear(64, 64), nn.Linear(64, 70)).eval()
    with torch.no_grad():
        for layer in (model[1], model[3]):
            layer.weight.copy_(torch.randint(-3, 4, layer.weight.shape).float() / 8)
        words = torch.randint(0, 2**31 - 1, (70, 64), generator=torch.Generator().manual_seed(1), dtype=torch.int64)
        exponent = torch.randint(1, 255, (70, 64), generator=torch.Generator().manual_seed(2), dtype=torch.int64)
        words = (words & ~(0xFF << 23)) | (exponent << 23)
        model[4].weight.copy_(words.to(torch.int32).view(torch.float32))
    assert torch.isfinite(model[4].weight).all()
    return model


def test_the_digest_is_the_documented_one_and_the_thresholds_hold(tmp_path):
    model = _model()
    packed = export(model)
    path = tmp_path / "m.onebit"
    save(packed, path)
    metadata, stored = _read_raw(path)
    assert metadata["format"] == "onebit-packed" and metadata["format_version"] == "3"
    assert len(stored) >= 8 and len(metadata) == 6
    assert metadata["sha256"] == _expected_digest(metadata, stored)
    names = {tuple(t.shape): k for k, t in packed.net.state_dict().items()}
    encoding = json.loads(metadata["encoding"])
    big, small, noisy = names[(64, 64)], names[(63, 65)], names[(70, 64)]
    compressed = sorted(k for k in stored if any(k.endswith(n.replace(".", "/")) or k == n for n in [big]))
    assert compressed and all(k in encoding for k in compressed), (sorted(encoding), sorted(stored))
    assert encoding[compressed[0]] == {"codec": "shuffle+zlib", "dtype": "float32", "shape": [64, 64]}
    assert not any(k.endswith(small.replace(".", "/")) or k == small for k in encoding)  # 4095 elements: raw
    assert not any(k.endswith(noisy.replace(".", "/")) or k == noisy for k in encoding)  # saves < 2%: raw
    again = load(path).net.state_dict()
    for key, value in packed.net.state_dict().items():
        assert torch.equal(again[key].view(torch.uint8) if value.dtype.is_floating_point else again[key],
                           value.contiguous().view(torch.uint8) if value.dtype.is_floating_point else value)


def _weight_compressing_to(target: int, shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Two finite float32 weights of ``shape`` whose stored encoding is exactly ``target`` bytes and one
    byte more (found here with the codec itself, so any zlib build gives a true boundary): random words,
    the low byte cleared in a leading run of elements, one element more or less."""
    from onebit.deploy import _codec

    n = shape[0] * shape[1]
    for seed in range(8):
        g = torch.Generator().manual_seed(seed)
        words = torch.randint(0, 2**32, (n,), generator=g, dtype=torch.int64)
        exponent = torch.randint(1, 255, (n,), generator=g, dtype=torch.int64)  # never 0 or 255: finite
        words = (words & ~(0xFF << 23)) | (exponent << 23)

        def weight(cleared: int, words: torch.Tensor = words) -> torch.Tensor:
            w = words.clone()
            w[:cleared] &= ~0xFF
            return torch.where(w >= 2**31, w - 2**32, w).to(torch.int32).view(torch.float32).reshape(shape)

        def size(cleared: int) -> int:
            return _codec.encode(weight(cleared))[0].numel()

        lo, hi = 0, n  # the fewest cleared bytes that reach the target
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if size(mid) <= target else (mid + 1, hi)
        if 0 < lo < n and size(lo) == target and size(lo - 1) == target + 1:
            return weight(lo), weight(lo - 1)
    raise AssertionError(f"no weight of {shape} compresses to exactly {target} bytes")


def test_a_tensor_saving_exactly_two_percent_is_stored_compressed(tmp_path):
    """"At least 2% smaller": 5000 float32 (20000 bytes) encoded in exactly 19600 bytes are stored
    compressed, in 19601 bytes raw (the boundary the docstring of save() states)."""
    from onebit.deploy.fileformat import COMPRESS_MAX_FRACTION

    target = 19600
    assert COMPRESS_MAX_FRACTION * 5000 * 4 == target  # exactly representable: a true boundary
    exact, over = _weight_compressing_to(target, (50, 100))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(100, 50), nn.Linear(50, 100), BinaryLinear(100, 8, method="xnor")).eval()
    with torch.no_grad():
        model[0].weight.copy_(exact)
        model[1].weight.copy_(over.reshape(100, 50))
    path = tmp_path / "m.onebit"
    save(export(model), path)
    metadata, stored = _read_raw(path)
    encoding = json.loads(metadata["encoding"])
    assert set(encoding) == {"0/weight"}, sorted(encoding)
    assert stored["0/weight"].numel() == target and stored["1/weight"].dtype == torch.float32
    again = load(path).net.state_dict()
    assert torch.equal(again["0.weight"].view(torch.int32), exact.view(torch.int32))
    assert torch.equal(again["1.weight"].view(torch.int32), over.reshape(100, 50).view(torch.int32))
