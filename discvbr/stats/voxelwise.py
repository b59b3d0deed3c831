"""The four voxel-wise analyses of voxel-based relaxometry (Iriondo et al. 2020).

* :func:`voxel_by_variable`: (partial) correlation of each voxel with a subject
  variable, e.g. T1rho against ODI adjusting for age, sex and BMI.
* :func:`voxel_by_group`: unpaired t-test between two groups at each voxel, e.g.
  ODI <= 40 against ODI > 40.
* :func:`voxel_by_voxel`: correlation across subjects between two maps at each voxel,
  e.g. T1rho against T2.
* :func:`voxel_by_time`: paired t-test of follow-up against baseline at each voxel.

Every function takes maps as an array ``(n_subjects, *spatial)`` (or ``(n_subjects,
n_voxels)``) with NaN outside the disc and for invalid fits, and subject variables as
a pandas table indexed by subject id. An analysis leaves out only the subjects that
miss a variable it needs; each voxel then uses the subjects that have a value there,
and the number is reported per voxel (``n``). Results carry uncorrected p-values and
their Bonferroni, Holm and Benjamini-Hochberg corrections over the voxels with a
defined test; permutation inference is added by
:func:`discvbr.stats.permutation_inference`.

All tests are two-sided. Statistics match pingouin (``corr``, ``partial_corr``) and
scipy (``ttest_ind``, ``ttest_rel``) on the same subjects.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from discvbr.errors import DiscVBRError
from discvbr.stats.corrections import CORRECTIONS, adjust_all
from discvbr.stats.inputs import Region, align_subjects, numeric_variables, prepare_maps
from discvbr.stats.models import CorrelationModel, PairedModel, TwoGroupModel
from discvbr.stats.results import VoxelResult

__all__ = ["voxel_by_variable", "voxel_by_group", "voxel_by_voxel", "voxel_by_time"]

METHODS = ("pearson", "spearman")


def voxel_by_variable(
    maps: np.ndarray,
    variables: pd.DataFrame,
    *,
    variable: str,
    covariates: Sequence[str] = (),
    method: str = "pearson",
    subjects: Sequence[str] | None = None,
    mask: np.ndarray | None = None,
    map_name: str = "maps",
) -> VoxelResult:
    """Correlation of each voxel with a subject variable, optionally partial.

    Parameters
    ----------
    maps : array_like, shape (n_subjects, *spatial) or (n_subjects, n_voxels)
        Relaxation times (ms) or any per-voxel measure, NaN where missing.
    variables : DataFrame
        Subject variables indexed by subject id. Text columns with two levels (sex,
        group) are coded 0/1 (:func:`discvbr.manifest.encode_variables`).
    variable : str
        Column tested against the maps (e.g. ``"odi"``, ``"pfirrmann_L4L5"``).
    covariates : sequence of str
        Columns adjusted for (partial correlation), e.g. ``("age", "sex", "bmi")``.
    method : {"pearson", "spearman"}
        Spearman ranks the maps, the variable and the covariates on each voxel's
        subjects first.
    subjects : sequence of str, optional
        Subject id of each map row; default: the order of ``variables.index``.
    mask : array_like of bool, optional
        Voxels to analyse (one disc), or for ``(n_subjects, n_voxels)`` maps the grid
        mask that places the columns (see :func:`discvbr.stats.inputs.prepare_maps`).
    map_name : str
        What the maps are (``"T1rho"``), used in messages and the description.

    Returns
    -------
    VoxelResult
        Values ``r``, ``t``, ``p``, ``df`` (= n - 2 - k), ``n`` and the corrected
        ``p_bonferroni``, ``p_holm``, ``p_fdr_bh``.

    Raises
    ------
    DiscVBRError
        Unknown or text variables, a constant variable or covariate, collinear
        covariates, fewer than k + 3 subjects with every variable, maps that do not
        match the table.

    Notes
    -----
    The partial correlation is the correlation of the residuals of the voxel and
    the variable after regression on [1, covariates]; ``t = r sqrt(df / (1 - r^2))``.
    It equals ``pingouin.partial_corr`` (and ``pingouin.corr`` without covariates).
    A voxel is untested (NaN) when it has fewer than k + 3 subjects, is constant on
    them, or the covariates are constant or collinear on them.

    References
    ----------
    Iriondo C, Pedoia V, Majumdar S, et al. Magn Reson Med 2020;84:1376-1390.
    """
    if method not in METHODS:
        raise DiscVBRError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    covariates = list(covariates)
    if variable in covariates:
        raise DiscVBRError(f"voxel_by_variable: {variable!r} is both the tested variable and a covariate")
    if len(set(covariates)) != len(covariates):
        raise DiscVBRError(f"voxel_by_variable: covariate listed twice in {covariates}")
    values, region, ids, rows = _load(maps, variables, subjects, mask, map_name)
    coded = numeric_variables(rows, [variable, *covariates], analysis="voxel_by_variable")
    keep, excluded = _complete_subjects(coded, ids)
    k = len(covariates)
    _require_subjects(int(keep.sum()), k + 3, f"voxel_by_variable ({variable}"
                      + (f" adjusting for {', '.join(covariates)})" if k else ")"), k)
    x = coded[variable].to_numpy()[keep]
    z = coded[covariates].to_numpy()[keep] if k else np.empty((int(keep.sum()), 0))
    _check_design(x, z, variable, covariates, "voxel_by_variable")
    model = CorrelationModel(values if keep.all() else values[keep], x, z, method=method)
    kind = ("partial " if k else "") + ("Spearman" if method == "spearman" else "Pearson")
    description = f"{kind} correlation of {map_name} with {variable}" + (
        f" adjusting for {', '.join(covariates)}" if k else ""
    )
    parameters = {"variable": variable, "covariates": covariates, "method": method, "maps": map_name}
    return _result("voxel_by_variable", description, model, region, ids, keep, excluded, parameters)


def voxel_by_group(
    maps: np.ndarray,
    variables: pd.DataFrame,
    *,
    variable: str,
    cut: float | None = None,
    equal_var: bool = True,
    subjects: Sequence[str] | None = None,
    mask: np.ndarray | None = None,
    map_name: str = "maps",
) -> VoxelResult:
    """Unpaired t-test between two groups of subjects at each voxel.

    Parameters
    ----------
    maps : array_like, shape (n_subjects, *spatial) or (n_subjects, n_voxels)
        Per-voxel values, NaN where missing.
    variables : DataFrame
        Subject variables indexed by subject id.
    variable : str
        Column defining the groups: with ``cut``, group a is ``variable <= cut`` and
        group b is ``variable > cut`` (e.g. ODI 0-40 against ODI > 40); without it the
        column must have exactly two values (e.g. ``group``: control / patient), group
        a being the first level (``control`` when present, else the lower code).
    cut : float, optional
        Threshold splitting a numeric variable.
    equal_var : bool
        True for Student's t (pooled variance), False for Welch's t.
    subjects, mask, map_name
        As in :func:`voxel_by_variable`.

    Returns
    -------
    VoxelResult
        Values ``mean_a``, ``mean_b``, ``n_a``, ``n_b``, ``difference`` (mean b - mean
        a), ``t``, ``p``, ``df``, ``n`` and the corrected p-values. ``parameters``
        names the groups (``group_a``, ``group_b``) and the test.

    Raises
    ------
    DiscVBRError
        A group with fewer than two subjects, a variable with other than two values
        and no cut, unknown variables, maps that do not match the table.

    Notes
    -----
    Equals ``scipy.stats.ttest_ind(b, a, equal_var=equal_var)`` on each voxel's
    subjects. Untested (NaN) where a group has no subject at the voxel (Student),
    fewer than two (Welch), or the variance is zero.
    """
    values, region, ids, rows = _load(maps, variables, subjects, mask, map_name)
    coded = numeric_variables(rows, [variable], analysis="voxel_by_group")
    keep, excluded = _complete_subjects(coded, ids)
    codes = coded[variable].to_numpy()[keep]
    original = rows[variable].to_numpy()[keep]
    if cut is not None:
        if not pd.api.types.is_numeric_dtype(rows[variable]):
            raise DiscVBRError(f"voxel_by_group: a cut needs a numeric variable; {variable!r} is text")
        in_b = codes > cut
        names = (f"{variable}<={cut:g}", f"{variable}>{cut:g}")
    else:
        levels = np.unique(codes)
        if levels.size != 2:
            raise DiscVBRError(
                f"voxel_by_group: {variable!r} has {levels.size} distinct value(s) among the subjects that have it; "
                "give a cut (e.g. cut=40 for ODI <= 40 against > 40) or a two-level variable"
            )
        in_b = codes == levels[1]
        names = tuple(_level_name(original[codes == level][0]) for level in levels)
    included = [s for s, k in zip(ids, keep) if k]
    for label, members in ((names[0], ~in_b), (names[1], in_b)):
        if members.sum() < 2:
            who = ", ".join(s for s, m in zip(included, members) if m) or "none"
            raise DiscVBRError(
                f"voxel_by_group: group {label} has {int(members.sum())} subject(s) ({who}); a t-test needs at least "
                "2 per group"
            )
    model = TwoGroupModel(values if keep.all() else values[keep], in_b, equal_var=equal_var)
    test = "Student" if equal_var else "Welch"
    description = f"{test} t-test of {map_name}, {names[1]} against {names[0]}"
    parameters = {
        "variable": variable,
        "cut": cut,
        "equal_var": equal_var,
        "test": test,
        "group_a": names[0],
        "group_b": names[1],
        "maps": map_name,
    }
    return _result("voxel_by_group", description, model, region, ids, keep, excluded, parameters)


def voxel_by_voxel(
    maps_x: np.ndarray,
    maps_y: np.ndarray,
    variables: pd.DataFrame | None = None,
    *,
    covariates: Sequence[str] = (),
    method: str = "pearson",
    subjects: Sequence[str] | None = None,
    mask: np.ndarray | None = None,
    map_names: tuple[str, str] = ("x", "y"),
) -> VoxelResult:
    """Correlation across subjects between two maps at each voxel (e.g. T1rho and T2).

    Parameters
    ----------
    maps_x, maps_y : array_like, same shape (n_subjects, *spatial)
        The two maps of each subject on the same grid, NaN where missing; a voxel
        uses the subjects that have both.
    variables : DataFrame, optional
        Subject variables indexed by subject id; needed only for covariates.
    covariates : sequence of str
        Columns adjusted for (partial correlation).
    method : {"pearson", "spearman"}
    subjects, mask
        As in :func:`voxel_by_variable`.
    map_names : (str, str)
        What the two stacks are, for messages and the description.

    Returns
    -------
    VoxelResult
        Values ``r``, ``t``, ``p``, ``df``, ``n`` and the corrected p-values.
        Permutations (Freedman-Lane) permute the residuals of ``maps_y``.
    """
    if method not in METHODS:
        raise DiscVBRError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    covariates = list(covariates)
    if covariates and variables is None:
        raise DiscVBRError("voxel_by_voxel: covariates need a variables table")
    _same_shape(maps_x, maps_y, map_names)
    ids, rows = align_subjects(np.shape(maps_x)[0], subjects, variables, what=map_names[0])
    values_x, region_x = prepare_maps(maps_x, mask=mask, what=map_names[0], subjects=ids)
    values_y, region_y = prepare_maps(maps_y, mask=mask, what=map_names[1], subjects=ids)
    region, (values_x, values_y) = _common_region(region_x, values_x, region_y, values_y)
    if covariates:
        coded = numeric_variables(rows, covariates, analysis="voxel_by_voxel")
        keep, excluded = _complete_subjects(coded, ids)
        z = coded.to_numpy()[keep]
    else:
        keep, excluded = np.ones(len(ids), bool), {}
        z = np.empty((len(ids), 0))
    k = len(covariates)
    _require_subjects(int(keep.sum()), k + 3, "voxel_by_voxel", k)
    if k:
        _check_design(None, z, None, covariates, "voxel_by_voxel")
    model = CorrelationModel(values_y[keep], values_x[keep], z, method=method)
    kind = ("partial " if k else "") + ("Spearman" if method == "spearman" else "Pearson")
    description = f"{kind} correlation of {map_names[1]} with {map_names[0]} across subjects" + (
        f" adjusting for {', '.join(covariates)}" if k else ""
    )
    parameters = {"covariates": covariates, "method": method, "maps_x": map_names[0], "maps_y": map_names[1]}
    return _result("voxel_by_voxel", description, model, region, ids, keep, excluded, parameters)


def voxel_by_time(
    baseline: np.ndarray,
    followup: np.ndarray,
    *,
    subjects: Sequence[str] | None = None,
    mask: np.ndarray | None = None,
    map_name: str = "maps",
) -> VoxelResult:
    """Paired t-test of follow-up against baseline maps at each voxel.

    Parameters
    ----------
    baseline, followup : array_like, same shape (n_subjects, *spatial)
        The maps of each subject at the two visits, rows in the same subject order,
        NaN where missing; a voxel uses the subjects that have both visits there.
    subjects : sequence of str, optional
        Subject id of each row (for reports and joint permutations); default
        ``"1"`` ... ``"n"``.
    mask, map_name
        As in :func:`voxel_by_variable`.

    Returns
    -------
    VoxelResult
        Values ``mean_baseline``, ``mean_followup``, ``difference`` (mean of
        follow-up - baseline), ``t``, ``p``, ``df`` (= n - 1), ``n`` and the corrected
        p-values; equals ``scipy.stats.ttest_rel(followup, baseline)`` per voxel.
    """
    _same_shape(baseline, followup, ("baseline", "follow-up"))
    ids, _ = align_subjects(np.shape(baseline)[0], subjects, None, what="baseline maps")
    values_b, region_b = prepare_maps(baseline, mask=mask, what=f"baseline {map_name}", subjects=ids)
    values_f, region_f = prepare_maps(followup, mask=mask, what=f"follow-up {map_name}", subjects=ids)
    region, (values_b, values_f) = _common_region(region_b, values_b, region_f, values_f)
    pairs = (np.isfinite(values_b) & np.isfinite(values_f)).any(axis=1)
    keep = pairs
    excluded = {s: "no voxel with both visits" for s, k in zip(ids, keep) if not k}
    _require_subjects(int(keep.sum()), 2, "voxel_by_time", 0, what="subjects with both visits")
    model = PairedModel(values_b[keep], values_f[keep])
    description = f"paired t-test of {map_name}, follow-up against baseline"
    return _result("voxel_by_time", description, model, region, ids, keep, excluded, {"maps": map_name})


# --------------------------------------------------------------------------- helpers


def _load(maps, variables, subjects, mask, map_name):
    if variables is None:
        raise DiscVBRError("a variables table (pandas DataFrame indexed by subject id) is required")
    ids, rows = align_subjects(np.shape(maps)[0], subjects, variables, what=map_name)
    values, region = prepare_maps(maps, mask=mask, what=map_name, subjects=ids)
    return values, region, ids, rows


def _complete_subjects(coded: pd.DataFrame, ids: tuple[str, ...]) -> tuple[np.ndarray, dict[str, str]]:
    missing = coded.isna().to_numpy()
    keep = ~missing.any(axis=1)
    excluded = {
        sid: "missing " + ", ".join(c for c, m in zip(coded.columns, row) if m)
        for sid, row, k in zip(ids, missing, keep)
        if not k
    }
    return keep, excluded


def _require_subjects(n: int, needed: int, analysis: str, k: int, *, what: str = "subjects with every variable") -> None:
    if n < needed:
        why = f"covariates ({k}) + 3" if k else str(needed)
        raise DiscVBRError(f"{analysis}: {n} {what}; the test needs at least {needed} = {why}")


def _check_design(x, z, variable, covariates, analysis) -> None:
    if x is not None and np.ptp(x) == 0:
        raise DiscVBRError(f"{analysis}: variable {variable!r} has the same value ({x[0]:g}) in every subject")
    for j, name in enumerate(covariates):
        if np.ptp(z[:, j]) == 0:
            raise DiscVBRError(f"{analysis}: covariate {name!r} has the same value ({z[0, j]:g}) in every subject")
    columns = [np.ones(z.shape[0])] + ([x] if x is not None else []) + [z[:, j] for j in range(z.shape[1])]
    design = np.column_stack(columns)
    design = (design - np.r_[0.0, design[:, 1:].mean(axis=0)]) / np.r_[1.0, design[:, 1:].std(axis=0)]
    if np.linalg.matrix_rank(design, tol=1e-8 * np.sqrt(design.shape[0])) < design.shape[1]:
        names = ([variable] if variable is not None else []) + list(covariates)
        raise DiscVBRError(f"{analysis}: {', '.join(names)} are collinear (one is a linear combination of the others)")


def _same_shape(a, b, names) -> None:
    if np.shape(a) != np.shape(b):
        raise DiscVBRError(f"{names[0]} maps of shape {np.shape(a)} and {names[1]} maps of shape {np.shape(b)} differ")


def _common_region(region_a: Region, values_a, region_b: Region, values_b):
    common, ia, ib = np.intersect1d(region_a.indices, region_b.indices, assume_unique=True, return_indices=True)
    if common.size == 0:
        raise DiscVBRError("the two stacks of maps have no voxel with a finite value in both")
    return Region(region_a.shape, common, region_a.spatial), (values_a[:, ia], values_b[:, ib])


def _level_name(value) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _result(analysis, description, model, region, ids, keep, excluded, parameters) -> VoxelResult:
    values = dict(model.observed)
    adjusted, n_tested = adjust_all(values["p"], methods=CORRECTIONS)
    n_tests = {}
    for method in CORRECTIONS:
        values[f"p_{method}"], n_tests[method] = adjusted[method], n_tested
    return VoxelResult(
        analysis=analysis,
        description=description,
        values=values,
        region=region,
        subjects=tuple(s for s, k in zip(ids, keep) if k),
        all_subjects=tuple(ids),
        excluded=excluded,
        parameters=parameters,
        n_tests=n_tests,
        model=model,
    )
