"""The 3D Slicer extension's files: CMake, Qt Designer UIs, module scripts, icons, dependencies.

Slicer and Qt are not needed: the .ui files are parsed as XML, the module scripts as Python
syntax trees, the CMake files as text.
"""

from __future__ import annotations

import ast
import re
import struct
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from discvbr import DiscVBRError

REPO = Path(__file__).resolve().parents[1]
MODULES = ("DiscSegmentation", "DiscRelaxometry", "DiscStatistics")
#: Qt, CTK and MRML widget classes a Slicer .ui may use without declaring them.
QT_CLASSES = {
    "QWidget", "QLabel", "QPushButton", "QComboBox", "QLineEdit", "QSpinBox", "QDoubleSpinBox", "QCheckBox",
    "QProgressBar", "QPlainTextEdit", "QListWidget", "QToolButton", "QTableView", "QTableWidget", "QGroupBox",
}


def _ui(module: str) -> ET.Element:
    return ET.parse(REPO / module / "Resources" / "UI" / f"{module}.ui").getroot()


def _cmake(path: Path) -> str:
    return "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())


def test_top_level_cmake_has_the_metadata_and_modules():
    text = _cmake(REPO / "CMakeLists.txt")
    for field in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS"):
        assert re.search(rf'set\(EXTENSION_{field} "[^"]+"\)', text), field
    assert 'set(EXTENSION_CATEGORY "Quantification")' in text
    depends = re.search(r"set\(EXTENSION_DEPENDS ([^)]*)\)", text).group(1).split()
    assert set(depends) == {"SlicerElastix", "PyTorch"}
    assert re.findall(r"add_subdirectory\((\w+)\)", text) == list(MODULES)
    # the icon and screenshots named in the metadata exist in the repository
    for url in re.findall(r"https://raw\.githubusercontent\.com/discvbr/DiscVBR/main/(\S+?)[\"\s]", text):
        assert (REPO / url).is_file(), url


def test_discvbr_package_is_bundled_from_its_source_folder():
    """The package is globbed at configure time (never listed or copied by hand)."""
    text = _cmake(REPO / "CMakeLists.txt")
    call = re.search(r"ctkMacroCompilePythonScript\((.*?)\n  \)", text, re.S).group(1)
    assert "SCRIPTS \"${DISCVBR_PACKAGE_SCRIPTS}\"" in call and "RESOURCES \"${DISCVBR_PACKAGE_RESOURCES}\"" in call
    assert "${Slicer_QTSCRIPTEDMODULES_LIB_DIR}" in call and "${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}" in call
    globs = dict(re.findall(r"file\(GLOB_RECURSE (\w+) RELATIVE \$\{CMAKE_CURRENT_SOURCE_DIR\} CONFIGURE_DEPENDS\s+(\S+)", text))
    assert globs == {
        "DISCVBR_PACKAGE_SCRIPTS": "${CMAKE_CURRENT_SOURCE_DIR}/discvbr/*.py",
        "DISCVBR_PACKAGE_RESOURCES": "${CMAKE_CURRENT_SOURCE_DIR}/discvbr/data/*",
    }
    # what the globs collect is the whole package: every module and the data the logic reads
    scripts = {p.relative_to(REPO).as_posix() for p in (REPO / "discvbr").rglob("*.py") if "__pycache__" not in p.parts}
    assert {"discvbr/mrml/volumes.py", "discvbr/extension/segmentation.py", "discvbr/cli/segment.py"} <= scripts
    data = {p.relative_to(REPO).as_posix() for p in (REPO / "discvbr" / "data").rglob("*") if p.is_file()}
    assert "discvbr/data/slicer-requirements.txt" in data
    assert {"discvbr/data/elastix/affine-3d.txt", "discvbr/data/elastix/bspline-3d.txt"} <= data


@pytest.mark.parametrize("module", MODULES)
def test_module_cmake_lists_every_resource(module):
    folder = REPO / module
    text = _cmake(folder / "CMakeLists.txt")
    assert f"set(MODULE_NAME {module})" in text
    assert re.search(r"slicerMacroBuildScriptedModule\(.*WITH_GENERIC_TESTS", text, re.S)
    resources = re.search(r"set\(MODULE_PYTHON_RESOURCES(.*?)\)", text, re.S).group(1).split()
    listed = {r.replace("${MODULE_NAME}", module) for r in resources}
    present = {p.relative_to(folder).as_posix() for p in (folder / "Resources").rglob("*") if p.is_file()}
    assert listed == present
    scripts = re.search(r"set\(MODULE_PYTHON_SCRIPTS(.*?)\)", text, re.S).group(1).split()
    assert [s.replace("${MODULE_NAME}", module) for s in scripts] == [f"{module}.py"]
    assert "add_subdirectory(Testing)" in text
    assert "add_subdirectory(Python)" in _cmake(folder / "Testing" / "CMakeLists.txt")
    testing = _cmake(folder / "Testing" / "Python" / "CMakeLists.txt")
    assert "slicer_add_python_unittest(SCRIPT ${CMAKE_CURRENT_SOURCE_DIR}/../../${MODULE_NAME}.py)" in testing


