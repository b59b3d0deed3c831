"""Build a 3D Slicer scene from a phantom cohort through the DiscVBR modules' logic, headless.

1. writes a phantom cohort (2D, ground-truth disc masks in its manifest) and runs the pipeline
   on it (``discvbr run``: registration, fitting, the ODI analysis) into a study folder;
2. in a headless MRML scene (``slicer-core``), loads the first subject through the modules'
   logic: its T1rho echoes as volumes and its T2 series as a sequence; DiscSegmentation
   segments the discs with a model (``--model``, or the shipped one when installed) or takes
   the phantom's masks; DiscRelaxometry registers the discs, fits T1rho/T2 and adds the
   registered maps and the registration QC; DiscStatistics runs the T1rho-T2 correlation of
   the study and adds the r and p maps, the tables and the r map on the spine mesh (model
   nodes with cell scalars and a colour legend);
3. saves the scene as ``<out>/discvbr-demo.mrb``, to open in 3D Slicer (File > Load Scene).

Run: ``PYTHONPATH=. python scripts/slicer_scene_demo.py --out slicer-demo`` (about two minutes
on two cores; needs ``pip install slicer-core``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ANALYSIS = "t1rho_vs_t2"


def make_study(out: Path, *, subjects: int, seed: int, iterations: int) -> tuple[Path, Path]:
    """A phantom cohort and its pipeline run; returns (manifest, study folder)."""
    from discvbr.phantom import PhantomConfig, write_cohort
    from discvbr.pipeline import PipelineConfig, run_pipeline
    from discvbr.pipeline.config import AnalysisSettings, FigureSettings, RegistrationSettings, StatisticsSettings

    manifest = write_cohort(
        out / "cohort",
        PhantomConfig(n_subjects=subjects, matrix=128, seed=seed, followup_fraction=0.0, missing_fraction=0.0),
        with_masks=True,
    ).resolve()
    config = PipelineConfig(
        registration=RegistrationSettings(iterations=iterations),
        statistics=StatisticsSettings(
            analyses=[AnalysisSettings(name="odi", kind="variable", variable="odi")], permutations=0, correction="fdr_bh_joint"
        ),
        figures=FigureSettings(enabled=False),
    )
    study = (out / "study").resolve()
    run_pipeline(manifest, study, config=config)
    return manifest, study


def build_scene(manifest: Path, study: Path, *, model: Path | None = None, iterations: int = 200):
    """The demo scene; returns (scene, summary)."""
    from discvbr.extension import relaxometry as R
    from discvbr.extension import segmentation as S
    from discvbr.extension import statistics as T
    from discvbr.extension.relaxometry import DiscRelaxometryLogic
    from discvbr.extension.segmentation import DiscSegmentationLogic
    from discvbr.extension.statistics import DiscStatisticsLogic
    from discvbr.io import read_image
    from discvbr.manifest import read_manifest
    from discvbr.mrml.scene import new_scene
    from discvbr.mrml.series import sequence_from_series
    from discvbr.mrml.volumes import volume_from_image
    from discvbr.segmentation.model_store import default_model_path

    scene = new_scene()
    entry = next(iter(read_manifest(manifest)))
    name = f"{entry.subject}"
    t1rho = entry.series["t1rho"].load()
    t2 = entry.series["t2"].load()
    echoes = [volume_from_image(scene, t1rho.echo(e), name=f"{name} T1rho {t:g} ms") for e, t in enumerate(t1rho.times)]
    t2_sequence, _ = sequence_from_series(scene, t2, name=f"{name} T2")

    segmentation = DiscSegmentationLogic(scene)
    seg_node = segmentation.parameter_node()
    seg_node.SetNodeReferenceID(S.INPUT, echoes[0].GetID())
    summary: dict = {"subject": entry.subject}
    model = model or (default_model_path() if default_model_path().is_dir() else None)
    result = None
    if model is not None:
        segmentation.use_model_folder(seg_node, model)
        result = segmentation.run(seg_node)
        summary["segmentation"] = f"network ({model})"
        if any(item.missing for item in result.review):
            missing = [item.level for item in result.review if item.missing]
            summary["segmentation"] += f"; it missed {', '.join(missing)}, so the phantom's masks are used"
            result = None
    if result is None:
        if model is not None:  # the network's incomplete result is replaced, not kept beside the masks
            seg_node.SetParameter(S.REPLACE_OUTPUT, "true")
        result = segmentation.import_labels(seg_node, read_image(entry.mask, what="phantom mask"), name=name)
        summary.setdefault("segmentation", "the phantom's ground-truth masks")

    relaxometry = DiscRelaxometryLogic(scene)
    rel_node = relaxometry.parameter_node()
    relaxometry.set_echo_volumes(rel_node, "t1rho", echoes, ";".join(f"{t:g}" for t in t1rho.times))
    relaxometry.set_series_node(rel_node, "t2", t2_sequence)
    rel_node.SetNodeReferenceID(R.SEGMENTATION, result.segmentation.GetID())
    rel_node.SetParameter(R.ITERATIONS, str(iterations))
    output = relaxometry.run(rel_node)
    summary["registration"] = relaxometry.summary(output)

    statistics = DiscStatisticsLogic(scene)
    stats_node = statistics.parameter_node()
    for key, value in {
        T.STUDY: str(study), T.NAME: ANALYSIS, T.KIND: "voxel", T.MAP: "t1rho", T.SECOND_MAP: "t2",
        T.PERMUTATIONS: "0", T.CORRECTION: "fdr_bh_joint",
    }.items():
        stats_node.SetParameter(key, value)
    statistics.run_analysis(stats_node)
    correlation = statistics.load_results(stats_node, show="r")
    summary["statistics"] = {
        "analysis": ANALYSIS,
        "maps": sorted(correlation.volumes),
        "tables": sorted(correlation.tables),
        "mesh models": len(correlation.models.models),
    }
    return scene, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("slicer-demo"), help="Output folder (cohort, study, scene).")
    parser.add_argument("--subjects", type=int, default=6, help="Phantom subjects (at least 3).")
    parser.add_argument("--seed", type=int, default=1, help="Phantom seed.")
    parser.add_argument("--iterations", type=int, default=200, help="B-spline iterations per resolution (paper: 200).")
    parser.add_argument("--model", type=Path, default=None, help="Segmentation model folder (default: the shipped model, else the phantom masks).")
    args = parser.parse_args()

    from discvbr.mrml.scene import save_scene

    manifest, study = make_study(args.out, subjects=args.subjects, seed=args.seed, iterations=args.iterations)
    scene, summary = build_scene(manifest, study, model=args.model, iterations=args.iterations)
    path = save_scene(scene, args.out / "discvbr-demo.mrb")
    summary["scene"] = str(path)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
