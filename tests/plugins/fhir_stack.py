"""pytest plugin: a real FHIR R4 server + SMART authorization server (one Node process).

Register with ``pytest_plugins = ["tests.plugins.fhir_stack"]`` (or ``-p tests.plugins.fhir_stack``).

Fixtures (all session-scoped):

* ``fhir_stack`` -> :class:`FhirStack`: the running stack, seeded with every
  ``fixtures/scenarios/*.json`` and ``fixtures/population/*.json`` Bundle that exists at session start.
* ``fhir_stack_app_port`` -> int: a free 127.0.0.1 port reserved for the app under test; its SMART
  callback ``http://127.0.0.1:{port}/smart/callback`` is registered by default.
* ``smart_redirect_uris`` -> list[str]: the exact redirect URIs registered for the SMART client
  (override the fixture to register others).
* ``fhir_stack_seed_paths`` -> list[Path]: the seed files (override to change them).
* ``fhir_stack_env`` -> dict[str, str]: extra environment knobs for the session stack (override).
* ``fhir_stack_backend_clients`` -> list[BackendClient]: SMART Backend Services clients registered
  on the session stack (``backend-rs384``: RS384, may be granted ``system/*.cruds``;
  ``backend-es384``: ES384, ``system/*.rs`` only). Get a token with
  ``fhir_stack.backend_token(client.client_id, client.private_key, "system/*.rs")``.

Helpers on :class:`FhirStack` for the features beyond search: ``backend_token`` /
``request_backend_token`` / ``backend_session`` (SMART Backend Services), ``bulk_export_url``,
``set_fault`` / ``clear_faults`` / ``faults`` / ``injected_fault`` and ``revoke_backend_tokens``
(need a stack started with ``STACK_ADMIN=true``, e.g. ``fhir_stack.start_extra({"STACK_ADMIN":
"true"})``). Key pairs and client assertions: :mod:`tests.plugins.smart_backend`; a rest-hook
endpoint for Subscription notifications: :mod:`tests.plugins.rest_hook`.

The process code is shared with ``python -m tests.stack`` (``make stack``) via :func:`start_stack`.
"""

from __future__ import annotations

import json
import os
import queue
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from urllib.parse import urlencode

import pytest
import requests