@pytest.mark.parametrize("module", MODULES)
def test_icon_is_a_png(module):
    data = (REPO / module / "Resources" / "Icons" / f"{module}.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width == height and 64 <= width <= 256


@pytest.mark.parametrize("module", MODULES)
def test_ui_is_well_formed_and_declares_its_widgets(module):
    root = _ui(module)
    assert root.tag == "ui" and root.findtext("class") == module
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == module
    names = [w.get("name") for w in root.iter("widget")]
    assert len(names) == len(set(names)), "object names must be unique"
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    used = {w.get("class") for w in root.iter("widget")}
    assert used - QT_CLASSES <= declared, f"undeclared custom widgets: {used - QT_CLASSES - declared}"
    # every MRML widget receives the scene from the module widget
    receivers = {c.findtext("receiver") for c in root.iter("connection") if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"}
    mrml_widgets = {w.get("name") for w in root.iter("widget") if w.get("class", "").startswith("qMRML") and w is not top}
    assert mrml_widgets == receivers


def _module_tree(module: str) -> ast.Module:
    return ast.parse((REPO / module / f"{module}.py").read_text(), filename=f"{module}.py")


@pytest.mark.parametrize("module", MODULES)
def test_module_script_uses_only_widgets_of_its_ui(module):
    tree = _module_tree(module)
    used = {
        node.attr for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
        and node.value.attr == "ui" and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"
    }
    names = {w.get("name") for w in _ui(module).iter("widget")}
    assert used, "the widget reads no widget of its .ui"
    assert used <= names, f"widgets missing from {module}.ui: {sorted(used - names)}"
    assert f'"UI/{module}.ui"' in (REPO / module / f"{module}.py").read_text()


@pytest.mark.parametrize("module", MODULES)
def test_module_script_has_the_four_classes(module):
    tree = _module_tree(module)
    classes = {node.name: [ast.unparse(b) for b in node.bases] for node in tree.body if isinstance(node, ast.ClassDef)}
    assert classes[module] == ["ScriptedLoadableModule"]
    assert classes[f"{module}Widget"][0] == "ScriptedLoadableModuleWidget"
    assert classes[f"{module}Test"] == ["ScriptedLoadableModuleTest"]
    imported = {alias.name for node in tree.body if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert f"{module}Logic" in imported  # the Qt-free logic of discvbr.extension, tested below
    test_methods = [f.name for f in next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == f"{module}Test").body
                    if isinstance(f, ast.FunctionDef) and f.name.startswith("test_")]
    assert test_methods, "the self-test runs no test"
    # the GUI state has exactly one function each way
    widget = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == f"{module}Widget")
    methods = {f.name for f in widget.body if isinstance(f, ast.FunctionDef)}
    assert {"updateGUIFromParameterNode", "updateParameterNodeFromGUI", "onApplyButton"} <= methods


@pytest.mark.parametrize("module", MODULES)
def test_module_logic_is_the_tested_class(module):
    import importlib

    name = {"DiscSegmentation": "segmentation", "DiscRelaxometry": "relaxometry", "DiscStatistics": "statistics"}[module]
    logic = getattr(importlib.import_module(f"discvbr.extension.{name}"), f"{module}Logic")
    assert importlib.import_module(f"discvbr.extension.{name}").MODULE == module
    assert callable(logic.disabled_reason) and callable(logic.parameter_node)


def test_slicer_requirements_match_pyproject():
    """Slicer installs the package's dependencies except those Slicer ships or gets otherwise."""
    from discvbr.extension.dependencies import read_requirements

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    left_out = {"numpy", "vtk", "torch", "optuna", "dask[distributed]"}
    expected = [r for r in declared if re.split(r"[<>=!~ ]", r)[0] not in left_out]
    assert read_requirements() == expected


def test_unmet_requirements_reads_installed_versions():
    from importlib.metadata import PackageNotFoundError

    from discvbr.extension.dependencies import unmet_requirements

    installed = {"scipy": "1.17.1", "itk-elastix": "0.25.3"}

    def version_of(name):
        if name not in installed:
            raise PackageNotFoundError(name)
        return installed[name]

    wanted = ["scipy>=1.10", "itk-elastix==0.25.4", "nibabel>=5.0", "scipy<1.0"]
    assert unmet_requirements(wanted, version_of=version_of) == ["itk-elastix==0.25.4", "nibabel>=5.0", "scipy<1.0"]


def _fake_slicer(monkeypatch, *, installer: str | None, confirm: bool = True, testing: bool = False, restart: bool = False) -> dict:
    """Fake ``slicer`` and ``PyTorchUtils`` modules that record what DiscVBR asks them to do."""
    import types

    calls: dict = {"dialogs": []}

    def read_constraints(path) -> list[str]:
        return Path(path).read_text().split()

    def confirm_ok_cancel(*args) -> bool:
        calls["dialogs"].append(args)
        return confirm

    def confirm_yes_no(*args) -> bool:
        calls["dialogs"].append(args)
        return restart

    util = types.SimpleNamespace(
        confirmOkCancelDisplay=confirm_ok_cancel,
        confirmYesNoDisplay=confirm_yes_no,
        restart=lambda: calls.update(restarted=True),
        pip_install=lambda args: calls.update(pip_install=list(args), constraints=read_constraints(args[1])),
    )
    slicer = types.ModuleType("slicer")
    slicer.util = util
    slicer.app = types.SimpleNamespace(testingEnabled=lambda: testing)
    if installer is not None:
        setattr(slicer, installer, types.SimpleNamespace(
            pip_ensure=lambda reqs, constraints, requester: calls.update(
                pip_ensure=[str(r) for r in reqs], constraints=read_constraints(constraints), requester=requester, installer=installer),
        ))
    torch_utils = types.ModuleType("PyTorchUtils")
    torch_utils.PyTorchUtilsLogic = lambda: types.SimpleNamespace(torchInstalled=lambda: calls.setdefault("torch_checked", True))
    monkeypatch.setitem(sys.modules, "slicer", slicer)
    monkeypatch.setitem(sys.modules, "PyTorchUtils", torch_utils)
    return calls


@pytest.mark.parametrize("installer", ["packaging", "pydeps", None])
def test_installs_in_slicer_never_replace_what_slicer_ships(monkeypatch, installer):
    import importlib.metadata

    from discvbr.extension import dependencies

    calls = _fake_slicer(monkeypatch, installer=installer)
    state = {"missing": ["nibabel>=5.0"]}
    monkeypatch.setattr(dependencies, "unmet_requirements", lambda reqs: state["missing"])
    monkeypatch.setattr(dependencies, "_install", _after(dependencies._install, lambda: state.update(missing=[])))
    monkeypatch.setattr(dependencies, "imported_upgrades", lambda missing: [])  # (tested below)
    dependencies.ensure_slicer_dependencies("DiscRelaxometry", log=lambda line: None)
    pinned = {f"{name}=={importlib.metadata.version(name)}" for name in ("numpy", "vtk", "torch")}
    assert pinned <= set(calls["constraints"])  # the versions installed here, pinned
    assert "nibabel>=5.0" in calls["dialogs"][0][0]  # asked first
    if installer is not None:
        assert calls["pip_ensure"] == ["nibabel>=5.0"] and calls["requester"] == "DiscVBR" and calls["installer"] == installer
    else:
        assert calls["pip_install"][0] == "-c" and calls["pip_install"][2:] == ["nibabel>=5.0"]
    assert "torch_checked" not in calls  # only DiscSegmentation asks for torch


def test_declining_the_install_names_what_is_missing(monkeypatch):
    from discvbr.extension import dependencies

    calls = _fake_slicer(monkeypatch, installer=None, confirm=False)
    monkeypatch.setattr(dependencies, "unmet_requirements", lambda reqs: ["nibabel>=5.0"])
    with pytest.raises(DiscVBRError, match="DiscStatistics cannot run without: nibabel>=5.0"):
        dependencies.ensure_slicer_dependencies("DiscStatistics", log=lambda line: None)
    assert "nibabel>=5.0" in calls["dialogs"][0][0] and "pip_install" not in calls


def test_self_tests_never_install_or_open_dialogs(monkeypatch):
    from discvbr.extension import dependencies

    calls = _fake_slicer(monkeypatch, installer="pydeps", testing=True)
    monkeypatch.setattr(dependencies, "unmet_requirements", lambda reqs: ["itk-elastix==0.25.4"])
    with pytest.raises(DiscVBRError, match="self-tests never install packages"):
        dependencies.ensure_slicer_dependencies("DiscRelaxometry", log=lambda line: None)
    assert calls["dialogs"] == [] and "pip_ensure" not in calls


@pytest.mark.parametrize("restart", [True, False])
def test_upgrading_an_imported_package_offers_a_restart(monkeypatch, restart):
    from discvbr.extension import dependencies

    calls = _fake_slicer(monkeypatch, installer=None, restart=restart)
    monkeypatch.setattr(dependencies, "unmet_requirements", lambda reqs: ["scipy>=99"])  # scipy is installed and imported
    with pytest.raises(DiscVBRError, match="restart 3D Slicer to use the upgraded scipy"):
        dependencies.ensure_slicer_dependencies("DiscStatistics", log=lambda line: None)
    assert "scipy" in calls["dialogs"][1][0] and calls.get("restarted", False) == restart


def test_each_module_asks_only_for_what_it_needs():
    from discvbr.extension.dependencies import MODULE_PACKAGES, TORCH_MODULES, module_requirements, read_requirements

    everything = {re.split(r"[<>=!~ ]", r)[0] for r in read_requirements()}
    for module in MODULE_PACKAGES:
        names = {re.split(r"[<>=!~ ]", r)[0] for r in module_requirements(module)}
        assert names <= everything
    assert "itk-elastix" not in {re.split(r"[<>=!~ ]", r)[0] for r in module_requirements("DiscSegmentation")}
    assert "safetensors" not in {re.split(r"[<>=!~ ]", r)[0] for r in module_requirements("DiscRelaxometry")}
    assert TORCH_MODULES == ("DiscSegmentation",)
    with pytest.raises(DiscVBRError, match="unknown module"):
        module_requirements("DiscNothing")


def test_imported_upgrades_are_those_already_loaded():
    from importlib.metadata import PackageNotFoundError

    from discvbr.extension.dependencies import imported_upgrades

    installed = {"scipy": "1.0", "scikit-image": "0.20"}

    def version_of(name):
        if name not in installed:
            raise PackageNotFoundError(name)
        return installed[name]

    missing = ["scipy>=1.10", "scikit-image>=0.21", "nibabel>=5.0"]
    assert imported_upgrades(missing, version_of=version_of, modules={"scipy": 1}) == ["scipy"]
    assert imported_upgrades(missing, version_of=version_of, modules={"skimage": 1, "scipy": 1}) == ["scipy", "scikit-image"]


def _after(function, then):
    def wrapped(*args, **kwargs):
        function(*args, **kwargs)
        then()
    return wrapped


def test_shipped_data_have_one_home():
    """The modules and the packages find the shipped data through discvbr.resources, not copies of it."""
    from discvbr import resources
    from discvbr.extension import relaxometry, segmentation
    from discvbr.registration import params
    from discvbr.registration.atlas import ATLAS_DIR, available_atlases
    from discvbr.segmentation import model_store

    assert model_store.default_model_path is resources.default_model_path
    assert model_store.MODELS_DIR is resources.MODELS_DIR
    assert segmentation.default_model_path is resources.default_model_path
    assert relaxometry.PARAMETER_DIR is resources.PARAMETER_DIR
    assert not hasattr(segmentation, "SHIPPED_MODEL") and not hasattr(relaxometry, "SHIPPED_PARAMETERS")
    assert params.PARAMETER_DIR is resources.PARAMETER_DIR and ATLAS_DIR is resources.ATLAS_DIR
    assert params.parameter_file_names is resources.parameter_file_names
    for ndim in (2, 3):
        assert relaxometry.DiscRelaxometryLogic.preset_file_names(ndim) == params.parameter_file_names(ndim)
    expected = sorted({re.sub(r"-[23]d$", "", name) for name in available_atlases()})
    assert relaxometry.DiscRelaxometryLogic.atlas_choices() == expected


BLOCKER = r"""
import importlib.abc, sys
HEAVY = {"torch", "itk", "scipy", "pandas", "nibabel", "nrrd", "skimage", "matplotlib", "numba", "typer", "rich", "safetensors", "optuna", "dask"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in HEAVY:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)")
sys.meta_path.insert(0, Block())
from discvbr.mrml.scene import new_scene
from discvbr.extension import segmentation, relaxometry, statistics
scene = new_scene()
seg = segmentation.DiscSegmentationLogic(scene)
rel = relaxometry.DiscRelaxometryLogic(scene)
sta = statistics.DiscStatisticsLogic(scene)
print(seg.disabled_reason(seg.parameter_node()))
print(rel.disabled_reason(rel.parameter_node()))
print(sta.disabled_reason(sta.parameter_node()))
print('(Transform "BSplineTransform")' in rel.parameter_texts(rel.parameter_node(), ndim=3)["bspline-3d.txt"])
"""


def test_modules_load_and_explain_before_dependencies_are_installed():
    """In a fresh Slicer, without torch, itk, scipy, pandas...: the logic imports and the buttons explain."""
    result = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()[-4:]
    assert lines[0].startswith("Select the input volume")
    assert lines[1].startswith("Select the echo volumes")
    assert lines[2].startswith("Choose a study folder")
    assert lines[3] == "True"  # the preset view reads the shipped parameter files
