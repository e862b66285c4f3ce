"""The one precision policy: model.dtype -> stored weights and autocast, for the engines
and the learner's frozen and trained weights (docs/training.md, "Learner internals")."""

from __future__ import annotations

import pytest
import torch

from rlvr.models.causal_lm import precision

BF16, FP32 = torch.bfloat16, torch.float32


@pytest.mark.parametrize(
    ("dtype", "device", "trained", "weights", "compute"),
    [
        ("auto", "cpu", False, FP32, FP32),  # engines / frozen weights on CPU
        ("auto", "cuda", False, BF16, BF16),  # ... on a GPU
        ("auto", "cuda:0", True, FP32, BF16),  # trained on a GPU: fp32 master, bf16 autocast
        ("auto", "cpu", True, FP32, FP32),
        ("bfloat16", "cpu", True, BF16, BF16),  # honoured literally on CPU
        ("float32", "cuda", True, FP32, FP32),
        ("float32", "cuda", False, FP32, FP32),
    ],
)
def test_precision_policy(dtype, device, trained, weights, compute):
    p = precision(dtype, device, trained=trained)
    assert (p.weights, p.compute) == (weights, compute)


@pytest.mark.filterwarnings("ignore:CUDA is not available")  # only built, not entered
def test_autocast_only_where_weights_and_compute_differ():
    with precision("auto", "cpu", trained=True).autocast():
        assert not torch.is_autocast_enabled()
    assert isinstance(precision("auto", "cuda", trained=True).autocast(), torch.autocast)


def test_an_unknown_dtype_is_an_error_naming_the_choices():
    with pytest.raises(ValueError, match="bfloat16"):
        precision("fp8", "cpu")
