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
from discvbr.extension.process import Job
from discvbr.io import EchoSeries, Image
from discvbr.levels import DISC_LEVELS
from discvbr.resources import DEFAULT_ATLAS, PARAMETER_DIR, atlas_base_names, parameter_file_names

__all__ = [
    "MODULE",
    "DEFAULTS",
    "KINDS",
    "Cancelled",
    "EchoRow",
    "ECHO_TIME_ATTRIBUTE",
    "check_echo_times",
    "check_signal_decays",
    "DecayCurve",
    "RelaxometryOutput",
    "RelaxometryRequest",
    "RelaxometryResult",
    "DiscRelaxometryLogic",
    "compute_relaxometry",
    "run_relaxometry_request",
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
    ATLAS: DEFAULT_ATLAS,
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
#: Colour-legend title of the Jacobian determinant maps (a ratio of volumes: no unit).
JACOBIAN_LEGEND = "det J (no unit; <1 compression, >1 expansion)"
#: Output reference prefix: ``Output.<key>`` points at each output node.
OUTPUT_PREFIX = "Output."


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


@dataclass
class RelaxometryRequest:
    """What a run needs, read from the scene: the only input of :func:`compute_relaxometry`.

    Attributes
    ----------
    series : dict of str to EchoSeries
        By kind (``"t1rho"``, ``"t2"``), in DiscVBR's sagittal layout, on one grid.
    labels : Image
        Disc labels (1 = L5S1 ... 5 = L1L2) on the series grid.
    atlas : str
        A shipped atlas name (without ``-2d``/``-3d``) or an atlas folder.
    registration : dict
        Keyword arguments of :class:`~discvbr.registration.RegistrationParams`.
    method : str
        Fit method (``lm``, ``loglinear``, ``rician``).
    limits : dict of str to float
        Largest T per kind, ms.
    min_snr : float
    subject : str
        Names the output nodes.
    """

    series: dict
    labels: Image
    atlas: str
    registration: dict
    method: str
    limits: dict
    min_snr: float
    subject: str

    @property
    def ndim(self) -> int:
        """2 for a single sagittal slice, 3 for a stack."""
        return 2 if next(iter(self.series.values())).grid.shape[0] == 1 else 3


@dataclass
class RelaxometryResult:
    """What :func:`compute_relaxometry` computed (no scene involved); :meth:`DiscRelaxometryLogic.add_results` shows it."""

    native: dict
    warped: dict
    atlas_fits: dict
    atlas: object
    subject_discs: Image
    det: Image
    board: Image
    qc: object
    registrations: dict
    failures: dict
    engine: str


def compute_relaxometry(
    request: RelaxometryRequest,
    *,
    progress: Callable[[float, str], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
    runner=None,
    engine: str = "itk-elastix",
) -> RelaxometryResult:
    """Fit on the series grid, register every disc, warp the echoes, fit in atlas space, build the QC.

    One disc that fails to register does not stop the others (its reason is in
    ``failures`` and the QC table).

    Parameters
    ----------
    request : RelaxometryRequest
    progress : callable, optional
        ``progress(fraction, text)`` before every step (one per disc while registering).
    cancelled : callable, optional
        Polled between steps; True stops the run with :class:`Cancelled`.
    runner : ElastixRunner, optional
        The registration engine (default: itk-elastix).
    engine : str
        Its name, for the QC table and the log.

    Raises
    ------
    DiscVBRError
        Every disc failing to register, or a cancel.
    """
    from discvbr.fitting import fit_monoexp
    from discvbr.registration import RegistrationParams, apply_registration, load_atlas, paste_discs, register_disc

    notify = progress or (lambda fraction, text: None)
    stop = cancelled or (lambda: False)

    def check() -> None:
        if stop():
            raise Cancelled("registration cancelled; nothing was added to the scene")

    series, labels = request.series, request.labels
    atlas = load_atlas(request.atlas, mode=f"{request.ndim}d")
    params = RegistrationParams(**request.registration)
    label_values = np.asarray(labels.array)

    def fit(s: EchoSeries, mask: np.ndarray):
        return fit_monoexp(s.data, s.times, mask, method=request.method, t_max=request.limits[s.kind], min_snr=request.min_snr)

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
            registrations[label] = register_disc(labels, label, atlas, params=params, subject=request.subject, runner=runner)
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
    qc = DiscRelaxometryLogic._qc_table(registrations, failures, engine)
    check()
    return RelaxometryResult(
        native, warped, atlas_fits, atlas, subject_discs, det, Image(board, atlas.labels.affine), qc, registrations, failures, engine
    )


def run_relaxometry_request(request_file: str | os.PathLike, *, progress: Callable[[float, str], None] | None = None) -> Path:
    """The child process's side of :meth:`DiscRelaxometryLogic.start`: compute, pickle the result beside the request.

    Returns
    -------
    Path
        ``result.pkl`` in the request's folder.
    """
    import pickle

    request_file = Path(request_file)
    request = pickle.loads(request_file.read_bytes())
    result = compute_relaxometry(request, progress=progress, engine="itk-elastix")
    path = request_file.with_name("result.pkl")
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
    os.replace(tmp, path)  # the parent never reads half a result
    return path


#: Volume attribute holding an echo's (or spin-lock) time in ms: set by the SampleData case and by
#: loaders that know it; the echo table shows it and a typed time that contradicts it is refused.
ECHO_TIME_ATTRIBUTE = "DiscVBR.EchoTime"
#: Largest relative rise of the mean signal from one echo to a later one still taken as noise.
DECAY_TOLERANCE = 0.05


@dataclass(frozen=True)
class EchoRow:
    """One row of the echo table: a volume and the time it is paired with.

    Attributes
    ----------
    volume_id : str
    name : str
    time : float or None
        The typed time at this row's position, else the volume's :data:`ECHO_TIME_ATTRIBUTE`,
        else None.
    recorded : float or None
        The volume's own :data:`ECHO_TIME_ATTRIBUTE` (None when it has none).
    """

    volume_id: str
    name: str
    time: float | None
    recorded: float | None


def recorded_echo_time(volume) -> float | None:
    """A volume's echo time from its :data:`ECHO_TIME_ATTRIBUTE` (ms), or None."""
    raw = volume.GetAttribute(ECHO_TIME_ATTRIBUTE)
    try:
        return float(raw) if raw not in (None, "") else None
    except ValueError:
        raise DiscVBRError(f"{volume.GetName()}: attribute {ECHO_TIME_ATTRIBUTE} = {raw!r} is not a time in ms") from None


def check_echo_times(rows, times: np.ndarray, *, kind: str) -> None:
    """Refuse typed times that contradict the times the volumes carry (naming the volume).

    Raises
    ------
    DiscVBRError
        A volume recorded at one time paired with another.
    """
    for row, time in zip(rows, times):
        if row.recorded is not None and abs(row.recorded - float(time)) > 1e-3 * max(1.0, abs(row.recorded)):
            raise DiscVBRError(
                f"{KINDS[kind]}: {row.name} was acquired at {row.recorded:g} ms but is paired with {float(time):g} ms; "
                "reorder the echoes (or fix the times) in the echo table"
            )


def check_signal_decays(series: EchoSeries, names, *, tolerance: float = DECAY_TOLERANCE) -> None:
    """Refuse an echo/time pairing under which the signal grows with time (a wrong echo order).

    The mean signal over the brightest tenth of the earliest echo's voxels must not rise by
    more than ``tolerance`` (relative) from an earlier time to a later one: T1rho and T2
    decays only fall, so a rise means two echoes are paired with each other's times.

    Raises
    ------
    DiscVBRError
        Naming the two echoes and their times.
    """
    data = np.asarray(series.data, dtype=float)
    order = np.argsort(series.times, kind="stable")
    first = data[..., order[0]]
    finite = np.isfinite(first)
    if not finite.any():
        return
    bright = finite & (first >= np.quantile(first[finite], 0.9))
    means = np.array([np.nanmean(data[..., e][bright]) for e in range(data.shape[-1])])
    for a, b in zip(order[:-1], order[1:]):
        if means[b] > means[a] * (1.0 + tolerance):
            raise DiscVBRError(
                f"{KINDS[series.kind]}: the echo at {series.times[b]:g} ms ({names[b]}) is brighter than the one at "
                f"{series.times[a]:g} ms ({names[a]}): the echoes are not paired with their times; reorder them in the echo table"
            )


class DiscRelaxometryLogic(P.ModuleLogic):
    """Registration and relaxometry on scene nodes (the DiscRelaxometry module's logic).

    Parameters
    ----------
    scene : vtkMRMLScene, optional
        Default: ``slicer.mrmlScene``.
    elastix_logic : object, optional
        SlicerElastix's ``ElastixLogic`` (default: found when the extension is installed).
    python : str, optional
        Python that runs the child process of :meth:`start` (default: PythonSlicer inside
        Slicer, else this interpreter).
    """

    module = MODULE
    defaults = DEFAULTS

    def __init__(self, scene=None, *, elastix_logic=None, python: str | None = None):
        super().__init__(scene)
        self._elastix_logic = elastix_logic
        self.python = python

    def parameter_node(self):
        """The module's parameter node; the latest DiscVBR segmentation is preselected."""
        node = super().parameter_node()
        if node.GetNodeReference(SEGMENTATION) is None:
            from discvbr.mrml.scene import ROLE_ATTRIBUTE, iter_nodes

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

    def select_echo_volumes(self, node, kind: str, volumes) -> None:
        """Select the checked echo volumes, keeping the order the user gave those already selected.

        Volumes selected before stay in their rows (so a corrected pairing survives checking
        another volume); newly checked volumes join at the end, unchecked ones leave.
        """
        role = echo_role(kind)
        wanted = [v.GetID() for v in volumes if v is not None]
        current = [node.GetNthNodeReferenceID(role, i) for i in range(node.GetNumberOfNodeReferences(role))]
        ordered = [i for i in current if i in wanted] + [i for i in wanted if i not in current]
        if ordered == current:
            return
        was = node.StartModify()
        node.RemoveNodeReferenceIDs(role)
        for node_id in ordered:
            node.AddNodeReferenceID(role, node_id)
        node.EndModify(was)

    def echo_rows(self, node, kind: str) -> list[EchoRow]:
        """The echo table of a series: each selected volume in order with the time it is paired with."""
        role = echo_role(kind)
        typed = [v for v in P.text(node, times_parameter(kind)).replace(",", ";").split(";") if v.strip()]
        rows = []
        for i in range(node.GetNumberOfNodeReferences(role)):
            volume = node.GetNthNodeReference(role, i)
            if volume is None:
                continue
            recorded = recorded_echo_time(volume)
            time = recorded
            if i < len(typed):
                try:
                    time = float(typed[i])
                except ValueError:
                    time = None
            rows.append(EchoRow(volume.GetID(), volume.GetName(), time, recorded))
        return rows

    def move_echo(self, node, kind: str, index: int, step: int) -> None:
        """Move one echo volume up (``step=-1``) or down (``+1``) in the table; the times stay in their rows.

        The times stay where they are because the table pairs a position's time with whatever
        volume is moved there: that is how a wrong pairing is corrected.
        """
        role = echo_role(kind)
        ids = [node.GetNthNodeReferenceID(role, i) for i in range(node.GetNumberOfNodeReferences(role))]
        target = index + step
        if not (0 <= index < len(ids) and 0 <= target < len(ids)):
            raise DiscVBRError(f"{KINDS[kind]}: cannot move echo {index + 1} of {len(ids)} by {step}")
        ids[index], ids[target] = ids[target], ids[index]
        was = node.StartModify()
        node.RemoveNodeReferenceIDs(role)
        for node_id in ids:
            node.AddNodeReferenceID(role, node_id)
        node.EndModify(was)

    def set_echo_time(self, node, kind: str, index: int, time: float) -> None:
        """Pair the echo in row ``index`` with ``time`` ms (the other rows keep theirs)."""
        rows = self.echo_rows(node, kind)
        if not 0 <= index < len(rows):
            raise DiscVBRError(f"{KINDS[kind]}: there is no echo {index + 1} (the series has {len(rows)})")
        times = ["" if row.time is None else f"{row.time:g}" for row in rows]
        times[index] = f"{float(time):g}"
        node.SetParameter(times_parameter(kind), ";".join(times))

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
        from discvbr.mrml.series import series_from_node, series_from_volumes

        found: dict[str, EchoSeries] = {}
        for kind, name in KINDS.items():
            role = echo_role(kind)
            echoes = [node.GetNthNodeReference(role, i) for i in range(node.GetNumberOfNodeReferences(role))]
            series_node = node.GetNodeReference(series_role(kind))
            times = P.text(node, times_parameter(kind)) or None
            if echoes and series_node is not None:
                raise DiscVBRError(f"{name}: select either echo volumes or one series node, not both")
            if echoes:
                rows = self.echo_rows(node, kind)
                if times is None and all(row.time is not None for row in rows):
                    times = ";".join(f"{row.time:g}" for row in rows)  # every volume carries its time
                series = series_from_volumes(echoes, times, kind=kind)
                check_echo_times(rows, series.times, kind=kind)
                check_signal_decays(series, [row.name for row in rows])
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
        from discvbr.mrml.segmentations import labels_from_segmentation

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
        return atlas_base_names()

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
            if count and not P.text(node, times_parameter(kind)) and any(r.recorded is None for r in self.echo_rows(node, kind)):
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
    def preset_file_names(ndim: int) -> tuple[str, ...]:
        """Names of the affine and B-spline parameter files of a 2D or 3D preset."""
        return parameter_file_names(ndim)

    def parameter_texts(self, node, *, ndim: int) -> dict[str, str]:
        """The elastix parameter files the run will start from (file name -> text), for showing and editing."""
        folder = Path(P.text(node, PARAMETER_FOLDER) or PARAMETER_DIR)
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

    def prepare(self, node) -> "RelaxometryRequest":
        """Everything a run needs from the scene, checked, as plain data (what the child process receives).

        Raises
        ------
        DiscVBRError
            Bad inputs or settings, named.
        """
        reason = self.disabled_reason(node)
        if reason:
            raise DiscVBRError(reason)
        series = self.series_inputs(node)
        first = next(iter(series.values()))
        return RelaxometryRequest(
            series=series,
            labels=self.labels_input(node, first.grid),
            atlas=P.text(node, ATLAS) or DEFAULT_ATLAS,
            registration=self._registration_values(node),
            method=P.choice(node, FIT_METHOD, FIT_METHODS, label="fit method"),
            limits=self._fit_limits(node),
            min_snr=P.number(node, MIN_SNR, label="minimum SNR", minimum=0.0),
            subject=self._subject_name(node),
        )

    def run(
        self,
        node,
        *,
        progress: Callable[[float, str], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
        runner=None,
    ) -> RelaxometryOutput:
        """Fit, register, warp, fit in atlas space, build QC in this process; add every output to the scene.

        Scripts, tests and the self-test call this; the module's GUI runs the same steps in a
        child process (:meth:`start`), except with the SlicerElastix engine, which needs the
        running Slicer.

        Parameters
        ----------
        node : vtkMRMLScriptedModuleNode
            The parameter node.
        progress : callable, optional
            ``progress(fraction, text)`` between steps.
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
        notify = progress or (lambda fraction, text: None)
        notify(0.0, "checking inputs")
        request = self.prepare(node)
        if runner is None:
            runner, engine = self.registration_runner(node, ndim=request.ndim)
        else:
            engine = getattr(runner, "name", type(runner).__name__)
        result = compute_relaxometry(request, progress=progress, cancelled=cancelled, runner=runner, engine=engine)
        notify(0.95, "adding the results to the scene")
        output = self.add_results(node, request, result)
        notify(1.0, "done" + (f"; {len(result.failures)} disc(s) failed: {', '.join(result.failures)}" if result.failures else ""))
        return output

    def start(self, node) -> Job:
        """Start the run in a child process (registration with itk-elastix) and return at once.

        Poll the job from a timer, cancel it (the process ends within a second; nothing is
        added), or give the finished job to :meth:`finish`.

        Raises
        ------
        DiscVBRError
            Bad inputs, or the SlicerElastix engine chosen (it needs the running Slicer:
            use :meth:`run`).
        """
        import pickle
        import tempfile

        from discvbr.extension.process import CommandProcess, job_command

        if P.choice(node, ENGINE, ENGINES, label="registration engine") == "slicer-elastix":
            raise DiscVBRError("the SlicerElastix engine runs inside Slicer, not in a separate process; choose auto or itk-elastix")
        request = self.prepare(node)
        workdir = tempfile.TemporaryDirectory(prefix="discvbr-relaxometry-")
        try:
            path = Path(workdir.name) / "request.pkl"
            path.write_bytes(pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL))
            process = CommandProcess(job_command("relaxometry", path, python=self.python))
        except BaseException:
            workdir.cleanup()
            raise
        return Job(process, workdir, f"registration and fit of {request.subject}")

    def finish(self, job: Job, node) -> RelaxometryOutput:
        """Add a finished job's results to the scene (all or nothing).

        Raises
        ------
        DiscVBRError
            Cancelled, or the run's error (bad input found late, every disc failing).
        """
        import pickle

        try:
            path = job.result_path("registration and fit")
            request = pickle.loads((job.folder / "request.pkl").read_bytes())
            result = pickle.loads(path.read_bytes())
        finally:
            job.close()
        return self.add_results(node, request, result)

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

    def add_results(self, node, request: "RelaxometryRequest", result: "RelaxometryResult") -> RelaxometryOutput:
        """Add a run's outputs to the scene in one transaction and reference them from the parameter node.

        Every run adds new nodes (in a new subject-hierarchy folder): a second run never
        overwrites the first one's maps.
        """
        subject, series, native, warped, atlas_fits = request.subject, request.series, result.native, result.warped, result.atlas_fits
        atlas, subject_discs, det, board, qc = result.atlas, result.subject_discs, result.det, result.board, result.qc
        registrations, ndim, failures, engine = result.registrations, request.ndim, result.failures, result.engine
        from discvbr.mrml.colours import colour_table_from_scale, shared_colour_table, show_volume_with_colours
        from discvbr.mrml.legends import add_colour_legend
        from discvbr.mrml.scene import NodeTransaction, place_in_folder
        from discvbr.mrml.segmentations import segmentation_from_labels
        from discvbr.mrml.series import sequence_from_series
        from discvbr.mrml.tables import table_from_dataframe
        from discvbr.mrml.transforms import transform_from_points
        from discvbr.mrml.volumes import volume_from_image
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
                        add_colour_legend(scene, volume, title=scale.title)
                    nodes[f"{kind} {key}"] = volume
                atlas_t = volume_from_image(
                    scene, Image(np.asarray(atlas_fits[kind].T, np.float32), atlas.labels.affine),
                    name=f"{subject} {name} T atlas", role=f"{kind} T atlas",
                )
                show_volume_with_colours(atlas_t, colours, value_range)
                add_colour_legend(scene, atlas_t, title=scale.title)
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
            add_colour_legend(scene, det_node, title=JACOBIAN_LEGEND)
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
        from discvbr.mrml.volumes import image_from_volume

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
        from discvbr.mrml.plots import plot_curves

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
