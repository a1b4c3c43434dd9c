"""XNOR-Net++: a learnable rank-1 output scale in place of the analytic scales."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .base import Method, Option, register
from .functional import ClipSTE, QuantizerCall, sign_clip_ste

_SPATIAL_NAMES = ("gamma_h", "gamma_w")


def _check_size(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, int):
        value = (value,)
    if not isinstance(value, (tuple, list)) or not all(isinstance(v, int) and v > 0 for v in value):
        return "not a tuple of positive ints"
    return None


@register
class XNORPlusPlus(Method):
    """XNOR-Net++ (Bulat & Tzimiropoulos, BMVC 2019), the rank-1 scale of its Eq. 8 ("case 3").

    ``sign(A)`` and ``sign(W)`` with clip-STE (BiBench ``xnorplusplus.py``), then the output is
    multiplied by Γ = o ⊗ h ⊗ w: learnable factors over output channels (``gamma_o``), output rows
    (``gamma_h``) and output columns (``gamma_w``), all initialised to 1. Conv1d has ``gamma_o`` and
    ``gamma_h`` (length); Linear has ``gamma_o`` only.

    Difference from BiBench: BiBench allocates h and w with 2000 entries and slices them to the output
    size, so most entries never train and the state is 4000 numbers per layer. onebit sizes them from
    the real output: from the ``output_size`` option when given, else at the first forward pass (the
    parameters are created uninitialised and materialised in place, so an optimizer built before that
    pass still holds them). A later input of another output size raises a clear error.

    Difference from BiBench's ``XNORPlusPlusLinear`` (its Linear class differs from its own conv classes,
    which onebit follows for every layer kind): its ``BinaryQuantizer`` blocks the gradient where
    ``|x| ≥ 1`` (weights and activations); onebit's clip-STE passes it at exactly ``|x| = 1``, as
    ``torch.clamp`` in ``XNORPlusPlusConv2d``/``Conv1d`` does.
    """

    name = "xnorpp"
    paper = "Bulat & Tzimiropoulos, XNOR-Net++, BMVC 2019"
    options = {
        "output_size": Option(
            None, "spatial output size (H, W) or (L,) of each conv, or None to size Γ at the first forward",
            check=_check_size,
        ),
    }

    def init_layer(self, layer: nn.Module) -> None:
        w = layer.weight
        layer.gamma_o = nn.Parameter(torch.ones(w.shape[0], dtype=w.dtype, device=w.device))
        spatial = w.dim() - 2  # 0 for Linear
        size = self.output_size
        if isinstance(size, int):
            size = (size,)
        if size is not None and len(size) != spatial and spatial > 0:
            raise ValueError(f"xnorpp: output_size={size} has {len(size)} dims; this layer has {spatial}")
        for i in range(spatial):
            if size is None:
                param: nn.Parameter = nn.UninitializedParameter(device=w.device, dtype=w.dtype)
            else:
                param = nn.Parameter(torch.ones(size[i], dtype=w.dtype, device=w.device))
            layer.register_parameter(_SPATIAL_NAMES[i], param)
        if spatial:
            layer._register_load_state_dict_pre_hook(_materialize_from_state, with_module=True)

    def input_quantizer(self, layer: nn.Module, x: Tensor) -> QuantizerCall:
        return QuantizerCall(x, ClipSTE, (None,))

    def quantize_weight(self, layer: nn.Module, w: Tensor) -> Tensor:
        return sign_clip_ste(w)

    def _factors(self, layer: nn.Module, spatial_size: tuple[int, ...]) -> list[Tensor]:
        factors = []
        for i, n in enumerate(spatial_size):
            param = getattr(layer, _SPATIAL_NAMES[i])
            if isinstance(param, nn.UninitializedParameter):
                with torch.no_grad():
                    param.materialize((n,))
                    param.fill_(1.0)
            elif param.shape[0] != n:
                raise ValueError(
                    f"xnorpp: this layer's learnable scale was sized for output size {param.shape[0]} along "
                    f"spatial dim {i}, but the output now has size {n}; XNOR-Net++'s spatial scale needs one "
                    "fixed input resolution"
                )
            factors.append(param)
        return factors

    def scale_output(self, layer: nn.Module, y: Tensor) -> Tensor:
        y = y * layer.channel_view(layer.gamma_o, y.dim())
        if layer.features_last:
            return y
        spatial = tuple(y.shape[2:])
        for i, factor in enumerate(self._factors(layer, spatial)):
            shape = [1] * y.dim()
            shape[2 + i] = -1
            y = y * factor.reshape(shape)
        return y

    def output_scale_factors(self, layer: nn.Module, spatial_size: tuple[int, ...]) -> tuple[Tensor, ...]:
        if layer.features_last:
            return (layer.gamma_o,)
        return (layer.gamma_o, *self._factors(layer, spatial_size))

    def output_scale_tensor(self, layer: nn.Module) -> Tensor | None:
        gamma = layer.gamma_o.detach()
        spatial = layer.weight.dim() - 2
        if spatial == 0:
            return gamma.clone()
        params = [getattr(layer, _SPATIAL_NAMES[i]) for i in range(spatial)]
        if any(isinstance(p, nn.UninitializedParameter) for p in params):
            raise ValueError("xnorpp: run one forward pass (or pass output_size) before exporting")
        out = gamma.reshape((-1,) + (1,) * spatial)
        for i, p in enumerate(params):
            shape = [1] * (spatial + 1)
            shape[1 + i] = -1
            out = out * p.detach().reshape(shape)
        return out


def _materialize_from_state(module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
    """Let a checkpoint give uninitialised spatial scales their size before its values are copied."""
    for name in _SPATIAL_NAMES:
        param = getattr(module, name, None)
        key = prefix + name
        if isinstance(param, nn.UninitializedParameter) and key in state_dict:
            with torch.no_grad():
                param.materialize(state_dict[key].shape)
