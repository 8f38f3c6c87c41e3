"""EdgeVision must work with the network blocked: every socket attempt in the child is logged."""

from __future__ import annotations

from tests.helpers import network_attempts, run_cli


def test_demo_and_convert_make_no_network_attempt(tmp_path):
    block = tmp_path / "net"
    res = run_cli("demo", "--work", tmp_path / "demo", "--n", "20", "--data-only", block_network=block)
    assert res.returncode == 0, res.stdout + res.stderr
    res = run_cli("convert", tmp_path / "demo" / "1-coco", tmp_path / "again", "--to", "voc", block_network=block)
    assert res.returncode == 0, res.stderr
    res = run_cli("formats", block_network=block)
    assert res.returncode == 0
    assert network_attempts(block) == []


def test_blocker_really_blocks(tmp_path):
    """The blocker itself works: a child that tries to connect is logged (guards the test above)."""
    import os
    import subprocess
    import sys

    block = tmp_path / "net"
    run_cli("--version", block_network=block)  # writes sitecustomize.py
    env = dict(os.environ, PYTHONPATH=str(block), EDGEVISION_TEST_NETLOG=str(block / "netlog.txt"))
    subprocess.run([sys.executable, "-c", "import socket\ntry:\n socket.create_connection(('127.0.0.1', 9))\nexcept OSError: pass"],
                   env=env, check=True)
    assert len(network_attempts(block)) == 1
