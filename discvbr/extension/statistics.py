"""DiscStatistics: voxel-wise statistics of a study, as volumes, tables and maps on the spine mesh.

The input is a study folder written by ``discvbr run`` (or a manifest, which the module
first runs through ``discvbr run`` in a separate process). An analysis (correlation with a
variable, group comparison, T1rho vs T2, baseline vs follow-up) runs through the same code
as the pipeline (:func:`discvbr.pipeline.cohort.run_analyses`), so its results land in the
study's usual layout (``<study>/stats/<name>/``) and equal a command-line run with the same
settings. Results come into the scene as volumes on the atlas grid (r or group means, t, p,
corrected p...), table nodes (summary, ROI, clusters, peaks, excluded subjects) and model
nodes: the chosen map on the atlas spine mesh, with a colour legend. Tables and the figure
can be exported.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from discvbr.errors import EXIT_INCOMPLETE, EXIT_OK, DiscVBRError
from discvbr.extension import parameters as P
from discvbr.extension.process import CommandProcess, Job, discvbr_command, job_command
from discvbr.io import Image
from discvbr.mrml.scene import ROLE_ATTRIBUTE

__all__ = [
    "MODULE",
    "DEFAULTS",
    "StudyInfo",
    "StatisticsOutput",
    "DiscStatisticsLogic",
    "map_kind",
    "read_study",
    "check_study_folder",
    "study_manifest",
    "study_analyses",
    "run_analysis_request",
    "legend_title",
]

MODULE = "DiscStatistics"
STUDY, MANIFEST, NAME = "StudyFolder", "Manifest", "AnalysisName"
KIND, MAP, SECOND_MAP, VARIABLE, COVARIATES = "AnalysisKind", "Map", "SecondMap", "Variable", "Covariates"
METHOD, CUT, WELCH, BASELINE, FOLLOWUP = "Method", "Cut", "Welch", "Baseline", "Followup"
PERMUTATIONS, SEED, TFCE, ALPHA, CORRECTION, SHOW = "Permutations", "Seed", "TFCE", "Alpha", "Correction", "ShowMap"
ANALYSIS_KINDS = ("variable", "group", "voxel", "time")
MAP_KINDS = ("t1rho", "t2")
METHODS = ("pearson", "spearman")
#: Corrections a summary names (``_joint``: over the five discs together), as the pipeline's setting.
CORRECTIONS = (
    "fwe_tfce_joint", "fwe_voxel_joint", "fwe_cluster_joint", "fdr_bh_joint", "holm_joint", "bonferroni_joint",
    "fwe_tfce", "fwe_voxel", "fwe_cluster", "fdr_bh", "holm", "bonferroni",
)
DEFAULTS = {
    NAME: "slicer",
    KIND: "variable",
    MAP: "t1rho",
    SECOND_MAP: "t2",
    VARIABLE: "odi",
    COVARIATES: "",
    METHOD: "pearson",
    CUT: "",
    WELCH: "false",
    BASELINE: "baseline",
    FOLLOWUP: "followup",
    PERMUTATIONS: "1000",
    SEED: "0",
    TFCE: "true",
    ALPHA: "0.05",
    CORRECTION: "fwe_tfce_joint",
    SHOW: "",
}
#: Output references of the parameter node (saved with the scene): ``Result.<map>`` per map volume,
#: ``ResultTable.<table>`` per table, ``ResultModel`` (several) for the mesh, its colours and legend.
RESULT_PREFIX, TABLE_PREFIX = "Result.", "ResultTable."
MODEL_ROLE, MODEL_COLOURS_ROLE, MODEL_LEGEND_ROLE = "ResultModel", "ResultModelColours", "ResultModelLegend"
#: Parameters naming the loaded analysis and the map drawn on the mesh.
RESULT_ANALYSIS, RESULT_SHOWN = "ResultAnalysis", "ResultShown"
_QUANTITY = {"t1rho": "T1rho", "t2": "T2"}
_TABLES = ("summary", "roi", "clusters", "peaks", "excluded")


def map_kind(name: str) -> str | None:
    """Colour-scale kind of a statistics map by its file stem (None: counts and ids, shown in grey)."""
    if name == "r":
        return "r"
    if name == "t":
        return "t"
    if name == "p" or name.startswith("p_"):
        return "p"
    if name.startswith("mean_"):
        return "T"
    if name == "difference":
        return "delta"
    return None


@dataclass
class StudyInfo:
    """What a study folder holds.

    Attributes
    ----------
    folder : Path
    atlas : Image
        Atlas disc labels the maps are registered to (``<study>/atlas``).
    atlas_name : str
    manifest : Path or None
        The cohort manifest of the run (from ``provenance.json``), when it still exists.
    sessions : list of dict
        Each session's ``session.json`` (status, failures, QC).
    analyses : dict of str to Path
        Analyses with results (``stats/<name>/provenance.json``).
    """

    folder: Path
    atlas: Image
    atlas_name: str
    manifest: Path | None
    sessions: list[dict]
    analyses: dict[str, Path]


def check_study_folder(folder: str | os.PathLike) -> Path:
    """The folder, if it is a ``discvbr run`` output folder (cheap: looks at names only).

    Raises
    ------
    DiscVBRError
        When it has no ``atlas/labels.nii.gz`` or no ``subjects/``.
    """
    folder = Path(folder).expanduser()
    if not (folder / "atlas" / "labels.nii.gz").is_file() or not (folder / "subjects").is_dir():
        raise DiscVBRError(f"{folder} is not a study folder written by discvbr run (no atlas/labels.nii.gz or subjects/)")
    return folder


def study_manifest(folder: str | os.PathLike) -> Path | None:
    """The manifest a study was run from (its ``provenance.json``), when that file still exists."""
    provenance = Path(folder) / "provenance.json"
    if not provenance.is_file():
        return None
    recorded = json.loads(provenance.read_text()).get("inputs", {}).get("manifest", {}).get("path")
    return Path(recorded) if recorded and Path(recorded).is_file() else None


def study_analyses(folder: str | os.PathLike) -> dict[str, Path]:
    """Analyses of a study with results (``stats/<name>/provenance.json``), by name."""
    return {p.parent.name: p.parent for p in sorted((Path(folder) / "stats").glob("*/provenance.json"))}


def read_study(folder: str | os.PathLike) -> StudyInfo:
    """Read a ``discvbr run`` output folder (atlas, manifest, sessions, analyses).

    Raises
    ------
    DiscVBRError
        When the folder is not a study folder (no ``atlas/`` or ``subjects/``).
    """
    from discvbr.registration import load_atlas

    folder = check_study_folder(folder)
    atlas = load_atlas(folder / "atlas")
    sessions = [json.loads(p.read_text()) for p in sorted((folder / "subjects").glob("*/*/session.json"))]
    return StudyInfo(folder, atlas.labels, atlas.name, study_manifest(folder), sessions, study_analyses(folder))


@dataclass
class StatisticsOutput:
    """Nodes of one analysis's results."""

    name: str
    folder: Path
    volumes: dict
    tables: dict
    models: object | None
    shown: str | None
    subject_folder: int
    provenance: dict = field(default_factory=dict)


