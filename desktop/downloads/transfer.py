"""Fetch one file over HTTP(S): resumable, cancellable, verified. The one byte path for every
source (Hugging Face and direct addresses), so all downloads behave alike.

Bytes go to ``NAME.partial`` beside the destination and stay there until the whole file's
SHA-256 matches; only then is it fsynced and renamed. A partial left by a cancel, a crash or a
dropped connection is resumed with ``Range: bytes=N-``; its prefix is hashed once, as it is,
so the final check covers every byte without reading the new ones twice.

Each received chunk is written and hashed on a second thread while the next one is received
into the other buffer: file writes and hashlib release the GIL, so on a fast link the checksum
costs little time. (An fdatasync every 64 MiB on that thread was measured slower than one fsync
at the end: it made the thread wait for the disk while the socket filled.)

The body is read straight from the socket (``recv_into`` with a short timeout) rather than
through ``http.client``'s file object: a timeout on that object makes it unusable, and the
timeout is what lets a cancel or a stalled server end the wait within a second.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import select
import ssl
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from desktop.downloads.errors import DownloadCancelled, DownloadError
from desktop.downloads.space import check_free_space, size_text

CHUNK = 4 * 1024 * 1024  # bytes written and hashed at a time: large enough to be cheap per byte
POLL_SECONDS = 0.25  # socket timeout: how often a wait looks at should_stop
CONNECT_SECONDS = 10.0
STALL_SECONDS = 30.0  # no byte for this long counts as a dropped connection
# Write what arrived, and look at should_stop, at least this often (a kill -9 then loses little).
FLUSH_SECONDS = 0.2
RETRIES = 4  # dropped connections in a row (without a byte between) before giving up
MAX_REDIRECTS = 5
_REDIRECTS = (301, 302, 303, 307, 308)


@dataclass(frozen=True)
class DownloadProgress:
    file_name: str
    bytes_done: int
    total: int | None
    bytes_per_second: float  # smoothed over the last seconds
    seconds_left: float | None  # None until the speed and the total are known


def partial_path(destination: Path) -> Path:
    """Where the bytes of ``destination`` wait until they are complete and verified."""
    return destination.with_name(destination.name + ".partial")


def fetch(url: str, destination: Path, *, headers: Mapping[str, str] | None = None,
          expected_size: int | None = None, expected_sha256: str | None = None,
          progress: Callable[[DownloadProgress], None] | None = None,
          should_stop: Callable[[], bool] | None = None) -> Path:
    """Download ``url`` to ``destination`` (resuming its partial file) and return it.

    Raises DownloadCancelled when ``should_stop`` turns true (the partial file stays), and
    DownloadError with one sentence for anything else; a checksum mismatch deletes the bytes.
    ``headers`` (a login, say) are sent only to ``url``'s own host, never after a redirect to
    another one.
    """
    transfer = _Transfer(url, Path(destination), dict(headers or {}), expected_size,
                         expected_sha256.lower() if expected_sha256 else None,
                         progress, should_stop or (lambda: False))
    return transfer.run()


class _Dropped(Exception):
    """The connection broke or stalled; worth another try from the bytes that arrived."""


class _RawResponse(http.client.HTTPResponse):
    """A response whose status and headers are read without read-ahead, so that every body
    byte is still in the socket for ``recv_into``."""

    def __init__(self, sock, *args, **kwargs) -> None:
        super().__init__(sock, *args, **kwargs)
        self.fp.close()
        self.fp = sock.makefile("rb", buffering=0)


class _Transfer:
    def __init__(self, url: str, destination: Path, headers: dict[str, str],
                 expected_size: int | None, expected_sha256: str | None,
                 progress: Callable[[DownloadProgress], None] | None,
                 should_stop: Callable[[], bool]) -> None:
        self.url, self.destination, self.headers = url, destination, headers
        self.name = destination.name
        self.partial = partial_path(destination)
        self.expected_size, self.expected_sha256 = expected_size, expected_sha256
        self.total = expected_size
        self.should_stop = should_stop
        self.meter = _Meter(self.name, progress)
        self.buffers = (memoryview(bytearray(CHUNK)), memoryview(bytearray(CHUNK)))
        self.buffer = self.buffers[0]  # receiving into one while the other is hashed
        self.hasher = hashlib.sha256()
        self.hashing: Future | None = None
        self.done = 0
        self.connected = False  # once a server answered, a refused connection is a drop
        self.space_checked = expected_size is not None  # the caller checked known sizes

    def run(self) -> Path:
        self.destination.parent.mkdir(parents=True, exist_ok=True)
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="easel-download-hash")
        try:
            return self._run()
        except BaseException:
            if self.partial.is_file() and self.partial.stat().st_size == 0:
                self.partial.unlink()  # a refusal before the first byte leaves nothing behind
            raise
        finally:
            self.worker.shutdown(wait=True)

    def _run(self) -> Path:
        with open(self.partial, "a+b") as file:
            self.file = file
            try:
                self._fetch_rest()
            finally:
                if self.hashing is not None:  # let the last chunk land before the file closes
                    wait([self.hashing])
            self._settle()
            file.flush()
            os.fsync(file.fileno())
        self._verify()
        os.replace(self.partial, self.destination)
        _fsync_folder(self.destination.parent)
        return self.destination

    def _fetch_rest(self) -> None:
        self._hash_partial()
        failures = 0
        while not self._complete():
            before = self.done
            try:
                self._attempt()
                return
            except _Finished:
                return
            except _Dropped:
                failures = 0 if self.done > before else failures + 1
                if failures > RETRIES:
                    raise DownloadError(
                        f"The connection to {_host(self.url)} kept dropping while fetching "
                        f"{self.name}; the {size_text(self.done)} fetched are kept and the "
                        "download resumes from there next time.") from None
                self._wait(0.25 * 2 ** min(failures, 4))

    def _complete(self) -> bool:
        return self.expected_size is not None and self.done >= self.expected_size

    def _hash_partial(self) -> None:
        """Hash the bytes a previous try left, streaming, so they need not be fetched again."""
        self.file.seek(0)
        while read := self.file.readinto(self.buffer):
            self.hasher.update(self.buffer[:read])
            self.done += read
        if self.expected_size is not None and self.done > self.expected_size:
            self._restart()  # longer than the file can be: not a prefix of it
        self.meter.start(self.done, self.total)

    def _restart(self) -> None:
        self._settle()
        self.file.truncate(0)
        self.hasher = hashlib.sha256()
        self.done = 0

    def _attempt(self) -> None:
        connection, sock, response = self._request()
        try:
            self._accept(response)
            self._receive(sock, _length(response))
        finally:
            response.close()
            connection.close()

    def _accept(self, response: http.client.HTTPResponse) -> None:
        """Check the answer and line the partial file up with the bytes it will carry."""
        status = response.status
        if status == 416:  # the partial already reaches the end, or the file changed
            total = _content_range(response.getheader("Content-Range", ""))[2]
            if total is not None and total == self.done:
                self.expected_size = self.total = total
                raise _Finished
            self._restart()
            raise _Dropped("range not satisfiable")
        if status == 206:
            start, _, total = _content_range(response.getheader("Content-Range", ""))
            if start != self.done:
                self._restart()
                raise _Dropped("the server sent another range than asked")
            if total is None and _length(response) is not None:
                total = self.done + _length(response)
        elif status == 200:
            if self.done:
                self._restart()  # this server ignores Range: start over
            total = _length(response)
        else:
            raise self._refused(status, response.reason)
        if total is not None and self.expected_size is not None and total != self.expected_size:
            raise DownloadError(
                f"{self.name} is {total:,} bytes on {_host(self.url)}, not the "
                f"{self.expected_size:,} expected, so it was not downloaded.")
        self.total = total
        if not self.space_checked and total is not None:
            check_free_space(self.partial.parent, total - self.done, f"{self.name}")
            self.space_checked = True

    def _refused(self, status: int, reason: str) -> Exception:
        host = _host(self.url)
        if status in (401, 403):
            return DownloadError(f"{host} refused access to {self.name} (HTTP {status}): the "
                                 "address needs a login or has expired.")
        if status == 404:
            return DownloadError(f"{self.name} is not at {self.url} (HTTP 404): the address "
                                 "is wrong or the file was removed.")
        if status == 429 or status >= 500:
            return _Dropped(f"HTTP {status}")  # busy or failing for now: try again
        return DownloadError(f"{host} answered HTTP {status} {reason} for {self.name}.")

    def _request(self) -> tuple[http.client.HTTPConnection, object, http.client.HTTPResponse]:
        """Send the GET (with Range when resuming), following redirects; login headers are
        dropped once a redirect leaves the first host."""
        url, headers = self.url, dict(self.headers)
        headers["Accept-Encoding"] = "identity"
        for _ in range(MAX_REDIRECTS + 1):
            if self.done:
                headers["Range"] = f"bytes={self.done}-"
            connection, sock = self._connect(url)
            parts = urlsplit(url)
            try:
                connection.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""),
                                   headers=headers)
                self._wait_for_answer(sock)
                sock.settimeout(CONNECT_SECONDS)
                response = connection.getresponse()
            except OSError as error:
                connection.close()
                raise _Dropped(str(error)) from error
            self.connected = True
            location = response.getheader("Location")
            if response.status not in _REDIRECTS or not location:
                return connection, sock, response
            response.close()
            connection.close()
            target = urljoin(url, location)
            if _origin(target) != _origin(url):
                headers = {k: v for k, v in headers.items()
                           if k.lower() not in ("authorization", "cookie")}
            url = target
        raise DownloadError(f"{_host(self.url)} redirected {self.name} too many times.")

    def _connect(self, url: str) -> tuple[http.client.HTTPConnection, object]:
        parts = urlsplit(url)
        if parts.scheme == "https":
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                parts.hostname, parts.port, timeout=CONNECT_SECONDS,
                context=ssl.create_default_context())
        elif parts.scheme == "http":
            connection = http.client.HTTPConnection(parts.hostname, parts.port,
                                                    timeout=CONNECT_SECONDS)
        else:
            raise DownloadError(f"{url} is not an http or https address.")
        connection.response_class = _RawResponse
        try:
            connection.connect()
        except OSError as error:
            connection.close()
            if self.connected:
                raise _Dropped(str(error)) from error
            raise DownloadError(f"Cannot reach {parts.hostname} to fetch {self.name}: check the "
                                "network connection, then try again.") from error
        return connection, connection.sock

    def _wait_for_answer(self, sock) -> None:
        """Wait for the status line, looking at should_stop every POLL_SECONDS."""
        since = time.monotonic()
        while not select.select([sock], [], [], POLL_SECONDS)[0]:
            self._check_stop()
            if time.monotonic() - since > STALL_SECONDS:
                raise _Dropped("no answer")

    def _receive(self, sock, length: int | None) -> None:
        """Read the body into the buffer; write and hash it a chunk at a time."""
        sock.settimeout(POLL_SECONDS)
        filled, remaining = 0, length
        last_byte = last_flush = time.monotonic()
        while remaining is None or remaining > 0:
            end = CHUNK if remaining is None else min(CHUNK, filled + remaining)
            try:
                received = sock.recv_into(self.buffer[filled:end])
            except TimeoutError:
                received = -1
            except OSError as error:  # reset by the peer, and the like
                self._write(filled)
                raise _Dropped(str(error)) from error
            now = time.monotonic()
            if received == 0:
                self._write(filled)
                if remaining is None:
                    return  # no length given: the end of the connection is the end
                raise _Dropped("connection closed early")
            if received > 0:
                filled += received
                last_byte = now
                if remaining is not None:
                    remaining -= received
            due = received < 0 or now - last_flush > FLUSH_SECONDS
            if filled == CHUNK or remaining == 0 or due:
                self._write(filled)
                filled, last_flush = 0, now
                self._check_stop()
                if now - last_byte > STALL_SECONDS:
                    raise _Dropped("stalled")

    def _write(self, filled: int) -> None:
        """Hand the received chunk to the worker and receive the next into the other buffer."""
        if filled:
            self._settle()  # the other buffer is free again once it is stored
            self.hashing = self.worker.submit(self._store, self.buffer[:filled])
            self.buffer = self.buffers[self.buffer is self.buffers[0]]
            self.done += filled
            self.meter.update(self.done, self.total)

    def _store(self, chunk: memoryview) -> None:
        """On the worker: write and hash."""
        self.file.write(chunk)
        self.hasher.update(chunk)

    def _settle(self) -> None:
        """Wait for the chunk being stored: the file and the hash are then up to date."""
        if self.hashing is not None:
            hashing, self.hashing = self.hashing, None
            try:
                hashing.result()
            except OSError as error:  # a full disk, most likely
                raise DownloadError(f"Writing {self.partial} failed ({error.strerror}); the "
                                    "bytes already written are kept.") from error

    def _check_stop(self) -> None:
        if self.should_stop():
            self._settle()
            self.file.flush()
            raise DownloadCancelled(
                f"The download of {self.name} was cancelled; the {size_text(self.done)} already "
                "fetched are kept and it resumes from there.")

    def _wait(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self._check_stop()
            time.sleep(min(left, POLL_SECONDS))

    def _verify(self) -> None:
        self.meter.update(self.done, self.done, final=True)
        got = self.hasher.hexdigest()
        if self.expected_sha256 and got != self.expected_sha256:
            self.partial.unlink(missing_ok=True)
            raise DownloadError(
                f"{self.name} arrived damaged and was deleted: its SHA-256 is {got}, not the "
                f"expected {self.expected_sha256}.")


class _Finished(Exception):
    """A 416 said the partial file already holds the whole file."""


class _Meter:
    """Speed (smoothed) and time left, reported at most ten times a second."""

    def __init__(self, name: str, progress: Callable[[DownloadProgress], None] | None) -> None:
        self.name, self.progress = name, progress
        self.speed = 0.0

    def start(self, done: int, total: int | None) -> None:
        self.last_done, self.last_time, self.last_report = done, time.monotonic(), 0.0
        self.update(done, total, final=True)

    def update(self, done: int, total: int | None, final: bool = False) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if now - self.last_time >= 0.5:  # a new speed sample every half second
            sample = (done - self.last_done) / (now - self.last_time)
            self.speed = sample if self.speed == 0 else 0.7 * self.speed + 0.3 * sample
            self.last_done, self.last_time = done, now
        if not final and now - self.last_report < 0.1:
            return
        self.last_report = now
        left = (total - done) / self.speed if total is not None and self.speed > 0 else None
        self.progress(DownloadProgress(self.name, done, total, self.speed, left))


def _length(response: http.client.HTTPResponse) -> int | None:
    value = response.getheader("Content-Length")
    return int(value) if value and value.isdigit() else None


def _content_range(value: str) -> tuple[int | None, int | None, int | None]:
    """``bytes START-END/TOTAL`` (or ``bytes */TOTAL``) as numbers, None where absent."""
    try:
        span, _, total = value.split(" ", 1)[1].partition("/")
        start, _, end = span.partition("-")
        return (int(start) if start.isdigit() else None, int(end) if end.isdigit() else None,
                int(total) if total.isdigit() else None)
    except (IndexError, ValueError):
        return None, None, None


def _host(url: str) -> str:
    return urlsplit(url).hostname or url


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX; Windows cannot open a folder for this)."""
    if os.name == "posix":
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
