"""Disc label maps for atlases, made by the phantom: synthetic spines and resliced real subjects.

``discvbr build-atlas --phantom`` and ``--real`` build the shipped atlases from these label
maps with :func:`discvbr.registration.build_atlas`; registration itself only loads atlases.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from pathlib import Path

from discvbr.errors import DiscVBRError
from discvbr.io import Image
from discvbr.phantom.cohort import PhantomConfig, draw_subject, simulate_session
from discvbr.phantom.real import load_real_anatomies, synthesize_from_real

__all__ = ["phantom_atlas_labels", "real_atlas_labels"]

_PHANTOM_DEGENERATION = {"healthy": 1.0, "degenerated": 4.5}


def phantom_atlas_labels(kind: str = "healthy", *, mode: str = "2d", seed: int = 0) -> tuple[Image, dict]:
    """Disc labels of a synthetic spine for an atlas, and their provenance.

    The phantom's subject 0 of ``seed`` with average anatomy (scale, lordosis and disc
    heights 1, L1 tilt -10 degrees) and every disc at degeneration 1 (``"healthy"``) or 4.5
    (``"degenerated"``: lower, compressed discs).

    Parameters
    ----------
    kind : {"healthy", "degenerated"}
    mode : {"2d", "3d"}
        One 8 mm slice, or the phantom's default stack (6 slices of 4 mm).
    seed : int
        Phantom seed (placement and texture draws).
    """
    if kind not in _PHANTOM_DEGENERATION:
        raise DiscVBRError(f"phantom atlas kind must be one of {', '.join(_PHANTOM_DEGENERATION)}, got {kind!r}")
    config = PhantomConfig(n_subjects=1, mode=mode, seed=seed)
    spec = draw_subject(config, 0)
    grade = _PHANTOM_DEGENERATION[kind]
    anatomy = dict(spec.anatomy, scale=1.0, lordosis=1.0, l1_tilt_deg=-10.0)
    anatomy["disc_height_factor"] = {lvl: 1.0 for lvl in spec.anatomy["disc_height_factor"]}
    spec = dataclasses.replace(spec, anatomy=anatomy, degeneration={lvl: grade for lvl in spec.degeneration})
    session = simulate_session(config, spec)
    source = {
        "generator": "discvbr.phantom",
        "kind": kind,
        "mode": mode,
        "seed": seed,
        "degeneration": grade,
        "anatomy": anatomy,
        "python": platform.python_version(),
    }
    return session.labels, source


def real_atlas_labels(folder: str | os.PathLike, subject: str, *, mode: str = "2d") -> tuple[Image, dict]:
    """Disc labels of a real subject, resliced like the data an atlas serves.

    The subject's thin-slice labels (``<folder>/<subject>/discs.nii.gz``) are averaged into
    one 8 mm slice at the discs' centre (2D) or 6 slices of 4 mm (3D), as the phantom's
    semi-synthetic mode does; a voxel belongs to a disc where that disc fills at least half
    of it.
    """
    anatomies = {a.name: a for a in load_real_anatomies(folder)}
    if subject not in anatomies:
        raise DiscVBRError(f"real subject {subject!r} not found in {folder}; found: {', '.join(anatomies)}")
    config = PhantomConfig(n_subjects=1, mode=mode, seed=0)
    session = synthesize_from_real(anatomies[subject], config, draw_subject(config, 0))
    source = {"generator": "discvbr.phantom.real", "folder": Path(folder).name, "subject": subject, "mode": mode}
    return session.labels, source
