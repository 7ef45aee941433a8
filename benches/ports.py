"""Loopback ports for the benchmarks that start servers (mirror.py, webhooks.py, moto_server.py)."""
import socket, sys, time


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, seconds=15):
    """Waits up to `seconds` until something accepts on 127.0.0.1:`port`, else exits."""
    for _ in range(int(seconds * 20)):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")
