"""A tiny Docker Registry (HTTP API v2) on 127.0.0.1 that serves test images, and can fail on purpose.

Enough of the distribution spec for ``docker pull``: ``GET /v2/`` (the version check),
``GET``/``HEAD /v2/<name>/manifests/<tag or digest>`` (an image manifest, schema 2) and
``GET``/``HEAD /v2/<name>/blobs/<digest>`` (the image config and one gzipped layer). Anything else
is a spec-shaped 404 (``MANIFEST_UNKNOWN``, ``BLOB_UNKNOWN``, ``NAME_UNKNOWN``) or 405.

Each image (one repository, any number of tags: the constructor's and :meth:`Registry.add`'s) is
one layer made from a root filesystem tarball (see ``tests/dockerengine.py``) plus a config with
its ``Cmd``/``Entrypoint``/``Env``, so no public registry is ever involved. Docker treats registries on 127.0.0.0/8 as insecure (plain HTTP) by
default, so nothing needs configuring in the engine::

    with Registry(engine.rootfs(), cmd=["sh", "-c", "exit 0"], fail_first=2) as reg:
        engine.docker("pull", reg.image)      # reg.image == "127.0.0.1:PORT/jobman/busybox:1"

``fail_first=N`` answers the first N requests whose method is in ``fail_methods`` (default GET) and
whose path contains ``fail_on`` (default: manifests, which a pull cannot do without) with
``fail_status`` (503 unless told otherwise) and a spec-shaped error body, then serves normally.
Measured with Docker 20.10: a pull sends ``HEAD`` then ``GET`` for the manifest, and one failed
``GET`` fails the whole pull, so with the defaults ``fail_first=N`` fails exactly N pulls (failing
``HEAD`` too would make one pull use up two failures: the engine falls back from ``HEAD`` to
``GET``). :attr:`Registry.requests` records every request (method, path, status answered), in order.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import platform
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Sequence

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"
_ROUTE = re.compile(r"^/v2/(?P<name>.+)/(?P<kind>manifests|blobs)/(?P<ref>[^/]+)$")


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)


@dataclass(frozen=True)
class Served:
    method: str
    path: str
    status: int


class Registry:
    """See the module docstring. Use as a context manager; :attr:`image` is the pull reference."""

    def __init__(self, rootfs_tar: bytes | None = None, *, repository: str = "jobman/busybox", tag: str = "1",
                 cmd: Sequence[str] | None = ("true",), env: Sequence[str] = ("PATH=/bin",),
                 fail_first: int = 0, fail_status: int = 503, fail_on: str | None = "/manifests/",
                 fail_methods: Sequence[str] = ("GET",)) -> None:
        self.repository, self.tag = repository, tag
        self.fail_first, self.fail_status, self.fail_on = fail_first, fail_status, fail_on
        self.fail_methods = tuple(fail_methods)
        self.requests: list[Served] = []
        self._lock = threading.Lock()
        self._failed = 0
        self.manifests: dict[str, tuple[str, bytes]] = {}  # tag or digest -> (digest, manifest)
        self.blobs: dict[str, bytes] = {}
        registry = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self, status: int, body: bytes, content_type: str = "application/json",
                        headers: dict[str, str] | None = None) -> None:
                with registry._lock:
                    registry.requests.append(Served(self.command, self.path, status))
                self.send_response(status)
                self.send_header("Docker-Distribution-API-Version", "registry/2.0")
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _error(self, status: int, code: str, message: str) -> None:
                body = json.dumps({"errors": [{"code": code, "message": message, "detail": None}]}).encode()
                self._answer(status, body)

            def _handle(self) -> None:
                path = self.path.split("?", 1)[0]
                if registry._should_fail(self.command, path):
                    self._error(registry.fail_status, "UNAVAILABLE", f"test registry: failing on purpose ({registry.fail_status})")
                    return
                if path in ("/v2", "/v2/"):
                    self._answer(200, b"{}")
                    return
                match = _ROUTE.match(path)
                if match is None:
                    self._error(404, "NAME_UNKNOWN", "repository name not known to registry")
                    return
                if match["name"] != registry.repository:
                    self._error(404, "NAME_UNKNOWN", "repository name not known to registry")
                    return
                ref = match["ref"]
                if match["kind"] == "manifests":
                    found = registry.manifests.get(ref)
                    if found is None:
                        self._error(404, "MANIFEST_UNKNOWN", "manifest unknown")
                        return
                    self._answer(200, found[1], MANIFEST_TYPE, {"Docker-Content-Digest": found[0]})
                    return
                blob = registry.blobs.get(ref)
                if blob is None:
                    self._error(404, "BLOB_UNKNOWN", "blob unknown to registry")
                    return
                self._answer(200, blob, "application/octet-stream", {"Docker-Content-Digest": ref})

            def do_GET(self) -> None:
                self._handle()

            def do_HEAD(self) -> None:
                self._handle()

            def _not_allowed(self) -> None:
                self._error(405, "UNSUPPORTED", "this test registry is read-only")

            do_POST = do_PUT = do_PATCH = do_DELETE = _not_allowed

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        if rootfs_tar is not None:
            self.add(tag, rootfs_tar, cmd=cmd, env=env)

    def add(self, tag: str, rootfs_tar: bytes, *, cmd: Sequence[str] | None = ("true",),
            entrypoint: Sequence[str] | None = None, env: Sequence[str] = ("PATH=/bin",)) -> str:
        """Serve ``rootfs_tar`` (one gzipped layer) as ``<repository>:<tag>``; returns the pull reference."""
        layer = gzip.compress(rootfs_tar, compresslevel=1, mtime=0)
        image_config: dict[str, Any] = {"Env": list(env)}
        if cmd is not None:
            image_config["Cmd"] = list(cmd)
        if entrypoint is not None:
            image_config["Entrypoint"] = list(entrypoint)
        config: dict[str, Any] = {
            "architecture": _arch(), "os": "linux", "config": image_config,
            "rootfs": {"type": "layers", "diff_ids": [_digest(rootfs_tar)]},
            "history": [{"created_by": "tests/registry.py"}],
        }
        config_bytes = json.dumps(config, sort_keys=True).encode()
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": CONFIG_TYPE, "size": len(config_bytes), "digest": _digest(config_bytes)},
            "layers": [{"mediaType": LAYER_TYPE, "size": len(layer), "digest": _digest(layer)}],
        }, indent=3).encode()
        with self._lock:
            self.blobs[_digest(config_bytes)] = config_bytes
            self.blobs[_digest(layer)] = layer
            self.manifests[tag] = self.manifests[_digest(manifest)] = (_digest(manifest), manifest)
        return self.ref(tag)

    def _should_fail(self, method: str, path: str) -> bool:
        with self._lock:
            if self._failed >= self.fail_first or method not in self.fail_methods:
                return False
            if self.fail_on is not None and self.fail_on not in path:
                return False
            self._failed += 1
            return True

    @property
    def host(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    def ref(self, tag: str) -> str:
        return f"{self.host}/{self.repository}:{tag}"

    @property
    def image(self) -> str:
        """The pull reference of the image given to the constructor."""
        return self.ref(self.tag)

    def served(self, status: int | None = None, contains: str = "") -> list[Served]:
        with self._lock:
            return [r for r in self.requests if (status is None or r.status == status) and contains in r.path]

    def __enter__(self) -> "Registry":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
