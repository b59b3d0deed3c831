"""Benchmarks of discvbr.stats against the libraries the paper and neuroimaging use.

Run by hand (not part of the test suite), from the repository root:

    python benchmarks/bench_stats.py            # full sizes of issue 6 (about 3 minutes)
    python benchmarks/bench_stats.py --quick    # small sizes, a smoke run
    python benchmarks/bench_stats.py --json benchmarks/results/stats.json   # also keep the numbers

Each comparison times the baseline and DiscVBR in the same run on the same data and
prints the ratio, with the machine (CPU, cores, load average, BLAS, versions):

1. Partial correlation (3 covariates, 50 subjects): ``voxel_by_variable`` on a whole map
   against a loop of ``pingouin.partial_corr`` timed on a subset of voxels and
   extrapolated per voxel. Goal >= 10,000x.
2. Max-T with Freedman-Lane (2 covariates): 10,000 voxels x 50 subjects x 5,000
   permutations, ``permutation_inference`` against ``nilearn.mass_univariate.permuted_ols``.
   Goal >= 3x faster, with the same null distribution of the maximum |t| (quantiles
   within Monte-Carlo error, two-sample Kolmogorov-Smirnov test).
3. TFCE with 5,000 permutations on a 100 x 100 map (50 subjects): goal <= 20 s on two
   cores. nilearn's TFCE (``permuted_ols(tfce=True)``) is timed on fewer permutations and
   extrapolated, and its TFCE of the observed map is compared with ours on the same steps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage, stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from discvbr.stats import permutation_inference, voxel_by_variable  # noqa: E402
from discvbr.stats.spatial import neighbour_table, tfce_values  # noqa: E402


def machine() -> dict:
    import numba
    import scipy

    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()],
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "numba": numba.__version__,
    }
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            info["cpu"] = names[0]
    except OSError:
        pass
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [f"{p.get('internal_api')} {p.get('version')} threads={p.get('num_threads')}" for p in threadpool_info()]
    except ImportError:
        pass
    return info


def best_of(function, repeats: int) -> tuple[float, object]:
    best, result = np.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def cohort(n_subjects: int, shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    ids = [f"sub-{i:03d}" for i in range(n_subjects)]
    table = pd.DataFrame(
        {
            "odi": rng.uniform(0, 80, n_subjects),
            "age": rng.normal(50, 12, n_subjects),
            "sex": rng.choice([0.0, 1.0], n_subjects),
            "bmi": rng.normal(26, 4, n_subjects),
        },
        index=ids,
    )
    noise = rng.standard_normal((n_subjects, *shape))
    if len(shape) > 1:
        noise = ndimage.gaussian_filter(noise, (0,) + (1.5,) * len(shape))
        noise /= noise.std()
    return 100.0 + 15.0 * noise, table


def bench_partial_correlation(n_voxels: int, n_loop: int) -> dict:
    import pingouin as pg

    maps, table = cohort(50, (n_voxels,), seed=1)
    covariates = ["age", "sex", "bmi"]
    ours_s, result = best_of(lambda: voxel_by_variable(maps, table, variable="odi", covariates=covariates), 5)
    frame = table.copy()
    rs = []
    start = time.perf_counter()
    for v in range(n_loop):
        frame["y"] = maps[:, v]
        rs.append(pg.partial_corr(frame, x="odi", y="y", covar=covariates)["r"].iloc[0])
    loop_s = time.perf_counter() - start
    per_voxel_pingouin = loop_s / n_loop
    per_voxel_ours = ours_s / n_voxels
    return {
        "voxels": n_voxels,
        "subjects": 50,
        "covariates": len(covariates),
        "discvbr_s": ours_s,
        "discvbr_us_per_voxel": per_voxel_ours * 1e6,
        "pingouin_voxels_timed": n_loop,
        "pingouin_ms_per_voxel": per_voxel_pingouin * 1e3,
        "pingouin_extrapolated_s": per_voxel_pingouin * n_voxels,
        "speedup": per_voxel_pingouin / per_voxel_ours,
        "max_abs_r_difference": float(np.max(np.abs(np.array(rs) - result.values["r"][:n_loop]))),
    }


def bench_max_t(n_voxels: int, n_permutations: int, jobs: int) -> dict:
    from nilearn.mass_univariate import permuted_ols

    maps, table = cohort(50, (n_voxels,), seed=2)
    covariates = ["age", "sex"]
    result = voxel_by_variable(maps, table, variable="odi", covariates=covariates)
    start = time.perf_counter()
    ours = permutation_inference(
        result, n_permutations=n_permutations, seed=0, tfce=False, cluster_threshold=None, n_jobs=jobs
    )
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nilearn = permuted_ols(
            table[["odi"]].to_numpy(),
            maps,
            confounding_vars=table[covariates].to_numpy(),
            model_intercept=True,
            n_perm=n_permutations,
            two_sided_test=True,
            random_state=0,
            n_jobs=jobs,
            output_type="dict",
        )
    nilearn_s = time.perf_counter() - start
    ours_null = np.sort(ours.null["voxel"])
    nilearn_null = np.sort(np.asarray(nilearn["h0_max_t"]).reshape(-1))
    quantiles = {}
    for q in (0.5, 0.9, 0.95, 0.99):
        a, b = np.quantile(ours_null, q), np.quantile(nilearn_null, q)
        # Monte-Carlo SD of a sample quantile: sqrt(q (1 - q) / B) / density, density from the pooled sample.
        pooled = np.concatenate([ours_null, nilearn_null])
        density = stats.gaussian_kde(pooled)(0.5 * (a + b))[0]
        sd_difference = np.sqrt(2 * q * (1 - q) / n_permutations) / density
        quantiles[str(q)] = {"discvbr": a, "nilearn": b, "difference_in_sd": (a - b) / sd_difference}
    observed_t_difference = float(np.max(np.abs(np.asarray(nilearn["t"]).reshape(-1) - result.values["t"])))
    return {
        "voxels": n_voxels,
        "subjects": 50,
        "permutations": n_permutations,
        "covariates": len(covariates),
        "jobs": jobs,
        "discvbr_s": ours_s,
        "nilearn_s": nilearn_s,
        "speedup": nilearn_s / ours_s,
        "max_abs_observed_t_difference": observed_t_difference,
        "null_max_t_quantiles": quantiles,
        "ks_two_sample_p": float(stats.ks_2samp(ours_null, nilearn_null).pvalue),
    }


def bench_tfce(side: int, n_permutations: int, nilearn_permutations: int, jobs: int) -> dict:
    import nibabel as nib
    from nilearn.maskers import NiftiMasker
    from nilearn.mass_univariate import permuted_ols

    maps, table = cohort(50, (side, side), seed=3)
    result = voxel_by_variable(maps, table, variable="odi")
    start = time.perf_counter()
    ours = permutation_inference(
        result, n_permutations=n_permutations, seed=0, tfce=True, cluster_threshold=None, n_jobs=jobs
    )
    ours_s = time.perf_counter() - start
    mask = nib.Nifti1Image(np.ones((side, side, 1), np.uint8), np.eye(4))
    masker = NiftiMasker(mask_img=mask).fit()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nilearn = permuted_ols(
            table[["odi"]].to_numpy(),
            maps.reshape(50, -1),
            model_intercept=True,
            n_perm=nilearn_permutations,
            two_sided_test=True,
            random_state=0,
            n_jobs=jobs,
            masker=masker,
            tfce=True,
            output_type="dict",
        )
    nilearn_s = time.perf_counter() - start
    # nilearn's TFCE of the observed map: 100 steps of max|t| / 100 without the dh factor.
    t_obs = result.values["t"]
    dh = np.abs(t_obs).max() / 100
    neighbours = neighbour_table((side, side), np.arange(side * side), connectivity=1)
    ours_steps = tfce_values(t_obs, neighbours, dh=dh) / dh
    nilearn_tfce = np.asarray(nilearn["tfce"]).reshape(-1)
    agreement = float(np.max(np.abs(ours_steps - nilearn_tfce)) / np.max(np.abs(nilearn_tfce)))
    return {
        "map": f"{side}x{side}",
        "subjects": 50,
        "permutations": n_permutations,
        "jobs": jobs,
        "discvbr_s": ours_s,
        "goal_s": 20.0,
        "nilearn_permutations_timed": nilearn_permutations,
        "nilearn_s": nilearn_s,
        "nilearn_extrapolated_s": nilearn_s * n_permutations / nilearn_permutations,
        "speedup": nilearn_s * n_permutations / nilearn_permutations / ours_s,
        "observed_tfce_relative_difference_vs_nilearn_same_steps": agreement,
        "discvbr_null_max_tfce_median": float(np.median(ours.null["tfce"])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="Small sizes (smoke run).")
    parser.add_argument("--jobs", type=int, default=2, help="Threads for both libraries (default 2).")
    parser.add_argument("--json", type=Path, help="Also write the results to this JSON file.")
    args = parser.parse_args()
    if args.quick:
        sizes = dict(pc_voxels=20_000, pc_loop=50, mt_voxels=2_000, mt_perm=500, tfce_side=40, tfce_perm=500, nl_tfce_perm=20)
    else:
        sizes = dict(pc_voxels=100_000, pc_loop=300, mt_voxels=10_000, mt_perm=5_000, tfce_side=100, tfce_perm=5_000, nl_tfce_perm=100)
    report = {"machine": machine()}
    print(json.dumps(report["machine"], indent=2))
    report["partial_correlation"] = bench_partial_correlation(sizes["pc_voxels"], sizes["pc_loop"])
    print("partial correlation:", json.dumps(report["partial_correlation"], indent=2))
    report["max_t_freedman_lane"] = bench_max_t(sizes["mt_voxels"], sizes["mt_perm"], args.jobs)
    print("max-T Freedman-Lane:", json.dumps(report["max_t_freedman_lane"], indent=2))
    report["tfce"] = bench_tfce(sizes["tfce_side"], sizes["tfce_perm"], sizes["nl_tfce_perm"], args.jobs)
    print("TFCE:", json.dumps(report["tfce"], indent=2))
    report["machine"]["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
