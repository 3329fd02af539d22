"""A stand-in for the Hugging Face Hub and for a plain file host, both on 127.0.0.1.

The hub part answers ``/{repo_id}/resolve/{revision}/{filename}`` as huggingface.co does for
huggingface_hub (read from huggingface_hub 2.4.0: ``get_hf_file_metadata`` and
``hf_raise_for_status``): a file kept in LFS is a 302 to a storage host with ``X-Linked-Size``,
``X-Linked-Etag`` (its SHA-256) and ``X-Repo-Commit``; a file kept in git is a 200 with its git
blob SHA-1 as ``ETag``; failures carry ``X-Error-Code`` / ``X-Error-Message`` (401 for a missing
or private repo and for a gated one without a login, 403 for a gated one with a login that was
not granted, 404 for a revision or a file). The storage part (a second server, so another
origin, as the real storage host is) serves the LFS blobs and plain files with Range support.

Every body byte sent is logged (``served``), so tests can show that nothing was fetched twice.
``rate`` (bytes per second) paces every answer like a real link. Switches inject trouble:
``drop_at`` (close the connection once at that offset), ``corrupt_at``
(flip one byte), ``stall_at`` (stop sending at that offset until ``release()`` or ``abort()``).
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

_PIECE = 64 * 1024  # send size on the slow path (when a switch is set)
_STALL_LIMIT = 30.0  # a stalled answer ends by itself after this, so no thread is left behind


@dataclass(frozen=True)
class Served:
    server: str  # "hub" or "storage"
    path: str
    start: int
    end: int  # exclusive: the bytes [start, end) were written to the socket
    authorization: str | None


@dataclass
class _Repo:
    commit: str
    files: dict[str, tuple[Path, bool]]  # filename -> (content on disk, kept in LFS)
    gated: bool = False
    private: bool = False
    granted: frozenset[str] = frozenset()  # tokens that may read it when gated or private


class FakeHub:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.repos: dict[str, _Repo] = {}
        self.tokens: set[str] = set()  # tokens the hub knows at all
        self.plain: dict[str, Path] = {}  # storage path -> content
        self.denied: set[str] = set()  # storage paths that answer 401 (an expired link)
        self.served: list[Served] = []
        self.requests: list[tuple[str, str, str]] = []  # (server, method, path)
        self.drop_at: int | None = None
        self.corrupt_at: int | None = None
        self.stall_at: int | None = None
        self.rate: int | None = None  # bytes per second: a link slower than loopback
        self.stalled = threading.Event()  # set while an answer is held at stall_at
        self._go_on = threading.Event()
        self._abort = threading.Event()
        self.lock = threading.Lock()
        self._hub = self._start("hub")
        self._storage = self._start("storage")

    # --- what the servers hold -------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._hub.server_address[1]}"

    @property
    def storage(self) -> str:
        return f"http://127.0.0.1:{self._storage.server_address[1]}"

    def add_repo(self, repo_id: str, *, gated: bool = False, private: bool = False,
                 granted: tuple[str, ...] = ()) -> str:
        commit = hashlib.sha1(repo_id.encode()).hexdigest()
        self.repos[repo_id] = _Repo(commit, {}, gated, private, frozenset(granted))
        self.tokens.update(granted)
        return commit

    def add_file(self, repo_id: str, filename: str, data: bytes | Path, *,
                 lfs: bool = True) -> Path:
        path = self._stored(data)
        self.repos[repo_id].files[filename] = (path, lfs)
        return path

    def add_plain(self, name: str, data: bytes | Path) -> str:
        """Serve ``data`` at a plain address (no Hub API) and return that address."""
        self.plain[f"/files/{name}"] = self._stored(data)
        return f"{self.storage}/files/{name}"

    def _stored(self, data: bytes | Path) -> Path:
        if isinstance(data, Path):
            return data
        path = self.folder / hashlib.sha256(data).hexdigest()
        path.write_bytes(data)
        return path

    # --- what the tests look at and switch -------------------------------------------------

    def ranges(self, path_part: str = "") -> list[tuple[int, int]]:
        """The body byte ranges sent, in order, for paths containing ``path_part``."""
        with self.lock:
            return [(served.start, served.end) for served in self.served
                    if path_part in served.path and served.end > served.start]

    def release(self) -> None:
        """Let a stalled answer go on sending."""
        self.stall_at = None
        self._go_on.set()

    def abort(self) -> None:
        """End a stalled answer without sending more (its client is gone), and wait until
        it has logged what it sent."""
        self.stall_at = None
        self._abort.set()
        deadline = time.monotonic() + 5
        while self.stalled.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)

    def reset_switches(self) -> None:
        self.drop_at = self.corrupt_at = self.stall_at = self.rate = None
        self._go_on.clear()
        self._abort.clear()
        self.stalled.clear()

    def close(self) -> None:
        self.abort()
        for server in (self._hub, self._storage):
            server.shutdown()
            server.server_close()

    def _start(self, role: str) -> ThreadingHTTPServer:
        hub = self

        class Handler(_Handler):
            fake, server_role = hub, role

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True, name=f"fake-{role}").start()
        return server


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    server_role: str
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # keep test output clean
        pass

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        self.close_connection = True
        path = urlsplit(self.path).path
        with self.fake.lock:
            self.fake.requests.append((self.server_role, self.command, self.path))
        if self.server_role == "storage":
            if path in self.fake.denied:
                return self._status(401, {})
            content = self.fake.plain.get(path) or self._blob(path)
            if content is None:
                return self._status(404, {})
            return self._content(content, body, {})
        self._hub(path, body)

    def _blob(self, path: str) -> Path | None:
        match = re.fullmatch(r"/lfs/([0-9a-f]{64})", path)
        return self.fake.folder / match[1] if match and (self.fake.folder / match[1]).is_file() \
            else None

    # --- the Hub's resolve endpoint ------------------------------------------------------------

    def _hub(self, path: str, body: bool) -> None:
        parts = path.strip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return self._status(404, {})
        repo_id, revision = f"{parts[0]}/{parts[1]}", unquote(parts[3])
        filename = unquote("/".join(parts[4:]))
        repo = self.fake.repos.get(repo_id)
        token = (self.headers.get("Authorization") or "").removeprefix("Bearer ") or None
        if token is not None and token not in self.fake.tokens:
            return self._error(401, None, "Invalid credentials in Authorization header")
        if repo is None or (repo.private and token not in repo.granted):
            return self._error(401, "RepoNotFound", "Repository not found")
        if repo.gated and token is None:
            return self._error(401, "GatedRepo", f"Access to model {repo_id} is restricted. You "
                               "must have access to it and be authenticated to access it. "
                               "Please log in.")
        if repo.gated and token not in repo.granted:
            return self._error(403, "GatedRepo", f"Access to model {repo_id} is restricted and you"
                               " are not in the authorized list. Visit "
                               f"https://huggingface.co/{repo_id} to ask for access.")
        if revision not in ("main", repo.commit):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        if filename not in repo.files:
            return self._error(404, "EntryNotFound", "Entry not found")
        content, lfs = repo.files[filename]
        if not lfs:
            data = content.read_bytes()
            git_sha1 = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
            return self._content(content, body, {"X-Repo-Commit": repo.commit,
                                                 "ETag": f'"{git_sha1}"'})
        sha256 = content.name  # blobs are stored under their SHA-256
        self._status(302, {
            "Location": f"{self.fake.storage}/lfs/{sha256}?X-Amz-Expires=3600",
            "X-Repo-Commit": repo.commit, "X-Linked-Etag": f'"{sha256}"',
            "X-Linked-Size": str(content.stat().st_size),
            "ETag": '"' + hashlib.sha1(sha256.encode()).hexdigest() + '"'})

    def _error(self, status: int, code: str | None, message: str) -> None:
        headers = {"X-Error-Message": message, "Content-Type": "application/json"}
        if code:
            headers["X-Error-Code"] = code
        self._status(status, headers, json.dumps({"error": message}).encode())

    def _status(self, status: int, headers: dict[str, str], payload: bytes = b"") -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "GET" and payload:
            self.wfile.write(payload)

    # --- bodies, with Range ----------------------------------------------------------------

    def _content(self, content: Path, body: bool, headers: dict[str, str]) -> None:
        size = content.stat().st_size
        start, status = 0, 200
        asked = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if asked:
            start, status = int(asked[1]), 206
            if start >= size:
                return self._status(416, {"Content-Range": f"bytes */{size}"})
            headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
        headers.setdefault("Accept-Ranges", "bytes")
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(size - start))
        self.send_header("Connection", "close")
        self.end_headers()
        if body:
            self._send(content, start, size)

    def _send(self, content: Path, start: int, size: int) -> None:
        fake = self.fake
        sent = start
        try:
            with open(content, "rb") as file:
                file.seek(start)
                switches = (fake.drop_at, fake.corrupt_at, fake.stall_at, fake.rate)
                if all(switch is None for switch in switches):
                    try:
                        self.connection.sendfile(file, start, size - start)
                    finally:
                        sent = file.tell()
                    return
                began = time.monotonic()
                while sent < size:
                    if fake.rate:  # pace the answer: no byte before its time on the link
                        time.sleep(max(0.0, began + (sent - start) / fake.rate
                                       - time.monotonic()))
                    stall = fake.stall_at is not None and sent >= fake.stall_at
                    if stall and not self._stall():
                        return
                    end = min(size, sent + _PIECE)
                    for limit in (fake.drop_at, fake.stall_at):
                        if limit is not None and sent < limit < end:
                            end = limit
                    piece = bytearray(file.read(end - sent))
                    if fake.corrupt_at is not None and sent <= fake.corrupt_at < end:
                        piece[fake.corrupt_at - sent] ^= 0xFF
                    self.connection.sendall(piece)
                    sent = end
                    if fake.drop_at is not None and sent >= fake.drop_at:
                        fake.drop_at = None  # once
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
        except OSError:
            pass  # the client went away
        finally:
            with fake.lock:
                fake.served.append(Served(self.server_role, self.path, start, sent,
                                          self.headers.get("Authorization")))
            fake.stalled.clear()  # logged: abort() may return

    def _stall(self) -> bool:
        """Hold the answer; True to go on sending, False to end it."""
        self.fake.stalled.set()
        for _ in range(int(_STALL_LIMIT / 0.05)):
            if self.fake._abort.is_set():
                return False
            if self.fake._go_on.is_set():
                return True
            self.fake._abort.wait(0.05)
        return False
