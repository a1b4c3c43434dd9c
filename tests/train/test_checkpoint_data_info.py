"""Checkpoint data_info and evaluation checks that a mutation run showed no test reached (tools/mutate.py, seed 11)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from onebit.train.trainer import _valid_data_info, evaluate


@pytest.mark.parametrize("shape", [[40], [1, 8, 8], (3, 32, 32)])
def test_checkpoint_data_info_accepts_one_dimensional_inputs(shape):
    # MNIST-1D's MLP and 1-D nets record a one-entry input shape; a checkpoint of theirs must load.
    assert _valid_data_info({"num_classes": 10, "input_shape": shape})


@pytest.mark.parametrize("info", [{"num_classes": 10, "input_shape": []}, {"num_classes": 0, "input_shape": [4]},
                                  {"num_classes": 10, "input_shape": [4, 0]}, {"input_shape": [4]}, [10, [4]]])
def test_checkpoint_data_info_refuses_what_builds_no_model(info):
    assert not _valid_data_info(info)


def test_evaluate_on_an_empty_loader_is_zero_not_a_division_error():
    # A rank of a distributed run can hold no test samples; its share is (0, 0), not ZeroDivisionError.
    assert evaluate(nn.Linear(4, 3), [], torch.device("cpu")) == (0.0, 0.0)
