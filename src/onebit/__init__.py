"""onebit: binary neural networks in PyTorch.

    import onebit
    onebit.methods.available()                       # the binarization methods
    model = onebit.binarize(model, "reactnet")       # swap Conv/Linear layers in place
    onebit.schedule_step(model, epoch, epochs)       # before each epoch
    loss = task_loss + onebit.extra_loss(model)      # methods' loss terms
    onebit.finalize(model)                           # after training: each method's deployed state
"""

from typing import Any

from . import methods, nn
from .errors import OnebitError
from .nn import binarize, extra_loss, finalize, schedule_step


def summary(model: Any, input_shape: Any = None, **kwargs: Any) -> Any:
    """Per-layer and total complexity (params per precision, memory, MACs, BOPs, compression); see
    :func:`onebit.nn.summary.summary`."""
    from .nn.summary import summary as _summary

    return _summary(model, input_shape, **kwargs)

__version__ = "0.1.0"

__all__ = ["OnebitError", "__version__", "binarize", "extra_loss", "finalize", "methods", "nn", "schedule_step",
           "summary"]
