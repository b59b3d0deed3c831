"""Settings of a pipeline run, read from a TOML file whose every field is documented.

``discvbr run --config-template`` prints the full file with each field's meaning and
default; a user's file only needs the fields they change. Unknown sections or keys and
values of the wrong type stop the run with a message naming the key.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from discvbr.errors import DiscVBRError

__all__ = [
    "SegmentationSettings",
    "RegistrationSettings",
    "FittingSettings",
    "AnalysisSettings",
    "StatisticsSettings",
    "FigureSettings",
    "PipelineConfig",
    "load_config",
    "config_template",
    "config_to_dict",
]


def _doc(text: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING) -> Any:
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"doc": text})
    return field(default=default, metadata={"doc": text})


@dataclass(frozen=True)
class SegmentationSettings:
    """Disc segmentation (METHODS section 1)."""

    model: str | list[str] = _doc(
        "Segmentation model: \"default\" (the shipped model), a model or ensemble folder, or a list of model "
        "folders averaged as one ensemble.",
        "default",
    )
    device: str = _doc("\"auto\" (CUDA when present), \"cpu\" or \"cuda\".", "auto")
    use_manifest_masks: bool = _doc(
        "Use the manifest's mask column (e.g. corrected masks) where filled instead of segmenting.", True
    )
    threshold: float = _doc("Disc probability threshold.", 0.5)
    min_component_voxels: int = _doc("Smallest connected component kept as a disc, voxels.", 125)


@dataclass(frozen=True)
class RegistrationSettings:
    """Mask-guided per-disc registration to the atlas (METHODS section 2)."""

    atlas: str = _doc(
        "Atlas: a shipped atlas name (see `discvbr build-atlas --help`) or an atlas folder; \"default\" picks the "
        "shipped healthy phantom atlas of the data's mode (2D or 3D).",
        "default",
    )
    final_grid_spacing: float = _doc("B-spline final grid spacing, voxels (paper: 2).", 8.0)
    iterations: int = _doc("B-spline iterations per resolution (paper: 200).", 200)
    rigidity_weight: float = _doc("Weight of the transform rigidity penalty (paper: 0.77).", 4.0)
    margin_mm: float = _doc("Margin around each disc's bounding box when cropping, mm.", 10.0)
    parameter_folder: str = _doc(
        "Folder with your own elastix parameter files affine-2d.txt, bspline-2d.txt, affine-3d.txt, "
        "bspline-3d.txt (e.g. the best maps of `discvbr tune-registration`); \"\" uses the shipped files. The three "
        "settings above still override their entries in these files.",
        "",
    )


@dataclass(frozen=True)
class FittingSettings:
    """Mono-exponential fitting (METHODS section 3)."""

    method: str = _doc("\"lm\" (Levenberg-Marquardt), \"loglinear\" (preview) or \"rician\" (low SNR).", "lm")
    t1rho_max_ms: float = _doc("T1rho above this is implausible and excluded (data set A: 250, B: 200).", 250.0)
    t2_max_ms: float = _doc("T2 above this is implausible and excluded (paper: 150).", 150.0)
    min_snr: float = _doc("Echoes below this multiple of the noise floor do not count as signal.", 2.0)
    device: str = _doc("\"auto\", \"cpu\" or \"cuda\".", "auto")


@dataclass(frozen=True)
class AnalysisSettings:
    """One voxel-wise analysis (METHODS section 4)."""

    name: str = _doc("Name of the analysis (output folder).", "")
    kind: str = _doc("\"variable\", \"group\", \"voxel\" (T1rho vs T2) or \"time\" (baseline vs follow-up).", "variable")
    map: str = _doc("Relaxation map analysed: \"t1rho\" or \"t2\" (for \"voxel\": the first of the pair).", "t1rho")
    variable: str = _doc(
        "Manifest variable (\"variable\" and \"group\"); \"{level}\" is replaced by each disc's level, e.g. "
        "\"pfirrmann_{level}\".",
        "",
    )
    covariates: list[str] = _doc("Covariates of a partial correlation (e.g. age, sex, bmi).", factory=list)
    method: str = _doc("\"pearson\" or \"spearman\".", "pearson")
    cut: float | None = _doc("Group analyses: group a is variable <= cut, group b above (e.g. ODI 40).", None)
    welch: bool = _doc("Group analyses: Welch's t-test instead of Student's.", False)
    second_map: str = _doc("\"voxel\" analyses: the second map (\"t2\").", "t2")
    baseline: str = _doc("\"time\" analyses: the baseline session name.", "baseline")
    followup: str = _doc("\"time\" analyses: the follow-up session name.", "followup")


def _paper_analyses() -> list[AnalysisSettings]:
    demographics = ["age", "sex", "bmi"]
    return [
        AnalysisSettings(name="pfirrmann", kind="variable", variable="pfirrmann_{level}", covariates=demographics),
        AnalysisSettings(name="odi", kind="variable", variable="odi", covariates=demographics),
        AnalysisSettings(name="odi_groups", kind="group", variable="odi", cut=40.0),
        AnalysisSettings(name="t1rho_vs_t2", kind="voxel", map="t1rho", second_map="t2"),
        AnalysisSettings(name="followup", kind="time", map="t1rho"),
    ]


@dataclass(frozen=True)
class StatisticsSettings:
    """Voxel-wise statistics across subjects."""

    analyses: list[AnalysisSettings] = _doc(
        "Analyses to run (array of tables [[statistics.analyses]]); the default is the paper's: Pfirrmann and ODI "
        "partial correlations (age, sex, BMI), ODI <= 40 vs > 40, T1rho vs T2, baseline vs follow-up (when there "
        "are follow-ups).",
        factory=_paper_analyses,
    )
    permutations: int = _doc("Permutations for family-wise error control (0: parametric corrections only).", 1000)
    seed: int = _doc("Seed of the permutations.", 0)
    tfce: bool = _doc("Also threshold-free cluster enhancement.", True)
    alpha: float = _doc("Significance level of the maps and summaries.", 0.05)
    correction: str = _doc(
        "Correction named in summaries and figures: fwe_voxel, fwe_cluster, fwe_tfce (and their _joint over all "
        "discs), fdr_bh, holm, bonferroni.",
        "fwe_tfce_joint",
    )


@dataclass(frozen=True)
class FigureSettings:
    """Figures and the HTML report."""

    enabled: bool = _doc("Render figures and the HTML report.", True)
    width: int = _doc("Spine figure width, pixels.", 900)
    height: int = _doc("Spine figure height, pixels.", 1000)
    camera: str = _doc("Spine figure camera: sagittal, sagittal-right, oblique or posterior-oblique.", "sagittal")


@dataclass(frozen=True)
class PipelineConfig:
    """Everything a run needs besides the manifest."""

    segmentation: SegmentationSettings = field(default_factory=SegmentationSettings)
    registration: RegistrationSettings = field(default_factory=RegistrationSettings)
    fitting: FittingSettings = field(default_factory=FittingSettings)
    statistics: StatisticsSettings = field(default_factory=StatisticsSettings)
    figures: FigureSettings = field(default_factory=FigureSettings)


def load_config(path: str | os.PathLike | None) -> PipelineConfig:
    """Read a TOML config (None: all defaults).

    Raises
    ------
    DiscVBRError
        Unreadable TOML, an unknown section or key, or a value of the wrong type, naming
        the key (``registration.iterations``).
    """
    if path is None:
        return PipelineConfig()
    path = Path(path)
    if not path.is_file():
        raise DiscVBRError(f"config file not found: {path}")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DiscVBRError(f"config file {path} is not valid TOML: {exc}") from None
    return _build(PipelineConfig, raw, prefix="", source=path)


def _build(cls: type, raw: Any, *, prefix: str, source: Path) -> Any:
    if not isinstance(raw, dict):
        raise DiscVBRError(f"{source}: '{prefix.rstrip('.') or 'config'}' must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in raw.items():
        name = f"{prefix}{key}"
        if key not in fields:
            known = ", ".join(fields)
            raise DiscVBRError(f"{source}: unknown key '{name}'; known keys here: {known}")
        values[key] = _convert(hints[key], value, name=name, source=source)
    return cls(**values)


def _convert(hint: Any, value: Any, *, name: str, source: Path) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, prefix=f"{name}.", source=source)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        for option in args:
            if option is type(None) and value is None:
                return None
            try:
                return _convert(option, value, name=name, source=source)
            except DiscVBRError:
                continue
        raise DiscVBRError(f"{source}: '{name}' = {value!r} has the wrong type; expected {_type_name(hint)}")
    if origin is list:
        if not isinstance(value, list):
            raise DiscVBRError(f"{source}: '{name}' must be a list ({_type_name(hint)}), got {value!r}")
        return [_convert(args[0], v, name=f"{name}[{i}]", source=source) for i, v in enumerate(value)]
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and type(value) is hint:
        return value
    raise DiscVBRError(f"{source}: '{name}' = {value!r} has the wrong type; expected {_type_name(hint)}")


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is list:
        return f"a list of {_type_name(typing.get_args(hint)[0])}"
    if origin is not None:
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "nothing"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def config_to_dict(config: Any) -> Any:
    """Plain dict of a config (for provenance and hashing)."""
    return dataclasses.asdict(config)


def config_template() -> str:
    """A TOML file with every field, its meaning and its default, ready to edit."""
    lines = [
        "# DiscVBR pipeline settings (discvbr run MANIFEST --config THIS_FILE --out DIR).",
        "# Every field is optional: delete the ones you keep at their default.",
        "",
    ]
    for section in dataclasses.fields(PipelineConfig):
        cls = typing.get_type_hints(PipelineConfig)[section.name]
        lines.append(f"# {cls.__doc__}")
        lines.append(f"[{section.name}]")
        default = section.default_factory()  # type: ignore[misc]
        for f in dataclasses.fields(cls):
            if f.name == "analyses":
                continue
            lines.append(f"# {f.metadata['doc']}")
            value = getattr(default, f.name)
            lines.append(f"{f.name} = {_toml_value(value)}" if value is not None else f"# {f.name} =")
        lines.append("")
        if section.name == "statistics":
            lines.append("# " + next(f for f in dataclasses.fields(cls) if f.name == "analyses").metadata["doc"])
            lines.append("# Fields of each analysis:")
            for f in dataclasses.fields(AnalysisSettings):
                lines.append(f"#   {f.name}: {f.metadata['doc']}")
            for analysis in default.analyses:
                lines.append("[[statistics.analyses]]")
                for f in dataclasses.fields(AnalysisSettings):
                    value = getattr(analysis, f.name)
                    if value != getattr(AnalysisSettings(), f.name):
                        lines.append(f"{f.name} = {_toml_value(value)}")
                lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)
