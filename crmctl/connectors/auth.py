"""Bearer tokens for Dataverse: a static one for the emulator, MSAL for a real organization.

MSAL Python is synchronous (it uses `requests`), so every MSAL call runs in a worker thread via
`asyncio.to_thread`; the event loop that drives the checks and the screens never blocks on a
sign-in. A token is asked of MSAL before *every* request: MSAL answers from its cache in well
under a millisecond and refreshes on its own when less than five minutes are left, so a
long-running control room never sends an expired token and never needs its own expiry logic.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import tempfile
from pathlib import Path
from typing import Any, Awaitable, Callable, Literal, Mapping, Protocol, runtime_checkable
from urllib.parse import urlsplit

from crmctl.connectors.errors import AuthError, remember_secret

AuthMethod = Literal["client_secret", "certificate", "device_code"]
METHODS: tuple[str, ...] = ("client_secret", "certificate", "device_code")

ENTRA_AUTHORITY_HOSTS = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoft.com",
        "login.windows.net",
        "sts.windows.net",
        "login.microsoftonline.us",
        "login.usgovcloudapi.net",
        "login-us.microsoftonline.com",
        "login.chinacloudapi.cn",
        "login.partner.microsoftonline.cn",
        "login.microsoftonline.de",
        "login.sovcloud-identity.fr",
        "login.sovcloud-identity.de",
        "login.sovcloud-identity.sg",
    }
)
"""Hosts MSAL knows as Microsoft Entra ID (public and sovereign clouds)."""

DeviceCodeCallback = Callable[[dict[str, Any]], "None | Awaitable[None]"]
"""Receives {"message", "user_code", "verification_uri", "expires_in"}; the CLI prints it, the app shows it."""


@runtime_checkable
class TokenProvider(Protocol):
    """Where the Dataverse client gets a bearer token before every request."""

    async def token(self) -> str:
        """Returns a currently valid access token (raises AuthError when none can be had)."""
        ...

    def invalidate(self) -> None:
        """The last token was refused (401): the next `token()` must not return it again."""
        ...


class StaticTokenProvider:
    """A fixed token: the embedded emulator's, or a test's."""

    def __init__(self, token: str) -> None:
        self._token = token
        remember_secret(token)
        self.invalidations = 0

    async def token(self) -> str:
        return self._token

    def invalidate(self) -> None:
        # Nothing fresher exists; the client's single 401 retry will fail and say so.
        self.invalidations += 1

    def __repr__(self) -> str:
        return "StaticTokenProvider(***)"


def derive_authority_and_scope(
    org_url: str,
    method: str,
    tenant_id: str,
    authority: str | None = None,
    scope: str | None = None,
) -> tuple[str, str]:
    """The MSAL authority and scope for an organization, unless given explicitly.

    The authority is ``https://login.microsoftonline.com/<tenant>``. The scope is the
    organization's origin plus ``/.default`` for the app-only methods, or plus
    ``/user_impersonation`` for device code, as Microsoft documents for public clients. Explicit
    values win, so a sovereign cloud (``login.microsoftonline.us``, ``*.crm.microsoftdynamics.us``)
    needs configuration only, never code.
    """
    if method not in METHODS:
        raise ValueError(f"unknown auth method {method!r}; expected one of {', '.join(METHODS)}")
    if authority is None:
        if not tenant_id:
            raise ValueError("a tenant_id is needed to derive the authority")
        authority = f"https://login.microsoftonline.com/{tenant_id.strip('/')}"
    if scope is None:
        parts = urlsplit(org_url.strip())
        if not parts.scheme or not parts.netloc:
            raise ValueError(f"the organization URL {org_url!r} is not an absolute URL")
        # The resource is the origin: an API URL (…/api/data/v9.2/) would give a wrong audience.
        resource = f"{parts.scheme}://{parts.netloc}"
        scope = f"{resource}/user_impersonation" if method == "device_code" else f"{resource}/.default"
    return authority.rstrip("/"), scope


def write_private_file(path: Path, text: str) -> None:
    """Writes `text` to `path` atomically with mode 0600 (the token cache holds refresh tokens).

    The temporary file is created 0600 from the start (no window where it is world-readable),
    then renamed over the target, so a crash never leaves a half-written cache.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp: O_EXCL, 0600
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _consume_exception(task: asyncio.Future[Any]) -> None:
    """Marks a shared task's exception as seen: its waiters may all have been cancelled."""
    if not task.cancelled():
        task.exception()


def _describe(result: Mapping[str, Any]) -> str:
    """MSAL's error_description, first line only (drops Trace ID / Correlation ID / Timestamp)."""
    desc = str(result.get("error_description") or "")
    return desc.strip().splitlines()[0] if desc.strip() else ""


