"""Starts moto's server (installed by `make deps` into .venv) on a free loopback port, for
the benchmarks that talk to the AWS backend.

    from moto_server import start
    moto, port = start(env)   # returns once the port accepts connections
"""
import os, pathlib, socket, subprocess, sys, time

MOTO_BIN = pathlib.Path(__file__).resolve().parent.parent / ".venv" / "bin" / "moto_server"


def start(env=None):
    """Returns (the moto_server process, its port). Exits with the install command when
    moto is missing."""
    if not os.access(MOTO_BIN, os.X_OK):
        sys.exit(f"{MOTO_BIN} missing: run `make deps` first")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    moto = subprocess.Popen([str(MOTO_BIN), "-H", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.1)
    return moto, port
