"""TRL's private API is used in one module, pinned to one TRL version: a different version fails naming each use."""

import importlib
import inspect

import pytest
import trl

from selfplay.trl_seam import PRIVATE_USES, TRL_VERSION, check_trl_version


def test_the_installed_trl_is_the_version_the_private_uses_were_written_for():
    assert trl.__version__ == TRL_VERSION
    check_trl_version()


def test_another_version_fails_naming_every_private_use():
    with pytest.raises(RuntimeError) as error:
        check_trl_version("99.0.0")
    message = str(error.value)
    assert "TRL 99.0.0" in message and TRL_VERSION in message
    for name in PRIVATE_USES:
        assert name in message


def test_every_named_private_use_exists_in_the_installed_trl():
    grpo_source = inspect.getsource(trl.GRPOTrainer)
    for name in PRIVATE_USES:
        owner, _, attributes = name.rpartition(".")
        for attribute in attributes.split(", "):
            if owner == "GRPOTrainer":
                assert f"self.{attribute}" in grpo_source or hasattr(trl.GRPOTrainer, attribute), name
            else:
                assert hasattr(importlib.import_module(owner), attribute), name


def test_no_other_module_reaches_into_trl_privately():
    import pathlib
    import re

    root = pathlib.Path(__file__).parent.parent
    private = re.compile(r"trainer\._[a-z]|trl\w*\.\w*\._|grpo_trainer\.\w+\s*=|_use_triton")
    offenders = [str(path.relative_to(root)) for folder in ("selfplay", "rewards", "sandboxes")
                 for path in (root / folder).rglob("*.py")
                 if path.name != "trl_seam.py" and private.search(path.read_text())]
    assert offenders == []
