"""Fake modules.devices on the CPU."""
import contextlib

import torch

device = torch.device("cpu")
dtype = dtype_unet = torch.float32
gc_calls = []


def torch_gc():
    gc_calls.append(1)


def autocast(disable=False):
    return contextlib.nullcontext()
