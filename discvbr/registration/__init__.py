"""Mask-guided per-disc registration to a disc atlas (elastix), QC and tuning.

Iriondo et al., MRM 2020, section 2.2; METHODS.md section 2. Typical use::

    from discvbr.registration import load_atlas, register_subject, apply_subject

    atlas = load_atlas("phantom-healthy", mode="2d")
    reg = register_subject(mask, atlas, subject="sub-01", jobs=2)
    t1rho_atlas = apply_subject(reg, t1rho_series, mask=mask)   # echoes in atlas space
    reg.qc_table()                                              # Dice, det J, KS, flags

Modules: :mod:`~discvbr.registration.atlas` (atlases), :mod:`~discvbr.registration.params`
(elastix parameter files), :mod:`~discvbr.registration.engine` (itk-elastix),
:mod:`~discvbr.registration.disc` (one disc), :mod:`~discvbr.registration.apply` (warping
images), :mod:`~discvbr.registration.qc`, :mod:`~discvbr.registration.subject` (many
discs in processes), :mod:`~discvbr.registration.tune` (Bayesian optimisation),
:mod:`~discvbr.registration.known` (known smooth deformations, to measure accuracy).
"""

from discvbr.registration.apply import apply_registration, disc_histogram_change, paste_discs, warp_image, warp_mask
from discvbr.registration.atlas import (
    DEFAULT_ATLAS,
    Atlas,
    available_atlases,
    build_atlas,
    load_atlas,
    save_atlas,
)
from discvbr.registration.disc import DEFAULT_MARGIN_MM, DiscRegistration, register_disc
from discvbr.registration.params import RegistrationParams, build_parameter_maps, write_parameter_files
from discvbr.registration.qc import DiscQC, HistogramChange, QCThresholds, histogram_change
from discvbr.registration.subject import (
    DiscFailure,
    DiscTask,
    SubjectRegistration,
    apply_subject,
    qc_rows,
    register_subject,
    run_disc_tasks,
)

__all__ = [
    "DEFAULT_ATLAS",
    "DEFAULT_MARGIN_MM",
    "Atlas",
    "DiscFailure",
    "DiscQC",
    "DiscRegistration",
    "DiscTask",
    "HistogramChange",
    "QCThresholds",
    "RegistrationParams",
    "SubjectRegistration",
    "apply_registration",
    "apply_subject",
    "available_atlases",
    "build_atlas",
    "build_parameter_maps",
    "disc_histogram_change",
    "histogram_change",
    "load_atlas",
    "paste_discs",
    "qc_rows",
    "register_disc",
    "register_subject",
    "run_disc_tasks",
    "save_atlas",
    "warp_image",
    "warp_mask",
    "write_parameter_files",
]
