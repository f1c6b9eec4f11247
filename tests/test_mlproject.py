"""The MLproject and the entry points agree: every command names a script whose click
options accept every parameter the MLproject passes."""

import importlib.util
import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROJECT = yaml.safe_load((ROOT / "MLproject").read_text())


def load_command(script: str):
    spec = importlib.util.spec_from_file_location(Path(script).stem, ROOT / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.mark.parametrize("name", sorted(PROJECT["entry_points"]))
def test_entry_point_command_matches_its_click_options(name):
    entry = PROJECT["entry_points"][name]
    command = " ".join(entry["command"].split())
    words = shlex.split(command)
    assert words[:1] == ["python"] and words[1].startswith("entrypoints/"), command
    main = load_command(words[1])
    options = {opt for p in main.params for opt in p.opts}
    passed = re.findall(r"(--[a-z-]+) \{(\w+)\}", command)
    assert {param for _, param in passed} == set(entry.get("parameters", {})), "every parameter is passed once"
    for flag, param in passed:
        assert flag in options, f"{name}: {flag} (for {param}) is not an option of {words[1]}"
        assert flag == "--" + param.replace("_", "-"), f"{name}: parameter {param} should map to --{param.replace('_', '-')}"


def test_no_entry_point_script_shadows_a_package_it_imports():
    """`python entrypoints/x.py` puts entrypoints/ first on sys.path: x must not be a package name."""
    import importlib.util

    for script in (ROOT / "entrypoints").glob("*.py"):
        spec = importlib.util.find_spec(script.stem) if script.stem != "main" else None
        assert spec is None or Path(spec.origin or "").parent == script.parent, \
            f"entrypoints/{script.name} shadows the installed package {script.stem!r}"


def test_dataset_parameters_are_strings_not_paths():
    for name, entry in PROJECT["entry_points"].items():
        for param in ("data", "out"):
            spec = entry.get("parameters", {}).get(param)
            if spec is not None:
                assert spec["type"] == "string", f"{name}.{param} must be a string (MLflow resolves paths oddly)"
