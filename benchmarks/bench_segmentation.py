"""Evaluation and speed of the shipped disc segmentation model.

Usage::

    PYTHONPATH=. python benchmarks/bench_segmentation.py [--model DIR] [--quick] [--out results.json]

Measures, printing the machine first (timings on a shared machine are noisy; the
ratio to a baseline timed in the same run is the robust number):

1. Speed: inference time per 256 x 256 slice (preprocessing included) of each member
   and of the whole ensemble, batched 8 slices, on this machine's CPU threads; baseline:
   the full-width CFCM (width 1, ResNet34 blocks) on the same slices. Paper: 0.393 s
   per slice on a TitanX.
2. Held-out phantom subjects (seeds never used in training): 2D cohorts at SNR 20, 40
   and 80 and a 3D cohort; Dice and the other metrics per disc (2D for single slices,
   3D for stacks); level swaps (a reference disc whose automatic label is another level).
3. Biomarker agreement on the 2D phantom sessions: mean T1rho per disc within the
   reference versus the automatic mask, on the phantom's true T1rho map and on a
   voxel-wise log-linear fit of the echoes: Pearson r, paired t-test, Bland-Altman.
4. Real T2-weighted volumes, leave one subject out: each real subject is segmented by
   the ensemble member that was trained without it (neither its T2w slices nor its
   semi-synthetic copies); per-disc 3D Dice over the labelled volume and the mean 2D
   Dice over its slices; level swaps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from discvbr.levels import DISC_LEVELS  # noqa: E402
from discvbr.metrics import biomarker_agreement, mean_per_disc, segmentation_metrics, summarise_metrics  # noqa: E402
from discvbr.phantom import PhantomConfig, draw_subject, simulate_session  # noqa: E402
from discvbr.phantom.real import load_real_anatomies  # noqa: E402
from discvbr.segmentation import load_model, segment_discs  # noqa: E402
from discvbr.segmentation.model_store import ModelSet  # noqa: E402

HELD_OUT = {
    "2d-snr20": dict(mode="2d", snr=20.0, seed=9001),
    "2d-snr40": dict(mode="2d", snr=40.0, seed=9002),
    "2d-snr80": dict(mode="2d", snr=80.0, seed=9003),
    "3d-snr40": dict(mode="3d", snr=40.0, seed=9004, n_slices=6, slice_thickness=4.0),
}


def machine() -> dict:
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average": os.getloadavg(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def level_swaps(truth: np.ndarray, auto: np.ndarray) -> list[str]:
    """Reference discs whose automatic voxels carry mostly another level's label."""
    swaps = []
    for label, level in enumerate(DISC_LEVELS, start=1):
        inside = auto[truth == label]
        inside = inside[inside > 0]
        if inside.size:
            dominant = int(np.bincount(inside, minlength=6).argmax())
            if dominant != label:
                swaps.append(f"{level}->{DISC_LEVELS[dominant - 1]}")
    return swaps


def log_linear_t(series) -> np.ndarray:
    """Voxel-wise mono-exponential T (ms) by least squares on log signal (NaN where not positive)."""
    data = np.asarray(series.data, dtype=np.float64)
    t = series.times
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log(data)
        tc = t - t.mean()
        slope = (logs * tc).sum(axis=-1) / (tc**2).sum()
        value = -1.0 / slope
    value[~np.isfinite(value) | (value <= 0) | (value > 1000)] = np.nan
    return value


def time_inference(model: ModelSet, slices: np.ndarray, *, repeats: int, device: str = "cpu") -> float:
    """Median seconds per slice of ``segment_discs``'s network part on 256 x 256 slices.

    On CUDA the networks run in mixed precision, as ``segment_discs`` does there by default;
    ``predict_volume`` returns host arrays, so each timed call ends synchronised.
    """
    from discvbr.segmentation.infer import predict_volume, resolve_device, use_mixed_precision

    torch_device = resolve_device(device)
    amp = use_mixed_precision(torch_device)
    spacing = (240 / 256, 240 / 256)
    predict_volume(slices[:2], spacing, model, device=torch_device, amp=amp)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predict_volume(slices, spacing, model, device=torch_device, batch_size=8, amp=amp)
        times.append((time.perf_counter() - t0) / len(slices))
    return float(np.median(times))


def full_width_ensemble(model: ModelSet, n_members: int, device: str) -> ModelSet:
    """``n_members`` untrained full-width CFCMs (width 1, ResNet34 blocks): the paper's network.

    Their weights are random; inference time does not depend on them.
    """
    import torch

    from discvbr.segmentation.infer import resolve_device
    from discvbr.segmentation.model_store import LoadedModel
    from discvbr.segmentation.network import CFCMConfig, build_network

    metadata = {"architecture": {"n_classes": 6}, "preprocessing": model.preprocess.as_dict()}
    members = []
    for _ in range(n_members):
        network = build_network(CFCMConfig(width=1.0)).eval().to(resolve_device(device))
        if device == "cpu":
            network = network.to(memory_format=torch.channels_last)
        members.append(LoadedModel(network, metadata, Path("full-width")))
    return ModelSet(members, Path("full-width"), f"cfcm-full-width-x{n_members}")


