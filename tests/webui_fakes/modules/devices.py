"""Fake modules.devices on the CPU."""
import torch

device = torch.device("cpu")
dtype = dtype_unet = torch.float32
gc_calls = []


def torch_gc():
    gc_calls.append(1)
