"""Synthetic lumbar spine qMRI with exact ground truth.

``write_cohort(out, PhantomConfig(...))`` writes a whole cohort (series, labels, truth
maps, manifest); ``draw_subject`` and ``simulate_session`` give one session in memory;
``synthesize_from_real`` builds semi-synthetic series on real anatomy.
"""

from discvbr.phantom.anatomy import Tissue, build_spine
from discvbr.phantom.cohort import (
    BASELINE,
    DEFAULT_T1RHO_TIMES,
    DEFAULT_T2_TIMES,
    FOLLOWUP,
    PhantomConfig,
    SubjectSpec,
    draw_subject,
    iter_cohort,
    simulate_session,
    write_cohort,
)
from discvbr.phantom.simulate import EFFECTS, PhantomSession, PlantedEffect

__all__ = [
    "BASELINE",
    "DEFAULT_T1RHO_TIMES",
    "DEFAULT_T2_TIMES",
    "EFFECTS",
    "FOLLOWUP",
    "PhantomConfig",
    "PhantomSession",
    "PlantedEffect",
    "SubjectSpec",
    "Tissue",
    "build_spine",
    "draw_subject",
    "iter_cohort",
    "simulate_session",
    "write_cohort",
]
