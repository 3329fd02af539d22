"""``easel batch FILE --ray ADDRESS``: a batch run as Ray tasks on a throwaway local cluster
(tests/ray_cluster.py: a head node and two one-CPU worker nodes), a worker killed mid-job
and its task run again, every picture saved once by this process with the same pixels as the
local batch; and the ways a cluster cannot be used, each one sentence with nothing made."""

from __future__ import annotations

import builtins
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from desktop.batch import cluster as ray_batch
from desktop.cli import main
from desktop.library import Library
from tests.batch_files import batch_pictures, write_jsonl
from tests.ray_cluster import AUTH_OFF, RayCluster, free_port

pytest.importorskip("ray")

TASK = "_run_work"  # the Ray task's name: its worker process is titled ray::_run_work
JOBS = [{"prompt": f"a red fox in the centre, picture {index}", "steps": 24, "count": 2}
        for index in range(6)]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("EASEL_HOME", str(tmp_path / "home"))
    for name, value in AUTH_OFF.items():  # this process connects as a driver
        monkeypatch.setenv(name, value)
    return tmp_path / "home"


@pytest.fixture(scope="module")
def cluster():
    with RayCluster(workers=2, cpus_per_worker=1) as running:
        yield running



def whole_pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        image.load()  # a truncated PNG fails here
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def nothing_made(home: Path) -> bool:
    return not (home / "images").exists() or not any((home / "images").rglob("*.png"))


# --- the ways a cluster cannot be used: one sentence, nothing made ---------------------------


