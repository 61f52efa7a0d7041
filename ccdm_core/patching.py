"""Instance-level `forward` overrides for a block, restored to exactly what each module had (identity)."""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator, List

from torch import nn

MISSING = object()  # the module had no instance-level forward (its class's forward ran)

# make_forward(module, previous) -> the new forward; previous is the instance forward that was there, or MISSING
ForwardFactory = Callable[[nn.Module, object], Callable]


def current_forward(module: nn.Module, previous: object) -> Callable:
    """What `module(...)` ran before the patch: its instance forward, else the class's."""
    return previous if previous is not MISSING else type(module).forward.__get__(module)


@contextlib.contextmanager
def patched_forwards(modules: List[nn.Module], make_forward: ForwardFactory) -> Iterator[List[nn.Module]]:
    """Set `module.forward` on each module for the block; on exit put back exactly what was there."""
    saved = [(m, m.__dict__.get("forward", MISSING)) for m in modules]
    try:
        for module, previous in saved:
            module.__dict__["forward"] = make_forward(module, previous)
        yield modules
    finally:
        restore_forwards(saved)


def restore_forwards(saved: List[tuple]) -> None:
    for module, previous in saved:
        if previous is MISSING:
            module.__dict__.pop("forward", None)
        else:
            module.__dict__["forward"] = previous
