"""The deployment errors: one for a model or file that has no onebit graph, one for a layer that a
deployment target does not run.

:class:`UnsupportedLayerError` is what every target's ``supports(description)`` refusal raises (the
packed engine's runtime, Larq Compute Engine, ONNX/QONNX; see :mod:`onebit.deploy.description`). It
derives from :class:`ExportError` (so from :class:`~onebit.methods.NotDeployableError`) and from
``NotImplementedError``, so the handlers written for each target's older error type keep catching it.
"""

from __future__ import annotations

from ..methods.base import NotDeployableError

__all__ = ["ExportError", "UnsupportedLayerError"]


class ExportError(NotDeployableError):
    """The model (or a file) cannot be expressed as an onebit graph; the message says which part."""


class UnsupportedLayerError(ExportError, NotImplementedError):
    """A deployment target does not run this layer (a grouped or dilated convolution, a padding mode,
    multi-bit activations, ...); the message names the layer, the target and the reason."""
