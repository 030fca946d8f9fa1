"""Reading and checking an experiment needs no torch (it takes seconds to import)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_load_experiment_never_imports_torch():
    result = _run(
        "import sys; from nas.config.experiment import load_experiment; "
        'load_experiment("search_spaces/cifar_fast.yaml", "cpu"); assert "torch" not in sys.modules'
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "module",
    ["nas.config.validate", "nas.config.yaml_io", "nas.config.space", "nas.config.experiment",
     "nas.models", "nas.models.arch", "nas.training.recipe", "nas.data.config", "nas.errors"],
)
def test_config_modules_import_no_torch(module):
    result = _run(f'import sys, {module}; assert "torch" not in sys.modules, "{module} imported torch"')
    assert result.returncode == 0, result.stderr


def test_the_torch_parts_of_nas_models_load_on_first_use():
    result = _run(
        "import sys, nas.models as m; assert 'torch' not in sys.modules; "
        "from nas.models import build_model; assert 'torch' in sys.modules; "
        "assert m.build_model is build_model and 'count_flops' in dir(m)"
    )
    assert result.returncode == 0, result.stderr


def test_an_unknown_name_of_nas_models_is_an_attribute_error():
    import nas.models

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        nas.models.nope  # noqa: B018
