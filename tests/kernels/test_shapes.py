"""mrepo.kernels.shapes.broadcast_shapes against NumPy's rules."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mrepo.kernels.shapes import broadcast_shapes

dims = st.lists(st.sampled_from([0, 1, 2, 3]), max_size=4)


@given(st.lists(dims, min_size=1, max_size=3))
def test_broadcast_shapes_follows_numpy(shapes):
    try:
        expected = np.broadcast_shapes(*map(tuple, shapes))
    except ValueError:
        with pytest.raises(ValueError, match="do not broadcast"):
            broadcast_shapes(*shapes)
    else:
        assert broadcast_shapes(*shapes) == expected


def test_torch_sizes_broadcast_without_symbolic_shapes():
    import subprocess
    import sys

    code = ("import sys, torch; from mrepo.kernels.shapes import broadcast_shapes; "
            "assert broadcast_shapes(torch.zeros(2, 1, 5).shape[:-1], (3,)) == (2, 3); "
            "print('torch.fx.experimental.symbolic_shapes' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
