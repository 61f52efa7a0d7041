"""The project's FLOP counter (torch 2.0 has no torch.utils.flop_counter) counts matmuls and convolutions."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ccdm_core.flops import count_flops


def test_linear_and_batched_matmul_counts():
    lin = nn.Linear(8, 5)
    x = torch.randn(3, 4, 8)
    assert count_flops(lambda: lin(x)) == 2 * 3 * 4 * 8 * 5
    a, b = torch.randn(2, 3, 6, 7), torch.randn(2, 3, 7, 4)
    assert count_flops(lambda: a @ b) == 2 * 2 * 3 * 6 * 7 * 4


@pytest.mark.parametrize("transposed", [False, True])
def test_convolution_counts(transposed):
    conv = (nn.ConvTranspose2d if transposed else nn.Conv2d)(6, 4, 3, padding=1, groups=2)
    x = torch.randn(2, 6, 5, 5)
    out = conv(x)
    expected = 2 * 2 * 4 * 25 * (6 // 2) * 9
    assert out.shape[-2:] == (5, 5)
    assert count_flops(lambda: conv(x)) == expected


def test_agrees_with_torch_counter_where_torch_has_one():
    flop_counter = pytest.importorskip("torch.utils.flop_counter")
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    x = torch.randn(2, 3, 8, 8)
    with flop_counter.FlopCounterMode(display=False) as reference:
        model(x)
    assert count_flops(lambda: model(x)) == reference.get_total_flops()