class DiscStatisticsLogic(P.ModuleLogic):
    """Statistics of a study folder on scene nodes (the DiscStatistics module's logic).

    Parameters
    ----------
    scene : vtkMRMLScene, optional
        Default: ``slicer.mrmlScene``.
    python : str, optional
        Python that runs ``discvbr run`` for a manifest.
    """

    module = MODULE
    defaults = DEFAULTS

    def __init__(self, scene=None, *, python: str | None = None):
        super().__init__(scene)
        self.python = python

    # ------------------------------------------------------------------ settings

    def analysis_settings(self, node):
        """The analysis of the settings as the pipeline's :class:`~discvbr.pipeline.config.AnalysisSettings`."""
        from discvbr.pipeline.config import AnalysisSettings

        return AnalysisSettings(**self._analysis_values(node))

    def _analysis_values(self, node) -> dict:
        kind = P.choice(node, KIND, ANALYSIS_KINDS, label="analysis")
        variable = P.text(node, VARIABLE)
        if kind in ("variable", "group") and not variable:
            raise DiscVBRError(f"a {kind} analysis needs a variable (e.g. odi, or pfirrmann_{{level}})")
        cut_text = P.text(node, CUT)
        if kind == "group" and cut_text:
            cut = P.number(node, CUT, label="group cut")
        else:
            cut = None
        name = P.text(node, NAME)
        if not name or any(ch in name for ch in "/\\:") or name.startswith("."):
            raise DiscVBRError(f"analysis name {name!r} must be a plain folder name")
        return dict(
            name=name,
            kind=kind,
            map=P.choice(node, MAP, MAP_KINDS, label="map"),
            variable=variable,
            covariates=[c.strip() for c in P.text(node, COVARIATES).replace(",", ";").split(";") if c.strip()],
            method=P.choice(node, METHOD, METHODS, label="correlation"),
            cut=cut,
            welch=P.flag(node, WELCH),
            second_map=P.choice(node, SECOND_MAP, MAP_KINDS, label="second map"),
            baseline=P.text(node, BASELINE) or "baseline",
            followup=P.text(node, FOLLOWUP) or "followup",
        )

    def manifest(self, node) -> Path:
        """The manifest whose variables the analysis uses (the setting, else the study's own)."""
        given = P.text(node, MANIFEST)
        if given:
            path = Path(given).expanduser()
            if not path.is_file():
                raise DiscVBRError(f"manifest not found: {path}")
            return path
        folder = check_study_folder(P.text(node, STUDY))
        recorded = study_manifest(folder)
        if recorded is None:
            raise DiscVBRError(f"the manifest of {folder} was moved or deleted; choose it (the variables come from it)")
        return recorded

    def disabled_reason(self, node) -> str | None:
        """Why Run cannot start now, or None (cheap checks: nothing is read but names and JSON)."""
        folder = P.text(node, STUDY)
        if not folder:
            return "Choose a study folder (the output of discvbr run) or run a manifest first"
        try:
            check_study_folder(folder)
            self._analysis_values(node)
            self.manifest(node)
            self._inference(node)
        except DiscVBRError as exc:
            return str(exc)
        return None

    def _inference(self, node) -> dict:
        values = {
            "permutations": P.integer(node, PERMUTATIONS, label="permutations", minimum=0),
            "seed": P.integer(node, SEED, label="seed", minimum=0),
            "tfce": P.flag(node, TFCE),
            "alpha": P.number(node, ALPHA, label="alpha", minimum=1e-12, maximum=0.5),
            "correction": P.choice(node, CORRECTION, CORRECTIONS, label="correction"),
        }
        if values["correction"].startswith("fwe") and values["permutations"] == 0:
            raise DiscVBRError(f"the {values['correction']} correction needs permutations; set some (e.g. 1000) or choose fdr_bh, holm or bonferroni")
        if "tfce" in values["correction"] and not values["tfce"]:
            raise DiscVBRError(f"the {values['correction']} correction needs TFCE turned on")
        return values

    # ------------------------------------------------------------------ running

    def start_pipeline(self, manifest: str | os.PathLike, out: str | os.PathLike, *, config: str | os.PathLike | None = None) -> Job:
        """Run ``discvbr run`` on a manifest in a separate process (cancellable); its folder becomes the study."""
        import tempfile

        manifest = Path(manifest)
        if not manifest.is_file():
            raise DiscVBRError(f"manifest not found: {manifest}")
        args = ["run", manifest, "--out", out]
        if config:
            args += ["--config", config]
        workdir = tempfile.TemporaryDirectory(prefix="discvbr-run-")
        try:
            process = CommandProcess(discvbr_command(*args, python=self.python))
        except BaseException:
            workdir.cleanup()
            raise
        return Job(process, workdir, f"pipeline run of {manifest.name}")

    @staticmethod
    def pipeline_outcome(code: int, error: str | None, study: str | os.PathLike) -> tuple[str, str]:
        """How a finished ``discvbr run`` is reported: ``("ok" | "warning" | "error", message)``.

        Exit status 3 means the run finished with some sessions failed: the study folder is
        complete for the others and can be analysed, so it is a warning, not an error.
        """
        if code == EXIT_OK:
            return "ok", "pipeline finished"
        if code == EXIT_INCOMPLETE:
            return "warning", (
                f"pipeline finished, but some sessions failed; the others are in {study}. "
                f"See {Path(study) / 'tables' / 'failures.csv'} and {Path(study) / 'discvbr.log'}."
            )
        return "error", error or f"discvbr run stopped with status {code}"

    def analysis_request(self, node) -> dict:
        """The configured analysis as a JSON-able request (what the child process runs).

        Raises
        ------
        DiscVBRError
            When the settings do not allow a run (:meth:`disabled_reason`).
        """
        reason = self.disabled_reason(node)
        if reason:
            raise DiscVBRError(reason)
        return {
            "study": str(check_study_folder(P.text(node, STUDY))),
            "manifest": str(self.manifest(node)),
            "analysis": self._analysis_values(node),
            "inference": self._inference(node),
        }

    def start_analysis(self, node) -> Job:
        """Start the configured analysis in a child process and return at once.

        Poll the job from a timer (progress at least every second), cancel it (the process
        ends within a second; the study keeps its other results), or hand the finished job
        to :meth:`finish_analysis`.
        """
        import json
        import tempfile

        from discvbr.io import atomic_write

        request = self.analysis_request(node)
        workdir = tempfile.TemporaryDirectory(prefix="discvbr-statistics-")
        try:
            path = Path(workdir.name) / "request.json"
            with atomic_write(path) as tmp:
                Path(tmp).write_text(json.dumps(request, indent=1))
            process = CommandProcess(job_command("statistics", path, python=self.python))
        except BaseException:
            workdir.cleanup()
            raise
        return Job(process, workdir, f"analysis {request['analysis']['name']}")

    def finish_analysis(self, job: Job, node, *, show: str | None = None) -> StatisticsOutput:
        """Load a finished analysis job's results into the scene (see :meth:`load_results`).

        Raises
        ------
        DiscVBRError
            Cancelled, or the analysis's error; nothing is added to the scene then.
        """
        try:
            folder = job.result_path("statistics")
        finally:
            job.close()
        return self.load_results(node, name=folder.name, show=show)

    def run_analysis(self, node, *, progress: Callable[[float, str], None] | None = None) -> Path:
        """Run the configured analysis in this process and wait (scripts, tests, self-test).

        Returns the results folder ``<study>/stats/<name>/``.

        Raises
        ------
        DiscVBRError
            Bad settings, too few usable subjects, or the analysis failing (its reason).
        """
        return run_analysis_request(self.analysis_request(node), progress=progress)

    # ------------------------------------------------------------------ results

    def load_results(self, node, *, name: str | None = None, show: str | None = None) -> StatisticsOutput:
        """Bring an analysis's maps, tables and mesh into the scene (one folder, all or nothing).

        Parameters
        ----------
        node : vtkMRMLScriptedModuleNode
        name : str, optional
            Analysis folder name under ``stats/`` (default: the ``AnalysisName`` setting).
        show : str, optional
            Map drawn on the spine mesh (default: the ``ShowMap`` setting, else ``r`` or
            ``t``, whichever the analysis has).
        """
        from discvbr.io import read_image
        from discvbr.mrml.colours import colour_table_from_scale, show_volume_with_colours
        from discvbr.mrml.legends import add_colour_legend
        from discvbr.mrml.scene import NodeTransaction, place_in_folder
        from discvbr.mrml.tables import table_from_dataframe
        from discvbr.mrml.volumes import volume_from_image

        study = read_study(P.text(node, STUDY))
        name = name or P.text(node, NAME)
        folder = study.folder / "stats" / name
        if name not in study.analyses:
            have = ", ".join(study.analyses) or "none"
            raise DiscVBRError(f"{study.folder} has no results of analysis {name!r} (analyses with results: {have})")
        provenance = json.loads((folder / "provenance.json").read_text())
        maps = {p.name[: -len(".nii.gz")]: p for p in sorted(folder.glob("*.nii.gz"))}
        show = show or P.text(node, SHOW) or next((m for m in ("r", "t", "difference") if m in maps), None)
        if show is not None and show not in maps:
            raise DiscVBRError(f"analysis {name} has no map {show!r}; it has {', '.join(maps)}")
        quantity = self._quantity(provenance)
        alpha = self._alpha(node)
        import pandas as pd

        previous = self.current_output(node)
        volumes, tables, colour_nodes = {}, {}, []
        with NodeTransaction(self.scene):
            for stem, path in maps.items():
                image = read_image(path, what=f"{name} map {stem}")
                volume = volume_from_image(self.scene, Image(np.asarray(image.array, np.float32), image.affine), name=f"{name} {stem}", role=f"statistics {stem}")
                kind = map_kind(stem)
                if kind is not None:
                    scale = self._scale(kind, image.array, quantity, alpha)
                    colours, value_range = colour_table_from_scale(self.scene, scale, name=f"{name} {stem} colours")
                    show_volume_with_colours(volume, colours, value_range)
                    add_colour_legend(self.scene, volume, title=legend_title(stem, scale.title))
                    colour_nodes.append(colours)
                volumes[stem] = volume
            for table_name in _TABLES:
                path = folder / f"{table_name}.csv"
                if path.is_file() and path.stat().st_size > 1:
                    try:
                        frame = pd.read_csv(path)
                    except pd.errors.EmptyDataError:
                        continue
                    tables[table_name] = table_from_dataframe(self.scene, frame, name=f"{name} {table_name}")
            models = None
            if show is not None:
                models = self._mesh(study, maps[show], show, name=name, quantity=quantity, alpha=alpha)
            nodes = [*volumes.values(), *colour_nodes, *tables.values()]
            subject_folder = place_in_folder(self.scene, nodes, folder=f"DiscVBR statistics {name}")
            if models is not None:
                hierarchy = _hierarchy(self.scene)
                hierarchy.SetItemParent(models.folder, subject_folder)
            output = StatisticsOutput(name, folder, volumes, tables, models, show, subject_folder, provenance)
            self._reference_output(node, output)
        if previous is not None and previous.name == name:
            # loading an analysis again replaces its nodes (they are read from its files, never edited)
            self._remove_output(previous)
        return output

    def _remove_output(self, output: StatisticsOutput) -> None:
        """Remove a result's nodes (with their display, colour and storage nodes) and its emptied folders."""
        displayables = [*output.volumes.values(), *(output.models.models if output.models is not None else [])]
        doomed = {n.GetID(): n for n in [*displayables, *output.tables.values()]}
        if output.models is not None:
            doomed[output.models.colour_node.GetID()] = output.models.colour_node
        for displayable in displayables:
            for i in range(displayable.GetNumberOfDisplayNodes()):
                display = displayable.GetNthDisplayNode(i)
                if display is None:
                    continue
                doomed[display.GetID()] = display
                colours = display.GetColorNode()
                if colours is not None and colours.GetAttribute(ROLE_ATTRIBUTE) is not None and displayable in output.volumes.values():
                    doomed[colours.GetID()] = colours
        for node in [*displayables, *output.tables.values()]:
            storage = node.GetStorageNode() if hasattr(node, "GetStorageNode") else None
            if storage is not None:
                doomed[storage.GetID()] = storage
        hierarchy = _hierarchy(self.scene)
        folders = [output.models.folder] if output.models is not None else []
        folders.append(output.subject_folder)
        for node in doomed.values():
            self.scene.RemoveNode(node)
        scene_item = hierarchy.GetSceneItemID()
        for folder in folders:
            if folder and folder != scene_item and hierarchy.GetNumberOfItemChildren(folder) == 0:
                hierarchy.RemoveItem(folder, False, False)

    def _reference_output(self, node, output: StatisticsOutput) -> None:
        was = node.StartModify()
        for i in reversed(range(node.GetNumberOfNodeReferenceRoles())):
            role = node.GetNthNodeReferenceRole(i)
            if role.startswith((RESULT_PREFIX, TABLE_PREFIX)) or role in (MODEL_ROLE, MODEL_COLOURS_ROLE, MODEL_LEGEND_ROLE):
                node.RemoveNodeReferenceIDs(role)
        for stem, volume in output.volumes.items():
            node.SetNodeReferenceID(RESULT_PREFIX + stem, volume.GetID())
        for table_name, table in output.tables.items():
            node.SetNodeReferenceID(TABLE_PREFIX + table_name, table.GetID())
        if output.models is not None:
            for model in output.models.models:
                node.AddNodeReferenceID(MODEL_ROLE, model.GetID())
            node.SetNodeReferenceID(MODEL_COLOURS_ROLE, output.models.colour_node.GetID())
            if output.models.legend is not None:
                node.SetNodeReferenceID(MODEL_LEGEND_ROLE, output.models.legend.GetID())
        node.SetParameter(RESULT_ANALYSIS, output.name)
        node.SetParameter(RESULT_SHOWN, output.shown or "")
        node.EndModify(was)

    def current_output(self, node) -> StatisticsOutput | None:
        """The results loaded last, rebuilt from the parameter node's references (also after a scene reload).

        None when no results are loaded, or when their volumes were deleted from the scene.
        """
        from discvbr.mrml.models import SpineModels

        name = P.text(node, RESULT_ANALYSIS)
        if not name:
            return None
        volumes, tables = {}, {}
        for i in range(node.GetNumberOfNodeReferenceRoles()):
            role = node.GetNthNodeReferenceRole(i)
            target = node.GetNodeReference(role)
            if target is None:
                continue
            if role.startswith(RESULT_PREFIX):
                volumes[role[len(RESULT_PREFIX):]] = target
            elif role.startswith(TABLE_PREFIX):
                tables[role[len(TABLE_PREFIX):]] = target
        if not volumes:
            return None
        hierarchy = _hierarchy(self.scene)
        models = None
        model_nodes = [node.GetNthNodeReference(MODEL_ROLE, i) for i in range(node.GetNumberOfNodeReferences(MODEL_ROLE))]
        model_nodes = [m for m in model_nodes if m is not None]
        colours = node.GetNodeReference(MODEL_COLOURS_ROLE)
        if model_nodes and colours is not None:
            first_map = next((m for m in model_nodes if m.GetAttribute(ROLE_ATTRIBUTE) == "map"), model_nodes[0])
            value_range = tuple(first_map.GetDisplayNode().GetScalarRange())
            folder_item = hierarchy.GetItemParent(hierarchy.GetItemByDataNode(model_nodes[0]))
            models = SpineModels(model_nodes, colours, value_range, node.GetNodeReference(MODEL_LEGEND_ROLE), folder_item)
        study_folder = Path(P.text(node, STUDY)).expanduser()
        folder = study_folder / "stats" / name
        provenance_file = folder / "provenance.json"
        provenance = json.loads(provenance_file.read_text()) if provenance_file.is_file() else {}
        subject_folder = hierarchy.GetItemParent(hierarchy.GetItemByDataNode(next(iter(volumes.values()))))
        return StatisticsOutput(name, folder, volumes, tables, models, P.text(node, RESULT_SHOWN) or None, subject_folder, provenance)

    @staticmethod
    def _quantity(provenance: dict) -> str:
        names = provenance.get("parameters", {}).get("map_names") or ["T1rho"]
        return str(names[0]).split()[0]

    def _alpha(self, node) -> float:
        return P.number(node, ALPHA, label="alpha", minimum=1e-12, maximum=0.5)

    @staticmethod
    def _scale(kind: str, values: np.ndarray, quantity: str, alpha: float):
        from discvbr.render.colours import colour_scale

        finite = np.asarray(values, float)[np.isfinite(values)]
        if kind == "p":
            return colour_scale("p", values=finite, alpha=alpha, quantity=quantity)
        if kind in ("t", "delta") and finite.size == 0:
            return colour_scale(kind, vmin=-1.0, vmax=1.0, quantity=quantity)
        if kind == "T" and finite.size == 0:
            return colour_scale("T", vmin=0.0, vmax=1.0, quantity=quantity)
        return colour_scale(kind, values=finite, quantity=quantity)

    def _mesh(self, study: StudyInfo, path: Path, stem: str, *, name: str, quantity: str, alpha: float):
        from discvbr.io import read_image
        from discvbr.mrml.models import models_from_spine_scene
        from discvbr.render.scene import build_scene

        kind = map_kind(stem)
        if kind is None:
            raise DiscVBRError(f"map {stem!r} has no colour scale to draw on the mesh; choose r, t, a p map or a mean")
        image = read_image(path, what=f"{name} map {stem}")
        values = Image(np.asarray(image.array, np.float32), image.affine)
        scale = self._scale(kind, values.array, quantity, alpha)
        spine = build_scene(study.atlas, values, kind=kind, quantity=quantity, vmin=scale.vmin, vmax=scale.vmax, alpha=alpha)
        return models_from_spine_scene(self.scene, spine, name=f"{name} {stem} on the spine")

    def show_map_on_mesh(self, node, output: StatisticsOutput, stem: str):
        """Replace the map drawn on the spine mesh by another map of the same analysis."""
        maps = {p.name[: -len(".nii.gz")]: p for p in output.folder.glob("*.nii.gz")}
        if stem not in maps:
            raise DiscVBRError(f"analysis {output.name} has no map {stem!r}; it has {', '.join(sorted(maps))}")
        from discvbr.mrml.scene import NodeTransaction

        study = read_study(P.text(node, STUDY))
        with NodeTransaction(self.scene):
            models = self._mesh(study, maps[stem], stem, name=output.name, quantity=self._quantity(output.provenance), alpha=self._alpha(node))
            _hierarchy(self.scene).SetItemParent(models.folder, output.subject_folder)
        if output.models is not None:
            _hierarchy(self.scene).RemoveItem(output.models.folder, True, True)
        output.models, output.shown = models, stem
        self._reference_output(node, output)
        return models

    # ------------------------------------------------------------------ export

    def export_tables(self, output: StatisticsOutput, folder: str | os.PathLike) -> list[Path]:
        """Write the result's table nodes as CSV files (``<analysis>_<table>.csv``)."""
        from discvbr.io import atomic_write
        from discvbr.mrml.tables import dataframe_from_table

        folder = Path(folder)
        written = []
        for table_name, table in output.tables.items():
            path = folder / f"{output.name}_{table_name}.csv"
            with atomic_write(path) as tmp:
                dataframe_from_table(table).to_csv(tmp, index=False)
            written.append(path)
        return written

    def export_figure(self, node, output: StatisticsOutput, path: str | os.PathLike, *, size: tuple[int, int] = (900, 1000), camera: str = "sagittal") -> Path:
        """Render the map shown on the mesh off screen to a PNG (the figure the pipeline's report draws)."""
        from discvbr.io import read_image
        from discvbr.render.scene import render_spine_maps

        if output.shown is None:
            raise DiscVBRError(f"analysis {output.name} has no map shown on the mesh to export")
        study = read_study(P.text(node, STUDY))
        kind = map_kind(output.shown)
        image = read_image(output.folder / f"{output.shown}.nii.gz")
        quantity = self._quantity(output.provenance)
        alpha = self._alpha(node)
        scale = self._scale(kind, np.asarray(image.array), quantity, alpha)
        render_spine_maps(
            study.atlas, Image(np.asarray(image.array, np.float32), image.affine), kind=kind, quantity=quantity,
            vmin=scale.vmin, vmax=scale.vmax, alpha=alpha, size=size, camera=camera,
            title=f"{output.name}: {output.shown}", out=path,
        )
        return Path(path)


