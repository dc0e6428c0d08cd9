"""mrepo.kernels: numerics on torch tensors, any device, no I/O.

The public surface of every kernel module; each module's docstring states its
units, array layouts and Fourier layout. All modules depend on torch only, so
importing this package costs no more than importing torch.

Note: the functions ``fsc`` and ``fourier_crop`` share their module's name; after
``import mrepo.kernels`` the attributes ``mrepo.kernels.fsc`` and
``mrepo.kernels.fourier_crop`` are the functions (``from mrepo.kernels.fsc import …``
still imports from the module).
"""

from mrepo.kernels.aliasing import (
    aliasing_free_box_size,
    band_limit_filter,
    crop_center,
    ctf_phase_rate,
    ctf_squared_band_limited,
    hermitian_part,
    next_fft_size,
    premultiply_ctf,
)
from mrepo.kernels.ctf import (
    ctf_2d,
    ctf_at,
    ctf_phase,
    electron_wavelength,
    exposure_weights,
    exposure_weights_2d,
    frequency_grid_2d,
)
from mrepo.kernels.extraction import extract_patches, extract_patches_ft
from mrepo.kernels.fourier_crop import (
    crop_size_for_resolution,
    crop_to_exposure,
    crop_to_resolution,
    exposure_resolution,
    fourier_crop,
    fourier_pad,
)
from mrepo.kernels.fourier_slice import (
    KERNELS,
    empty_grids,
    extract_slices,
    fold_into,
    insert_slices,
    mirror_planes,
    prepare_volume,
    project,
    reconstruct,
    reconstruct_standard,
)
from mrepo.kernels.fsc import (
    ShellSums,
    fsc,
    hermitian_weights,
    normalized_cross_correlation_per_shell,
    num_shells,
    resolution_at,
    shell_filter,
    shell_frequencies,
    shell_indices,
    shell_sum,
    spectral_whitening,
)
from mrepo.kernels.gridding import gridding_correction, half_grid_shape
from mrepo.kernels.interpolation import (
    bspline_table,
    bspline_table_shape,
    sample_cubic,
    sample_linear,
    sample_quadratic,
)
from mrepo.kernels.rotations import (
    axis_angle_to_matrix,
    euler_to_matrix,
    matrix_to_axis_angle,
    matrix_to_euler,
    rotation_angle,
    xyz_to_matrix,
)
from mrepo.kernels.shapes import broadcast_shapes
from mrepo.kernels.shifts import phase_ramp, phase_shift, shift_images
from mrepo.kernels.splines import CubicSplineGrid, LinearGrid, evaluate_grid, natural_spline_matrix
from mrepo.kernels.symmetry import symmetry_matrices, symmetry_order
from mrepo.kernels.tilt_geometry import (
    depth_defocus,
    pose_in_tilt,
    project_points,
    rotation_x,
    rotation_y,
    rotation_z,
    tilt_matrices,
)

__all__ = [
    # rotations
    "axis_angle_to_matrix",
    "euler_to_matrix",
    "matrix_to_axis_angle",
    "matrix_to_euler",
    "rotation_angle",
    "xyz_to_matrix",
    # symmetry
    "symmetry_matrices",
    "symmetry_order",
    # ctf
    "ctf_2d",
    "ctf_at",
    "ctf_phase",
    "electron_wavelength",
    "exposure_weights",
    "exposure_weights_2d",
    "frequency_grid_2d",
    # aliasing
    "aliasing_free_box_size",
    "band_limit_filter",
    "crop_center",
    "ctf_phase_rate",
    "ctf_squared_band_limited",
    "hermitian_part",
    "next_fft_size",
    "premultiply_ctf",
    # fourier_slice
    "KERNELS",
    "empty_grids",
    "extract_slices",
    "fold_into",
    "insert_slices",
    "mirror_planes",
    "prepare_volume",
    "project",
    "reconstruct",
    "reconstruct_standard",
    # gridding
    "gridding_correction",
    "half_grid_shape",
    # interpolation
    "bspline_table",
    "bspline_table_shape",
    "sample_cubic",
    "sample_linear",
    "sample_quadratic",
    # shapes
    "broadcast_shapes",
    # shifts
    "phase_ramp",
    "phase_shift",
    "shift_images",
    # extraction
    "extract_patches",
    "extract_patches_ft",
    # fourier_crop
    "crop_size_for_resolution",
    "crop_to_exposure",
    "crop_to_resolution",
    "exposure_resolution",
    "fourier_crop",
    "fourier_pad",
    # splines
    "CubicSplineGrid",
    "LinearGrid",
    "evaluate_grid",
    "natural_spline_matrix",
    # fsc
    "ShellSums",
    "fsc",
    "hermitian_weights",
    "normalized_cross_correlation_per_shell",
    "num_shells",
    "resolution_at",
    "shell_filter",
    "shell_frequencies",
    "shell_indices",
    "shell_sum",
    "spectral_whitening",
    # tilt_geometry
    "depth_defocus",
    "pose_in_tilt",
    "project_points",
    "rotation_x",
    "rotation_y",
    "rotation_z",
    "tilt_matrices",
]
