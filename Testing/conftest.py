"""Shared fixtures: small phantom sessions and cohorts, built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from discvbr.phantom import PhantomConfig, draw_subject, simulate_session, write_cohort

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO / "data" / "lumbar-t2-real"


#: Settings of a quick cohort run (few registration iterations and permutations, no figures),
#: written by the tests of ``discvbr run`` into their cohort folders.
FAST_RUN_SETTINGS = """
[registration]
iterations = 40

[statistics]
permutations = 99

[[statistics.analyses]]
name = "odi_groups"
kind = "group"
variable = "odi"
cut = 40.0

[[statistics.analyses]]
name = "t1rho_vs_t2"
kind = "voxel"

[figures]
enabled = false
"""


@pytest.fixture(scope="session")
def fast_run_settings() -> str:
    """:data:`FAST_RUN_SETTINGS`, the TOML text of a quick cohort run."""
    return FAST_RUN_SETTINGS


@pytest.fixture(scope="session")
def phantom_config_2d() -> PhantomConfig:
    """A light 2D configuration (128 x 128 over 240 mm) for fast tests."""
    return PhantomConfig(n_subjects=4, matrix=128, seed=7, followup_fraction=0.5, missing_fraction=0.2)


@pytest.fixture(scope="session")
def phantom_session_2d(phantom_config_2d):
    """One full-resolution 2D session (256 x 256), as users get by default."""
    config = PhantomConfig(n_subjects=1, seed=3)
    return simulate_session(config, draw_subject(config, 0))


@pytest.fixture(scope="session")
def phantom_cohort_dir(tmp_path_factory, phantom_config_2d) -> Path:
    """A small 2D cohort written to disk; returns its folder (manifest.csv inside)."""
    out = tmp_path_factory.mktemp("phantom-cohort")
    write_cohort(out, phantom_config_2d)
    return out
