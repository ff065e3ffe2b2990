"""Starting the Streamlit dashboard for `explorer dashboard`.

The app runs as ``python -m dashboard.launch run dashboard/app.py`` (exec'd in place
of this process on POSIX, a child process elsewhere): streamlit's own ``run``, in
the same process, after dashboard.launch has read the store for the first page, so
that the page finds it read. It runs with settings that are not left to a config
file: bound to the given host (loopback by default), headless, no usage statistics,
XSRF protection on, no file watcher. The store URL reaches the app as a script
argument (``-- --store URL``) and is only ever opened read-only there.

Needs neither torch, ray nor streamlit to import.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

__all__ = [
    "NotServing",
    "free_local_port",
    "is_loopback",
    "port_problem",
    "serve",
    "streamlit_command",
    "wait_until_serving",
]

_DEFAULT_HOST = "127.0.0.1"
_DEFAULT_PORT = 8501


def _app_path() -> Path:
    """dashboard/app.py of the installed package (an editable or a regular install).

    The dashboard package is installed beside explorer (both at the top of
    site-packages, or both in the checkout): found as a file there, never imported
    (that would import streamlit into the CLI).
    """
    app = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
    if not app.is_file():
        raise FileNotFoundError(f"the dashboard is not installed with explorer (no {app})")
    return app


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost': only this machine can connect."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def port_problem(host: str, port: int) -> str | None:
    """Why the dashboard cannot listen on host:port (busy, bad address), or None.

    Binds a socket the way the server will (with SO_REUSEADDR, so a port in
    TIME_WAIT counts as free) and releases it at once.
    """
    if not 0 < port < 65536:
        return f"--port {port}: use a port between 1 and 65535"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as problem:
        return f"--host {host}: cannot resolve it ({problem.strerror})"
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
            probe.listen(1)
        except OSError as problem:
            if problem.errno == errno.EADDRINUSE:
                return (f"port {port} on {host} is already in use; pick another with "
                        "--port N (or stop what is listening there)")
            if problem.errno == errno.EACCES:
                return f"port {port} on {host} needs privileges; use a port above 1023"
            if problem.errno == errno.EADDRNOTAVAIL:
                return f"--host {host} is not an address of this machine"
            return f"cannot listen on {host}:{port}: {problem.strerror}"
    return None


class NotServing(RuntimeError):
    """A dashboard process that exited, or did not answer in time; one line."""


def free_local_port() -> int:
    """A port on 127.0.0.1 nothing listens on right now (for tests and scripts)."""
    with socket.socket() as probe:
        probe.bind((_DEFAULT_HOST, 0))
        return int(probe.getsockname()[1])


def wait_until_serving(process: subprocess.Popen[str], port: int, seconds: float = 60) -> None:
    """Return once the dashboard `process` started answers Streamlit's health check on
    127.0.0.1:`port`; NotServing if it exits first (with its output) or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while True:
        if process.poll() is not None:
            raise NotServing(f"the dashboard exited: {process.communicate()[0]}")
        try:
            with urllib.request.urlopen(f"http://{_DEFAULT_HOST}:{port}/_stcore/health",
                                        timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise NotServing(f"the dashboard did not come up in {seconds:g} s")
        time.sleep(0.3)


def streamlit_command(store_url: str, host: str = _DEFAULT_HOST,
                      port: int = _DEFAULT_PORT, bin_above: int | None = None) -> list[str]:
    """The child process's argv: every setting on the command line, the URL as a script arg
    (and `bin_above`, the candidates above which error vs cost draws density bins, when
    given: the app's default otherwise)."""
    return [
        sys.executable, "-m", "dashboard.launch", "run", str(_app_path()),
        f"--server.address={host}",
        f"--server.port={port}",
        "--server.headless=true",
        "--browser.gatherUsageStats=false",
        "--server.enableXsrfProtection=true",
        "--server.enableCORS=true",
        "--server.fileWatcherType=none",
        "--server.runOnSave=false",
        "--global.developmentMode=false",
        "--client.toolbarMode=viewer",
        "--",
        "--store", store_url,
        *(["--bin-above", str(bin_above)] if bin_above is not None else []),
    ]


def serve(store_url: str, host: str = _DEFAULT_HOST, port: int = _DEFAULT_PORT) -> int:
    """Run the dashboard until it stops; returns its exit code.

    On POSIX the streamlit process replaces this one (exec): Ctrl-C, SIGTERM
    and a supervisor's kill reach the server itself, and no server is left
    behind when its parent dies. Elsewhere it runs as a child process.
    """
    command = streamlit_command(store_url, host, port)
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":
        os.execv(command[0], command)
    child = subprocess.Popen(command)
    try:
        return child.wait()
    except KeyboardInterrupt:
        child.terminate()
        try:
            return child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            return child.wait()
