"""Deployment: export a trained model to a packed 1-bit model, save/load it without pickle, and run
it on the C++ XNOR/popcount engine (:mod:`onebit.deploy.kernels`)."""

from ._finite import NONFINITE_POLICIES, NonFiniteInputError
from .export import PackedModel, export
from .fileformat import FORMAT_VERSION, ModelFileError, load, save
from .graph import ExportError

__all__ = ["FORMAT_VERSION", "ExportError", "ModelFileError", "NONFINITE_POLICIES", "NonFiniteInputError",
           "PackedModel", "export", "load", "save"]
