"""The end-to-end pipeline: a cohort manifest in, maps, statistics, figures and a report out.

``run_pipeline(manifest, out)`` runs a user's cohort (``discvbr run``); ``run_demo(out)``
runs a phantom cohort and checks the outputs against its truth (``discvbr demo``).
Settings come from :class:`PipelineConfig` (``load_config`` reads a TOML file).
"""

from discvbr.pipeline.config import PipelineConfig, config_template, load_config
from discvbr.pipeline.demo import DemoResult, run_demo
from discvbr.pipeline.runner import RunResult, run_pipeline

__all__ = ["PipelineConfig", "load_config", "config_template", "run_pipeline", "RunResult", "run_demo", "DemoResult"]
