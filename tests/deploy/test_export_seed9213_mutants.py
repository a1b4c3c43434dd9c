"""``export``'s documented defaults (issue 21: single-file sample 9213 of ``deploy/export.py``, hunting,
not an honest sample, on a fast subset: the default ``fold_batchnorm=False`` survived): by default the
BatchNorm after a binary layer is folded into its epilogue, and the activation after it too, so the
packed graph keeps neither module; asked not to, it keeps both, and computes the same."""

from __future__ import annotations

import torch
from deploy_probe import randomize_norms
from torch import nn

import onebit
from onebit.deploy import export


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Hardtanh(),
                          nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Hardtanh(),
                          nn.Flatten(), nn.Linear(8 * 6 * 6, 4))
    onebit.binarize(model, "bireal")
    randomize_norms(model)
    return model.eval()


def _kinds(packed) -> list[type]:
    return [type(m) for m in packed.net.modules() if isinstance(m, (nn.BatchNorm2d, nn.Hardtanh))]


def test_export_folds_batchnorm_and_the_activation_by_default():
    model, x = _model(), torch.randn(2, 3, 6, 6)
    folded, kept = export(model), export(model, fold_batchnorm=False, fuse_activations=False)
    assert _kinds(folded) == [nn.BatchNorm2d, nn.Hardtanh]  # the full-precision stem's only
    assert _kinds(kept) == [nn.BatchNorm2d, nn.Hardtanh] * 2
    with torch.no_grad():
        want = model(x)
        for packed in (folded, kept):
            assert (packed(x) - want).abs().max().item() <= 1e-4 * want.abs().max().item()
