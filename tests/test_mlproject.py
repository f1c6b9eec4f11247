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
    passed = re.findall(r"(--[a-z0-9-]+) \{(\w+)\}", command)
    assert {param for _, param in passed} == set(entry.get("parameters", {})), "every parameter is passed once"
    for flag, param in passed:
        assert flag in options, f"{name}: {flag} (for {param}) is not an option of {words[1]}"
        assert flag == "--" + param.replace("_", "-"), f"{name}: parameter {param} should map to --{param.replace('_', '-')}"


def mlproject_default_matches(spec: dict, option) -> str | None:
    """Why an MLproject parameter and the click option it feeds disagree (type or default), or None."""
    import click

    declared = spec.get("type", "string") if isinstance(spec, dict) else spec
    numeric = isinstance(option.type, (click.types.IntParamType, click.types.FloatParamType))
    if declared != ("float" if numeric else "string"):
        return f"type {declared!r}, but the option is {option.type.name}"
    if not isinstance(spec, dict) or "default" not in spec:
        return None if option.required or option.default is None else f"no default, the option has {option.default!r}"
    default = option.default
    if isinstance(option.type, click.types.BoolParamType):
        return None if str(spec["default"]).lower() == str(default).lower() else f"default {spec['default']!r} != {default!r}"
    if numeric:
        return None if default is not None and float(spec["default"]) == float(default) else \
            f"default {spec['default']!r} != {default!r}"
    expected = "" if default is None else str(default)
    return None if str(spec["default"]) == expected else f"default {spec['default']!r} != {expected!r}"


@pytest.mark.parametrize("name", sorted(PROJECT["entry_points"]))
def test_mlproject_parameters_have_the_types_and_defaults_of_the_config_they_feed(name):
    """Click options come from the config dataclasses: an MLproject default that differs fails here."""
    entry = PROJECT["entry_points"][name]
    main = load_command(shlex.split(" ".join(entry["command"].split()))[1])
    options = {p.name: p for p in main.params}
    problems = [f"{name}.{param}: {why}" for param, spec in entry.get("parameters", {}).items()
                if (why := mlproject_default_matches(spec, options[param]))]
    assert not problems, "MLproject disagrees with the entry point's config:\n" + "\n".join(problems)


def test_the_default_check_catches_a_changed_default():
    from heardet.approaches.finetune.train import FinetuneConfig

    main = load_command("entrypoints/finetune.py")
    option = next(p for p in main.params if p.name == "head_lr")
    assert option.default == FinetuneConfig().head_lr
    assert mlproject_default_matches({"type": "float", "default": 3e-4}, option) is None
    assert "default" in mlproject_default_matches({"type": "float", "default": 1e-3}, option)
    assert "type" in mlproject_default_matches({"type": "string", "default": 3e-4}, option)


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
