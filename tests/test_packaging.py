"""A wheel built from the checkout holds what an install outside the checkout needs: every module, the configs
(installed as ``drifting_policy.configs`` and ``drifting_image.configs``), the shipped PushT demonstrations and the
BlockPush URDFs; unpacked onto the path of a process started elsewhere, the config folders and the shipped data
resolve inside it.

The wheel is built without build isolation (the tests run offline) from a copy of the build's inputs, because the
build writes ``build/`` and ``*.egg-info`` next to the sources.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_ROOTS = ("drifting", "drifting_policy", "drifting_image", "envs")
SHIPPED_DATA = ("envs/pusht/data/pusht_expert_lowdim.zarr.zip", "envs/blockpush/assets/block.urdf",
                "envs/blockpush/assets/pusher.urdf")
POLICY_CONFIG_GROUPS = ("experiment", "method", "network", "task", "task_base")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    source.mkdir()
    for path in [ROOT / "pyproject.toml", ROOT / "README.md", *ROOT.glob("LICEN[CS]E*")]:
        shutil.copy(path, source / path.name)
    for name in (*PACKAGE_ROOTS, "configs"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                            "--wheel-dir", str(tmp / "dist"), str(source)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    (built,) = (tmp / "dist").glob("*.whl")
    return built


def checkout_modules() -> list[str]:
    return sorted(str(path.relative_to(ROOT)) for name in PACKAGE_ROOTS for path in (ROOT / name).rglob("*.py"))


def test_the_wheel_holds_every_module_config_and_shipped_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert not [module for module in checkout_modules() if module not in names]
    configs = ROOT / "configs"
    policy_configs = [path for path in configs.rglob("*.yaml") if path.parent != configs / "image"]
    assert {path.parent.name for path in policy_configs} >= set(POLICY_CONFIG_GROUPS)
    expected = {"drifting_policy/configs/train.yaml", "drifting_policy/configs/__init__.py",
                "drifting_image/configs/__init__.py", *SHIPPED_DATA,
                *(f"drifting_policy/configs/{path.relative_to(configs)}" for path in policy_configs),
                *(f"drifting_image/configs/{path.name}" for path in (configs / "image").glob("*.yaml"))}
    assert not sorted(expected - names)
    assert not [name for name in names if name.startswith("drifting_policy/configs/image/")]
    entry_points = next(name for name in names if name.endswith(".dist-info/entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    for line in ("drifting-toy = drifting.toy:main", "drifting-policy = drifting_policy.cli:main",
                 "drifting-image = drifting_image.cli:main"):
        assert line in scripts


def test_configs_and_shipped_data_resolve_inside_the_installed_packages(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = textwrap.dedent("""
        import importlib.resources, json
        from drifting_policy.config import CONFIG_DIR, compose_train_config
        task = ["task=pusht_lowdim", "method=drifting", "network=unet_lowdim"]
        shipped, _ = compose_train_config(task)
        own, _ = compose_train_config([*task, "task.zarr_path=my/demos.zarr"])
        print(json.dumps({"config_dir": str(CONFIG_DIR),
                          "image_configs": str(importlib.resources.files("drifting_image.configs")),
                          "blockpush": str(importlib.resources.files("envs.blockpush")),
                          "shipped": shipped.task.env_runner.dataset_path, "own": own.task.dataset.data}))
    """)
    env = {key: value for key, value in os.environ.items() if key != "DRIFTING_POLICY_CONFIG_DIR"}
    run = subprocess.run([sys.executable, "-c", script], cwd=elsewhere, env={**env, "PYTHONPATH": str(site)},
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    found = {key: Path(value) for key, value in json.loads(run.stdout.splitlines()[-1]).items()}
    assert found["config_dir"] == site / "drifting_policy" / "configs"
    assert (found["config_dir"] / "train.yaml").is_file()
    assert found["image_configs"] == site / "drifting_image" / "configs"
    assert (found["image_configs"] / "mnist_tiny.yaml").is_file()
    assert found["shipped"] == site / SHIPPED_DATA[0] and found["shipped"].is_file()
    assert (found["blockpush"] / "assets" / "pusher.urdf").is_file()
    assert found["own"] == Path("my/demos.zarr")  # a user's relative path stays relative to the working directory
