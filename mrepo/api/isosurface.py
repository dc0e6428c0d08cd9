"""Server-rendered isosurface of a (z, y, x) map for the web view: shaded, seen from any direction.

The volume is rotated about its centre (voxel N // 2) so that the viewing direction becomes
the +z axis (trilinear resampling, ``scipy.ndimage.affine_transform``); each ray along z
stops at the first crossing of ``level`` (linear interpolation between samples), giving a
depth map; surface normals come from that depth map and are lit by one directional light
plus ambient (Lambert). Rays that never cross the level show the background. The image is
(y, x) with row 0 at the top, like :func:`mrepo.api.png.central_slice` of axis 0.

``azimuth`` turns about the map's z axis, ``elevation`` tilts towards the viewer, both in
degrees; (0, 0) looks down z onto the (y, x) plane.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import affine_transform, gaussian_filter, zoom
from scipy.spatial.transform import Rotation

BACKGROUND = 24
LIGHT = np.array([-0.45, -0.55, 0.70])  # (x, y, towards the viewer)


def sigma_level(volume: np.ndarray, sigma: float) -> float:
    """Density ``sigma`` standard deviations above the map's mean (the usual contour level)."""
    v = np.asarray(volume, dtype=np.float64)
    return float(v.mean() + sigma * v.std())


def rotated(volume: np.ndarray, azimuth: float, elevation: float) -> np.ndarray:
    """``volume`` resampled so that the view direction (azimuth, elevation) is +z."""
    vol = np.asarray(volume, dtype=np.float32)
    centre = np.array([s // 2 for s in vol.shape], dtype=np.float64)
    # matrix acting on (z, y, x) output coordinates -> input coordinates
    rot = Rotation.from_euler("zx", [azimuth, elevation], degrees=True).as_matrix()  # on (x, y, z)
    flip = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=np.float64)  # (x, y, z) <-> (z, y, x)
    m = flip @ rot @ flip
    offset = centre - m @ centre
    return affine_transform(vol, m, offset=offset, order=1, mode="constant", cval=float(vol.min()))


def depth_map(volume: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """(depth along z in voxels with sub-voxel interpolation, hit mask) of the first crossing of ``level``."""
    above = volume >= level
    hit = above.any(axis=0)
    first = np.argmax(above, axis=0)
    prev = np.clip(first - 1, 0, None)
    yy, xx = np.indices(first.shape)
    v1, v0 = volume[first, yy, xx], volume[prev, yy, xx]
    frac = np.where((first > 0) & (v1 != v0), (level - v0) / np.where(v1 != v0, v1 - v0, 1.0), 1.0)
    depth = prev + np.clip(frac, 0.0, 1.0)
    return np.where(hit, depth, np.inf), hit


def render_isosurface(volume: np.ndarray, level: float, *, azimuth: float = 30.0, elevation: float = 20.0,
                      size: int = 256) -> np.ndarray:
    """Shaded isosurface at ``level`` as a (size, size) uint8 image (row 0 at the top)."""
    vol = np.asarray(volume, dtype=np.float32)
    if vol.ndim != 3 or 0 in vol.shape:
        raise ValueError(f"render_isosurface needs a non-empty 3-D (z, y, x) volume, got shape {vol.shape}")
    scale = max(1.0, size / max(vol.shape[1:]))
    if scale > 1.0:
        vol = zoom(vol, min(scale, 4.0), order=1)
    depth, hit = depth_map(rotated(vol, azimuth, elevation), level)
    far = np.where(hit, depth, np.nanmax(np.where(hit, depth, 0.0)) + 1.0 if hit.any() else 0.0)
    gy, gx = np.gradient(gaussian_filter(far, 1.5))  # smoothed: voxel steps do not show as facets
    normal = np.stack([-gx, -gy, np.ones_like(gx)], axis=-1)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    light = LIGHT / np.linalg.norm(LIGHT)
    shade = 0.18 + 0.82 * np.clip(normal @ light, 0.0, 1.0)
    # nearer surfaces slightly brighter (depth cue)
    if hit.any():
        d = depth[hit]
        cue = 1.0 - 0.25 * (depth - d.min()) / max(float(d.max() - d.min()), 1e-6)
        shade = shade * np.where(hit, cue, 1.0)
    img = np.where(hit, np.clip(shade * 255.0, 0, 255), BACKGROUND).astype(np.uint8)
    if img.shape != (size, size):
        img = _fit(img, size)
    return img


def _fit(img: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize to (size, size)."""
    ys = (np.arange(size) * img.shape[0] / size).astype(int)
    xs = (np.arange(size) * img.shape[1] / size).astype(int)
    return img[np.ix_(ys, xs)]