def speed(model: ModelSet, *, quick: bool, device: str = "cpu") -> dict:
    config = PhantomConfig(n_subjects=8, seed=9100, supersample=1)
    slices = np.concatenate([simulate_session(config, draw_subject(config, i)).t1rho.data[..., 0] for i in range(8)])
    repeats = 2 if quick else 5
    out = {"slices": int(len(slices)), "repeats": repeats, "device": device}
    out["ensemble_s_per_slice"] = time_inference(model, slices, repeats=repeats, device=device)
    out["member_s_per_slice"] = [
        time_inference(ModelSet([m], m.path, m.metadata.get("name", "")), slices, repeats=repeats, device=device)
        for m in model.members
    ]
    # On the CPU one full-width network on two slices is slow enough; on a GPU the paper's
    # five-network ensemble on every slice is the number to compare with its 0.393 s.
    if device == "cpu":
        out["baseline_full_width_s_per_slice"] = time_inference(full_width_ensemble(model, 1, device), slices[:2], repeats=1)
    else:
        out["baseline_full_width_s_per_slice"] = time_inference(full_width_ensemble(model, 1, device), slices,
                                                                repeats=repeats, device=device)
        out["full_width_x5_s_per_slice"] = time_inference(full_width_ensemble(model, 5, device), slices,
                                                          repeats=repeats, device=device)
    out["ratio_baseline_over_ensemble"] = out["baseline_full_width_s_per_slice"] / out["ensemble_s_per_slice"]
    out["paper_titanx_s_per_slice"] = 0.393
    return out


def held_out_phantom(model: ModelSet, *, quick: bool) -> dict:
    n2, n3 = (4, 2) if quick else (12, 4)
    results: dict = {"cohorts": {}}
    biomarker = {"truth_map": ([], []), "log_linear_fit": ([], [])}
    all_swaps = []
    for name, settings in HELD_OUT.items():
        config = PhantomConfig(n_subjects=n3 if settings["mode"] == "3d" else n2, **settings)
        records = []
        swaps = []
        for i in range(config.n_subjects):
            session = simulate_session(config, draw_subject(config, i))
            res = segment_discs(session.t1rho, model=model, device="cpu", subject=f"{name}/{session.subject}")
            truth = session.labels.array
            auto = res.labels.array
            mode = "2d" if settings["mode"] == "2d" else "3d"
            records += segmentation_metrics(truth, auto, spacing=session.labels.spacing, mode=mode, subject=session.subject)
            s = level_swaps(truth, auto)
            swaps += [f"{session.subject}: {x}" for x in s]
            if settings["mode"] == "2d":
                fit = log_linear_t(session.t1rho)
                for key, tmap in (("truth_map", session.truth.t1rho), ("log_linear_fit", fit)):
                    manual = mean_per_disc(tmap, truth)
                    automatic = mean_per_disc(tmap, auto)
                    biomarker[key][0].extend(manual[lvl] for lvl in DISC_LEVELS)
                    biomarker[key][1].extend(automatic[lvl] for lvl in DISC_LEVELS)
        summary = summarise_metrics(records)
        results["cohorts"][name] = {"subjects": config.n_subjects, "metrics": summary, "swaps": swaps}
        all_swaps += swaps
        print(f"  phantom {name}: Dice " + ", ".join(f"{lvl} {summary[lvl]['dice']:.3f}" for lvl in DISC_LEVELS if lvl in summary)
              + f"; swaps {len(swaps)}", flush=True)
    results["biomarker_t1rho"] = {k: biomarker_agreement(np.array(m), np.array(a)) for k, (m, a) in biomarker.items()}
    results["level_swaps"] = all_swaps
    pooled = {}
    for lvl in DISC_LEVELS:
        pooled[lvl] = float(np.mean([c["metrics"][lvl]["dice"] for c in results["cohorts"].values() if lvl in c["metrics"]]))
    results["mean_dice_per_disc"] = pooled
    return results


