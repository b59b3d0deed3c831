"""``discvbr stats``: voxel-wise statistics of registered maps across subjects."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from discvbr.cli import app


class Analysis(str, Enum):
    variable = "variable"
    group = "group"
    voxel = "voxel"
    time = "time"


class Method(str, Enum):
    pearson = "pearson"
    spearman = "spearman"


_ANALYSIS_FUNCTIONS = {
    "variable": "voxel_by_variable",
    "group": "voxel_by_group",
    "voxel": "voxel_by_voxel",
    "time": "voxel_by_time",
}


@app.command("stats")
def stats_command(
    analysis: Analysis = typer.Argument(
        ...,
        help="variable: correlation of each voxel with a variable (partial with --covariate); group: t-test "
        "between two groups; voxel: correlation between two maps (e.g. T1rho and T2); time: paired t-test "
        "of follow-up against baseline.",
    ),
    maps: List[Path] = typer.Option(
        ...,
        "--maps",
        "-m",
        help="Registered maps on the atlas grid: a folder of images (one per subject, named by subject id), "
        "image files (repeat the option), or one 4D stack with subjects on the last axis. For 'time': the "
        "baseline maps.",
    ),
    second_maps: Optional[List[Path]] = typer.Option(
        None,
        "--second-maps",
        help="'voxel': the second map of each subject (e.g. T2); 'time': the follow-up maps. Same forms as --maps.",
    ),
    labels: Optional[Path] = typer.Option(
        None,
        "--labels",
        help="Atlas disc label map on the same grid (1 = L5S1 ... 5 = L1L2): each disc is analysed on its own "
        "voxels and corrected jointly. Without it the whole map is one region.",
    ),
    variables: Optional[Path] = typer.Option(
        None,
        "--variables",
        help="Subject variables: a CSV/TSV with a 'subject' column (else the first column is the id), or a "
        "DiscVBR cohort manifest.",
    ),
    session: Optional[str] = typer.Option(
        None, "--session", help="Manifest with several sessions per subject: the session whose variables are used."
    ),
    subjects: Optional[str] = typer.Option(
        None,
        "--subjects",
        help="Subject ids of a 4D stack's volumes, comma-separated or a text file with one per line (default: "
        "the rows of the variables table, in order).",
    ),
    subject_pattern: Optional[str] = typer.Option(
        None,
        "--subject-pattern",
        help="Regular expression whose first group extracts the subject id from a map's file name "
        "(default: the whole name without its suffix).",
    ),
    variable: Optional[str] = typer.Option(
        None,
        "--variable",
        "-v",
        help="Tested ('variable') or grouping ('group') variable, e.g. odi; '{level}' is replaced by each "
        "disc's level (pfirrmann_{level}).",
    ),
    covariates: Optional[List[str]] = typer.Option(
        None, "--covariate", "-c", help="Covariate adjusted for (partial correlation); repeat for several."
    ),
    method: Method = typer.Option(Method.pearson, "--method", help="Correlation: pearson or spearman."),
    cut: Optional[float] = typer.Option(
        None, "--cut", help="'group': split a numeric variable into <= cut and > cut (e.g. 40 for ODI)."
    ),
    welch: bool = typer.Option(False, "--welch", help="'group': Welch's t-test instead of Student's (pooled variance)."),
    permutations: int = typer.Option(
        5000, "--permutations", "-p", min=0, help="Permutations for family-wise error control (0: parametric only)."
    ),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the permutations (same seed, same results)."),
    tfce: bool = typer.Option(True, "--tfce/--no-tfce", help="Threshold-free cluster enhancement with FWE p-values."),
    cluster_threshold: float = typer.Option(
        0.001,
        "--cluster-threshold",
        min=0.0,
        max=1.0,
        help="Uncorrected p forming clusters for cluster-mass inference; 0 turns cluster inference off.",
    ),
    connectivity: int = typer.Option(
        1, "--connectivity", min=1, max=3, help="Voxel neighbourhood for clusters and TFCE: 1 faces, 2 edges, 3 corners."
    ),
    tfce_e: float = typer.Option(0.5, "--tfce-e", min=0.0, help="TFCE extent exponent E."),
    tfce_h: float = typer.Option(2.0, "--tfce-h", min=0.0, help="TFCE height exponent H."),
    tfce_dh: Optional[float] = typer.Option(
        None, "--tfce-dh", min=0.0, help="TFCE threshold step (default: exact integral)."
    ),
    joint: bool = typer.Option(True, "--joint/--no-joint", help="Also correct over all discs together (*_joint maps)."),
    roi: bool = typer.Option(True, "--roi/--no-roi", help="Also test each disc's mean (roi.csv)."),
    map_name: str = typer.Option("T1rho", "--map-name", help="What --maps hold, for reports (e.g. T1rho, T2)."),
    second_map_name: str = typer.Option("T2", "--second-map-name", help="What --second-maps hold, for reports."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Threads for cluster and TFCE permutations."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for NIfTI maps, CSV tables and provenance.json."),
) -> None:
    """Voxel-wise statistics across subjects on the atlas grid, per disc, with FWE/FDR control.

    Writes one NIfTI per map (r or group means, t, p, n, corrected p-values) with every
    disc in the same image, and summary.csv, clusters.csv, peaks.csv, roi.csv,
    excluded.csv and provenance.json.
    """
    import numpy as np

    from discvbr.errors import DiscVBRError
    from discvbr.io import read_image
    from discvbr.stats import analyze_discs, read_map_stack, read_variables, save_study

    name = _ANALYSIS_FUNCTIONS[analysis.value]
    if analysis in (Analysis.voxel, Analysis.time) and not second_maps:
        raise DiscVBRError(f"'{analysis.value}' needs --second-maps ({'the second map' if analysis == Analysis.voxel else 'the follow-up'})")
    if analysis in (Analysis.variable, Analysis.group) and (variables is None or variable is None):
        raise DiscVBRError(f"'{analysis.value}' needs --variables and --variable")
    if covariates and variables is None:
        raise DiscVBRError("--covariate needs --variables")
    _check_writable(out)

    stack, affine, ids = read_map_stack(maps, subject_pattern=subject_pattern, what="--maps")
    second = None
    if second_maps:
        second, affine2, ids2 = read_map_stack(second_maps, subject_pattern=subject_pattern, what="--second-maps")
        if second.shape[1:] != stack.shape[1:] or not np.allclose(affine, affine2, atol=1e-3):
            raise DiscVBRError("--second-maps are not on the grid of --maps")
        stack, second, ids = _pair_stacks(stack, ids, second, ids2)
    if ids is None and subjects is not None:
        ids = _subject_list(subjects)
    table = read_variables(variables, session=session) if variables is not None else None
    label_map = None
    if labels is not None:
        label_image = read_image(labels, what="--labels")
        if label_image.shape[:3] != stack.shape[1:] or not np.allclose(label_image.affine, affine, atol=1e-3):
            raise DiscVBRError(f"--labels {labels} is not on the grid of the maps")
        label_map = np.asarray(label_image.array)
    study = analyze_discs(
        name,
        stack,
        labels=label_map,
        second_maps=second,
        variables=table,
        subjects=ids,
        variable=variable,
        covariates=covariates or (),
        method=method.value,
        cut=cut,
        equal_var=not welch,
        map_names=(map_name, second_map_name),
        n_permutations=permutations,
        seed=seed,
        tfce=tfce,
        cluster_threshold=cluster_threshold if cluster_threshold > 0 else None,
        connectivity=connectivity,
        tfce_e=tfce_e,
        tfce_h=tfce_h,
        tfce_dh=tfce_dh or None,
        joint=joint,
        roi=roi,
        n_jobs=jobs,
    )
    save_study(out, study, affine=affine)
    first = next(iter(study.regions.values()))
    typer.echo(f"{first.description}; results in {out}")
    correction = "fwe_voxel_joint" if study.parameters["joint"] else "fwe_voxel"
    for level, result in study.regions.items():
        counts = result.summary()
        detail = f"{counts['n_subjects']} subjects, {counts['n_tested']} voxels tested"
        if f"n_significant_{correction}" in counts:
            detail += f", {counts[f'n_significant_{correction}']} significant (max-T FWE 0.05)"
        detail += f", {counts['n_significant_fdr_bh']} at FDR 0.05"
        typer.echo(f"  {level}: {detail}")
    for level, reason in study.failures.items():
        typer.echo(f"  {level}: not analysed: {reason}")


def _check_writable(out: Path) -> None:
    from discvbr.errors import DiscVBRError

    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise DiscVBRError(f"--out {out}: {existing} is a file, not a folder")


def _subject_list(text: str) -> list[str]:
    path = Path(text)
    if path.is_file():
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return [s.strip() for s in text.split(",") if s.strip()]


def _pair_stacks(first, ids_first, second, ids_second):
    """Rows for the union of subjects of two stacks, NaN where a subject has only one."""
    import numpy as np

    from discvbr.errors import DiscVBRError

    if ids_first is None or ids_second is None:
        if first.shape != second.shape:
            raise DiscVBRError(
                f"--maps has {first.shape[0]} subjects and --second-maps {second.shape[0]}; 4D stacks must match row by row"
            )
        return first, second, ids_first if ids_first is not None else ids_second
    ids = list(ids_first) + [s for s in ids_second if s not in set(ids_first)]
    shape = (len(ids),) + first.shape[1:]
    a = np.full(shape, np.nan, dtype=np.float32)
    b = np.full(shape, np.nan, dtype=np.float32)
    row = {s: i for i, s in enumerate(ids)}
    a[[row[s] for s in ids_first]] = first
    b[[row[s] for s in ids_second]] = second
    return a, b, ids