class MsalTokenProvider:
    """Tokens from Microsoft Entra ID (or another OIDC authority) through MSAL.

    Args:
        method: ``client_secret`` or ``certificate`` (an application user, server to server) or
            ``device_code`` (a person signing in from an SSH session).
        tenant_id: Entra tenant (informational here; the authority already contains it).
        client_id: The app registration's application id.
        authority: From `derive_authority_and_scope`. A host that is not a Microsoft Entra host
            is treated as a generic OIDC authority (MSAL's ``oidc_authority``, no instance discovery).
        scope: From `derive_authority_and_scope`.
        secret_value: The client secret (``client_secret`` only). Never logged or shown.
        certificate: The MSAL credential dict (``certificate`` only): PEM
            ``{"private_key", "thumbprint"[, "passphrase"][, "public_certificate"]}`` or PFX
            ``{"private_key_pfx_path", "passphrase"}``.
        cache_path: Where to persist MSAL's token cache (written 0600, only when it changed).
            Without it tokens live in memory: device-code users then sign in every start.
        device_code_callback: Shown the sign-in instructions of a device-code flow.
        validate_authority: Passed to MSAL for Entra authorities.
        oidc: Force (True) or forbid (False) treating the authority as generic OIDC; None = by host.
        app_options: Extra keyword arguments for the MSAL application (e.g. ``verify``, ``timeout``).
    """

    def __init__(
        self,
        method: str,
        tenant_id: str,
        client_id: str,
        *,
        authority: str,
        scope: str,
        secret_value: str | None = None,
        certificate: Mapping[str, Any] | None = None,
        cache_path: str | os.PathLike[str] | None = None,
        device_code_callback: DeviceCodeCallback | None = None,
        validate_authority: bool = True,
        oidc: bool | None = None,
        app_options: Mapping[str, Any] | None = None,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown auth method {method!r}; expected one of {', '.join(METHODS)}")
        if method == "client_secret" and not secret_value:
            raise ValueError("client_secret authentication needs a secret (secret: ${env:NAME})")
        if method == "certificate":
            cert = dict(certificate or {})
            if not (("private_key" in cert and "thumbprint" in cert) or "private_key_pfx_path" in cert):
                raise ValueError(
                    "certificate authentication needs private_key + thumbprint (PEM) or private_key_pfx_path (PFX)"
                )
        self.method = method
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.authority = authority.rstrip("/")
        self.scope = scope
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self.device_code_callback = device_code_callback
        self.validate_authority = validate_authority
        host = (urlsplit(self.authority).hostname or "").lower()
        self.oidc = (host not in ENTRA_AUTHORITY_HOSTS) if oidc is None else oidc
        self._secret = secret_value
        self._certificate = dict(certificate) if certificate else None
        # An identity provider's error may quote what it was sent: every error is scrubbed of them.
        remember_secret(secret_value)
        remember_secret(str((self._certificate or {}).get("passphrase") or ""))
        self._app_options = dict(app_options or {})
        self._app: Any = None
        self._cache: Any = None
        self._lock: asyncio.Lock | None = None
        self._flow: dict[str, Any] | None = None
        self._cancelled = False
        self._sign_ins = 0
        self._flow_task: asyncio.Future[dict[str, Any]] | None = None
        self._refused: set[str] = set()
        self._last_token: str | None = None
        self.acquisitions = 0
        """How many times MSAL was asked (one per request; most are cache hits)."""

    def __repr__(self) -> str:
        return (
            f"MsalTokenProvider(method={self.method!r}, client_id={self.client_id!r}, "
            f"authority={self.authority!r}, scope={self.scope!r})"
        )

    # -- TokenProvider --------------------------------------------------------------------

    async def token(self) -> str:
        """Asks MSAL (cache first) for a token; runs a device-code sign-in when nothing is cached."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        # One cache lookup at a time: with 8 checks in flight, an expired token must cause one
        # refresh, not eight.
        async with self._lock:
            self.acquisitions += 1
            signed_in_before = self._sign_ins
            result = await asyncio.to_thread(self._acquire_quietly)
        if result is None:
            # Nothing usable cached: a person must sign in. The flow is one shared task, shielded
            # from the callers: a check that times out must not abort the sign-in the operator is
            # typing a code into; every waiting check gets the token when it lands.
            if self._flow_task is None or self._flow_task.done():
                if self._sign_ins != signed_in_before:
                    return await self.token()  # a sign-in finished meanwhile: the cache has it now
                self._flow_task = asyncio.ensure_future(self._device_flow())
                self._flow_task.add_done_callback(_consume_exception)
            result = await asyncio.shield(self._flow_task)
        return self._accept(result)

    def cancel_sign_in(self) -> None:
        """Aborts a device-code sign-in in progress: MSAL stops at its next poll (within ~1 s)
        and every caller waiting for the token gets an AuthError saying it was cancelled."""
        if self._flow is not None:
            self._cancelled = True
            self._flow["expires_at"] = 0

    def invalidate(self) -> None:
        """Drops the last token from MSAL's cache at the next `token()` so MSAL fetches a new one."""
        if self._last_token:
            self._refused.add(self._last_token)

    # -- internals (the `_sync` methods run in a worker thread) --------------------------

    def _build_app_sync(self) -> None:
        import msal  # imported lazily: `crmctl check` against the emulator never pays for it

        cache = msal.SerializableTokenCache()
        if self.cache_path is not None and self.cache_path.exists():
            try:
                cache.deserialize(self.cache_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                cache = msal.SerializableTokenCache()  # unreadable cache: start clean, sign in again
        options: dict[str, Any] = {"token_cache": cache, **self._app_options}
        if self.oidc:
            options.update(oidc_authority=self.authority, instance_discovery=False)
        else:
            options.update(authority=self.authority, validate_authority=self.validate_authority)
        try:
            if self.method == "device_code":
                app = msal.PublicClientApplication(self.client_id, **options)
            else:
                credential = self._secret if self.method == "client_secret" else self._certificate
                app = msal.ConfidentialClientApplication(self.client_id, client_credential=credential, **options)
        except ValueError as exc:  # bad authority, unreadable certificate, wrong passphrase
            raise AuthError(None, "", str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
        except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
            # MSAL opens a PFX while building the app; without this a missing file would read as
            # "could not reach the sign-in authority". (Not OSError: requests' errors are OSErrors.)
            raise AuthError(
                None, "", f"could not read the certificate file {exc.filename} ({type(exc).__name__})"
            ) from None
        except Exception as exc:  # requests' connection errors during authority discovery
            raise AuthError(
                None, "", f"could not reach the sign-in authority {self.authority} ({type(exc).__name__})"
            ) from None
        self._cache, self._app = cache, app

    def _acquire_quietly(self) -> dict[str, Any] | None:
        """Cache first, refresh if needed; None means a device-code sign-in is required."""
        if self._app is None:
            self._build_app_sync()
        self._forget_refused_sync()
        try:
            if self.method == "device_code":
                accounts = self._app.get_accounts()
                result = (
                    self._app.acquire_token_silent_with_error([self.scope], account=accounts[0]) if accounts else None
                )
                if not result or "access_token" not in result:
                    return None
            else:
                result = self._app.acquire_token_for_client(scopes=[self.scope])
        except AuthError:
            raise
        except Exception as exc:  # network failure talking to the authority
            raise AuthError(None, "", f"could not reach the sign-in authority ({type(exc).__name__})") from None
        finally:
            self._persist_sync()
        return result

    def _forget_refused_sync(self) -> None:
        if not self._refused or self._cache is None:
            return
        import msal

        # Swap, don't clear: `invalidate()` may add a token from the event loop meanwhile.
        refused, self._refused = self._refused, set()
        at_type = msal.TokenCache.CredentialType.ACCESS_TOKEN
        for item in list(self._cache.search(at_type)):
            if item.get("secret") in refused:
                self._cache.remove_at(item)

    def _persist_sync(self) -> None:
        if self.cache_path is None or self._cache is None or not self._cache.has_state_changed:
            return
        write_private_file(self.cache_path, self._cache.serialize())

    async def _device_flow(self) -> dict[str, Any]:
        try:
            flow = await asyncio.to_thread(self._app.initiate_device_flow, scopes=[self.scope])
        except Exception as exc:  # network failure talking to the authority
            raise AuthError(None, "", f"could not start a device-code sign-in ({type(exc).__name__})") from None
        if "user_code" not in flow:
            raise AuthError(None, str(flow.get("error") or "device_flow"), _describe(flow) or "no device code issued")
        self._flow, self._cancelled = flow, False
        prompt = {
            "message": flow.get("message")
            or f"To sign in, open {flow.get('verification_uri')} and enter the code {flow['user_code']}.",
            "user_code": flow["user_code"],
            "verification_uri": flow.get("verification_uri") or flow.get("verification_url"),
            "expires_in": flow.get("expires_in"),
        }
        if self.device_code_callback is not None:
            shown = self.device_code_callback(prompt)
            if inspect.isawaitable(shown):
                await shown
        try:
            result = await asyncio.to_thread(self._device_poll_sync, flow)
            if "access_token" in result:
                self._sign_ins += 1
                return result
            if self._cancelled:
                raise AuthError(None, "cancelled", "the device-code sign-in was cancelled")
            if result.get("error") in ("authorization_pending", "slow_down", "expired_token"):
                raise AuthError(None, "expired_token", "the device code expired before anyone signed in")
            return result
        except asyncio.CancelledError:
            # The polling thread cannot be cancelled; MSAL stops at its next poll when the flow
            # has "expired", so the thread ends within one interval instead of up to 15 minutes.
            flow["expires_at"] = 0
            raise
        finally:
            self._flow = None

    def _device_poll_sync(self, flow: dict[str, Any]) -> dict[str, Any]:
        try:
            return self._app.acquire_token_by_device_flow(flow)
        except Exception as exc:  # network failure while polling
            return {"error": "network", "error_description": f"polling the sign-in failed ({type(exc).__name__})"}
        finally:
            self._persist_sync()

    def _accept(self, result: Mapping[str, Any]) -> str:
        token = result.get("access_token")
        if not token:
            raise AuthError(None, str(result.get("error") or "no_token"), _describe(result) or "no access token")
        self._last_token = str(token)
        remember_secret(self._last_token)
        return self._last_token


__all__ = [
    "AuthMethod",
    "DeviceCodeCallback",
    "MsalTokenProvider",
    "StaticTokenProvider",
    "TokenProvider",
    "derive_authority_and_scope",
    "write_private_file",
]
