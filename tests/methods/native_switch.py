"""Shared by the native-kernel tests: one call with the engine's training kernels on or off."""

from onebit.methods import functional as fx


def run(native: bool, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with ``functional.NATIVE_KERNELS`` set to ``native``, restored after."""
    saved = fx.NATIVE_KERNELS
    fx.NATIVE_KERNELS = native
    try:
        return fn(*args, **kwargs)
    finally:
        fx.NATIVE_KERNELS = saved
