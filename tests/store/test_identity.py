"""current_actor(): who and from where, from the flag, the environment and the OS."""

from __future__ import annotations

import getpass
import socket

import pytest

from crmctl import identity
from crmctl.identity import Actor, current_actor


def test_override_beats_environment_beats_os_user():
    env = {"CRMCTL_OPERATOR": "Jane Lead", "USER": "svc_crm"}
    assert current_actor("  Bob  ", env=env).operator == "Bob"
    assert current_actor(None, env=env).operator == "Jane Lead"
    assert current_actor("", env={"USER": "svc_crm"}).operator == "svc_crm"
    assert current_actor(env={"LOGNAME": "alice", "USER": "other"}).operator == "alice"


def test_os_user_fallback_and_guard(monkeypatch):
    monkeypatch.setattr(getpass, "getuser", lambda: "from-pwd")
    assert current_actor(env={}).operator == "from-pwd"

    def broken() -> str:
        raise KeyError("uid not in passwd")

    monkeypatch.setattr(getpass, "getuser", broken)
    operator = current_actor(env={}).operator
    assert operator.startswith("uid:") or operator == "unknown"


@pytest.mark.parametrize(
    "env,host",
    [
        ({"SSH_CONNECTION": "10.1.2.3 51234 10.0.0.5 22"}, "ssh:10.1.2.3"),
        ({"SSH_CLIENT": "10.9.8.7 51234 22"}, "ssh:10.9.8.7"),
        (
            {"SSH_CONNECTION": "fe80::1 51234 fe80::2 22", "SSH_CLIENT": "1.1.1.1 1 22"},
            "ssh:fe80::1",
        ),
        ({"SSH_CONNECTION": "   "}, None),
        ({}, None),
    ],
)
def test_host_is_the_ssh_client_else_the_host_name(monkeypatch, env, host):
    monkeypatch.setattr(socket, "gethostname", lambda: "jump-01")
    assert current_actor("x", env=env).host == (host or "jump-01")


def test_hostname_failure_is_guarded(monkeypatch):
    def broken() -> str:
        raise OSError("no name")

    monkeypatch.setattr(socket, "gethostname", broken)
    assert current_actor("x", env={}).host == "unknown-host"


def test_control_characters_cannot_reach_other_terminals():
    actor = current_actor("\x1b[2Jevil\x07", env={})
    assert actor.operator == "[2Jevil"
    assert current_actor("\x1b\x07", env={"CRMCTL_OPERATOR": "ok"}).operator == "ok"


def test_actor_is_a_frozen_value():
    actor = Actor("a", "b")
    with pytest.raises(AttributeError):
        actor.operator = "c"  # type: ignore[misc]
    assert actor == Actor("a", "b") and hash(actor) == hash(Actor("a", "b"))
    assert identity.current_actor is current_actor
