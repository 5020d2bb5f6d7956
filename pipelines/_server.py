"""Talking to a Kubeflow Pipelines API server: the token, a bounded reachability check, uploading a
pipeline version once and starting a run from it (``kfp.Client``, KFP v2beta1 API).

Every failure to reach or use the server becomes one ``RuntimeError`` that names the host, so the CLI
prints one line instead of a urllib3 traceback.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import socket
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

log = logging.getLogger(__name__)

TOKEN_ENV = "KFP_TOKEN"
"""Environment variable with a bearer token (e.g. from ``kubectl create token``); tried first."""

TOKEN_FILES: tuple[tuple[str | None, str], ...] = (
    # Kubeflow's projected token for the pipelines audience (PodDefault "access-ml-pipeline");
    # KF_PIPELINES_SA_TOKEN_PATH is the variable kfp itself reads to move it.
    ("KF_PIPELINES_SA_TOKEN_PATH", "/var/run/secrets/kubeflow/pipelines/token"),
    # The pod's own service-account token, accepted by KFP when it is installed with SA auth.
    (None, "/var/run/secrets/kubernetes.io/serviceaccount/token"),
)
"""Token files tried in order after :data:`TOKEN_ENV`: (environment variable that overrides the path, path)."""

HEALTHZ = "/apis/v2beta1/healthz"
DEFAULT_TIMEOUT = 10.0
"""Seconds the reachability check waits for the server to connect and answer."""
_EQUALS = 1  # the filter operation EQUALS (kfp.client.client._FILTER_OPERATIONS)


def resolve_token(environ: Mapping[str, str] | None = None,
                  files: Sequence[tuple[str | None, str]] | None = None) -> tuple[str | None, str]:
    """The bearer token to send and where it came from: ``$KFP_TOKEN``, then each of ``files``
    (default :data:`TOKEN_FILES`).

    Returns ``(token, source)``; ``source`` is ``'env KFP_TOKEN'``, ``'file <path>'`` or ``'none'`` and is
    safe to print (the token never is). Empty values are skipped; a token file that exists but cannot be
    read is an error rather than a silent anonymous request.
    """
    environ = os.environ if environ is None else environ
    files = TOKEN_FILES if files is None else files
    token = environ.get(TOKEN_ENV, "").strip()
    if token:
        return token, f"env {TOKEN_ENV}"
    for env, default in files:
        path = Path(environ.get(env) or default) if env else Path(default)
        if not path.is_file():
            continue
        try:
            token = path.read_text().strip()
        except OSError as err:
            raise RuntimeError(f"token file {path} exists but cannot be read: {err.strerror or err}") from None
        if token:
            return token, f"file {path}"
    return None, "none"


def check_host(host: str) -> str:
    """``host`` without a trailing slash; a ``ValueError`` unless it is an http(s) URL."""
    if not host.startswith(("http://", "https://")) or not host.split("://", 1)[1].strip("/"):
        raise ValueError(f"--host must be an http:// or https:// URL of the KFP API, got {host!r}")
    return host.rstrip("/")


def probe(host: str, token: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
    """GET ``<host>/apis/v2beta1/healthz`` within ``timeout`` seconds; the parsed answer.

    kfp.Client retries its own health check for ~25 s per failure and urllib3 has no default timeout,
    so this bounded check runs first and turns every way of not answering into one ``RuntimeError``.
    """
    host = check_host(host)
    request = urllib.request.Request(host + HEALTHZ, headers={"Accept": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=timeout) as response:
            body = response.read(65536)
    except urllib.error.HTTPError as err:
        raise RuntimeError(_http_error(host, err.code, err.reason, err.headers.get("Location"))) from None
    except urllib.error.URLError as err:
        raise RuntimeError(f"cannot reach KFP API at {host}: {_reason(err.reason, timeout)}") from None
    except (OSError, http.client.HTTPException) as err:  # timeouts while reading, resets, bad status lines
        raise RuntimeError(f"cannot reach KFP API at {host}: {_reason(err, timeout)}") from None
    try:
        return json.loads(body or b"{}")
    except ValueError:
        raise RuntimeError(f"{host}{HEALTHZ} did not answer JSON; is {host} the KFP API "
                           f"(e.g. https://<kubeflow>/pipeline)?") from None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect from the health check is a login page, not the API: report it instead of following."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN201
        return None


def _http_error(host: str, code: int, reason: str, location: str | None) -> str:
    if code in (401, 403):
        return (f"KFP API at {host} refused the request ({code} {reason}): set {TOKEN_ENV} to a valid token "
                f"or run inside the cluster with a service-account token")
    if 300 <= code < 400:
        return (f"KFP API at {host} redirects to {location or '?'} ({code}), probably a login page: "
                f"set {TOKEN_ENV} to a valid token")
    if code == 404:
        return f"no KFP API at {host} ({HEALTHZ} answered 404); the URL usually ends in /pipeline"
    return f"KFP API at {host} is not healthy: {HEALTHZ} answered {code} {reason}"


def _reason(err: object, timeout: float) -> str:
    if isinstance(err, TimeoutError | socket.timeout):
        return f"no answer within {timeout:g} s"
    if isinstance(err, socket.gaierror):
        return f"host name not found ({err.strerror or err})"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err) or type(err).__name__


def client(host: str, token: str | None, namespace: str | None = None,
           timeout: float = DEFAULT_TIMEOUT) -> Any:
    """A ``kfp.Client`` for ``host``, after :func:`probe` has found the API there within ``timeout`` seconds
    (the constructor talks to the server and would otherwise retry for minutes)."""
    import kfp

    probe(host, token, timeout)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "only works with Kubeflow Pipeline v2.0.0-beta.2 and later"
        with _api_errors(host, "connect"):
            return kfp.Client(host=host, existing_token=token, **({"namespace": namespace} if namespace else {}))


class Upload(NamedTuple):
    """What :func:`upload_version` found or created on the server."""

    pipeline_id: str
    version_id: str
    outcome: Literal["new pipeline", "new version", "exists"]
    """``'exists'``: the version was there already and nothing was uploaded."""


def upload_version(kfp_client: Any, host: str, package: Path, pipeline_name: str, version_name: str,
                   description: str = "", namespace: str | None = None) -> Upload:
    """Make compiled ``package`` version ``version_name`` of pipeline ``pipeline_name``, uploading only what
    the server lacks.

    The pipeline is found by name (in ``namespace`` on multi-user installs; ``None``: the shared ones) and
    created if missing; the package then goes up as version ``version_name``. If the pipeline has a version
    of that name already, nothing is uploaded and that version is returned (the packages are not compared),
    so a retried upload neither fails nor duplicates.
    """
    if not version_name.strip():
        raise ValueError(f"invalid pipeline version name {version_name!r}")
    where = f" in namespace {namespace!r}" if namespace else ""
    with _api_errors(host, f"look up pipeline {pipeline_name!r}{where}"):
        found = kfp_client.list_pipelines(filter=_named(pipeline_name), namespace=namespace,
                                          page_size=2).pipelines or []
    if len(found) > 1:
        raise RuntimeError(f"KFP API at {host} has several pipelines named {pipeline_name!r}{where}; "
                           f"expected at most one")
    if found:
        pipeline_id, outcome = found[0].pipeline_id, "new version"
        with _api_errors(host, f"look up version {version_name!r} of pipeline {pipeline_name!r}"):
            versions = kfp_client.list_pipeline_versions(pipeline_id, filter=_named(version_name),
                                                         page_size=1).pipeline_versions or []
        if versions:
            log.info("pipeline %r%s has version %r already (%s); not uploading", pipeline_name, where,
                     version_name, versions[0].pipeline_version_id)
            return Upload(pipeline_id, versions[0].pipeline_version_id, "exists")
    else:
        # Created empty rather than with kfp's upload_pipeline, whose first version takes the pipeline's
        # name: a retry with the same version name would then find no such version and upload it again.
        import kfp_server_api

        with _api_errors(host, f"create pipeline {pipeline_name!r}{where}"):
            pipeline = kfp_client.pipelines.pipeline_service_create_pipeline(kfp_server_api.V2beta1Pipeline(
                display_name=pipeline_name, description=description or None, namespace=namespace))
        pipeline_id, outcome = pipeline.pipeline_id, "new pipeline"
    with _api_errors(host, f"upload version {version_name!r} of pipeline {pipeline_name!r}"):
        version = kfp_client.upload_pipeline_version(str(package), pipeline_version_name=version_name,
                                                     pipeline_id=pipeline_id, description=description or None)
    log.debug("%s: pipeline %r (%s) version %r (%s)", outcome, pipeline_name, pipeline_id, version_name,
              version.pipeline_version_id)
    return Upload(pipeline_id, version.pipeline_version_id, outcome)


def _named(display_name: str) -> str:
    """A list filter for the resources called ``display_name``, as kfp.Client.get_pipeline_id builds it."""
    return json.dumps({"predicates": [{"operation": _EQUALS, "key": "display_name", "stringValue": display_name}]})


def start_run(kfp_client: Any, host: str, *, pipeline_id: str, version_id: str, experiment: str, run_name: str,
              arguments: dict[str, Any], pipeline_root: str | None) -> tuple[str, str]:
    """Start ``run_name`` of the given pipeline version in ``experiment`` (created if missing).

    Returns ``(experiment_id, run_id)``.
    """
    with _api_errors(host, f"create experiment {experiment!r}"):
        exp = kfp_client.create_experiment(experiment)
    with _api_errors(host, f"start run {run_name!r}"):
        run = kfp_client.run_pipeline(experiment_id=exp.experiment_id, job_name=run_name, params=arguments,
                                      pipeline_id=pipeline_id, version_id=version_id,
                                      pipeline_root=pipeline_root or None)
    return exp.experiment_id, run.run_id


@contextlib.contextmanager
def _api_errors(host: str, what: str) -> Iterator[None]:
    """Turn kfp_server_api / urllib3 failures inside the block into one ``RuntimeError`` naming the host."""
    import kfp_server_api
    import urllib3

    try:
        yield
    except kfp_server_api.ApiException as err:
        body = err.body.decode(errors="replace") if isinstance(err.body, bytes) else str(err.body or "")
        try:
            body = str(json.loads(body).get("message", body))
        except (ValueError, AttributeError):
            pass
        raise RuntimeError(f"KFP API at {host} refused to {what}: {err.status} {err.reason}"
                           + (f": {body.strip()[:300]}" if body.strip() else "")) from None
    except (urllib3.exceptions.HTTPError, OSError) as err:  # OSError includes kfp's healthz TimeoutError
        raise RuntimeError(f"cannot reach KFP API at {host} to {what}: {err}") from None