from tests.plugins.smart_backend import (
    BackendClient,
    PrivateKey,
    client_assertion,
    generate_backend_client,
    token_request_data,
    write_backend_clients,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
STACK_DIR = REPO_ROOT / "tests" / "fhir_stack"
STACK_SCRIPT = STACK_DIR / "stack.mjs"
SEED_GLOBS = ("fixtures/scenarios/*.json", "fixtures/population/*.json")
DEFAULT_TOKEN = "cds-test-token"
DEFAULT_CLIENT_ID = "smart-app"
START_TIMEOUT_S = float(os.environ.get("FHIR_STACK_START_TIMEOUT", "60"))
# Inherited variables that would change the stack behind the fixture's back.
_SANITIZED_PREFIXES = ("FHIR_", "SMART_", "BULK_")
_SANITIZED_NAMES = ("AUTH_PORT", "STACK_ADMIN")


# stdout reader thread per stack process id (joined when the process is stopped)
_PUMPS: dict[int, threading.Thread] = {}


class FhirStackError(RuntimeError):
    """The stack could not be started, or a request to it failed."""


def free_port() -> int:
    """Returns a currently free TCP port on 127.0.0.1 (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def reserved_port() -> int:
    """A free TCP port on 127.0.0.1 below the kernel's ephemeral range, for a port that is chosen now and
    bound much later (the session's app port): no outgoing connection can take it as its local port in the
    meantime, as it can with :func:`free_port` (seen as "Address already in use" late in a long session)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    chooser = random.Random()
    for _ in range(200):
        port = chooser.randrange(max(1024, low - 10000), low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return free_port()


def callback_uris(app_port: int) -> list[str]:
    """The SMART callback URIs of an app served on ``app_port``."""
    return [
        f"http://127.0.0.1:{app_port}/smart/callback",
        f"http://localhost:{app_port}/smart/callback",
    ]


def discover_seed_paths(root: Path = REPO_ROOT) -> list[Path]:
    """Every fixture Bundle file that exists now, in a stable order."""
    paths: list[Path] = []
    for pattern in SEED_GLOBS:
        # Scenario expectations (*.expected.json) and the population index sit beside the Bundles.
        paths.extend(
            p
            for p in sorted(root.glob(pattern))
            if not p.name.endswith(".expected.json") and p.name != "index.json"
        )
    return paths


def _as_loadable_bundle(data: Any, source: str) -> dict[str, Any]:
    """Returns a batch/transaction Bundle for ``data`` or raises with a clear message.

    Accepted: a batch/transaction Bundle (as is); any other Bundle type (converted to a batch that
    PUTs entries with an id and POSTs the others); a JSON object whose ``bundle`` key holds a Bundle.
    """
    if isinstance(data, dict) and data.get("resourceType") != "Bundle":
        inner = data.get("bundle")
        if isinstance(inner, dict) and inner.get("resourceType") == "Bundle":
            data = inner
    if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
        raise FhirStackError(
            f"{source} is not a FHIR Bundle (nor an object with a 'bundle' key holding one); "
            "the fhir_stack plugin loads fixtures/scenarios/*.json and fixtures/population/*.json "
            "as seed data"
        )
    if data.get("type") in ("batch", "transaction"):
        return data
    entries: list[dict[str, Any]] = []
    for entry in data.get("entry", []):
        resource = entry.get("resource")
        if not isinstance(resource, dict) or "resourceType" not in resource:
            raise FhirStackError(f"{source}: a Bundle entry has no resource")
        rtype = resource["resourceType"]
        if resource.get("id"):
            request = {"method": "PUT", "url": f"{rtype}/{resource['id']}"}
        else:
            request = {"method": "POST", "url": rtype}
        new_entry: dict[str, Any] = {"resource": resource, "request": request}
        if entry.get("fullUrl"):
            new_entry["fullUrl"] = entry["fullUrl"]
        entries.append(new_entry)
    return {"resourceType": "Bundle", "type": "batch", "entry": entries}


def prepare_seed_files(paths: Sequence[Path], workdir: Path) -> list[Path]:
    """Validates seed files; non-batch Bundles are converted into ``workdir``."""
    prepared: list[Path] = []
    for index, path in enumerate(paths):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise FhirStackError(f"cannot read seed file {path}: {exc}") from exc
        bundle = _as_loadable_bundle(data, str(path))
        if bundle is data:
            prepared.append(path)
        else:
            converted = workdir / f"seed-{index:03d}-{path.name}"
            converted.write_text(json.dumps(bundle), encoding="utf-8")
            prepared.append(converted)
    return prepared


def bundle_failures(response_bundle: Mapping[str, Any]) -> list[str]:
    """Describes every entry of a batch/transaction response whose status is not 2xx."""
    failures: list[str] = []
    for i, entry in enumerate(response_bundle.get("entry", [])):
        status = str(entry.get("response", {}).get("status", ""))
        if not status[:1] == "2":
            outcome = entry.get("response", {}).get("outcome", {})
            text = ""
            if outcome.get("issue"):
                issue = outcome["issue"][0]
                text = issue.get("diagnostics") or issue.get("details", {}).get("text", "")
            failures.append(f"entry {i}: {status} {text}".strip())
    return failures


@dataclass
class FhirStack:
    """A running FHIR + SMART stack (one ``node tests/fhir_stack/stack.mjs`` process)."""

    fhir_base: str
    """e.g. ``http://127.0.0.1:41234/fhir``"""
    auth_base: str
    """SMART authorization server origin, e.g. ``http://127.0.0.1:41235``"""
    token: str
    """A static Bearer token the FHIR server accepts (use it as ``fhirAuthorization.access_token``)."""
    tokens: list[str]
    client_id: str
    redirect_uris: list[str]
    app_port: int
    """Port reserved for the app under test (its callback is in ``redirect_uris`` by default)."""
    info: dict[str, Any]
    """The stack's ready line (ports, knobs, seeds, start-up time)."""
    process: subprocess.Popen[bytes]
    stderr_path: Path
    env: dict[str, str]
    seed_paths: list[Path]
    http: requests.Session = field(repr=False)
    """A session with ``Authorization: Bearer {token}`` and FHIR JSON ``Accept``."""
    backend_clients: list[BackendClient] = field(default_factory=list, repr=False)
    """SMART Backend Services clients registered at start (``SMART_BACKEND_CLIENTS``)."""
    _extras: list[FhirStack] = field(default_factory=list, repr=False)
    _workdir: Path | None = field(default=None, repr=False)

    # ---------------------------------------------------------------- URLs

    @property
    def fhir_port(self) -> int:
        return int(self.info["fhir_port"])

    @property
    def auth_port(self) -> int:
        return int(self.info["auth_port"])

    @property
    def fhir_origin(self) -> str:
        return self.fhir_base.rsplit("/fhir", 1)[0]

    @property
    def smart_configuration_url(self) -> str:
        return f"{self.fhir_base}/.well-known/smart-configuration"

    @property
    def authorize_url(self) -> str:
        return f"{self.auth_base}/auth"

    @property
    def token_url(self) -> str:
        return f"{self.auth_base}/token"

    @property
    def admin_url(self) -> str:
        """Test-only admin endpoints (``STACK_ADMIN=true``): ``/faults``, ``/revoke-tokens``."""
        return f"{self.fhir_origin}/_admin"

    def bulk_export_url(self, level: str = "system", group_id: str | None = None) -> str:
        """Kick-off URL: level ``system`` ($export), ``patient`` (Patient/$export) or ``group``."""
        if level == "system":
            return f"{self.fhir_base}/$export"
        if level == "patient":
            return f"{self.fhir_base}/Patient/$export"
        if level == "group" and group_id:
            return f"{self.fhir_base}/Group/{group_id}/$export"
        raise ValueError("level must be system, patient or group (with group_id)")

    def ehr_launch_url(
        self,
        patient: str,
        launch_uri: str,
        *,
        app_context: str | None = None,
        encounter: str | None = None,
        need_patient_banner: bool | None = None,
        deny: bool = False,
    ) -> str:
        """URL of the simulated EHR launch; it redirects to ``launch_uri?iss=...&launch=...``."""
        params: dict[str, str] = {"patient": patient, "launch_uri": launch_uri}
        if app_context is not None:
            params["app_context"] = app_context
        if encounter is not None:
            params["encounter"] = encounter
        if need_patient_banner is not None:
            params["need_patient_banner"] = "true" if need_patient_banner else "false"
        if deny:
            params["deny"] = "1"
        return f"{self.auth_base}/ehr/launch?{urlencode(params)}"

    # ---------------------------------------------------------------- HTTP helpers

    def session(self, token: str | None = None) -> requests.Session:
        """A new session; with the static token unless ``token`` is given ("" means none)."""
        sess = requests.Session()
        sess.headers["Accept"] = "application/fhir+json"
        use = self.token if token is None else token
        if use:
            sess.headers["Authorization"] = f"Bearer {use}"
        return sess

    def load_bundle(self, bundle: Mapping[str, Any] | str | os.PathLike[str]) -> dict[str, Any]:
        """POSTs a Bundle (dict or JSON file path) to the FHIR base and returns the response Bundle.

        Non-batch Bundles are loaded as a batch of PUT/POST entries. Raises
        :class:`FhirStackError` when the request or any entry fails.
        """
        if isinstance(bundle, Mapping):
            data: Any = dict(bundle)
            source = "bundle"
        else:
            source = str(bundle)
            data = json.loads(Path(bundle).read_text(encoding="utf-8"))
        loadable = _as_loadable_bundle(data, source)
        resp = self.http.post(
            self.fhir_base,
            data=json.dumps(loadable),
            headers={"Content-Type": "application/fhir+json"},
            timeout=120,
        )
        if resp.status_code != 200:
            raise FhirStackError(f"loading {source} failed: HTTP {resp.status_code}: {resp.text[:1000]}")
        result: dict[str, Any] = resp.json()
        failures = bundle_failures(result)
        if failures:
            raise FhirStackError(f"loading {source}: {len(failures)} entries failed: {failures[:5]}")
        return result

    # ---------------------------------------------------------------- SMART Backend Services

    def backend_client(self, client_id: str) -> BackendClient:
        """A backend client registered on this stack (with its private key)."""
        for client in self.backend_clients:
            if client.client_id == client_id:
                return client
        known = [c.client_id for c in self.backend_clients]
        raise KeyError(f"no backend client {client_id!r}; registered: {known}")

    def request_backend_token(
        self,
        client_id: str,
        private_key: PrivateKey | str | bytes,
        scope: str,
        *,
        assertion: str | None = None,
        **assertion_kwargs: Any,
    ) -> requests.Response:
        """POSTs a client_credentials token request (for negative tests: any response comes back).

        ``assertion`` replaces the signed client assertion; otherwise ``assertion_kwargs`` go to
        :func:`tests.plugins.smart_backend.client_assertion` (``lifetime_s``, ``jti``, ``claims``...).
        """
        signed = assertion or client_assertion(client_id, private_key, self.token_url, **assertion_kwargs)
        return requests.post(self.token_url, data=token_request_data(signed, scope), timeout=30)

    def backend_token(
        self, client_id: str, private_key: PrivateKey | str | bytes, scope: str, **assertion_kwargs: Any
    ) -> dict[str, Any]:
        """The token response (``access_token``, ``token_type``, ``expires_in``, ``scope``) of a
        backend client; raises :class:`FhirStackError` unless the server answers 200."""
        resp = self.request_backend_token(client_id, private_key, scope, **assertion_kwargs)
        if resp.status_code != 200:
            raise FhirStackError(
                f"backend token for {client_id} failed: HTTP {resp.status_code}: {resp.text[:500]}"
            )
        body: dict[str, Any] = resp.json()
        return body

    def backend_session(self, client: BackendClient | str, scope: str | None = None) -> requests.Session:
        """A session carrying a fresh backend access token (scope defaults to the client's)."""
        found = self.backend_client(client) if isinstance(client, str) else client
        token = self.backend_token(found.client_id, found.private_key, scope or found.scope)
        return self.session(str(token["access_token"]))

    # ---------------------------------------------------------------- admin (STACK_ADMIN=true)

    def _admin(self, method: str, path: str, body: Any = None) -> Any:
        resp = requests.request(method, f"{self.admin_url}/{path}", json=body, timeout=30)
        if resp.status_code not in (200, 201):
            raise FhirStackError(f"{method} /_admin/{path}: HTTP {resp.status_code}: {resp.text[:500]}")
        return resp.json()

    def set_fault(
        self,
        path_prefix: str,
        *,
        status: int | None = None,
        delay_ms: int = 0,
        count: int = 1,
        method: str | None = None,
        server: str = "fhir",
        retry_after_s: int | None = None,
        reset_connection: bool = False,
    ) -> dict[str, Any]:
        """Makes the next ``count`` requests whose path starts with ``path_prefix`` (e.g.
        ``/fhir/Observation``; ``server="auth"`` for the token endpoint) wait ``delay_ms``, then
        answer ``status`` (401 carries ``WWW-Authenticate: Bearer error="invalid_token"``) or lose
        their connection. Returns the fault as the server stored it."""
        spec: dict[str, Any] = {
            "path_prefix": path_prefix,
            "status": status,
            "delay_ms": delay_ms,
            "count": count,
            "server": server,
            "reset_connection": reset_connection,
        }
        if method is not None:
            spec["method"] = method
        if retry_after_s is not None:
            spec["retry_after_s"] = retry_after_s
        fault: dict[str, Any] = self._admin("POST", "faults", spec)["faults"][0]
        return fault

    def faults(self) -> list[dict[str, Any]]:
        """The injected faults with ``remaining`` and ``hits``."""
        found: list[dict[str, Any]] = self._admin("GET", "faults")["faults"]
        return found

    def clear_faults(self) -> int:
        """Removes every injected fault; returns how many there were."""
        return int(self._admin("DELETE", "faults")["cleared"])

    @contextmanager
    def injected_fault(self, path_prefix: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """``with stack.injected_fault("/fhir/Observation", status=503):`` -- cleared on exit."""
        fault = self.set_fault(path_prefix, **kwargs)
        try:
            yield fault
        finally:
            self.clear_faults()

    def revoke_backend_tokens(self) -> int:
        """Invalidates every backend access token issued so far (clients must re-authenticate)."""
        return int(self._admin("POST", "revoke-tokens")["revoked"])

    # ---------------------------------------------------------------- data

    def reset(self, *, seed: bool = True) -> int:
        """Deletes all data; reloads the seed files unless ``seed=False``. Returns entries loaded."""
        resp = requests.post(
            f"{self.fhir_origin}/_control/reset",
            params={"seed": "true" if seed else "false"},
            timeout=120,
        )
        if resp.status_code != 200:
            raise FhirStackError(f"reset failed: HTTP {resp.status_code}: {resp.text[:500]}")
        return int(resp.json()["seeded_entries"])

    def stats(self) -> dict[str, int]:
        """Number of stored resources per type."""
        resp = requests.get(f"{self.fhir_origin}/_control/stats", timeout=10)
        resp.raise_for_status()
        counts: dict[str, int] = resp.json()["resources"]
        return counts

    def stderr_tail(self, max_chars: int = 4000) -> str:
        try:
            return self.stderr_path.read_text(encoding="utf-8", errors="replace")[-max_chars:]
        except OSError:
            return ""

    # ---------------------------------------------------------------- lifecycle

    def start_extra(
        self,
        env: Mapping[str, str] | None = None,
        *,
        seeds: Sequence[Path] | None = None,
        redirect_uris: Sequence[str] | None = None,
        backend_clients: Sequence[BackendClient | Mapping[str, Any]] | None = None,
    ) -> FhirStack:
        """Starts another stack on new free ports with different knobs, e.g.
        ``{"FHIR_MAX_COUNT": "2"}``, ``{"SMART_TOKEN_TTL": "1"}`` or ``{"STACK_ADMIN": "true"}``.

        It uses this stack's seed files unless ``seeds`` is given (``[]`` for an empty server),
        this stack's redirect URIs unless ``redirect_uris`` is given and this stack's backend
        clients unless ``backend_clients`` is given. It is stopped together with this stack, or
        earlier with :meth:`stop` / ``with fhir_stack.start_extra(...) as extra:``.
        """
        extra = start_stack(
            env=env or {},
            seed_paths=self.seed_paths if seeds is None else list(seeds),
            redirect_uris=list(self.redirect_uris if redirect_uris is None else redirect_uris),
            app_port=self.app_port,
            seeds_prepared=seeds is None,
            backend_clients=self.backend_clients if backend_clients is None else backend_clients,
        )
        self._extras.append(extra)
        return extra

    def stop(self) -> None:
        """Stops extra stacks and this process group (SIGTERM, then SIGKILL after 5 s)."""
        for extra in self._extras:
            extra.stop()
        self._extras.clear()
        self.http.close()
        _terminate(self.process)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> FhirStack:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _terminate(process: subprocess.Popen[bytes]) -> None:
    """Stops the process group (SIGTERM, SIGKILL after 5 s) and closes the stdout pipe."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(timeout=5)
    pump = _PUMPS.pop(process.pid, None)
    if pump is not None:
        pump.join(timeout=5)
    if process.stdout is not None and not process.stdout.closed:
        process.stdout.close()


def _read_ready_line(process: subprocess.Popen[bytes], timeout: float) -> dict[str, Any] | None:
    """Waits for the ready JSON line on stdout; drains the rest in the background."""
    assert process.stdout is not None
    stdout: IO[bytes] = process.stdout
    lines: queue.Queue[bytes] = queue.Queue()

    def pump() -> None:
        for line in iter(stdout.readline, b""):
            lines.put(line)
        lines.put(b"")

    thread = threading.Thread(target=pump, name="fhir-stack-stdout", daemon=True)
    thread.start()
    _PUMPS[process.pid] = thread
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        try:
            line = lines.get(timeout=min(remaining, 0.5))
        except queue.Empty:
            if process.poll() is not None and lines.empty():
                return None
            continue
        if not line:
            return None
        text = line.decode("utf-8", errors="replace").strip()
        if text.startswith("{"):
            try:
                parsed: dict[str, Any] = json.loads(text)
            except ValueError:
                continue
            if parsed.get("event") == "ready":
                return parsed


def start_stack(
    *,
    env: Mapping[str, str] | None = None,
    seed_paths: Sequence[Path] = (),
    redirect_uris: Sequence[str] | None = None,
    app_port: int | None = None,
    fhir_port: int = 0,
    auth_port: int = 0,
    inherit_knobs: bool = False,
    seeds_prepared: bool = False,
    timeout: float = START_TIMEOUT_S,
    backend_clients: Sequence[BackendClient | Mapping[str, Any]] = (),
) -> FhirStack:
    """Starts ``node tests/fhir_stack/stack.mjs`` and waits until it is ready.

    Port 0 lets the OS choose a free port (the actual ports come back in the ready line).
    ``env`` overrides any knob (FHIR_BEARER_TOKENS, FHIR_MAX_COUNT, SMART_TOKEN_TTL, ...).
    ``backend_clients`` are registered through a ``SMART_BACKEND_CLIENTS`` file in the stack's
    temporary directory (:class:`BackendClient` objects or raw registration dicts).
    Raises :class:`FhirStackError` with the process's stderr when start-up fails.
    """
    node = shutil.which("node")
    if node is None:
        raise FhirStackError("node is not on PATH; the FHIR test stack needs Node >= 20.19")
    if (
        not (STACK_DIR / "node_modules" / "@medplum" / "fhir-router").is_dir()
        or not (STACK_DIR / "node_modules" / "oidc-provider").is_dir()
    ):
        raise FhirStackError(
            f"{STACK_DIR}/node_modules is missing; run `make node-deps` (npm ci --prefix tests/fhir_stack)"
        )
    workdir = Path(tempfile.mkdtemp(prefix="fhir-stack-"))
    try:
        seeds = list(seed_paths) if seeds_prepared else prepare_seed_files(seed_paths, workdir)
    except Exception:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    if app_port is None:
        app_port = free_port()
    uris = list(redirect_uris) if redirect_uris is not None else callback_uris(app_port)

    child_env = {
        k: v
        for k, v in os.environ.items()
        if inherit_knobs or not (k.startswith(_SANITIZED_PREFIXES) or k in _SANITIZED_NAMES)
    }
    knobs = {
        "FHIR_PORT": str(fhir_port),
        "AUTH_PORT": str(auth_port),
        "FHIR_BEARER_TOKENS": DEFAULT_TOKEN,
        "SMART_CLIENT_ID": DEFAULT_CLIENT_ID,
        "SMART_REDIRECT_URIS": ",".join(uris),
        "FHIR_SEED": "",
    }
    if backend_clients:
        registry = write_backend_clients(backend_clients, workdir / "backend-clients.json")
        knobs["SMART_BACKEND_CLIENTS"] = str(registry)
    for key, value in knobs.items():
        if not inherit_knobs or key not in child_env:
            child_env[key] = value
    child_env.update(env or {})

    stderr_path = workdir / "stack.stderr.log"
    stderr_file = stderr_path.open("wb")
    args = [node, str(STACK_SCRIPT), *(str(p) for p in seeds)]
    process = subprocess.Popen(
        args,
        cwd=str(REPO_ROOT),
        env=child_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr_file,
        start_new_session=True,
    )
    stderr_file.close()

    def fail(reason: str) -> FhirStackError:
        _terminate(process)
        log = stderr_path.read_text(encoding="utf-8", errors="replace")[-6000:]
        shutil.rmtree(workdir, ignore_errors=True)
        return FhirStackError(
            f"FHIR test stack failed to start: {reason}\n"
            f"command: {' '.join(args[:2])} <{len(seeds)} seed files>\n"
            f"exit code: {process.returncode}\n--- stack stderr ---\n{log}"
        )

    info = _read_ready_line(process, timeout)
    if info is None:
        raise fail(f"no ready line within {timeout:.0f} s")
    for url in (f"http://127.0.0.1:{info['fhir_port']}/healthz", f"{info['auth_base']}/healthz"):
        try:
            health = requests.get(url, timeout=5)
        except requests.RequestException as exc:
            raise fail(f"{url} unreachable: {exc}") from exc
        if health.status_code != 200:
            raise fail(f"{url} answered {health.status_code}")

    tokens = [t for t in child_env.get("FHIR_BEARER_TOKENS", "").split(",") if t.strip()]
    token = tokens[0].strip() if tokens else ""
    http = requests.Session()
    http.headers["Accept"] = "application/fhir+json"
    if token:
        http.headers["Authorization"] = f"Bearer {token}"
    return FhirStack(
        fhir_base=str(info["fhir_base"]),
        auth_base=str(info["auth_base"]),
        token=token,
        tokens=[t.strip() for t in tokens],
        client_id=str(info["client_id"]),
        redirect_uris=[str(u) for u in info["redirect_uris"]],
        app_port=app_port,
        info=info,
        process=process,
        stderr_path=stderr_path,
        env=child_env,
        seed_paths=seeds,
        http=http,
        backend_clients=[c for c in backend_clients if isinstance(c, BackendClient)],
        _workdir=workdir,
    )


# -------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def fhir_stack_app_port() -> int:
    """A free port reserved for the app under test (its SMART callback is pre-registered)."""
    return reserved_port()


@pytest.fixture(scope="session")
def smart_redirect_uris(fhir_stack_app_port: int) -> list[str]:
    """Exact redirect URIs registered for the SMART client; override to register others."""
    return callback_uris(fhir_stack_app_port)


@pytest.fixture(scope="session")
def fhir_stack_seed_paths() -> list[Path]:
    """Seed Bundles: every fixtures/scenarios/*.json and fixtures/population/*.json present now."""
    return discover_seed_paths()


@pytest.fixture(scope="session")
def fhir_stack_env() -> dict[str, str]:
    """Extra environment knobs for the session stack (override the fixture to change them)."""
    return {}


@pytest.fixture(scope="session")
def fhir_stack_backend_clients() -> list[BackendClient]:
    """Backend services clients registered on the session stack (override to change them)."""
    return [
        generate_backend_client("backend-rs384", alg="RS384", scope="system/*.cruds"),
        generate_backend_client("backend-es384", alg="ES384", scope="system/*.rs"),
    ]


@pytest.fixture(scope="session")
def fhir_stack(
    fhir_stack_app_port: int,
    smart_redirect_uris: list[str],
    fhir_stack_seed_paths: list[Path],
    fhir_stack_env: dict[str, str],
    fhir_stack_backend_clients: list[BackendClient],
) -> Iterator[FhirStack]:
    """The session's FHIR R4 + SMART stack on free 127.0.0.1 ports (stopped at session end)."""
    stack = start_stack(
        env=fhir_stack_env,
        seed_paths=fhir_stack_seed_paths,
        redirect_uris=smart_redirect_uris,
        app_port=fhir_stack_app_port,
        backend_clients=fhir_stack_backend_clients,
    )
    try:
        yield stack
    finally:
        stack.stop()
