"""onebit: binary neural networks in PyTorch.

    import onebit
    onebit.methods.available()                       # the binarization methods
    model = onebit.binarize(model, "reactnet")       # swap Conv/Linear layers in place
    onebit.schedule_step(model, epoch, epochs)       # before each epoch
    loss = task_loss + onebit.extra_loss(model)      # methods' loss terms
"""

from . import methods, nn
from .nn import binarize, extra_loss, schedule_step

__version__ = "0.1.0"

__all__ = ["__version__", "binarize", "extra_loss", "methods", "nn", "schedule_step"]
