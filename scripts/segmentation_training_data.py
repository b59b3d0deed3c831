"""Write the training data of DiscVBR's shipped segmentation model (deterministic).

Usage::

    PYTHONPATH=. python scripts/segmentation_training_data.py OUT [--real data/lumbar-t2-real]

Writes, under OUT:

* ``phantom-2d-snr{20,40,80}/``: synthetic 2D cohorts (one 8 mm sagittal slice per
  session, 256 x 256 over 240 mm), 40 subjects each, baseline and some follow-ups,
  degeneration grades 1-5 as drawn by the phantom's cohort model;
* ``phantom-3d-snr{30,60}/``: synthetic 3D cohorts, 12 subjects, 6 slices of 4 mm;
* ``semi-2d/``, ``semi-3d/``: semi-synthetic T1rho/T2 series on the real anatomies
  (24 and 12 subjects; subject i uses anatomy i mod 3), SNR 40;
* ``semi.csv``: training list of the semi-synthetic sessions, grouped by anatomy
  (``real:<anatomy>``), so the real subject and its semi-synthetic copies fall in the
  same cross-validation fold;
* ``real-t2w.csv``: training list of the real T2-weighted volumes with their labels
  (group ``real:<subject>``).

Every cohort has its own seed (listed in ``OUT/recipe.json``), so the data are the same
on every machine. The whole run takes about 15 minutes on two CPU cores.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from discvbr.manifest import read_manifest  # noqa: E402
from discvbr.phantom import PhantomConfig, write_cohort  # noqa: E402
from discvbr.phantom.real import RealAnatomySimulator, load_real_anatomies  # noqa: E402
from discvbr.segmentation.dataset import write_training_list  # noqa: E402

#: name -> (PhantomConfig settings); seeds differ from the benchmark's held-out cohorts (9000+).
SYNTHETIC = {
    "phantom-2d-snr20": dict(n_subjects=40, mode="2d", snr=20.0, seed=101),
    "phantom-2d-snr40": dict(n_subjects=40, mode="2d", snr=40.0, seed=102),
    "phantom-2d-snr80": dict(n_subjects=40, mode="2d", snr=80.0, seed=103),
    "phantom-3d-snr30": dict(n_subjects=12, mode="3d", snr=30.0, seed=104, n_slices=6, slice_thickness=4.0),
    "phantom-3d-snr60": dict(n_subjects=12, mode="3d", snr=60.0, seed=105, n_slices=6, slice_thickness=4.0),
}
SEMI = {
    "semi-2d": dict(n_subjects=24, mode="2d", snr=40.0, seed=201),
    "semi-3d": dict(n_subjects=12, mode="3d", snr=40.0, seed=202, n_slices=6, slice_thickness=4.0),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--real", type=Path, default=REPO / "data" / "lumbar-t2-real", help="real T2w volumes with disc labels")
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    manifests = []
    for name, settings in SYNTHETIC.items():
        folder = out / name
        if not (folder / "manifest.csv").is_file():
            print(f"writing {name}", flush=True)
            write_cohort(folder, PhantomConfig(**settings), with_masks=True)
        manifests.append(folder / "manifest.csv")

    anatomies = load_real_anatomies(args.real)
    simulator = RealAnatomySimulator(anatomies)
    semi_rows = []
    for name, settings in SEMI.items():
        folder = out / name
        if not (folder / "manifest.csv").is_file():
            print(f"writing {name}", flush=True)
            write_cohort(folder, PhantomConfig(**settings), with_masks=True, simulate=simulator)
        cohort = read_manifest(folder / "manifest.csv")
        index = {f"sub-{i + 1:02d}": i for i in range(settings["n_subjects"])}
        for entry in cohort:
            anatomy = anatomies[index[entry.subject] % len(anatomies)].name
            semi_rows.append({
                "subject": f"{name}/{entry.subject}/{entry.session}",
                "image": entry.series["t1rho"].paths[0],
                "labels": entry.mask,
                "group": f"real:{anatomy}",
                "source": "semi-synthetic",
                "echo": 0,
            })
    write_training_list(out / "semi.csv", semi_rows)

    real_rows = [
        {"subject": a.name, "image": args.real.resolve() / a.name / "t2w.nii.gz",
         "labels": args.real.resolve() / a.name / "discs.nii.gz", "group": f"real:{a.name}", "source": "real-t2w", "echo": 0}
        for a in anatomies
    ]
    write_training_list(out / "real-t2w.csv", real_rows)
    (out / "recipe.json").write_text(json.dumps({
        "script": "scripts/segmentation_training_data.py",
        "synthetic": SYNTHETIC, "semi_synthetic": SEMI, "real": str(args.real),
        "tables": [str(m.relative_to(out)) for m in manifests] + ["semi.csv", "real-t2w.csv"],
    }, indent=2) + "\n")
    print("tables:", " ".join(str(m) for m in manifests + [out / "semi.csv", out / "real-t2w.csv"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
