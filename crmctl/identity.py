"""Who is acting, and from where: the (operator, host) pair stamped on every journal entry.

The journal records the identity the environment presents; it does not authenticate anyone.
Access to the state file (mode 0600, folder 0700) is what limits who can write at all; the
operator name says which human, among those, took the action.
"""

from __future__ import annotations

import getpass
import os
import socket
from dataclasses import dataclass
from typing import Mapping

__all__ = ["Actor", "current_actor"]

_MAX_LEN = 128


@dataclass(frozen=True)
class Actor:
    """The operator (a person's name or OS user) and the host they act from."""

    operator: str
    host: str


def _clean(value: str | None) -> str:
    """Drops control characters and surrounding blanks.

    Names end up on every operator's terminal and in the evidence pack; an escape sequence in
    `CRMCTL_OPERATOR` must not be able to repaint someone else's screen.
    """
    if not value:
        return ""
    text = "".join(ch for ch in value if ch.isprintable())
    return text.strip()[:_MAX_LEN]


def _os_user(env: Mapping[str, str]) -> str:
    """The login name, like `getpass.getuser()` but reading the given environment first.

    `getpass.getuser()` raises (KeyError, OSError) in containers whose uid has no passwd entry;
    the journal must still get something truthful, so the numeric uid is used then.
    """
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        user = _clean(env.get(name))
        if user:
            return user
    try:
        user = _clean(getpass.getuser())
        if user:
            return user
    except Exception:  # KeyError / OSError / ImportError, depending on platform and version
        pass
    getuid = getattr(os, "getuid", None)
    return f"uid:{getuid()}" if getuid else "unknown"


def _ssh_client(env: Mapping[str, str]) -> str:
    """The SSH client address, from SSH_CONNECTION ("client port server port") or SSH_CLIENT.

    Inside tmux these variables are the ones of the session's first attach unless tmux's
    `update-environment` refreshes them; that is the best the environment can tell.
    """
    for name in ("SSH_CONNECTION", "SSH_CLIENT"):
        parts = (env.get(name) or "").split()
        if parts:
            address = _clean(parts[0])
            if address:
                return f"ssh:{address}"
    return ""


def _hostname() -> str:
    try:
        return _clean(socket.gethostname()) or "unknown-host"
    except OSError:
        return "unknown-host"


def current_actor(override: str | None = None, env: Mapping[str, str] = os.environ) -> Actor:
    """The actor for this process.

    operator: `override` (the `--operator` flag), else `CRMCTL_OPERATOR`, else the OS user;
    host: "ssh:<client address>" when running under SSH, else this machine's host name, so two
    engineers sharing one jump host account are still told apart by where they came from.
    """
    operator = _clean(override) or _clean(env.get("CRMCTL_OPERATOR")) or _os_user(env)
    host = _ssh_client(env) or _hostname()
    return Actor(operator=operator, host=host)