def test_without_ray_installed_the_sentence_says_what_to_install(home, tmp_path, monkeypatch,
                                                                 capsys):
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(f"No module named '{name}'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    jobs = write_jsonl(tmp_path / "jobs.jsonl", JOBS[:1])
    assert main(["batch", str(jobs), "--ray", "127.0.0.1:6379"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"easel: error: {ray_batch.RAY_MISSING}"]
    assert "pip install 'easel[cluster]'" in err[0]
    assert nothing_made(home)
    # The installed app (frozen) has no pip to run: it says where Ray can be had instead.
    monkeypatch.setattr("sys.frozen", True, raising=False)
    assert main(["batch", str(jobs), "--ray", "127.0.0.1:6379"]) == 1
    assert capsys.readouterr().err.strip() == f"easel: error: {ray_batch.RAY_MISSING_FROZEN}"


def test_an_address_nobody_answers_is_one_sentence_at_once(home, tmp_path, capsys):
    jobs = write_jsonl(tmp_path / "jobs.jsonl", JOBS[:1])
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    assert main(["batch", str(jobs), "--ray", address]) == 1
    assert time.monotonic() - started < 10  # not Ray's own long wait
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"easel: error: No Ray cluster answers at "
                                               f"{address}")
    assert nothing_made(home)


def test_a_server_that_is_no_ray_head_is_one_sentence_at_once(home, tmp_path, capfd):
    """Something answers at the address (a web server, another program): it is said at once,
    not after ray.init's five tries of 40 s each, with none of Ray's own lines."""
    import socketserver

    class Refuses(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Refuses) as server:
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        address = f"127.0.0.1:{server.server_address[1]}"
        jobs = write_jsonl(tmp_path / "jobs.jsonl", JOBS[:1])
        started = time.monotonic()
        assert main(["batch", str(jobs), "--ray", address]) == 1
        assert time.monotonic() - started < 10
        server.shutdown()
    err = capfd.readouterr().err.strip().splitlines()
    assert err == [f"easel: error: Something answers at {address}, but not a Ray cluster's "
                   "head node; check the port (6379 by default)."]
    assert nothing_made(home)


@pytest.mark.parametrize("address", ["somewhere", "host:port"])
def test_an_address_that_is_no_address_is_one_sentence(home, tmp_path, capsys, address):
    jobs = write_jsonl(tmp_path / "jobs.jsonl", JOBS[:1])
    assert main(["batch", str(jobs), "--ray", address]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"easel: error: '{address}' is not a Ray cluster address; give it as "
                   "host:port (the head node's, port 6379 by default) or auto."]
    assert nothing_made(home)


def test_auto_with_no_cluster_running_is_one_sentence(home, tmp_path, capsys, monkeypatch):
    from ray._private import services

    # Ray finds a cluster of this machine by RAY_ADDRESS, ray start's note in its temp folder
    # or a running GCS process: none of them, as on a computer where no cluster runs.
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(services, "find_gcs_addresses", lambda: [])
    monkeypatch.setattr(services, "find_bootstrap_address", lambda temp_dir: None)
    jobs = write_jsonl(tmp_path / "jobs.jsonl", JOBS[:1])
    assert main(["batch", str(jobs), "--ray", "auto"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("easel: error: No Ray cluster is running on "
                                               "this computer")
    assert nothing_made(home)


def test_models_the_workers_cannot_read_are_refused_before_any_work(home, tmp_path, cluster,
                                                                    capsys):
    jobs = write_jsonl(tmp_path / "jobs.jsonl", JOBS[:2])
    assert main(["batch", str(jobs), "--ray", cluster.address,
                 "--ray-models", "/nonexistent"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("easel: error: The Ray worker on ")
    assert "cannot read the model folder /nonexistent/" in err[0]
    assert nothing_made(home)
    assert cluster.processes_running(TASK) == []  # no job was sent


# --- a batch on the cluster ------------------------------------------------------------------


def test_a_worker_killed_mid_job_is_retried_and_every_picture_is_saved_once(
        home, tmp_path, cluster, monkeypatch, capsys):
    jobs = write_jsonl(tmp_path / "jobs.jsonl", JOBS)
    killed: list[int] = []
    stop = threading.Event()

    def kill_one_running_job() -> None:
        while not stop.is_set() and not killed:
            running = cluster.processes_running(TASK)
            if running:
                time.sleep(0.3)  # inside the job, past loading the model
                try:
                    os.kill(running[0], signal.SIGKILL)
                    killed.append(running[0])
                except ProcessLookupError:
                    continue  # that job finished first: the next one
            time.sleep(0.02)

    killer = threading.Thread(target=kill_one_running_job, daemon=True)
    killer.start()
    try:
        code = main(["batch", str(jobs), "--ray", cluster.address])
    finally:
        stop.set()
        killer.join()
    out, err = capsys.readouterr()
    assert code == 0, err + cluster.log_tail()
    assert killed, "no worker was running a job to kill"
    assert "on the Ray cluster at " in err and "(2 nodes, 2 CPUs)" in err
    assert "Batch done: 12 pictures made" in err
    on_cluster = batch_pictures(home)
    assert sorted(len(paths) for paths in on_cluster.values()) == [1] * 12  # each once
    assert sorted(map(Path, out.split())) == sorted(p for [p] in on_cluster.values())

    # The same batch on this computer, one thread as each worker ran: the same pixels.
    local_home = tmp_path / "local-home"
    monkeypatch.setenv("EASEL_HOME", str(local_home))
    assert main(["batch", str(jobs), "--threads", "1"]) == 0
    local = batch_pictures(local_home)
    assert local.keys() == on_cluster.keys()
    for key, [path] in on_cluster.items():
        assert np.array_equal(whole_pixels(path), whole_pixels(local[key][0])), key


def test_a_second_run_on_the_cluster_makes_nothing_and_starts_no_task(home, tmp_path, cluster,
                                                                      capsys):
    jobs = write_jsonl(tmp_path / "jobs.jsonl",
                       [{**job, "steps": 4, "count": 1} for job in JOBS[:2]])
    assert main(["batch", str(jobs), "--ray", cluster.address]) == 0
    first = batch_pictures(home)
    assert len(first) == 2
    capsys.readouterr()
    assert main(["batch", str(jobs), "--ray", cluster.address]) == 0
    assert "Nothing to make" in capsys.readouterr().err
    assert batch_pictures(home) == first


def test_models_given_as_the_workers_see_them_are_read_there(home, tmp_path, cluster,
                                                             capsys):
    from desktop import paths

    shared = tmp_path / "shared-models"
    shared.mkdir()
    (shared / "starter").symlink_to(paths.built_in_models_dir() / "starter",
                                    target_is_directory=True)
    jobs = write_jsonl(tmp_path / "jobs.jsonl", [{**JOBS[0], "steps": 4, "count": 1,
                                                  "model": "starter"}])
    assert main(["batch", str(jobs), "--ray", cluster.address,
                 "--ray-models", str(shared)]) == 0, capsys.readouterr().err
    assert len(batch_pictures(home)) == 1


def test_a_grid_runs_on_the_cluster_with_the_cells_and_sheet_of_a_local_run(
        home, tmp_path, cluster, capsys, monkeypatch):
    grid = ["grid", "a red fox in the centre", "--x", "steps=3,5", "--seed", "4"]
    assert main([*grid, "--ray", cluster.address]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out.split()
    on_cluster = batch_pictures(home)
    assert len(on_cluster) == 3  # two cells and the sheet, each once
    # Each cell is printed as it finishes (on two workers, in either order), the sheet last.
    assert sorted(map(Path, printed)) == sorted(path for [path] in on_cluster.values())
    [[sheet]] = [paths for (_, picture), paths in on_cluster.items() if picture == "sheet"]
    assert Path(printed[-1]) == sheet

    # The same grid on this computer, one thread as each worker ran: the same pixels.
    monkeypatch.setenv("EASEL_HOME", str(tmp_path / "local"))
    assert main([*grid, "--threads", "1"]) == 0
    local = batch_pictures(tmp_path / "local")
    assert local.keys() == on_cluster.keys()
    for key, [path] in on_cluster.items():
        assert np.array_equal(whole_pixels(path), whole_pixels(local[key][0])), key


def test_the_executor_cancels_its_running_tasks(home, tmp_path, cluster):
    """Ctrl+C sets the token: the executor stops submitting, cancels what runs and raises
    Cancelled; the cluster is left running for its next user."""
    from desktop.batch.jobs import JobMaker
    from desktop.batch.lines import read_batch_file
    from desktop.batch.runner import missing_pictures, works_for
    from desktop.cli.common import model_store
    from engine.errors import Cancelled
    from engine.runtime import CancelToken, RuntimeOptions

    jobs_file = write_jsonl(tmp_path / "jobs.jsonl", JOBS)
    runtime = RuntimeOptions()
    with Library.open(home) as library:
        maker = JobMaker(model_store(), library, runtime, tmp_path)
        jobs = maker.jobs(read_batch_file(jobs_file))
        works = [work for job, missing in missing_pictures(jobs, library)
                 for work in works_for(job, missing, maker)]
    executor = ray_batch.connect(cluster.address, runtime, jobs, None)
    try:
        cancel = CancelToken()
        threading.Timer(1.0, cancel.cancel).start()
        made = []
        with pytest.raises(Cancelled):
            for done in executor.run(works, cancel):
                made.append(done)
        assert len(made) < len(works)
        deadline = time.monotonic() + 20
        while cluster.processes_running(TASK) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert cluster.processes_running(TASK) == []
    finally:
        executor.close()


def test_tasks_ask_for_one_gpu_or_a_share_of_cores_they_then_use():
    """GPU clusters: one GPU a task; CPU nodes: the smallest node's cores (or fewer threads
    asked for), and the task's ONNX Runtime threads match, so no node is oversubscribed."""
    from engine.runtime import RuntimeOptions

    class Nodes:
        def nodes(self):
            return [{"Alive": True, "Resources": {"CPU": 8, "GPU": 2}},
                    {"Alive": True, "Resources": {"CPU": 4}},
                    {"Alive": False, "Resources": {"CPU": 64}},
                    {"Alive": True, "Resources": {}}]  # a head node that runs no work

    def shape(runtime):
        nodes = ray_batch._working_nodes(Nodes(), runtime)
        return ray_batch._task_shape(nodes, runtime)

    on_gpus = shape(RuntimeOptions())
    assert (on_gpus.num_gpus, on_gpus.slots, on_gpus.runtime) == (1, 2, RuntimeOptions())
    on_cpus = shape(RuntimeOptions(providers=("cpu",)))
    assert (on_cpus.num_gpus, on_cpus.num_cpus, on_cpus.slots) == (0, 4, 3)
    assert on_cpus.runtime.cpu_threads == 4
    fewer = shape(RuntimeOptions(providers=("cpu",), cpu_threads=2))
    assert (fewer.num_cpus, fewer.slots, fewer.runtime.cpu_threads) == (2, 6, 2)
