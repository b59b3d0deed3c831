"""Pipeline settings: the documented template is the defaults; bad keys and types are named."""

from __future__ import annotations

import dataclasses

import pytest

from discvbr import DiscVBRError
from discvbr.cli import main
from discvbr.pipeline.config import PipelineConfig, config_template, load_config


def test_template_documents_every_field_and_reads_back_as_the_defaults(tmp_path):
    text = config_template()
    for section in dataclasses.fields(PipelineConfig):
        for f in dataclasses.fields(section.default_factory()):
            assert f.metadata["doc"] in text, f"{section.name}.{f.name} is not documented"
    path = tmp_path / "settings.toml"
    path.write_text(text)
    assert load_config(path) == PipelineConfig()


@pytest.mark.parametrize(
    "toml, fragment",
    [
        ("[registraton]\niterations = 10\n", "unknown key 'registraton'"),
        ("[registration]\niteration = 10\n", "unknown key 'registration.iteration'"),
        ("[registration]\niterations = \"many\"\n", "'registration.iterations' = 'many' has the wrong type; expected an integer"),
        ("[fitting]\nt2_max_ms = true\n", "'fitting.t2_max_ms' = True has the wrong type"),
        ("[[statistics.analyses]]\nname = \"x\"\ncovariates = [\"age\", 3]\n", "'statistics.analyses[0].covariates[1]'"),
        ("[statistics\n", "not valid TOML"),
    ],
)
def test_bad_settings_name_the_key(tmp_path, toml, fragment):
    path = tmp_path / "settings.toml"
    path.write_text(toml)
    with pytest.raises(DiscVBRError, match=fragment.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        load_config(path)


def test_partial_settings_keep_other_defaults(tmp_path):
    path = tmp_path / "settings.toml"
    path.write_text("[registration]\nrigidity_weight = 0.5\n[statistics]\npermutations = 200\n")
    config = load_config(path)
    assert config.registration.rigidity_weight == 0.5 and config.registration.iterations == 200
    assert config.statistics.permutations == 200 and len(config.statistics.analyses) == 5


def test_cli_prints_the_template_and_refuses_a_bad_config(tmp_path, capsys):
    assert main(["run", "--config-template"]) == 0
    assert "[registration]" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text("[fitting]\nmethod = 3\n")
    manifest = tmp_path / "m.csv"
    manifest.write_text("subject,t1rho,t1rho_times\n")
    assert main(["run", str(manifest), "--out", str(tmp_path / "o"), "--config", str(bad)]) == 2
    assert "fitting.method" in capsys.readouterr().err
