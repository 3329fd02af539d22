"""Download speed: desktop.downloads.fetch against curl on the same local server, and what a
resume after a cancel fetches again.

Serves a random file (default 500 MiB) from tests/fake_hub.py on 127.0.0.1 (sendfile, no
switches set), downloads it with ``curl -s -o``, with curl followed by an fsync of its file (the
durability fetch gives), and with ``fetch`` (SHA-256 checked, fsync and rename included) in
turn (fetch in a process of its own, as curl is, timing its call), and prints the medians and
the ratios. The same again with the server pacing
its answers like a real link (``--link-mib``, default 112 MiB/s, about 1 Gbit/s), where the
network, not the machine, should set the speed. Then cancels a fetch at about half, resumes
it, and prints the bytes the server sent beyond the file's size.

    .venv/bin/python tests/benchmarks/download_speed.py [--mib 500] [--runs 3]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from desktop.downloads import DownloadCancelled, fetch, partial_path  # noqa: E402
from tests.fake_hub import FakeHub  # noqa: E402

MiB = 1024 * 1024
_TIMED_FETCH = """
import sys, time
from pathlib import Path
from desktop.downloads import fetch
url, target, size, sha256 = sys.argv[1:5]
started = time.perf_counter()
fetch(url, Path(target), expected_size=int(size), expected_sha256=sha256)
print(time.perf_counter() - started)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--link-mib", type=float, default=112.0,
                        help="also compare on a link paced at this many MiB/s (112: about "
                             "1 Gbit/s Ethernet); 0 to skip")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="easel-download-") as scratch:
        folder = Path(scratch)
        source, sha256 = _random_file(folder / "source.bin", args.mib * MiB)
        hub = FakeHub(folder / "served")
        try:
            url = hub.add_plain("model.bin", source)
            _speed(url, folder, sha256, args.runs, args.mib * MiB)
            if args.link_mib:
                hub.rate = int(args.link_mib * MiB)
                print(f"on a link paced at {args.link_mib:g} MiB/s by the server:")
                _speed(url, folder, sha256, args.runs, args.mib * MiB)
                hub.rate = None
            _resume_overhead(hub, url, folder, sha256, args.mib * MiB)
        finally:
            hub.close()


def _random_file(path: Path, size: int) -> tuple[Path, str]:
    hasher = hashlib.sha256()
    with open(path, "wb") as file:
        for start in range(0, size, 8 * MiB):
            block = os.urandom(min(8 * MiB, size - start))
            hasher.update(block)
            file.write(block)
    return path, hasher.hexdigest()


def _speed(url: str, folder: Path, sha256: str, runs: int, size: int) -> None:
    curl, synced, ours = [], [], []
    for _ in range(runs):
        target = folder / "curl.bin"
        started = time.perf_counter()
        subprocess.run(["curl", "-s", "-o", str(target), url], check=True)
        curl.append(time.perf_counter() - started)
        target.unlink()

        # curl, then the fsync fetch does before its rename: the same durability
        started = time.perf_counter()
        subprocess.run(["curl", "-s", "-o", str(target), url], check=True)
        descriptor = os.open(target, os.O_RDONLY)
        os.fsync(descriptor)
        os.close(descriptor)
        synced.append(time.perf_counter() - started)
        target.unlink()

        # In a process of its own, as curl is: in this one it would share the interpreter
        # lock with the server's threads. It reports the time of the call alone (Python's
        # start-up and imports are not the download).
        target = folder / "fetch.bin"
        timed = subprocess.run([sys.executable, "-c", _TIMED_FETCH, url, str(target),
                                str(size), sha256], check=True, capture_output=True,
                               text=True, cwd=Path(__file__).resolve().parents[2])
        ours.append(float(timed.stdout))
        target.unlink()
    curl_s, ours_s = statistics.median(curl), statistics.median(ours)
    synced_s = statistics.median(synced)
    print(f"file: {size / MiB:.0f} MiB, {runs} runs each, medians")
    print(f"curl -s -o : {curl_s:.3f} s  {size / MiB / curl_s:8.1f} MiB/s  "
          f"(runs {', '.join(f'{t:.3f}' for t in curl)})")
    print(f"curl+fsync : {synced_s:.3f} s  {size / MiB / synced_s:8.1f} MiB/s  "
          f"(runs {', '.join(f'{t:.3f}' for t in synced)})")
    print(f"fetch      : {ours_s:.3f} s  {size / MiB / ours_s:8.1f} MiB/s  "
          f"(runs {', '.join(f'{t:.3f}' for t in ours)}; SHA-256, fsync and rename included)")
    print(f"throughput, fetch / curl: {curl_s / ours_s:.2f}; "
          f"fetch / (curl, then fsync): {synced_s / ours_s:.2f}")


def _resume_overhead(hub: FakeHub, url: str, folder: Path, sha256: str, size: int) -> None:
    target = folder / "resume.bin"
    partial = partial_path(target)
    hub.served.clear()
    with contextlib.suppress(DownloadCancelled):
        fetch(url, target, expected_size=size, expected_sha256=sha256,
              should_stop=lambda: partial.exists() and partial.stat().st_size >= size // 2)
    kept = partial.stat().st_size
    time.sleep(0.5)  # let the server log the cancelled answer
    fetch(url, target, expected_size=size, expected_sha256=sha256)
    sent = sum(end - start for start, end in hub.ranges())
    print(f"cancel at {kept / MiB:.1f} MiB, then resume: the server sent {sent / MiB:.1f} MiB "
          f"for a {size / MiB:.0f} MiB file; fetched again beyond the partial: "
          f"{(sent - size) / MiB:.2f} MiB (bytes the server had written before the cancel "
          "that never reached the partial)")
    print(f"resume requests: {hub.ranges()}")
    shutil.rmtree(folder / "served", ignore_errors=True)


if __name__ == "__main__":
    main()