def real_loso(model: ModelSet) -> dict:
    anatomies = load_real_anatomies(REPO / "data" / "lumbar-t2-real")
    out: dict = {"subjects": {}}
    per_disc_3d: dict[str, list[float]] = {lvl: [] for lvl in DISC_LEVELS}
    per_disc_2d: dict[str, list[float]] = {lvl: [] for lvl in DISC_LEVELS}
    swaps_all = []
    for anatomy in anatomies:
        group = f"real:{anatomy.name}"
        members = [m for m in model.members if group in m.metadata.get("training", {}).get("split", {}).get("validation_groups", [])]
        if not members:
            out["subjects"][anatomy.name] = "no ensemble member was trained without this subject: not evaluated"
            continue
        held_out = ModelSet(members, members[0].path, members[0].metadata.get("name", ""))
        res = segment_discs(anatomy.image, model=held_out, device="cpu", subject=anatomy.name)
        truth = anatomy.labels.array
        auto = res.labels.array
        rec3 = segmentation_metrics(truth, auto, spacing=anatomy.labels.spacing, mode="3d", subject=anatomy.name)
        rec2 = segmentation_metrics(truth, auto, spacing=anatomy.labels.spacing, mode="2d", subject=anatomy.name)
        s2 = summarise_metrics(rec2)
        swaps = level_swaps(truth, auto)
        swaps_all += [f"{anatomy.name}: {x}" for x in swaps]
        for r in rec3:
            per_disc_3d[r["level"]].append(r["dice"])
        for lvl in DISC_LEVELS:
            if lvl in s2:
                per_disc_2d[lvl].append(s2[lvl]["dice"])
        out["subjects"][anatomy.name] = {
            "model": [m.metadata.get("name") for m in members],
            "metrics_3d": {r["level"]: {k: r[k] for k in ("dice", "msd_mm", "vd_percent", "sensitivity", "precision")} for r in rec3},
            "metrics_2d_mean_over_slices": s2,
            "warnings": res.warnings,
            "swaps": swaps,
        }
        print(f"  real {anatomy.name} (held out): 3D Dice " + ", ".join(f"{r['level']} {r['dice']:.3f}" for r in rec3)
              + f"; swaps {len(swaps)}", flush=True)
    out["mean_dice_3d_per_disc"] = {k: float(np.mean(v)) if v else float("nan") for k, v in per_disc_3d.items()}
    out["mean_dice_2d_per_disc"] = {k: float(np.mean(v)) if v else float("nan") for k, v in per_disc_2d.items()}
    out["level_swaps"] = swaps_all
    return out


def write_results(path: Path | None, results: dict) -> None:
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2, default=float) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluation and speed of the disc segmentation model.")
    parser.add_argument("--model", type=Path, default=None, help="model or ensemble folder (default: shipped)")
    parser.add_argument("--quick", action="store_true", help="fewer subjects and repeats")
    parser.add_argument("--skip-speed", action="store_true", help="only the evaluation")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="device of the speed measurement: cpu or cuda")
    parser.add_argument("--skip-eval", action="store_true", help="only the speed measurement")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    model = load_model(args.model, device=args.device)
    results = {"machine": machine(), "model": model.describe()}
    print("machine:", json.dumps(results["machine"]), flush=True)
    print(f"model: {model.name} ({len(model.members)} member(s))", flush=True)
    if not args.skip_speed:
        results["speed"] = speed(model, quick=args.quick, device=args.device)
        sp = results["speed"]
        print(f"speed on {args.device}: ensemble {sp['ensemble_s_per_slice']:.4f} s/slice, members "
              + ", ".join(f"{t:.4f}" for t in sp["member_s_per_slice"])
              + f"; full-width CFCM {sp['baseline_full_width_s_per_slice']:.4f} s/slice "
              f"(ratio {sp['ratio_baseline_over_ensemble']:.1f}x)"
              + (f"; five full-width CFCMs {sp['full_width_x5_s_per_slice']:.4f} s/slice"
                 if "full_width_x5_s_per_slice" in sp else ""), flush=True)
    if args.skip_eval:
        write_results(args.out, results)
        return 0
    print("held-out phantom subjects:", flush=True)
    results["phantom"] = held_out_phantom(model, quick=args.quick)
    for key, agreement in results["phantom"]["biomarker_t1rho"].items():
        print(f"  biomarker T1rho ({key}): r {agreement['pearson_r']:.4f}, bias {agreement['bias']:+.3f} ms, "
              f"limits {agreement['loa_lower']:+.2f}..{agreement['loa_upper']:+.2f} ms, paired t p {agreement['t_p']:.3f}, "
              f"n {agreement['n']}", flush=True)
    print("real T2w, leave one subject out:", flush=True)
    results["real_loso"] = real_loso(model)
    print("  mean 3D Dice per disc: " + ", ".join(f"{k} {v:.3f}" for k, v in results["real_loso"]["mean_dice_3d_per_disc"].items()))
    print("  mean 2D Dice per disc: " + ", ".join(f"{k} {v:.3f}" for k, v in results["real_loso"]["mean_dice_2d_per_disc"].items()))
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
