"""Ray as `nas launch` and `nas ablate` start or join it.

Without --address, a local Ray inside this process, listening on 127.0.0.1 only, with a
watchdog (`nas.cli.ray_reaper`) that kills what it leaves if this process dies abruptly. With
--address, an existing cluster, checked to answer first.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from nas.errors import ConfigError

RAY_PROBE_TIMEOUT_S = 5.0  # a GCS that does not accept a TCP connection in this long is not there


def check_ray_address(address: str | None) -> None:
    """Refuse an --address this process cannot drive, before anything else runs: a Ray client
    (ray://) address cannot run the Tune loop here, and the rest must read as HOST:PORT or auto."""
    if address is None or address in ("auto", "local"):
        return
    if address.startswith("ray://"):
        raise ConfigError(f"--address {address}: a Ray client address cannot run the search here; give the "
                          "head's GCS address (HEAD:6379), or run nas on the head node with --address auto.")
    host, sep, port = address.rpartition(":")
    if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
        raise ConfigError(f"--address {address}: expected HOST:PORT of the Ray head's GCS, e.g. 10.0.0.1:6379, "
                          "or auto.")


def _probe_gcs(address: str) -> str | None:
    """A plain TCP connect to the GCS of `address`, with a short timeout (ray.init would retry
    an address nothing listens on for minutes); the GCS's HOST:PORT (None: ray.init finds it)."""
    resolved = address
    if address == "auto":  # the running cluster's address, as ray.init finds it
        try:  # a private module of Ray's: it may move
            from ray._private.services import canonicalize_bootstrap_address
        except ImportError:
            return None  # ray.init finds it, or says it found none
        try:
            resolved = canonicalize_bootstrap_address(address)
        except (ValueError, ConnectionError, OSError) as err:
            raise ConfigError(f"--address {address}: {err}; start Ray (`ray start --head`) or omit --address.") from None
    host, _, port = resolved.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=RAY_PROBE_TIMEOUT_S).close()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ConfigError(f"--address {address}: no Ray GCS answers at {resolved} ({reason}); start the head "
                          "with `ray start --head` or give its address, or omit --address for a local Ray.") from None
    return resolved


# ---- the local Ray ------------------------------------------------------------------------


def _bind_loopback() -> None:
    """Make the local Ray listen on 127.0.0.1 only.

    Ray 2.60's gRPC servers (GCS, raylet, every worker) listen on 127.0.0.1 exactly when the
    node's IP is 127.0.0.1, else on all interfaces; and ray.init(_node_ip_address="127.0.0.1")
    is rewritten to the machine's address. Ray picks 127.0.0.1 itself where it may not form a
    cluster (its default on macOS and Windows, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0). The
    variable reaches the processes Ray starts; the constant is set too, since Ray reads the
    variable when it is imported, which may have happened already.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def start_ray(address: str | None) -> None:
    """Start a local Ray (address None) or join the cluster at `address`, once per process.

    $RAY_ADDRESS, which ray.init would join, counts as --address.
    """
    import logging

    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address == "local":
        address = None
    if address is None:
        _bind_loopback()
        from nas.cli.ray_reaper import start as start_reaper

        start_reaper(str(Path(ray.__file__).parent))
    else:
        check_ray_address(address)
        _probe_gcs(address)
    # Trial errors reach the store (trials.error); Ray's own chatter stays in its logs.
    try:
        ray.init(address=address, include_dashboard=False, configure_logging=True,
                 logging_level=logging.ERROR, log_to_driver=False)
    except ConnectionError as err:
        if address is None:
            raise
        raise ConfigError(f"--address {address}: cannot join Ray there ({err}); check the address.") from None
    for name in ("ray", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.ERROR)
