"""Ray as `nas launch` and `nas ablate` start or join it.

Without --address, a local Ray inside this process, listening on 127.0.0.1 only, with a
watchdog (`nas.cli.ray_reaper`) that kills what it leaves if this process dies abruptly. With
--address, an existing cluster: checked to answer, and joined with the token authentication
it was started with (Ray 2.60's `ray start --head` turns it on when it finds a token).
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from nas.errors import ConfigError

RAY_PROBE_TIMEOUT_S = 5.0  # a GCS that does not accept a TCP connection in this long is not there
AUTH_MODE = "RAY_AUTH_MODE"  # Ray's switch: token | disabled; unset, Ray guesses per command


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


# ---- token authentication -----------------------------------------------------------------
# A driver must use the cluster's mode: without the token a token cluster refuses it (ray.init
# retries for ~40 s, then "Failed to connect to Ray cluster"); with token mode on a cluster
# without it, ray.init succeeds but every trial's actor dies unstarted. Ray itself enables
# token mode only for `ray.init()`/`auto` and only when it finds a token, whatever the cluster
# does; so nas asks the cluster: a GCS client without a token is refused at once by a token
# cluster.


@contextmanager
def _auth_mode(mode: str) -> Iterator[None]:
    """This process's Ray in authentication `mode` for the block (Ray reads the variable into
    its cached config, hence the refresh, as Ray's own `_enable_token_auth` does)."""
    from ray._raylet import Config

    before = os.environ.get(AUTH_MODE)
    os.environ[AUTH_MODE] = mode
    Config.initialize("")
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(AUTH_MODE, None)
        else:
            os.environ[AUTH_MODE] = before
        Config.initialize("")


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """File descriptor 2 to /dev/null for the block: Ray's C++ GCS client logs each refusal
    there before it raises."""
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _gcs_accepts(address: str, gcs: str) -> bool:
    """Whether the GCS at `gcs` answers this process in its current authentication mode."""
    from ray._raylet import InnerGcsClient
    from ray.exceptions import AuthenticationError

    try:
        with _quiet_stderr():
            InnerGcsClient.standalone(gcs, None, int(RAY_PROBE_TIMEOUT_S * 1000))
    except AuthenticationError:
        return False
    except Exception as err:  # noqa: BLE001 - Ray's client raises several kinds; one line for all
        raise ConfigError(f"--address {address}: {gcs} accepts connections but answers no Ray GCS request "
                          f"({type(err).__name__}); check the address and port.") from None
    return True


def _match_token_auth(address: str, gcs: str) -> None:
    """Set this process's RAY_AUTH_MODE to the cluster's, or say in one line what to set."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config
    except ImportError:  # a Ray without token authentication
        return
    with _auth_mode("disabled"):
        wants_token = not _gcs_accepts(address, gcs)
    needed = "token" if wants_token else "disabled"
    mode = os.environ.get(AUTH_MODE)
    if mode is not None and mode.lower() != needed:
        if wants_token:
            raise ConfigError(f"--address {address}: the Ray cluster there requires token authentication, but "
                              f"{AUTH_MODE}={mode} here; set {AUTH_MODE}=token or unset it.")
        raise ConfigError(f"--address {address}: the Ray cluster there runs without token authentication, but "
                          f"{AUTH_MODE}={mode} here, so no trial could start; unset {AUTH_MODE}.")
    if wants_token and not AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True):
        _refuse_token(address, "none was found here")  # Ray's client would abort the process
    os.environ[AUTH_MODE] = needed
    Config.initialize("")
    if wants_token and not _gcs_accepts(address, gcs):
        _refuse_token(address, "it refused the token found here")


def _refuse_token(address: str, why: str) -> None:
    raise ConfigError(f"--address {address}: the Ray cluster there requires its auth token and {why}; put the "
                      "head's token (`ray get-auth-token` on the head prints it) in RAY_AUTH_TOKEN or "
                      "~/.ray/auth_token.")


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
        gcs = _probe_gcs(address)
        if gcs is not None:
            _match_token_auth(address, gcs)
    # Trial errors reach the store (trials.error); Ray's own chatter stays in its logs.
    try:
        # "local": a Ray of its own, not whichever cluster another process on this machine
        # started last (what ray.init() with no address joins)
        ray.init(address=address or "local", include_dashboard=False, configure_logging=True,
                 logging_level=logging.ERROR, log_to_driver=False)
    except ConnectionError as err:
        if address is None:
            raise
        raise ConfigError(f"--address {address}: cannot join Ray there ({err}); check the address.") from None
    for name in ("ray", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.ERROR)
