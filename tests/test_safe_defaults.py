"""Safe defaults: no Ray dashboard, YAML and checkpoints load without running code."""

from __future__ import annotations

import pytest
import ray
import torch

from automl.errors import UserError
from automl.execution import Resources, ray_session
from automl.space import load_space


def test_local_ray_starts_without_dashboard_and_stops_after():
    if ray.is_initialized():
        ray.shutdown()
    with ray_session(Resources()) as dashboard:
        assert dashboard is None and ray.is_initialized()
    assert not ray.is_initialized()  # started here, so stopped here


def test_space_yaml_is_read_with_the_safe_loader(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("family: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(UserError, match="YAML"):  # refused: the safe loader runs no code
        load_space(str(path))


def test_checkpoints_refuse_pickled_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"algo": "dqn", "x": Payload()}, path)
    from rl.cli import main

    assert main(["evaluate", "--checkpoint", str(path)]) == 2
