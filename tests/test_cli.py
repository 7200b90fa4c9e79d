"""The console script's contract: help, version, global options, exit codes, device choice."""

import pytest

from conftest import run_cli
from ppvi_cli import __version__
from ppvi_cli.device import select_device
from ppvi_cli.errors import PPVIError
from ppvi_cli.registry import Registry


def test_version_and_help():
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"ppvi {__version__}"
    helptext = run_cli("--help")
    assert helptext.returncode == 0
    for word in ("anonymize", "privacy", "chaos", "data", "demo", "--json", "--device", "--seed"):
        assert word in helptext.stdout
    anon_help = run_cli("anonymize", "--help")
    assert "--method" in anon_help.stdout and "--shard" in anon_help.stdout


def test_usage_errors_exit_2():
    assert run_cli("no-such-command").returncode == 2
    missing = run_cli("anonymize", "--method", "mosaic")
    assert missing.returncode == 2 and "--input" in missing.stderr


def test_select_device():
    import torch

    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(PPVIError, match="invalid --device 'gpu'"):
        select_device("gpu")
    with pytest.raises(PPVIError, match=r"not available \(torch.cuda.is_available\(\)="):
        select_device("cuda:99")


def test_registry_refuses_duplicates_and_suggests():
    reg = Registry("protocol")
    reg.register("market")(object)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("market")(object)
    with pytest.raises(PPVIError, match="unknown protocol 'markt'; did you mean 'market'"):
        reg.get("markt")
