"""The registry of binarization methods.

``available()`` lists the names, ``get(name, **options)`` returns a configured method; each method
lives in one file of this package and registers itself with :func:`register`.
"""

# Importing a method module registers it.
from . import base, biper, bireal, bnn, dorefa, fda, functional, hbnn, irnet, proxconnect, reactnet, recu, xnor, xnorpp  # noqa: F401
from .base import InferenceForm, Method, NotDeployableError, Option, available, get, method_class, register

__all__ = [
    "InferenceForm",
    "Method",
    "NotDeployableError",
    "Option",
    "available",
    "base",
    "functional",
    "get",
    "method_class",
    "register",
]
