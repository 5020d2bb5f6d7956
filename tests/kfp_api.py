"""A small stand-in for the Kubeflow Pipelines v2beta1 REST API, for `micropipe submit` and `micropipe upload`
end to end through the real kfp.Client: the endpoints they use, state kept on the server object."""

from __future__ import annotations

import contextlib
import email
import email.policy
import json
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[tuple[ThreadingHTTPServer, str]]:
    """``handler`` served on 127.0.0.1 in a thread; yields the server and its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextlib.contextmanager
def fake_kfp() -> Iterator[tuple[ThreadingHTTPServer, str]]:
    """:class:`FakeKFP` served, with empty ``pipelines``, ``versions``, ``experiments``, ``runs`` and
    ``requests`` lists on the server."""
    with http_server(FakeKFP) as (server, host):
        server.pipelines, server.versions, server.experiments, server.runs, server.requests = [], [], [], [], []
        yield server, host


class FakeKFP(BaseHTTPRequestHandler):
    """Health check, pipelines (list, create), pipeline versions (list, upload), experiments (list, create)
    and runs (create). Lists honour the client's ``display_name EQUALS`` filter, and pipelines and
    experiments the ``namespace`` they were created in, as a multi-user server does."""

    def log_message(self, *args) -> None:
        pass

    def _reply(self, body: dict, code: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self, body: object = None) -> tuple[str, dict[str, str]]:
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        self.server.requests.append({"method": self.command, "path": url.path, "query": query,
                                     "auth": self.headers.get("Authorization"), "body": body})
        return url.path, query

    @staticmethod
    def _named(items: list[dict], query: dict[str, str]) -> list[dict]:
        """``items`` matching the client's ``display_name EQUALS`` filter, if it sent one."""
        if "filter" not in query:
            return items
        predicate = json.loads(query["filter"])["predicates"][0]
        name = predicate.get("stringValue", predicate.get("string_value"))
        return [i for i in items if i["display_name"] == name]

    @staticmethod
    def _in_namespace(items: list[dict], query: dict[str, str]) -> list[dict]:
        return [i for i in items if i.get("namespace", "") == query.get("namespace", "")]

    def do_GET(self) -> None:  # noqa: N802
        path, query = self._record()
        srv = self.server
        if path == "/apis/v2beta1/healthz":
            return self._reply({"multi_user": False})
        if path == "/apis/v2beta1/pipelines":
            return self._reply({"pipelines": self._named(self._in_namespace(srv.pipelines, query), query)})
        if path.startswith("/apis/v2beta1/pipelines/") and path.endswith("/versions"):
            pid = path.split("/")[-2]
            versions = [v for v in srv.versions if v["pipeline_id"] == pid][::-1]  # newest first
            return self._reply({"pipeline_versions": self._named(versions, query)})
        if path == "/apis/v2beta1/experiments":
            return self._reply({"experiments": self._named(self._in_namespace(srv.experiments, query), query)})
        return self._reply({"error": f"no route {path}"}, 404)

    def do_POST(self) -> None:  # noqa: N802
        srv = self.server
        length = int(self.headers.get("Content-Length", 0))
        raw = self.rfile.read(length)
        content_type = self.headers.get("Content-Type", "")
        if content_type.startswith("multipart/form-data"):
            form = email.message_from_bytes(f"Content-Type: {content_type}\r\n\r\n".encode() + raw,
                                            policy=email.policy.HTTP)
            files = {part.get_param("name", header="content-disposition"): part.get_content()
                     for part in form.iter_parts()}
            upload = files["uploadfile"]
            path, query = self._record({"uploadfile": upload.decode() if isinstance(upload, bytes) else upload})
        else:
            path, query = self._record(json.loads(raw or b"{}"))
        body = srv.requests[-1]["body"]
        if path == "/apis/v2beta1/pipelines":  # CreatePipeline: no version yet
            srv.pipelines.append({"pipeline_id": f"p{len(srv.pipelines) + 1}", **body})
            return self._reply(srv.pipelines[-1])
        if path == "/apis/v2beta1/pipelines/upload_version":
            pid = query["pipelineid"]
            vid = f"{pid}-v{sum(v['pipeline_id'] == pid for v in srv.versions) + 1}"
            srv.versions.append({"pipeline_id": pid, "pipeline_version_id": vid, "display_name": query["name"]})
            return self._reply(srv.versions[-1])
        if path == "/apis/v2beta1/experiments":
            srv.experiments.append({"experiment_id": f"e{len(srv.experiments) + 1}", **body})
            return self._reply(srv.experiments[-1])
        if path == "/apis/v2beta1/runs":
            srv.runs.append({"run_id": f"r{len(srv.runs) + 1}", **body})
            return self._reply(srv.runs[-1])
        return self._reply({"error": f"no route {path}"}, 404)
