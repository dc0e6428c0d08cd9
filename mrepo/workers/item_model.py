"""An item's imaging and deformation model as arrays, and the models' names in ``Item.models``.

Model arrays (``Item.models``, array hashes; stack order, n = frames or tilts):

* ``ctf`` (n, 3) float64: defocus_u, defocus_v (Å, underfocus > 0), astigmatism angle (deg);
  for tilts the defocus at the tomogram centre (depth adds ``hand * depth``).
* ``global_shifts`` (n, 2) float64 Å: frames: image-content displacement of frame i
  (particle image position = trajectory + shift + warp); tilts: RELION 5 X/YShiftAngst.
* ``stage_angles`` (n, 3) float64 deg (tilts): xtilt, ytilt, zrot (RELION 5), never altered.
* ``stage_corrections`` (n, 3) float64 deg (tilts): M's per-tilt xyz angles ω_i that
  rotate the stage orientation for particle *orientations* only: A'_i = Rxyz(ω_i) A_i.
* ``image_warp`` (2, gx, gy, gt) float64 Å: natural cubic spline grid of (x, y)
  displacements over (x / width, y / height, t) (:mod:`mrepo.kernels.splines`); frames:
  t = normalised accumulated exposure; tilts: gt = n and t = i / (n - 1) (per-tilt nodes).
* ``volume_warp`` (3, gx, gy, gz, gt) float64 Å (tilts): M's volume warp, quadrilinear grid of (x, y, z)
  particle displacements over (x / Vx, y / Vy, z / Vz, t) (:mod:`mrepo.workers.deformation`).
* ``doming`` (gx, gy, gt) float64 Å (frames): M's doming, cubic spline grid of defocus offsets over
  (x / width, y / height, t) (:mod:`mrepo.workers.deformation`).
* ``phase_shift`` (n,) float64 deg: phase-plate phase shift (CTF phase, all frequencies).
* ``weights`` (n, 2) float64: data-driven (B-factor Å², scale) per frame/tilt; when present
  they replace the dose/tilt heuristic ``exp(-E k²) cos(tilt)``. Fitted over the item's data source
  (:mod:`mrepo.workers.source_weights`, normalised over the source) or over the item alone.

Optics-group aberrations from ``Item.imaging`` (beam_tilt mrad, odd_zernike, even_zernike, mag_matrix,
RELION CtfRefine's values) become :class:`~mrepo.kernels.aberrations.Aberrations`: the even phase and the
magnification enter the CTF, the odd phase (beam tilt included) demodulates the data.

Particle time: t_i = accumulated exposure before exposure i over the total before the
last one (acquisition order), in [0, 1]; trajectories with T samples have nodes at
``linspace(0, 1, T)``. No Fourier layout here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mrepo.graph import Item
from mrepo.kernels.aberrations import Aberrations
from mrepo.store import InvalidInput, ObjectStore
from mrepo.workers.deformation import check_doming, check_volume_warp

__all__ = ["ItemModel", "load_item_model"]


@dataclass
class ItemModel:
    """Imaging constants and current model arrays of one item (see module docstring)."""

    kind: str
    pixel_size: float
    voltage: float
    cs: float
    amplitude_contrast: float
    width: int
    height: int
    n: int
    dose: np.ndarray  # (n,) e-/Å² per exposure, stack order
    pre_exposure: np.ndarray  # (n,) accumulated before each exposure
    time: np.ndarray  # (n,) normalised particle time in [0, 1]
    ctf: np.ndarray
    global_shifts: np.ndarray
    stage_angles: np.ndarray | None
    stage_corrections: np.ndarray | None
    image_warp: np.ndarray | None
    weights: np.ndarray | None
    volume_size: np.ndarray | None  # (3,) Å, tilts
    hand: float
    aberrations: Aberrations | None = None  # optics-group aberrations (imaging beam_tilt, *_zernike, mag_matrix)
    phase_shift: np.ndarray | None = None  # (n,) deg, phase-plate phase shift per exposure (model ``phase_shift``)
    volume_warp: np.ndarray | None = None  # (3, gx, gy, gz, gt) Å, tilts (model ``volume_warp``)
    doming: np.ndarray | None = None  # (gx, gy, gt) Å, frames (model ``doming``)

    @property
    def damage_exposure(self) -> np.ndarray:
        """Mid-exposure accumulated dose (n,) e-/Å² used for damage weighting."""
        return self.pre_exposure + self.dose / 2

    def tilt_scale(self) -> np.ndarray:
        """cos(ytilt) per tilt (ones for frames)."""
        if self.kind != "tilts" or self.stage_angles is None:
            return np.ones(self.n)
        return np.cos(np.deg2rad(self.stage_angles[:, 1]))


def _array(objects: ObjectStore, item: Item, name: str, shape: tuple[int, ...] | None) -> np.ndarray | None:
    h = item.models.get(name)
    if h is None:
        return None
    a = np.asarray(objects.get_array(h), dtype=np.float64)
    if shape is not None and a.shape != shape:
        raise InvalidInput(f"item {item.name!r}: model {name!r} must have shape {shape}, got {a.shape}")
    return a


def load_item_model(objects: ObjectStore, item: Item) -> ItemModel:
    """Read imaging metadata and model arrays; missing models get neutral defaults."""
    im = item.imaging
    try:
        ps = float(im["pixel_size"])
        dims = [int(v) for v in im["dimensions"]]
        dose = np.asarray(im["exposure"], dtype=np.float64).reshape(-1)
        voltage, cs, ac = float(im["voltage"]), float(im["cs"]), float(im["amplitude_contrast"])
    except KeyError as exc:
        raise InvalidInput(f"item {item.name!r}: imaging metadata lacks {exc.args[0]!r}") from None
    n = len(dose)
    order = np.asarray(im.get("acquisition_order", list(range(n))), dtype=np.int64)
    if sorted(order.tolist()) != list(range(n)):
        raise InvalidInput(f"item {item.name!r}: acquisition_order must be a permutation of 0..{n - 1}")
    pre = np.zeros(n)
    pre[order] = np.concatenate([[0.0], np.cumsum(dose[order])[:-1]])
    span = pre.max() if pre.max() > 0 else 1.0
    ctf = _array(objects, item, "ctf", (n, 3))
    if ctf is None:
        raise InvalidInput(f"item {item.name!r}: needs a 'ctf' model (n, 3)")
    shifts = _array(objects, item, "global_shifts", (n, 2))
    stage = _array(objects, item, "stage_angles", (n, 3))
    if item.kind == "tilts" and stage is None:
        if "tilt_angles" not in im:
            raise InvalidInput(f"item {item.name!r}: a tilt series needs 'stage_angles' or imaging tilt_angles")
        stage = np.stack([np.zeros(n), np.asarray(im["tilt_angles"], float), np.zeros(n)], 1)
    warp = _array(objects, item, "image_warp", None)
    if warp is not None and (warp.ndim != 4 or warp.shape[0] != 2):
        raise InvalidInput(f"item {item.name!r}: image_warp must be (2, gx, gy, gt), got {warp.shape}")
    volume_warp, dome = _array(objects, item, "volume_warp", None), _array(objects, item, "doming", None)
    try:
        if volume_warp is not None:
            check_volume_warp(volume_warp.shape)
        if dome is not None:
            check_doming(dome.shape)
    except ValueError as exc:
        raise InvalidInput(f"item {item.name!r}: {exc}") from None
    vol = None
    if item.kind == "tilts":
        if "volume_dimensions" not in im:
            raise InvalidInput(f"item {item.name!r}: a tilt series needs imaging volume_dimensions (Å)")
        vol = np.asarray(im["volume_dimensions"], dtype=np.float64)
    return ItemModel(
        kind=item.kind, pixel_size=ps, voltage=voltage, cs=cs, amplitude_contrast=ac, width=dims[0],
        height=dims[1], n=n, dose=dose, pre_exposure=pre, time=pre / span, ctf=ctf,
        global_shifts=np.zeros((n, 2)) if shifts is None else shifts, stage_angles=stage,
        stage_corrections=_array(objects, item, "stage_corrections", (n, 3)), image_warp=warp,
        weights=_array(objects, item, "weights", (n, 2)), volume_size=vol, hand=float(im.get("hand", 1.0)),
        aberrations=Aberrations.from_imaging(im, voltage, cs), phase_shift=_array(objects, item, "phase_shift", (n,)),
        volume_warp=volume_warp, doming=dome,
    )
