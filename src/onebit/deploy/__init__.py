"""Deployment: export a trained model to a packed 1-bit model, save/load it without pickle, and run
it on the C++ XNOR/popcount engine (:mod:`onebit.deploy.kernels`). Every binary layer is described once
(:class:`PackedLayerDescription`); the runtime, the file, ONNX/QONNX and LCE read that description,
and each one's ``supports`` refuses what it does not run with :class:`UnsupportedLayerError`."""

from ._finite import NONFINITE_POLICIES, InputTypeError, NonFiniteInputError
from .description import PackedLayerDescription
from .errors import ExportError, UnsupportedLayerError
from .export import PackedModel, export
from .fileformat import FORMAT_VERSION, ModelFileError, load, save

__all__ = ["FORMAT_VERSION", "ExportError", "InputTypeError", "ModelFileError", "NONFINITE_POLICIES",
           "NonFiniteInputError", "PackedLayerDescription", "PackedModel", "UnsupportedLayerError", "export",
           "load", "save"]
