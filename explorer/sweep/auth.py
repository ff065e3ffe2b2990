"""Token authentication: joining a Ray cluster that requires a token, with the token Ray
finds on this machine, and one line that says what to do where it finds none."""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray

from explorer.errors import SetupError
from explorer.sweep.process import environment, native_stderr_to

__all__ = ["AUTH_ERRORS", "TOKEN_FIX", "token_auth"]


# Ray (2.52 on) makes every call carry one shared token when RAY_AUTH_MODE=token. Ray turns
# that mode on by itself for a cluster it starts or finds (`ray.init()`, `--address auto`,
# `ray start --head` once ~/.ray/auth_token exists, and any local `ray.init()` writes it),
# never for an address it is given: there ray.init retries for 20 s, printing a refusal a
# second, and ends in "Failed to connect" without naming the token. So explorer asks the
# cluster first, and uses the token Ray finds here only if the cluster requires one.

AUTH_ERRORS: tuple[type[Exception], ...] = tuple(  # empty before Ray 2.52: no tokens
    error for error in [getattr(ray.exceptions, "AuthenticationError", None)] if error)
TOKEN_FIX = ("put the cluster's token (`ray get-auth-token` on the head prints it) in "
             "~/.ray/auth_token, or set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH")


@contextlib.contextmanager
def token_auth(address: str, log_file: Path | None) -> Iterator[None]:
    """Ray's token mode for this process while it is joined to `address`, if the cluster
    requires it; the caller's RAY_AUTH_MODE is back afterwards."""
    found = _cluster_address(address) if AUTH_ERRORS else None
    if found is None:
        yield  # no cluster found for `auto`, or a Ray without tokens: ray.init says
        return
    address = found
    mode_on = _raylet("get_authentication_mode")() == _raylet("AuthenticationMode").TOKEN
    if not mode_on and not _refused(address, log_file):
        yield  # the cluster takes calls without a token
        return
    if not _token_found():
        why = "RAY_AUTH_MODE is token" if mode_on else \
            f"Ray at {address} requires token authentication"
        raise SetupError(f"{why} and this machine has no token: {TOKEN_FIX}")
    with contextlib.nullcontext() if mode_on else _token_mode():
        if _refused(address, log_file):
            raise SetupError(f"Ray at {address} refused this machine's token: {TOKEN_FIX}")
        if not mode_on:
            logging.getLogger(__package__).info(
                "Ray at %s requires token authentication: joined with the token Ray found on "
                "this machine (RAY_AUTH_MODE=token for this run)", address)
        yield


def _cluster_address(address: str) -> str | None:
    """The HOST:PORT `address` names: for `auto`, the cluster Ray finds on this machine
    (RAY_ADDRESS, or the last one started here), None where it finds none."""
    if address != "auto":
        return address
    from ray._private.services import canonicalize_bootstrap_address

    try:
        return canonicalize_bootstrap_address(address)
    except (ConnectionError, ValueError):
        return None


def _raylet(name: str) -> Any:
    """A name from Ray's native module: the token API has no Python stubs."""
    return getattr(importlib.import_module("ray._raylet"), name)


def _token_found() -> bool:
    """Whether Ray finds a token where it looks: RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH
    names, ~/.ray/auth_token (in that order)."""
    try:
        return bool(_raylet("AuthenticationTokenLoader").instance()
                    .has_token(ignore_auth_mode=True))
    except AUTH_ERRORS as problem:  # RAY_AUTH_TOKEN_PATH names a missing or empty file
        reason = str(getattr(problem, "message", problem))
        raise SetupError(f"{reason}: point it at the cluster's token file, or unset it") from None


def _refused(address: str, log_file: Path | None) -> bool:
    """Whether the cluster turns this process away for its token (none, or not the
    cluster's): one call, answered at once."""
    try:
        with native_stderr_to(log_file):  # Ray's C++ client prints the refusal there
            _raylet("GcsClient")(address=address)
    except AUTH_ERRORS:
        return True
    except ray.exceptions.RayError:
        return False  # not about tokens: ray.init says what it is
    return False


@contextlib.contextmanager
def _token_mode() -> Iterator[None]:
    """RAY_AUTH_MODE=token in this process while the block runs; Ray's native config
    rereads the environment only when told to (as Ray does when it turns the mode on)."""
    reload = _raylet("Config").initialize
    try:
        with environment({"RAY_AUTH_MODE": "token"}):
            reload("")
            yield
    finally:
        reload("")
