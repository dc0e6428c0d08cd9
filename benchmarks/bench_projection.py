"""Projection throughput and accuracy: mrepo.kernels.fourier_slice vs torch-fourier-slice.

For each box: a phantom of Gaussian blobs (within box/8 of the centre), random poses;
projections per second forward and forward+backward (gradient w.r.t. the rotation
matrices), relative L2 error against the analytic projections, peak memory above the
baseline (CUDA: max_memory_allocated; CPU: resident set size from /proc sampled every
1 ms, Linux only).

Modes: ``extract`` reuses a prepared volume (what refinement does); ``project``
includes volume preparation (gridding correction, padding, 3D FFT).
Usage: python benchmarks/bench_projection.py [--device cpu] [--boxes 64 128] [--repeats 3]
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

from mrepo.kernels.fourier_slice import extract_slices, prepare_volume, project

BATCH = {64: 256, 128: 64}


def phantom(d: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = 6
    cen = rng.uniform(-d / 16, d / 16, (n, 3))
    sig = rng.uniform(d / 32, d / 18, n)
    amp = rng.uniform(0.5, 1.5, n)
    r = np.arange(d) - d // 2
    z, y, x = np.meshgrid(r, r, r, indexing="ij")
    vol = sum(a * np.exp(-((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) / (2 * s * s))
              for c, s, a in zip(cen, sig, amp))
    return vol, (cen, sig, amp)


def analytic(d: int, rots: np.ndarray, blobs) -> np.ndarray:
    cen, sig, amp = blobs
    r = np.arange(d) - d // 2
    y, x = np.meshgrid(r, r, indexing="ij")
    out = np.zeros((len(rots), d, d))
    for i, rot in enumerate(rots):
        for c, s, a in zip(cen, sig, amp):
            c2 = rot.T @ c
            out[i] += a * s * math.sqrt(2 * math.pi) * np.exp(-((x - c2[0]) ** 2 + (y - c2[1]) ** 2) / (2 * s * s))
    return out


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


def timed(fn, rots: torch.Tensor, device: str, repeats: int, backward: bool) -> tuple[float, float]:
    """Best time (s) over repeats and peak memory (MiB) of fn(rots) [+ backward]."""
    def run():
        r = rots.detach().clone().requires_grad_(backward)
        out = fn(r)
        if backward:
            out.real.square().sum().backward() if not out.is_complex() else out.abs().square().sum().backward()
        return out

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
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        run()
        sync(device)
        best = min(best, time.perf_counter() - t)
    done.set()
    sampler.join()
    if device.startswith("cuda"):
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = (rss_peak[0] - rss0) / 2**20
    return best, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--boxes", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_projection.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from torch_fourier_slice import extract_central_slices_rfft_3d, project_3d_to_2d

    dev = args.device
    rows = []
    for d in args.boxes:
        n = BATCH.get(d, max(16, 2**15 // d))
        vol_np, blobs = phantom(d)
        vol = torch.tensor(vol_np, dtype=torch.float32, device=dev)
        rots_np = Rotation.random(n, random_state=d).as_matrix()
        rots = torch.tensor(rots_np, dtype=torch.float32, device=dev)
        ref = analytic(d, rots_np[:16], blobs)
        methods = {}
        for pad in (2, 3):
            vft = prepare_volume(vol, pad)
            methods[f"mrepo pad{pad} extract"] = lambda r, v=vft, p=pad: extract_slices(v, r, d, p)
            methods[f"mrepo pad{pad} project"] = lambda r, p=pad: project(vol, r, p)
        # torch-fourier-slice: its project_3d_to_2d, and its slice extraction from a
        # volume prepared once (same steps as inside project_3d_to_2d)
        big = 2 * d
        o = (big - d) // 2
        padded = torch.nn.functional.pad(vol, [o] * 6)
        f = torch.fft.fftshift(torch.fft.fftfreq(big, device=dev))
        s2 = torch.sinc(f) ** 2
        padded = padded / (s2[:, None, None] * s2[None, :, None] * s2[None, None, :])
        tfs_vft = torch.fft.fftshift(torch.fft.rfftn(torch.fft.ifftshift(padded)), dim=(-3, -2))

        def tfs_extract(r):
            sl = extract_central_slices_rfft_3d(tfs_vft, r)
            img = torch.fft.fftshift(torch.fft.irfftn(torch.fft.ifftshift(sl, dim=(-2,)), dim=(-2, -1), s=(big, big)), dim=(-2, -1))
            return img[..., o:o + d, o:o + d]

        methods["tfs pad2 extract"] = tfs_extract
        methods["tfs pad2 project"] = lambda r: project_3d_to_2d(vol, r, pad_factor=2.0)
        for name, fn in methods.items():
            with torch.no_grad():
                out = fn(rots[:16])
            img = torch.fft.irfft2(out, s=(d, d)) if out.is_complex() else out
            err = float(np.linalg.norm(img.cpu().double().numpy() - ref) / np.linalg.norm(ref))
            t_f, m_f = timed(fn, rots, dev, args.repeats, backward=False)
            t_b, m_b = timed(fn, rots, dev, args.repeats, backward=True)
            rows.append(dict(box=d, batch=n, method=name, rel_error=err, fwd_per_s=n / t_f,
                             fwdbwd_per_s=n / t_b, peak_mib_fwd=m_f, peak_mib_fwdbwd=m_b, device=dev))
            r = rows[-1]
            print(f"{d:4d} {n:4d} {name:22s} err {err:.2e}  fwd {r['fwd_per_s']:8.0f}/s  "
                  f"fwd+bwd {r['fwdbwd_per_s']:8.0f}/s  peak {m_f:7.1f}/{m_b:7.1f} MiB", flush=True)
        for mode in ("extract", "project"):
            base = next(r for r in rows if r["box"] == d and r["method"] == f"tfs pad2 {mode}")
            for pad in (2, 3):
                ours = next(r for r in rows if r["box"] == d and r["method"] == f"mrepo pad{pad} {mode}")
                print(f"     ratio mrepo pad{pad}/tfs pad2 {mode}: fwd {ours['fwd_per_s'] / base['fwd_per_s']:.2f}x "
                      f"fwd+bwd {ours['fwdbwd_per_s'] / base['fwdbwd_per_s']:.2f}x "
                      f"error {ours['rel_error'] / base['rel_error']:.2f}x")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": dev, "threads": args.threads, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
