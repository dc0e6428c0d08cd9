"""Projection throughput, accuracy and memory: mrepo.kernels.fourier_slice (fast
trilinear, quadratic and accurate cubic B-spline modes) vs torch-fourier-slice, side by side.

Every method produces the same thing from a volume prepared once (what refinement
does): real (n, d, d) projection images at pad 2 — ours as ``irfft2`` of the
extracted slices, torch-fourier-slice (tfs) as its ``extract_central_slices_rfft_3d``
on the (2d)³ transform, inverse 2D FFT and crop (the steps of its
``project_3d_to_2d``). Measured per box: projections per second, forward and
forward+backward (gradient w.r.t. the rotation matrices; loss = sum of squared
pixels), best of ``--repeats``; peak memory above the baseline while timing (CUDA:
max_memory_allocated; CPU: resident set size sampled every 1 ms); size of the prepared
volume; relative L2 error against analytic projections of Gaussian blobs for two
phantoms: "centre" (6 blobs within d/16 of the centre) and "sphere" (6 blobs anywhere
in the inscribed sphere, centre radius <= d/2 - 3 sigma).

"Equal accuracy": the fastest of our modes whose errors on both phantoms are <= tfs's.
Rates are given per wall second and per CPU second of the timing thread (the
latter robust to other processes on a shared machine when torch uses 1 thread).
Torch threads are fixed (default 1) for both libraries; the load average is printed,
and ``--max-load`` waits (up to ``--wait``) for a quieter machine before each box.

Usage: python benchmarks/bench_projection.py [--device cpu] [--boxes 64 128]
       [--repeats 3] [--threads 1] [--max-load 3.0]
Needs torch-fourier-slice (bench extra).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import threading
import time
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from mrepo.kernels.fourier_slice import extract_slices, prepare_volume

BATCH = {64: 256, 128: 64}
PAD = 2
OURS = {"linear": "mrepo fast", "quadratic": "mrepo quadratic", "cubic": "mrepo accurate"}


def blob_phantom(d: int, seed: int, where: str):
    """(volume (d, d, d), blobs) of 6 Gaussian blobs, near the centre or anywhere in the sphere."""
    rng = np.random.default_rng(seed)
    n = 6
    sig = rng.uniform(2.0, 3.5, n) * d / 64
    if where == "centre":
        cen = rng.uniform(-d / 16, d / 16, (n, 3))
    else:
        u = rng.standard_normal((n, 3))
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        cen = u * ((d / 2 - 3 * sig) * rng.uniform(0, 1, n) ** (1 / 3))[:, None]
    amp = rng.uniform(0.5, 1.5, n)
    r = np.arange(d) - d // 2
    z, y, x = np.meshgrid(r, r, r, indexing="ij")
    vol = sum(a * np.exp(-((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) / (2 * s * s))
              for c, s, a in zip(cen, sig, amp))
    return vol, (cen, sig, amp)


def analytic(d: int, rots: np.ndarray, blobs) -> np.ndarray:
    """Line integrals p(x, y) = ∫ V(R (x, y, z)) dz of the blobs: (n, d, d)."""
    cen, sig, amp = blobs
    r = np.arange(d) - d // 2
    y, x = np.meshgrid(r, r, indexing="ij")
    out = np.zeros((len(rots), d, d))
    for i, rot in enumerate(rots):
        for c, s, a in zip(cen, sig, amp):
            c2 = rot.T @ c
            out[i] += a * s * math.sqrt(2 * math.pi) * np.exp(-((x - c2[0]) ** 2 + (y - c2[1]) ** 2) / (2 * s * s))
    return out


def make_methods(vol: torch.Tensor, d: int):
    """{name: (prepared volume, rots -> (n, d, d) images)} for the three methods."""
    from torch_fourier_slice import extract_central_slices_rfft_3d

    methods = {}
    for kernel, label in OURS.items():
        vft = prepare_volume(vol, PAD, kernel)
        methods[label] = (vft, lambda r, v=vft, k=kernel: torch.fft.irfft2(extract_slices(v, r, d, PAD, k), s=(d, d)))
    big = PAD * d
    o = (big - d) // 2
    padded = torch.nn.functional.pad(vol, [o, big - d - o] * 3)
    f = torch.fft.fftshift(torch.fft.fftfreq(big, device=vol.device, dtype=vol.dtype))
    s2 = torch.sinc(f) ** 2
    padded = padded / (s2[:, None, None] * s2[None, :, None] * s2[None, None, :])
    tfs_vft = torch.fft.fftshift(torch.fft.rfftn(torch.fft.ifftshift(padded)), dim=(-3, -2))

    def tfs(r: torch.Tensor) -> torch.Tensor:
        sl = extract_central_slices_rfft_3d(tfs_vft, r)
        img = torch.fft.irfftn(torch.fft.ifftshift(sl, dim=(-2,)), dim=(-2, -1), s=(big, big))
        return torch.fft.fftshift(img, dim=(-2, -1))[..., o : o + d, o : o + d]

    methods["tfs"] = (tfs_vft, tfs)
    return methods


def rss_bytes() -> int:
    """Resident set size of this process (0 where /proc is unavailable)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, rots: torch.Tensor, device: str, repeats: int, backward: bool) -> tuple[float, float, float]:
    """Best wall time (s), best CPU time of this thread (s; robust to other processes'
    load when torch runs on 1 thread) over repeats, and peak memory (MiB above
    baseline) of fn(rots) [+ backward]."""
    def run() -> None:
        r = rots.detach().clone().requires_grad_(backward)
        out = fn(r)
        if backward:
            out.square().sum().backward()

    run()
    sync(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss0 = rss_bytes()
    rss_peak = [rss0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            rss_peak[0] = max(rss_peak[0], rss_bytes())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    best = best_cpu = float("inf")
    for _ in range(repeats):
        t, c = time.perf_counter(), time.thread_time()
        run()
        sync(device)
        best = min(best, time.perf_counter() - t)
        best_cpu = min(best_cpu, time.thread_time() - c)
    done.set()
    sampler.join()
    if device.startswith("cuda"):
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = (rss_peak[0] - rss0) / 2**20
    return best, best_cpu, peak


def wait_for_load(max_load: float | None, wait_s: float) -> float:
    """1-minute load average, after waiting up to ``wait_s`` for it to drop below ``max_load``."""
    t0 = time.time()
    while max_load is not None and os.getloadavg()[0] > max_load and time.time() - t0 < wait_s:
        time.sleep(10)
    return os.getloadavg()[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--boxes", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-load", type=float, default=None)
    ap.add_argument("--wait", type=float, default=600.0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_projection.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = args.device
    rows = []
    print(f"device {dev}, torch threads {args.threads}, pad {PAD}", flush=True)
    for d in args.boxes:
        n = BATCH.get(d, max(16, 2**15 // d))
        rots_np = Rotation.random(n, random_state=d).as_matrix()
        rots = torch.tensor(rots_np, dtype=torch.float32, device=dev)
        errors: dict[str, dict[str, float]] = {}
        for where in ("centre", "sphere"):
            vol_np, blobs = blob_phantom(d, d, where)
            ref = analytic(d, rots_np[:16], blobs)
            vol = torch.tensor(vol_np, dtype=torch.float32, device=dev)
            for name, (_, fn) in make_methods(vol, d).items():
                with torch.no_grad():
                    img = fn(rots[:16]).cpu().double().numpy()
                errors.setdefault(name, {})[where] = float(np.linalg.norm(img - ref) / np.linalg.norm(ref))
        vol = torch.tensor(blob_phantom(d, d, "sphere")[0], dtype=torch.float32, device=dev)
        load = wait_for_load(args.max_load, args.wait)
        print(f"box {d}, batch {n}, load average {load:.2f}", flush=True)
        for name, (prepared, fn) in make_methods(vol, d).items():
            t_f, c_f, m_f = timed(fn, rots, dev, args.repeats, backward=False)
            t_b, c_b, m_b = timed(fn, rots, dev, args.repeats, backward=True)
            size = prepared.numel() * prepared.element_size() / 2**20
            rows.append(dict(box=d, batch=n, method=name, err_centre=errors[name]["centre"],
                             err_sphere=errors[name]["sphere"], fwd_per_s=n / t_f, fwdbwd_per_s=n / t_b,
                             fwd_per_cpu_s=n / c_f, fwdbwd_per_cpu_s=n / c_b,
                             peak_mib_fwd=m_f, peak_mib_fwdbwd=m_b, prepared_mib=size,
                             load_avg=os.getloadavg()[0], device=dev))
            r = rows[-1]
            print(f"{d:4d} {name:16s} err centre {r['err_centre']:.2e} sphere {r['err_sphere']:.2e}  "
                  f"fwd {r['fwd_per_s']:6.0f}/s ({r['fwd_per_cpu_s']:6.0f}/cpu-s)  "
                  f"fwd+bwd {r['fwdbwd_per_s']:6.0f}/s ({r['fwdbwd_per_cpu_s']:6.0f}/cpu-s)  "
                  f"peak {m_f:6.1f}/{m_b:6.1f} MiB  prepared {size:6.1f} MiB", flush=True)
        box_rows = {r["method"]: r for r in rows if r["box"] == d}
        base = box_rows["tfs"]
        for name in OURS.values():
            ours = box_rows[name]
            print(f"     {name}/tfs: fwd {ours['fwd_per_s'] / base['fwd_per_s']:.2f}x "
                  f"(cpu {ours['fwd_per_cpu_s'] / base['fwd_per_cpu_s']:.2f}x)  "
                  f"fwd+bwd {ours['fwdbwd_per_s'] / base['fwdbwd_per_s']:.2f}x "
                  f"(cpu {ours['fwdbwd_per_cpu_s'] / base['fwdbwd_per_cpu_s']:.2f}x)  "
                  f"error centre {ours['err_centre'] / base['err_centre']:.2g}x "
                  f"sphere {ours['err_sphere'] / base['err_sphere']:.2g}x", flush=True)
        equal = [box_rows[k] for k in OURS.values()
                 if box_rows[k]["err_centre"] <= base["err_centre"] and box_rows[k]["err_sphere"] <= base["err_sphere"]]
        if equal:
            best = max(equal, key=lambda r: r["fwd_per_s"])
            print(f"     at equal accuracy ({best['method']}): fwd {best['fwd_per_s'] / base['fwd_per_s']:.2f}x "
                  f"(cpu {best['fwd_per_cpu_s'] / base['fwd_per_cpu_s']:.2f}x) "
                  f"fwd+bwd {best['fwdbwd_per_s'] / base['fwdbwd_per_s']:.2f}x "
                  f"(cpu {best['fwdbwd_per_cpu_s'] / base['fwdbwd_per_cpu_s']:.2f}x)", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": dev, "threads": args.threads, "pad": PAD, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
