"""Starts moto's server (installed by `make deps` into .venv) on a free loopback port, for
the benchmarks that talk to the AWS backend.

    from moto_server import start
    moto, port = start(env)   # returns once the port accepts connections
"""
import os, pathlib, subprocess, sys

from ports import free_port, wait_port

MOTO_BIN = pathlib.Path(__file__).resolve().parent.parent / ".venv" / "bin" / "moto_server"


def start(env=None):
    """Returns (the moto_server process, its port). Exits with the install command when
    moto is missing."""
    if not os.access(MOTO_BIN, os.X_OK):
        sys.exit(f"{MOTO_BIN} missing: run `make deps` first")
    port = free_port()
    moto = subprocess.Popen([str(MOTO_BIN), "-H", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, seconds=30)
    return moto, port
