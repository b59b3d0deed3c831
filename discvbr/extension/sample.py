"""The phantom case the Sample Data module offers: try every module with one click, offline.

Nothing is downloaded: the case is simulated by :mod:`discvbr.phantom` (about a second), so
it works without a network and is the same on every machine (fixed seeds).

* :func:`load_phantom_case` adds one phantom subject to a scene: the T1rho and T2 echoes as
  one volume per echo, each carrying its time (:data:`~discvbr.extension.relaxometry.ECHO_TIME_ATTRIBUTE`,
  so DiscRelaxometry pairs them without typing), and the true disc labels as a label map
  (for DiscSegmentation's "use a label map" and to compare with its result).
* :func:`write_phantom_cohort` writes a small phantom cohort (images, masks, manifest) for
  DiscStatistics, whose "Run the pipeline" turns it into a study folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PHANTOM_SEED", "PhantomCase", "load_phantom_case", "write_phantom_cohort"]

#: Seed of the sample subject (and of the cohort's first subject's draw).
PHANTOM_SEED = 3


@dataclass
class PhantomCase:
    """The nodes :func:`load_phantom_case` added.

    Attributes
    ----------
    t1rho, t2 : list of vtkMRMLScalarVolumeNode
        One volume per echo, in echo order.
    truth : vtkMRMLLabelMapVolumeNode
        The phantom's disc labels (1 = L5S1 ... 5 = L1L2).
    session : PhantomSession
        The simulated session (true maps included), for tests and scripts.
    """

    t1rho: list
    t2: list
    truth: object
    session: object


def load_phantom_case(scene, *, seed: int = PHANTOM_SEED, matrix: int = 128) -> PhantomCase:
    """Simulate one phantom subject and add its echoes and true disc labels to ``scene`` (one transaction).

    Parameters
    ----------
    scene : vtkMRMLScene
    seed : int
        Phantom seed (the same seed gives the same case).
    matrix : int
        In-plane matrix of the single sagittal slice.
    """
    from discvbr.extension.relaxometry import ECHO_TIME_ATTRIBUTE, KINDS
    from discvbr.mrml.scene import NodeTransaction, place_in_folder
    from discvbr.mrml.volumes import volume_from_image
    from discvbr.phantom import PhantomConfig, draw_subject, simulate_session

    config = PhantomConfig(n_subjects=1, matrix=matrix, seed=seed)
    session = simulate_session(config, draw_subject(config, 0))
    echoes = {}
    with NodeTransaction(scene):
        for kind, series in (("t1rho", session.t1rho), ("t2", session.t2)):
            echoes[kind] = []
            for e, time in enumerate(series.times):
                volume = volume_from_image(scene, series.echo(e), name=f"DiscVBR phantom {KINDS[kind]} {time:g} ms")
                volume.SetAttribute(ECHO_TIME_ATTRIBUTE, f"{time:g}")
                echoes[kind].append(volume)
        truth = volume_from_image(scene, session.labels, name="DiscVBR phantom discs (truth)", labelmap=True, role="phantom truth")
        place_in_folder(scene, [*echoes["t1rho"], *echoes["t2"], truth], folder="DiscVBR phantom case")
    return PhantomCase(echoes["t1rho"], echoes["t2"], truth, session)


def write_phantom_cohort(folder: str | os.PathLike, *, subjects: int = 4, seed: int = PHANTOM_SEED + 2) -> Path:
    """Write a small phantom cohort with disc masks (no follow-ups) into ``folder``; its manifest's path."""
    from discvbr.phantom import PhantomConfig, write_cohort

    config = PhantomConfig(n_subjects=subjects, matrix=128, seed=seed, followup_fraction=0.0, missing_fraction=0.0)
    return write_cohort(Path(folder), config, with_masks=True).resolve()