def legend_title(stem: str, scale_title: str) -> str:
    """Colour-legend title of a statistics map: the map, and its quantity with the unit."""
    units = {"r": "correlation, no unit", "t": "t statistic, no unit", "p": "p value, no unit"}
    detail = units.get(scale_title, scale_title)
    return f"{stem}: {detail}" if stem != scale_title else f"{stem} ({detail})"


def run_analysis_request(request: dict, *, progress: Callable[[float, str], None] | None = None) -> Path:
    """Run one analysis of :meth:`DiscStatisticsLogic.analysis_request` on its study; the results folder.

    The pipeline's own statistics (:func:`discvbr.pipeline.cohort.run_analyses`), so the
    results equal a command-line run with the same settings.

    Parameters
    ----------
    request : dict
        ``study`` and ``manifest`` paths, ``analysis`` (the fields of
        :class:`~discvbr.pipeline.config.AnalysisSettings`) and ``inference``
        (permutations, seed, tfce, alpha, correction).
    progress : callable, optional
        ``progress(fraction, text)`` between steps.

    Raises
    ------
    DiscVBRError
        Too few usable subjects, a variable missing from the manifest, or the analysis failing.
    """
    from discvbr.manifest import read_manifest
    from discvbr.pipeline.cohort import run_analyses
    from discvbr.pipeline.config import AnalysisSettings, PipelineConfig, StatisticsSettings
    from discvbr.pipeline.session import SessionOutcome

    notify = progress or (lambda fraction, text: None)
    notify(0.02, "reading the study")
    study = read_study(request["study"])
    settings = AnalysisSettings(**request["analysis"])
    inference = request["inference"]
    notify(0.05, "reading the cohort")
    cohort = read_manifest(Path(request["manifest"]), check_images=False)
    fields = set(SessionOutcome.__dataclass_fields__)
    outcomes = [SessionOutcome(**{k: v for k, v in s.items() if k in fields}) for s in study.sessions]
    config = PipelineConfig(statistics=StatisticsSettings(analyses=[settings], **inference))
    notify(0.1, f"analysis {settings.name}: {settings.kind}, {inference['permutations']} permutations"
           + (" with TFCE" if inference["tfce"] else ""))
    outcome = run_analyses(cohort, outcomes, study.folder, config, study.atlas)[0]
    if outcome.status != "ok":
        raise DiscVBRError(f"analysis {settings.name} {outcome.status}: {outcome.message}")
    notify(1.0, "done")
    return outcome.folder


def _hierarchy(scene):
    import slicer

    return slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
