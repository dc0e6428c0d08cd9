"""Shape arithmetic without torch's symbolic-shape machinery.

``torch.broadcast_shapes`` imports ``torch.fx.experimental.symbolic_shapes`` on first use
(~0.5–1 s of CPU per process); the kernels only need plain integer broadcasting.
"""

from __future__ import annotations

from collections.abc import Sequence


def broadcast_shapes(*shapes: Sequence[int]) -> tuple[int, ...]:
    """The shape the given shapes broadcast to (NumPy/torch rules); ValueError when they do not."""
    ndim = max((len(s) for s in shapes), default=0)
    out = []
    for axis in range(ndim):
        sizes = {int(s[axis - ndim + len(s)]) for s in shapes if axis >= ndim - len(s)}
        sizes.discard(1)
        if len(sizes) > 1:
            raise ValueError(f"shapes {[tuple(s) for s in shapes]} do not broadcast")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)
