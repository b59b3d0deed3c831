"""DiscRelaxometry: echo series + disc segmentation -> per-disc registration, QC, T1rho/T2 maps.

Inputs come from the scene: each series (T1rho, T2 or both) as one volume per echo, a
sequence node or a multi-volume, with its times; the disc segmentation (DiscSegmentation's
output or any segmentation with segments named by level); an atlas. The logic

1. fits the mono-exponential maps (T, S0, r2, T_sd) on the series' own grid, inside the discs;
2. registers every disc to its atlas disc (:func:`discvbr.registration.register_disc`) with
   the package's elastix parameter files, through SlicerElastix when it is installed and the
   data are a stack, else with itk-elastix; one disc that fails does not stop the others;
3. warps every echo into atlas space and fits there (the maps the statistics use);
4. builds the registration QC: the registered subject discs against the atlas disc outlines,
   a checkerboard of both, the Jacobian determinant, a QC table, one grid transform per disc;

and adds all outputs to the scene at once (nothing is added when something fails). A click
on a voxel gives its decay curve with the fit (:meth:`DiscRelaxometryLogic.decay_curve`).
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from discvbr.errors import DiscVBRError
from discvbr.extension import parameters as P
from discvbr.io import EchoSeries, Image
from discvbr.levels import DISC_LEVELS

__all__ = [
    "MODULE",
    "DEFAULTS",
    "KINDS",
    "Cancelled",
    "DecayCurve",
    "RelaxometryOutput",
    "DiscRelaxometryLogic",
    "checkerboard",
    "registered_discs",
]

MODULE = "DiscRelaxometry"
#: Series kinds and how they are named in node names and titles.
KINDS = {"t1rho": "T1rho", "t2": "T2"}
#: Node references of the parameter node: per kind ``<Kind>Echo`` (several, in echo order) or
#: ``<Kind>Series`` (one sequence or multi-volume), and the segmentation.
SEGMENTATION = "Segmentation"
#: Settings of the parameter node.
ATLAS, ENGINE, PARAMETER_FOLDER = "Atlas", "Engine", "ParameterFolder"
GRID_SPACING, ITERATIONS, RIGIDITY = "GridSpacing", "Iterations", "RigidityWeight"
FIT_METHOD, T1RHO_MAX, T2_MAX, MIN_SNR = "FitMethod", "T1rhoMaxMs", "T2MaxMs", "MinSNR"
ENGINES = ("auto", "slicer-elastix", "itk-elastix")
FIT_METHODS = ("lm", "loglinear", "rician")
DEFAULTS = {
    "T1rhoTimes": "",
    "T2Times": "",
    ATLAS: "phantom-healthy",
    ENGINE: "auto",
    PARAMETER_FOLDER: "",
    GRID_SPACING: "8",
    ITERATIONS: "200",
    RIGIDITY: "4",
    FIT_METHOD: "lm",
    T1RHO_MAX: "250",
    T2_MAX: "150",
    MIN_SNR: "2",
}
#: Output reference prefix: ``Output.<key>`` points at each output node.
OUTPUT_PREFIX = "Output."
#: The shipped elastix parameter files (``discvbr.registration.params.PARAMETER_DIR``, found here
#: without importing the registration package, so the preset view works before dependencies are installed).
SHIPPED_PARAMETERS = Path(__file__).resolve().parents[1] / "data" / "elastix"


class Cancelled(DiscVBRError):
    """The user stopped the run; nothing was added to the scene."""


def echo_role(kind: str) -> str:
    """Parameter-node reference role of one echo volume of a series kind (``"T1rhoEcho"``)."""
    return f"{KINDS[kind]}Echo"


def series_role(kind: str) -> str:
    """Reference role of a series given as one sequence or multi-volume node (``"T1rhoSeries"``)."""
    return f"{KINDS[kind]}Series"


def times_parameter(kind: str) -> str:
    return f"{KINDS[kind]}Times"


def checkerboard(a: np.ndarray, b: np.ndarray, *, squares: int = 8) -> np.ndarray:
    """Interleave two images of one grid in a checkerboard of ``squares`` squares per in-plane axis.

    Square (p, q) of each sagittal slice (axes 1 and 2) shows ``a`` when ``p + q`` is even,
    ``b`` otherwise: edges that continue across squares show a good registration.
    """
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    if a.shape != b.shape:
        raise DiscVBRError(f"checkerboard of images of different shapes {a.shape} and {b.shape}")
    j = (np.arange(a.shape[1]) * squares) // max(a.shape[1], 1)
    k = (np.arange(a.shape[2]) * squares) // max(a.shape[2], 1)
    take_a = ((j[:, None] + k[None, :]) % 2 == 0)[None, :, :]
    return np.where(take_a, a, b)


def registered_discs(registrations: dict, labels: Image, atlas_labels: Image) -> Image:
    """The subject's discs in atlas space, each on its whole registration crop, for QC.

    Unlike the maps (kept inside the atlas discs), every voxel of a disc's crop where the
    warped subject disc lies is labelled, so the QC view shows a subject disc that spills
    over the atlas outline.
    """
    from discvbr.registration import warp_mask

    out = np.zeros(atlas_labels.shape[:3], np.uint8)
    inverse = np.linalg.inv(atlas_labels.affine)
    for label, reg in registrations.items():
        warped = np.asarray(warp_mask(reg, labels).array) == label
        start = np.rint((inverse @ np.append(reg.grid.origin, 1.0))[:3]).astype(int)
        box = tuple(slice(s, s + n) for s, n in zip(start, warped.shape))
        out[box][warped] = label
    return Image(out, atlas_labels.affine)


@dataclass(frozen=True)
class DecayCurve:
    """The signal of one voxel across echoes and its mono-exponential fit.

    Attributes
    ----------
    kind : str
    ijk : tuple of int
        Voxel index in the series grid.
    times : ndarray
        Echo or spin-lock times, ms.
    signal : ndarray
        Measured signal per echo.
    T, S0, r2 : float
        The fit at that voxel (NaN where the fit is not valid).
    """

    kind: str
    ijk: tuple[int, int, int]
    times: np.ndarray
    signal: np.ndarray
    T: float
    S0: float
    r2: float

    def model(self, times: np.ndarray) -> np.ndarray:
        """``S0 exp(-t / T)`` at ``times`` (NaN where the fit is not valid)."""
        return self.S0 * np.exp(-np.asarray(times, dtype=float) / self.T)

    def title(self) -> str:
        fit = "no valid fit" if not np.isfinite(self.T) else f"T = {self.T:.1f} ms, r2 = {self.r2:.3f}"
        return f"{KINDS.get(self.kind, self.kind)} at voxel {self.ijk}: {fit}"


@dataclass
class RelaxometryOutput:
    """What a run added to the scene, and what it computed.

    Attributes
    ----------
    nodes : dict of str to node
        Output nodes by key (``"t1rho T"``, ``"t1rho T atlas"``, ``"atlas discs"``,
        ``"registered discs"``, ``"checkerboard"``, ``"det jacobian"``, ``"qc table"``,
        ``"transform L4L5"``...).
    qc : pandas.DataFrame
        One row per disc: Dice, Jacobian determinant summary, centroid offset, flags, engine.
    failures : dict of str to str
        Discs that could not be registered, with the reason.
    engine : str
        What registered the discs.
    folder : int
        Subject-hierarchy folder holding the outputs.
    """

    nodes: dict
    qc: object
    failures: dict[str, str]
    engine: str
    folder: int
    registrations: dict = field(default_factory=dict)


class DiscRelaxometryLogic(P.ModuleLogic):
    """Registration and relaxometry on scene nodes (the DiscRelaxometry module's logic).

    Parameters
    ----------
    scene : vtkMRMLScene, optional
        Default: ``slicer.mrmlScene``.
    elastix_logic : object, optional
        SlicerElastix's ``ElastixLogic`` (default: found when the extension is installed).
    """

    module = MODULE
    defaults = DEFAULTS

    def __init__(self, scene=None, *, elastix_logic=None):
        super().__init__(scene)
        self._elastix_logic = elastix_logic

    def parameter_node(self):
        """The module's parameter node; the latest DiscVBR segmentation is preselected."""
        node = super().parameter_node()
        if node.GetNodeReference(SEGMENTATION) is None:
            from discvbr.mrml import ROLE_ATTRIBUTE, iter_nodes

            latest = [n for n in iter_nodes(self.scene, "vtkMRMLSegmentationNode") if n.GetAttribute(ROLE_ATTRIBUTE) == "disc segmentation"]
            if latest:
                node.SetNodeReferenceID(SEGMENTATION, latest[-1].GetID())
        return node

    # ------------------------------------------------------------------ inputs

    def set_echo_volumes(self, node, kind: str, volumes, times: str) -> None:
        """Select a series as one volume per echo (in echo order) with its times (``"0;10;40;80"``)."""
        was = node.StartModify()
        node.RemoveNodeReferenceIDs(echo_role(kind))
        node.SetNodeReferenceID(series_role(kind), None)
        for volume in volumes:
            node.AddNodeReferenceID(echo_role(kind), volume.GetID())
        node.SetParameter(times_parameter(kind), times)
        node.EndModify(was)

    def set_series_node(self, node, kind: str, series_node, times: str = "") -> None:
        """Select a series as a sequence or multi-volume node (times from it unless given)."""
        was = node.StartModify()
        node.RemoveNodeReferenceIDs(echo_role(kind))
        node.SetNodeReferenceID(series_role(kind), series_node.GetID() if series_node is not None else None)
        node.SetParameter(times_parameter(kind), times)
        node.EndModify(was)

    def series_inputs(self, node) -> dict[str, EchoSeries]:
        """The selected series, checked and in DiscVBR's sagittal layout.

        Raises
        ------
        DiscVBRError
            No series; echo volumes on different grids; times that do not match the echoes;
            both volumes and a series node for one kind; T1rho and T2 on different grids.
        """
        from discvbr.io import require_sagittal
        from discvbr.mrml import series_from_node, series_from_volumes

        found: dict[str, EchoSeries] = {}
        for kind, name in KINDS.items():
            role = echo_role(kind)
            echoes = [node.GetNthNodeReference(role, i) for i in range(node.GetNumberOfNodeReferences(role))]
            series_node = node.GetNodeReference(series_role(kind))
            times = P.text(node, times_parameter(kind)) or None
            if echoes and series_node is not None:
                raise DiscVBRError(f"{name}: select either echo volumes or one series node, not both")
            if echoes:
                series = series_from_volumes(echoes, times, kind=kind)
            elif series_node is not None:
                series = series_from_node(series_node, times=times, kind=kind)
            else:
                continue
            canonical = require_sagittal(Image(series.data, series.affine), what=f"{name} series")
            found[kind] = EchoSeries(np.asarray(canonical.array, np.float32), series.times, canonical.affine, kind)
        if not found:
            raise DiscVBRError("select a T1rho or a T2 series (echo volumes with their times, or a sequence)")
        grids = list(found.values())
        if len(grids) == 2 and not grids[0].grid.same_grid(grids[1].grid):
            raise DiscVBRError(
                "the T1rho and T2 series are on different grids; one disc segmentation (and one registration) "
                "serves both only when they share a grid: resample one onto the other"
            )
        return found

    def labels_input(self, node, grid: Image) -> Image:
        """Disc labels of the selected segmentation on the series grid (all five discs required)."""
        from discvbr.mrml import labels_from_segmentation

        segmentation = node.GetNodeReference(SEGMENTATION)
        if segmentation is None:
            raise DiscVBRError("select the disc segmentation (DiscSegmentation's output, or segments named L5S1 ... L1L2)")
        return labels_from_segmentation(segmentation, reference=Image(np.empty(grid.shape[:3], np.uint8), grid.affine))

    def atlas(self, node, *, ndim: int):
        """The chosen atlas (a shipped name or a folder) in the data's mode."""
        from discvbr.registration import load_atlas

        name = P.text(node, ATLAS) or DEFAULTS[ATLAS]
        return load_atlas(name, mode=f"{ndim}d")

    def _registration_values(self, node) -> dict:
        folder = P.text(node, PARAMETER_FOLDER) or None
        if folder is not None and not Path(folder).is_dir():
            raise DiscVBRError(f"parameter preset folder not found: {folder}")
        return {
            "final_grid_spacing": P.number(node, GRID_SPACING, label="B-spline grid spacing (voxels)", minimum=0.1),
            "iterations": P.integer(node, ITERATIONS, label="iterations", minimum=1),
            "rigidity_weight": P.number(node, RIGIDITY, label="rigidity weight", minimum=0.0),
            "parameter_dir": folder,
        }

    def registration_params(self, node):
        """:class:`~discvbr.registration.RegistrationParams` of the settings."""
        from discvbr.registration import RegistrationParams

        return RegistrationParams(**self._registration_values(node))

    @staticmethod
    def atlas_choices() -> list[str]:
        """Names of the shipped atlases without their ``-2d``/``-3d`` suffix (the data's mode completes them)."""
        folder = Path(__file__).resolve().parents[1] / "data" / "atlas"
        names = set()
        for meta in folder.glob("*/atlas.json"):
            name = meta.parent.name
            names.add(name[:-3] if name.endswith(("-2d", "-3d")) else name)
        return sorted(names)

    def registration_runner(self, node, *, ndim: int):
        """The elastix runner of the ``Engine`` setting and its description.

        ``auto`` uses SlicerElastix for stacks when the extension is installed, itk-elastix
        otherwise (SlicerElastix registers 3D volumes, so single slices always use itk-elastix).
        """
        from discvbr.extension.elastix import SlicerElastixRunner, slicer_elastix_logic

        engine = P.choice(node, ENGINE, ENGINES, label="registration engine")
        if engine == "itk-elastix":
            return None, "itk-elastix"
        logic = self._elastix_logic if self._elastix_logic is not None else slicer_elastix_logic()
        if engine == "slicer-elastix":
            if logic is None:
                raise DiscVBRError("the SlicerElastix extension is not installed: install it, or choose the itk-elastix engine")
            if ndim == 2:
                raise DiscVBRError("SlicerElastix registers 3D volumes; single-slice (2D) data need the itk-elastix engine (auto chooses it)")
        if logic is not None and ndim == 3:
            self._elastix_logic = logic
            return SlicerElastixRunner(self.scene, logic), "SlicerElastix"
        return None, "itk-elastix"

    def disabled_reason(self, node) -> str | None:
        """Why Apply cannot run now, or None (cheap checks; the run checks everything else)."""
        has_series = any(
            node.GetNumberOfNodeReferences(echo_role(kind)) or node.GetNodeReference(series_role(kind)) for kind in KINDS
        )
        if not has_series:
            return "Select the echo volumes (or a sequence) of a T1rho or T2 series"
        for kind, name in KINDS.items():
            count = node.GetNumberOfNodeReferences(echo_role(kind))
            if count and node.GetNodeReference(series_role(kind)) is not None:
                return f"{name}: select either echo volumes or one series node, not both"
            if count == 1:
                return f"{name}: select at least two echo volumes"
            if count and not P.text(node, times_parameter(kind)):
                return f"{name}: type the {'spin-lock' if kind == 't1rho' else 'echo'} times in ms, one per echo (e.g. 0;10;40;80)"
        if node.GetNodeReference(SEGMENTATION) is None:
            return "Select the disc segmentation"
        try:
            self._registration_values(node)
            P.choice(node, ENGINE, ENGINES, label="registration engine")
            P.choice(node, FIT_METHOD, FIT_METHODS, label="fit method")
            self._fit_limits(node)
        except DiscVBRError as exc:
            return str(exc)
        return None

    def _fit_limits(self, node) -> dict[str, float]:
        return {
            "t1rho": P.number(node, T1RHO_MAX, label="largest T1rho (ms)", minimum=1.0),
            "t2": P.number(node, T2_MAX, label="largest T2 (ms)", minimum=1.0),
        }

    # ------------------------------------------------------------------ presets

    @staticmethod
    def preset_file_names(ndim: int) -> tuple[str, str]:
        """Names of the affine and B-spline parameter files of a 2D or 3D preset."""
        if ndim not in (2, 3):
            raise DiscVBRError(f"registration dimension must be 2 or 3, got {ndim}")
        return (f"affine-{ndim}d.txt", f"bspline-{ndim}d.txt")

    def parameter_texts(self, node, *, ndim: int) -> dict[str, str]:
        """The elastix parameter files the run will start from (file name -> text), for showing and editing."""
        folder = Path(P.text(node, PARAMETER_FOLDER) or SHIPPED_PARAMETERS)
        texts = {}
        for name in self.preset_file_names(ndim):
            path = folder / name
            if not path.is_file():
                raise DiscVBRError(f"parameter preset {folder} has no {name}")
            texts[name] = path.read_text()
        return texts

    def save_parameter_preset(self, folder: str | os.PathLike, texts: dict[str, str], *, ndim: int) -> Path:
        """Save edited parameter files as a preset folder, checked before anything is replaced.

        Parameters
        ----------
        folder : path-like
            The preset folder (created); select it as the ``ParameterFolder`` setting.
        texts : dict of str to str
            ``affine-<n>d.txt`` and ``bspline-<n>d.txt`` contents.

        Raises
        ------
        DiscVBRError
            A file name that is not one of the two, a line that is not an elastix entry, or
            a stage whose Transform is not the expected one; the folder is left unchanged.
        """
        from discvbr.registration.params import load_parameter_files

        names = self.preset_file_names(ndim)
        if set(texts) != set(names):
            raise DiscVBRError(f"a {ndim}D preset needs exactly {', '.join(names)}, got {', '.join(sorted(texts))}")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        staging = folder / f".tmp-{uuid.uuid4().hex[:12]}"
        staging.mkdir()
        try:
            for name in names:
                (staging / name).write_text(texts[name])
            load_parameter_files(ndim, parameter_dir=staging)
            for name in names:
                os.replace(staging / name, folder / name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return folder

    # ------------------------------------------------------------------ run

    def run(
        self,
        node,
        *,
        progress: Callable[[float, str], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
        runner=None,
    ) -> RelaxometryOutput:
        """Fit, register, warp, fit in atlas space, build QC; add every output to the scene.

        Parameters
        ----------
        node : vtkMRMLScriptedModuleNode
            The parameter node.
        progress : callable, optional
            ``progress(fraction, text)`` between steps (the GUI processes events there).
        cancelled : callable, optional
            Polled between steps; when it returns True the run stops with :class:`Cancelled`.
        runner : ElastixRunner, optional
            Overrides the engine setting (tests).

        Raises
        ------
        DiscVBRError
            Bad inputs (named), every disc failing to register, or a cancel; the scene is
            left unchanged.
        """
        from discvbr.fitting import fit_monoexp
        from discvbr.registration import apply_registration, paste_discs, register_disc

        notify = progress or (lambda fraction, text: None)
        stop = cancelled or (lambda: False)

        def check() -> None:
            if stop():
                raise Cancelled("registration cancelled; nothing was added to the scene")

        notify(0.0, "checking inputs")
        reason = self.disabled_reason(node)
        if reason:
            raise DiscVBRError(reason)
        series = self.series_inputs(node)
        first = next(iter(series.values()))
        labels = self.labels_input(node, first.grid)
        ndim = 2 if first.grid.shape[0] == 1 else 3
        atlas = self.atlas(node, ndim=ndim)
        params = self.registration_params(node)
        if runner is None:
            runner, engine = self.registration_runner(node, ndim=ndim)
        else:
            engine = getattr(runner, "name", type(runner).__name__)
        method = P.choice(node, FIT_METHOD, FIT_METHODS, label="fit method")
        limits = self._fit_limits(node)
        min_snr = P.number(node, MIN_SNR, label="minimum SNR", minimum=0.0)
        subject = self._subject_name(node)
        label_values = np.asarray(labels.array)

        def fit(s: EchoSeries, mask: np.ndarray):
            return fit_monoexp(s.data, s.times, mask, method=method, t_max=limits[s.kind], min_snr=min_snr)

        native = {}
        for kind, s in series.items():
            check()
            notify(0.05, f"fitting {KINDS[kind]} on the series grid")
            native[kind] = fit(s, label_values > 0)

        registrations, failures = {}, {}
        for label, level in enumerate(DISC_LEVELS, start=1):
            check()
            notify(0.1 + 0.6 * (label - 1) / len(DISC_LEVELS), f"registering {level} ({engine})")
            try:
                registrations[label] = register_disc(labels, label, atlas, params=params, subject=subject, runner=runner)
            except DiscVBRError as exc:
                check()
                failures[level] = str(exc)
        check()
        if not registrations:
            first_level = next(iter(failures))
            raise DiscVBRError(f"no disc could be registered; {first_level}: {failures[first_level]}")

        notify(0.75, "warping echoes into atlas space")
        atlas_labels = np.asarray(atlas.labels.array)
        registered_labels = np.where(np.isin(atlas_labels, list(registrations)), atlas_labels, 0).astype(np.uint8)
        warped, atlas_fits = {}, {}
        for kind, s in series.items():
            check()
            warped[kind] = paste_discs({label: apply_registration(reg, s) for label, reg in registrations.items()}, atlas)
            notify(0.8, f"fitting {KINDS[kind]} in atlas space")
            atlas_fits[kind] = fit(warped[kind], registered_labels > 0)
        check()
        notify(0.9, "registration QC")
        subject_discs = registered_discs(registrations, labels, atlas.labels)
        det = paste_discs({label: Image(reg.det_jacobian.astype(np.float32), reg.grid.affine) for label, reg in registrations.items()}, atlas)
        board = checkerboard((atlas_labels > 0).astype(np.float32), (subject_discs.array > 0).astype(np.float32) * 2.0)
        qc = self._qc_table(registrations, failures, engine)
        check()
        notify(0.95, "adding the results to the scene")
        output = self._add_nodes(
            node, subject=subject, series=series, native=native, warped=warped, atlas_fits=atlas_fits, atlas=atlas,
            subject_discs=subject_discs, det=det, board=Image(board, atlas.labels.affine),
            qc=qc, registrations=registrations, ndim=ndim, failures=failures, engine=engine,
        )
        notify(1.0, "done" + (f"; {len(failures)} disc(s) failed: {', '.join(failures)}" if failures else ""))
        return output

    def _subject_name(self, node) -> str:
        for kind in KINDS:
            first = node.GetNthNodeReference(echo_role(kind), 0) or node.GetNodeReference(series_role(kind))
            if first is not None:
                return first.GetName()
        return "subject"

    @staticmethod
    def _qc_table(registrations: dict, failures: dict[str, str], engine: str):
        import pandas as pd

        rows = []
        for label, level in enumerate(DISC_LEVELS, start=1):
            if label in registrations:
                reg = registrations[label]
                row = {"disc": level, "status": "registered", **{k: v for k, v in reg.qc.to_dict().items() if k not in ("flags", "ks_distance")}}
                row["flags"] = "; ".join(reg.qc.flags)
                row["seconds"] = round(reg.seconds, 2)
            else:
                row = {"disc": level, "status": "failed", "flags": failures.get(level, "")}
            row["engine"] = engine
            rows.append(row)
        return pd.DataFrame(rows)

    def _add_nodes(
        self, node, *, subject, series, native, warped, atlas_fits, atlas, subject_discs, det, board, qc, registrations, ndim, failures, engine
    ) -> RelaxometryOutput:
        from discvbr.mrml import (
            NodeTransaction,
            colour_table_from_scale,
            place_in_folder,
            segmentation_from_labels,
            sequence_from_series,
            shared_colour_table,
            show_volume_with_colours,
            table_from_dataframe,
            transform_from_points,
            volume_from_image,
        )
        from discvbr.render.colours import colour_scale

        scene = self.scene
        nodes: dict[str, object] = {}
        with NodeTransaction(scene):
            for kind, s in series.items():
                name = KINDS[kind]
                result = native[kind]
                scale = colour_scale("T", values=result.T, quantity=name)
                colours, value_range = colour_table_from_scale(scene, scale, name=f"{subject} {name} colours")
                nodes[f"{kind} colours"] = colours
                for key, values in (("T", result.T), ("S0", result.S0), ("r2", result.r2), ("T_sd", result.T_sd)):
                    volume = volume_from_image(scene, Image(np.asarray(values, np.float32), s.affine), name=f"{subject} {name} {key}", role=f"{kind} {key}")
                    if key == "T":
                        show_volume_with_colours(volume, colours, value_range)
                    nodes[f"{kind} {key}"] = volume
                atlas_t = volume_from_image(
                    scene, Image(np.asarray(atlas_fits[kind].T, np.float32), atlas.labels.affine),
                    name=f"{subject} {name} T atlas", role=f"{kind} T atlas",
                )
                show_volume_with_colours(atlas_t, colours, value_range)
                nodes[f"{kind} T atlas"] = atlas_t
                sequence, browser = sequence_from_series(scene, warped[kind], name=f"{subject} {name} registered echoes")
                nodes[f"{kind} registered echoes"] = sequence
                if browser is not None:
                    nodes[f"{kind} registered echoes browser"] = browser
            nodes["atlas discs"] = segmentation_from_labels(scene, atlas.labels, name=f"atlas {atlas.name} discs", role="atlas discs")
            nodes["atlas discs"].GetDisplayNode().SetAllSegmentsVisibility2DFill(False)  # outlines over the registered discs
            registered = volume_from_image(scene, subject_discs, name=f"{subject} discs in atlas space", labelmap=True, role="registered discs")
            nodes["registered discs"] = registered
            nodes["checkerboard"] = volume_from_image(scene, board, name=f"{subject} checkerboard atlas/subject discs", role="checkerboard")
            jacobian_scale = colour_scale("t", vmin=-1.0, vmax=1.0)
            jacobian_colours, _ = shared_colour_table(scene, jacobian_scale, role="jacobian colours", name="DiscVBR Jacobian colours")
            det_node = volume_from_image(scene, Image(np.asarray(det.array, np.float32), det.affine), name=f"{subject} Jacobian determinant", role="det jacobian")
            show_volume_with_colours(det_node, jacobian_colours, (0.0, 2.0))  # blue: compression, white: 1, red: expansion
            nodes["det jacobian"] = det_node
            nodes["qc table"] = table_from_dataframe(scene, qc, name=f"{subject} registration QC")
            for reg in registrations.values():
                nodes[f"transform {reg.level}"] = transform_from_points(
                    scene, reg.points, reg.grid, ndim=ndim, moving_affine=reg.moving_affine, name=f"{subject} {reg.level} to atlas"
                )
            folder = place_in_folder(scene, list(nodes.values()), folder=f"{subject} DiscVBR relaxometry")
            was = node.StartModify()
            for key, output in nodes.items():
                node.SetNodeReferenceID(OUTPUT_PREFIX + key.replace(" ", "_"), output.GetID())
            node.EndModify(was)
        return RelaxometryOutput(nodes, qc, failures, engine, folder, registrations)

    # ------------------------------------------------------------------ decay curves

    def output_node(self, node, key: str):
        """An output of the last run by key (``"t1rho T"``...), or None."""
        return node.GetNodeReference(OUTPUT_PREFIX + key.replace(" ", "_"))

    def decay_curve(self, node, kind: str, ras) -> DecayCurve:
        """The signal and fit of the series voxel nearest a RAS point (the clicked point).

        Raises
        ------
        DiscVBRError
            No such series or no run yet, or the point outside the series grid.
        """
        from discvbr.mrml import image_from_volume

        if kind not in KINDS:
            raise DiscVBRError(f"unknown series kind {kind!r}; expected one of {', '.join(KINDS)}")
        series = self.series_inputs(node)
        if kind not in series:
            raise DiscVBRError(f"no {KINDS[kind]} series is selected")
        t_node, s0_node, r2_node = (self.output_node(node, f"{kind} {key}") for key in ("T", "S0", "r2"))
        if t_node is None or s0_node is None or r2_node is None:
            raise DiscVBRError(f"run the registration and fit first: there is no {KINDS[kind]} map yet")
        s = series[kind]
        index = np.linalg.solve(s.affine, np.append(np.asarray(ras, dtype=float), 1.0))[:3]
        ijk = tuple(int(v) for v in np.rint(index))
        if any(not 0 <= v < n for v, n in zip(ijk, s.data.shape[:3])):
            raise DiscVBRError(f"the point {np.round(ras, 1).tolist()} mm is outside the {KINDS[kind]} series")
        maps = [image_from_volume(n) for n in (t_node, s0_node, r2_node)]
        for image in maps:
            if not image.same_grid(s.grid):
                raise DiscVBRError(f"the {KINDS[kind]} maps are not on the series grid any more; run again")
        return DecayCurve(kind, ijk, s.times.copy(), s.data[ijk].astype(float), *(float(m.array[ijk]) for m in maps))

    def plot_decay_curve(self, curve: DecayCurve, *, chart=None):
        """A plot chart of a decay curve: the measured echoes and the fitted exponential."""
        from discvbr.mrml import plot_curves

        t = np.linspace(0.0, float(curve.times.max()) * 1.05, 100)
        curves = {"measured": (curve.times, curve.signal, "markers", (0.1, 0.1, 0.1))}
        if np.isfinite(curve.T):
            curves["fit"] = (t, curve.model(t), "line", (0.835, 0.369, 0.0))
        return plot_curves(
            self.scene, curves, name="DiscVBR decay curve", title=curve.title(),
            x_title=f"{'spin-lock' if curve.kind == 't1rho' else 'echo'} time (ms)", y_title="signal", chart=chart,
        )

    def summary(self, output: RelaxometryOutput) -> str:
        """A short text for the log: discs registered, the engine, and each failed disc with its reason."""
        lines = [f"registered {len(output.registrations)} of {len(DISC_LEVELS)} discs with {output.engine}"]
        for level, reason in output.failures.items():
            lines.append(f"  {level} failed: {reason}")
        return "\n".join(lines)
