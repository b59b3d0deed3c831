"""Where each atlas-disc voxel lands, against the phantom's own disc coordinates.

The phantom paints every disc from normalised coordinates (``disc_u`` antero-posterior,
``disc_v`` inferior-superior, each -1..1 between the disc's walls;
:func:`discvbr.phantom.cohort.session_samples`): a point keeps its relative place between the
walls from one spine to another. The shipped phantom atlases are phantom spines, so every
atlas-disc voxel has coordinates too, and its true place in a phantom subject is the subject
point with the same coordinates. This complements ``bench_registration_accuracy.py``, whose
truth is a smooth map: here the truth is the phantom's anatomy (different disc heights,
wedging, lordosis and degeneration), as in the demo's planted effects.

Per candidate and disc: point error (distance, mm, between the registered and the true subject
position of every atlas-disc voxel whose coordinates the subject disc holds) median, 95th
percentile, Dice and seconds, with the centroid baseline of the other benchmark. True
positions come from linear interpolation of the subject voxels' mean coordinates (voxels at
least half inside the disc) to each atlas voxel's; 2D only (one 8 mm slice).

    PYTHONPATH=. python benchmarks/bench_registration_phantom.py --subjects 6 --candidates paper,default
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time

import numpy as np
from bench_registration import _machine  # same machine record as the speed benchmark (this folder is on sys.path)
from bench_registration_accuracy import CANDIDATES, _candidate_params


def _disc_coordinates(samples, grid, label: int) -> tuple[np.ndarray, np.ndarray]:
    """Per voxel of ``grid``'s slice: mean (u, v) of the disc's samples, and the share of samples in the disc."""
    f_through, f_in = grid.factors[0], grid.factors[1]
    ny, nz = grid.shape[1], grid.shape[2]
    inside = (samples.disc == label).reshape(f_through, ny, f_in, nz, f_in)
    share = inside.mean(axis=(0, 2, 4))
    coords = []
    for values in (samples.disc_u, samples.disc_v):
        blocks = np.where(inside, values.reshape(inside.shape), 0.0)
        with np.errstate(invalid="ignore"):
            coords.append(blocks.sum(axis=(0, 2, 4)) / inside.sum(axis=(0, 2, 4)))
    return np.stack(coords, axis=-1), share


def _phantom_grid(index_offset: np.ndarray, shape: tuple[int, int]) -> tuple[slice, slice]:
    j, k = (int(round(v)) for v in index_offset[1:3])
    return slice(j, j + shape[0]), slice(k, k + shape[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", default="paper,default", help=f"comma-separated, from: {', '.join(CANDIDATES)}")
    parser.add_argument("--atlas", default="phantom-healthy", choices=("phantom-healthy", "phantom-degenerated"))
    parser.add_argument("--subjects", type=int, default=6, help="phantom subjects (seed 0 cohort), every disc of each")
    parser.add_argument("--seed", type=int, default=0, help="phantom cohort seed")
    parser.add_argument("--json", help="also write every row to this file")
    args = parser.parse_args()

    from scipy.interpolate import LinearNDInterpolator

    from discvbr.levels import level_of
    from discvbr.phantom.atlas import phantom_atlas_labels
    from discvbr.phantom.cohort import PhantomConfig, draw_subject, session_samples, simulate_session
    from discvbr.registration import load_atlas, register_disc
    from discvbr.registration.engine import load_itk, voxel_positions

    load_itk()
    machine = _machine()
    print("machine:", json.dumps(machine))
    atlas = load_atlas(args.atlas, mode="2d")
    kind = args.atlas.split("-", 1)[1]
    atlas_spec_labels, source = phantom_atlas_labels(kind, mode="2d")
    # the atlas spine's samples: the spec phantom_atlas_labels simulated (subject 0, average anatomy)
    config_atlas = PhantomConfig(n_subjects=1, mode="2d", seed=0)
    spec = draw_subject(config_atlas, 0)
    spec = dataclasses.replace(spec, anatomy=source["anatomy"], degeneration={lvl: source["degeneration"] for lvl in spec.degeneration})
    atlas_samples, atlas_grid = session_samples(config_atlas, spec)
    if not np.array_equal(np.asarray(simulate_session(config_atlas, spec).labels.array), np.asarray(atlas_spec_labels.array)):
        raise SystemExit("the atlas spine could not be rebuilt from its provenance")

    config = PhantomConfig(n_subjects=args.subjects, mode="2d", seed=args.seed)
    names = args.candidates.split(",")
    rows = []
    print(f"{'candidate':<16} {'subject':<8} {'disc':<5} {'med':>5} {'p95':>5} {'max':>5} {'cent':>5} {'cover':>5} {'Dice':>6} {'s':>6}")
    with tempfile.TemporaryDirectory(prefix="discvbr-bench-phantom-") as folder:
        for index in range(args.subjects):
            subject_spec = draw_subject(config, index)
            session = simulate_session(config, subject_spec)
            samples, grid = session_samples(config, subject_spec)
            positions = voxel_positions(session.labels.shape, session.labels.affine, 2)
            for label in range(1, 6):
                coords, share = _disc_coordinates(samples, grid, label)
                solid = share >= 0.5
                to_subject = LinearNDInterpolator(coords[solid], positions[solid])
                atlas_coords, atlas_share = _disc_coordinates(atlas_samples, atlas_grid, label)
                for name in names:
                    params = _candidate_params(name, 2, folder)
                    start = time.perf_counter()
                    reg = register_disc(session.labels, label, atlas, params=params, subject=subject_spec.subject)
                    seconds = time.perf_counter() - start
                    disc = np.asarray(reg.grid.array)[0]
                    offset = np.linalg.solve(atlas_grid.affine, reg.grid.affine[:, 3])
                    rows_slice = _phantom_grid(offset, disc.shape)
                    truth = to_subject(atlas_coords[rows_slice][disc])
                    known = np.all(np.isfinite(truth), axis=1)
                    found = np.asarray(reg.points)[disc][known]
                    truth = truth[known]
                    error = np.linalg.norm(found - truth, axis=1)
                    atlas_points = voxel_positions(reg.grid.shape, reg.grid.affine, 2)[disc][known]
                    centroid = np.linalg.norm(atlas_points - atlas_points.mean(0) + truth.mean(0) - truth, axis=1)
                    row = {
                        "candidate": name, "subject": subject_spec.subject, "disc": level_of(label),
                        "median_mm": float(np.median(error)), "p95_mm": float(np.percentile(error, 95)),
                        "max_mm": float(error.max()), "centroid_median_mm": float(np.median(centroid)),
                        "covered": float(known.mean()), "dice": float(reg.qc.dice), "seconds": seconds,
                    }
                    rows.append(row)
                    print(f"{name:<16} {row['subject']:<8} {row['disc']:<5} {row['median_mm']:5.2f} {row['p95_mm']:5.2f} "
                          f"{row['max_mm']:5.2f} {row['centroid_median_mm']:5.2f} {row['covered']:5.2f} {row['dice']:6.3f} {seconds:6.2f}",
                          flush=True)
    print("\nsummary per candidate (goals as in bench_registration_accuracy: median <= 0.5 mm, p95 <= 1.0 mm per disc)")
    summary = []
    for name in names:
        sel = [r for r in rows if r["candidate"] == name]
        s = {
            "candidate": name,
            "discs": len(sel),
            "median_mm_median": float(np.median([r["median_mm"] for r in sel])),
            "median_mm_worst": max(r["median_mm"] for r in sel),
            "p95_mm_median": float(np.median([r["p95_mm"] for r in sel])),
            "p95_mm_worst": max(r["p95_mm"] for r in sel),
            "centroid_median_mm_median": float(np.median([r["centroid_median_mm"] for r in sel])),
            "dice_worst": min(r["dice"] for r in sel),
            "seconds_mean": float(np.mean([r["seconds"] for r in sel])),
            "discs_meeting_median_goal": sum(r["median_mm"] <= 0.5 for r in sel),
            "discs_meeting_p95_goal": sum(r["p95_mm"] <= 1.0 for r in sel),
        }
        summary.append(s)
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in s.items()}))
    machine["load_average_1min_at_end"] = os.getloadavg()[0]
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"machine": machine, "summary": summary, "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
