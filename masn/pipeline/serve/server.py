"""Starting `masn serve`: the serve extra checked, the app built (the store and the runs read,
so that a wrong path is one line before anything listens), the socket bound, the URL printed,
and uvicorn serving until Ctrl+C.

Why Starlette + Jinja2 + uvicorn: the views are pages of a researcher's own data (a paged list
of 100,000 videos, tables filtered by URL, deep links from a wrong answer to its video), which
server-side templates render in plain HTML with no JavaScript framework and nothing fetched from
the network; Starlette is a small, stable ASGI toolkit (one dependency) with streaming request
bodies (upload limits enforced while reading) and a test client, uvicorn its reference server,
Jinja2 already comes with torch. An ML-demo framework such as Gradio was weighed: it brings
~50 packages and a large front-end, fetches web fonts and sends analytics unless configured
otherwise, and its component model fits one input-output demo better than browsing and
comparing.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import logging
import socket
import threading

from masn.errors import InvalidInput, MissingInput
from masn.pipeline.serve.settings import ServeSettings

log = logging.getLogger(__name__)

INSTALL = "pip install 'masn[serve]'"
MODULES = ("starlette", "uvicorn", "jinja2", "python_multipart")  # the serve extra's imports
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")
QUESTION_THREADS = 1  # torch CPU threads per question (create_app says why)


def check_extra() -> None:
    """Refuses to start without the serve extra, naming the install command."""
    missing = [name for name in MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingInput(
            f"masn serve needs its web libraries ({', '.join(missing)} missing): {INSTALL}"
        )


def is_local(host: str) -> bool:
    """Whether ``host`` is a loopback address or name (only this machine can connect)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (port 0: a free one)."""
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM
        )[0]
    except socket.gaierror as error:
        raise InvalidInput(f"--host {host}: unknown address ({error.strerror})") from None
    listener = socket.socket(family, kind, protocol)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(address)
    except OSError as error:
        listener.close()
        raise InvalidInput(
            f"cannot listen on {host}:{port} ({error.strerror}): choose another --port "
            "(0 picks a free one)"
        ) from None
    listener.listen(128)
    listener.set_inheritable(True)
    return listener


def address_url(listener: socket.socket) -> str:
    """The URL of the app behind ``listener``."""
    host, port = listener.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def serve(settings: ServeSettings) -> int:
    """Runs the app until interrupted; returns the exit status."""
    check_extra()
    import uvicorn

    from masn.pipeline.serve.app import create_app

    app = create_app(settings, question_threads=QUESTION_THREADS)
    if not is_local(settings.host):
        log.warning(
            "masn serve listens on %s: anyone who can reach this machine can browse the store, "
            "read the runs and run the models; use --host 127.0.0.1 unless that is intended",
            settings.host,
        )
    listener = bind(settings.host, settings.port)
    # The models load while the first pages are served (torch takes seconds to import).
    threading.Thread(target=app.state.served.warm, name="load-models", daemon=True).start()
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    print(f"masn serve: {address_url(listener)}  (Ctrl+C stops it)", flush=True)
    try:
        server.run(sockets=[listener])
    finally:
        listener.close()
    return 0
