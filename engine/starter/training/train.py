"""Train the starter model on emoji scenes, in chunks that resume where the last one stopped.

    python -m engine.starter.training.train --minutes 110

Each chunk trains for ``--minutes`` and leaves a checkpoint (weights, their moving average,
optimizer state, step count, training time) in the work folder, which stays out of git. The
next chunk resumes from it; with no checkpoint it starts from the shipped weights in
``resources/models/starter`` (with a fresh optimizer), and with neither from scratch.
``--export`` writes the averaged weights as the shipped model folder.

Objective: rectified flow. A training image x0 (a 32 px scene, pixel-unshuffled to 12 x 16 x 16
in [-1, 1]) and noise e are mixed as x_t = (1 - t) x0 + t e with t drawn logit-normal, and the
UNet predicts the velocity e - x0, which the engine's flow Euler scheduler integrates. One
caption in ten is replaced by the empty prompt, for classifier-free guidance. Captions leave
each attribute (positions, sizes, background colour) unsaid a quarter of the time, so a prompt
that names only objects draws them, once each, anywhere (``scenes.caption``).

The data is drawn fresh for every batch from a generator seeded by (seed, step), so a resumed
run sees exactly the batches an unbroken run would have seen.

On a GPU (``--device cuda``) the same objective runs in bfloat16 autocast with a larger batch,
and ``--workers`` processes draw the batches ahead, since one CPU core draws about 10k scenes/s
and the GPU eats more. Each chunk of training (device, batch, steps, time) is kept in the
checkpoint's history and in ``training.json``.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import multiprocessing
import os
import signal
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.starter.scenes import sample_batch
from engine.starter.training.network import StarterConfig, StarterModel, pixel_unshuffle
from engine.starter.vocabulary import TEXT_MAX_LENGTH, build_tokenizer, write_tokenizer_folder
from engine.tokenizer import PromptTokenizer

REPOSITORY = Path(__file__).resolve().parents[3]
DEFAULT_WORK = REPOSITORY / ".easel-training" / "starter"
SHIPPED = REPOSITORY / "resources" / "models" / "starter"
CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class Settings:
    batch: int = 64
    learning_rate: float = 4e-4
    warmup_steps: int = 500
    weight_decay: float = 0.01
    ema_decay: float = 0.998
    caption_dropout: float = 0.1
    # Each attribute (positions, sizes, background colour) is left out of a caption with this
    # probability, so a prompt that does not say one still draws the named objects (issue 14).
    leave_out: float = 0.25
    two_objects_probability: float = 0.5
    grad_clip: float = 1.0
    seed: int = 0
    threads: int = 2
    checkpoint_minutes: float = 10.0
    snapshot_minutes: float = 30.0  # averaged weights kept for the quality-over-time curve
    latent_scaling: float = 1.0
    device: str = "cpu"
    workers: int = 0  # processes drawing batches ahead; 0 draws them between steps


class Tokens:
    """Captions -> padded id tensors, through the same tokenizer file the engine reads."""

    def __init__(self, folder: Path) -> None:
        self._tokenizer = PromptTokenizer(folder, TEXT_MAX_LENGTH)
        self.vocab_size = build_tokenizer().get_vocab_size()

    @classmethod
    def written_to(cls, scratch: Path) -> Tokens:
        folder = scratch / "tokenizer"
        write_tokenizer_folder(folder)
        return cls(folder)

    def __call__(self, captions: list[str]) -> torch.Tensor:
        return torch.from_numpy(np.concatenate([self._tokenizer(c).ids for c in captions]))


@dataclass
class Batch:
    x_t: torch.Tensor  # noisy latents
    t: torch.Tensor  # flow time in [0, 1]
    input_ids: torch.Tensor
    target: torch.Tensor  # velocity: noise - x0


def make_batch(settings: Settings, step: int, tokens: Tokens) -> Batch:
    """The training batch of ``step``: a pure function of (seed, step), on the CPU."""
    s = settings
    rng = np.random.default_rng([s.seed, step])
    images, captions, _ = sample_batch(
        rng, s.batch, 32, two_objects_probability=s.two_objects_probability,
        leave_out=s.leave_out,
    )
    captions = ["" if rng.random() < s.caption_dropout else c for c in captions]
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    x0 = pixel_unshuffle(torch.from_numpy(images), s.latent_scaling)
    noise = torch.randn(x0.shape, generator=generator)
    t = torch.sigmoid(torch.randn(s.batch, generator=generator))  # logit-normal
    x_t = (1 - t[:, None, None, None]) * x0 + t[:, None, None, None] * noise
    return Batch(x_t, t, tokens(captions), noise - x0)


class BatchSource:
    """Batches for consecutive steps, drawn in worker processes ahead of the trainer."""

    def __init__(self, settings: Settings, tokenizer_folder: Path) -> None:
        self.settings = settings
        self._tokens = Tokens(tokenizer_folder)
        self._pending: collections.deque = collections.deque()
        self._pool = None
        if settings.workers > 0:
            # spawn, not fork: the parent may already hold a CUDA context, which forks badly.
            context = multiprocessing.get_context("spawn")
            self._pool = context.Pool(
                settings.workers, initializer=_worker_start,
                initargs=(settings, tokenizer_folder),
            )

    def batch(self, step: int) -> Batch:
        if self._pool is None:
            return make_batch(self.settings, step, self._tokens)
        # Keep two batches per worker in flight, always for the next steps in order.
        if self._pending and self._pending[0][0] != step:
            self._pending.clear()
        next_step = self._pending[-1][0] + 1 if self._pending else step
        while len(self._pending) < 2 * self.settings.workers:
            self._pending.append((next_step, self._pool.apply_async(_worker_batch, (next_step,))))
            next_step += 1
        arrays = self._pending.popleft()[1].get()
        return Batch(*(torch.from_numpy(array) for array in arrays))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()


_worker: dict = {}


def _worker_start(settings: Settings, tokenizer_folder: Path) -> None:
    torch.set_num_threads(1)
    _worker["settings"], _worker["tokens"] = settings, Tokens(tokenizer_folder)


def _worker_batch(step: int) -> tuple[np.ndarray, ...]:
    # Sent back as numpy arrays, pickled by value: torch would pass tensors as shared-memory
    # file descriptors, which fail under load ("received 0 items of ancdata").
    batch = make_batch(_worker["settings"], step, _worker["tokens"])
    return batch.x_t.numpy(), batch.t.numpy(), batch.input_ids.numpy(), batch.target.numpy()


class Trainer:
    def __init__(self, work: Path, settings: Settings, config: StarterConfig) -> None:
        self.work, self.settings, self.config = work, settings, config
        self.device = torch.device(settings.device)
        self.model = StarterModel(config).to(self.device, memory_format=torch.channels_last)
        self.ema = StarterModel(config).to(self.device, memory_format=torch.channels_last)
        self.ema.load_state_dict(self.model.state_dict())
        self.ema.requires_grad_(False)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=settings.learning_rate,
            weight_decay=settings.weight_decay, betas=(0.9, 0.99),
        )
        self.step = 0
        self.seconds = 0.0  # training time over all chunks, pauses left out
        self.started_from = "scratch"
        self.warmup_start = 0  # the step at which the optimizer started fresh
        self.history: list[dict] = []  # one entry per chunk: device, batch, steps, seconds

    # --- state ---------------------------------------------------------------------------

    def save(self) -> None:
        state = {
            "model": self.model.state_dict(), "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(), "step": self.step,
            "seconds": self.seconds, "settings": asdict(self.settings),
            "config": self.config.to_dict(), "started_from": self.started_from,
            "warmup_start": self.warmup_start, "history": self.history,
        }
        _atomic_torch_save(state, self.work / CHECKPOINT)

    def restore(self) -> str:
        path = self.work / CHECKPOINT
        if path.exists():
            state = torch.load(path, map_location="cpu", weights_only=True)
            self.model.load_state_dict(state["model"])
            self.ema.load_state_dict(state["ema"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.step, self.seconds = state["step"], state["seconds"]
            self.started_from = state.get("started_from", "scratch")
            self.warmup_start = state.get("warmup_start", 0)
            self.history = state.get("history", [])
            return f"resumed the checkpoint at step {self.step}"
        if (SHIPPED / "training.json").exists():
            from engine.starter.training.export import read_shipped_weights

            weights, record = read_shipped_weights(SHIPPED)
            self.model.load_state_dict(weights)
            self.ema.load_state_dict(weights)
            self.step, self.seconds = record["steps"], record["training_seconds"]
            self.started_from = f"shipped weights at step {self.step}"
            self.warmup_start = self.step
            self.history = record.get("history") or [_first_chunk(record)]
            return f"started from the shipped weights (step {self.step}), fresh optimizer"
        return "started from scratch"

    # --- one step ----------------------------------------------------------------------------

    def learning_rate(self) -> float:
        done = self.step - self.warmup_start + 1
        return self.settings.learning_rate * min(1.0, done / self.settings.warmup_steps)

    def train_step(self, batch: Batch) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate()
        device = self.device
        x_t = batch.x_t.to(device, non_blocking=True).contiguous(
            memory_format=torch.channels_last
        )
        t = batch.t.to(device, non_blocking=True)
        input_ids = batch.input_ids.to(device, non_blocking=True)
        target = batch.target.to(device, non_blocking=True)
        # bfloat16 on a GPU (tensor cores, no loss scaling needed); float32 on the CPU.
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            prediction = self.model(x_t, t * 1000, input_ids)
        loss = F.mse_loss(prediction.float(), target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip)
        self.optimizer.step()
        self.update_ema()
        self.step += 1
        return loss.item()

    @torch.no_grad()
    def update_ema(self) -> None:
        # Warm the average up, so early snapshots are not dominated by the random start.
        decay = min(self.settings.ema_decay, (1 + self.step) / (10 + self.step))
        ema = [p for p in self.ema.parameters()]
        live = [p.detach() for p in self.model.parameters()]
        torch._foreach_lerp_(ema, live, 1.0 - decay)


def _atomic_torch_save(state: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".saving")  # torch refuses some temporary names
    torch.save(state, temporary)
    os.replace(temporary, path)


def train(work: Path, minutes: float, settings: Settings) -> Trainer:
    torch.set_num_threads(settings.threads)
    work.mkdir(parents=True, exist_ok=True)
    tokens = Tokens.written_to(work)
    source = BatchSource(settings, work / "tokenizer")
    config = StarterConfig(vocab_size=tokens.vocab_size, text_max_length=TEXT_MAX_LENGTH)
    trainer = Trainer(work, settings, config)
    print(trainer.restore(), flush=True)
    parameters = sum(p.numel() for p in trainer.model.parameters())
    print(f"{parameters / 1e6:.1f}M parameters, batch {settings.batch}, "
          f"{_device_name(trainer.device)}", flush=True)
    chunk = {"device": _device_name(trainer.device), "batch": settings.batch,
             "learning_rate": settings.learning_rate, "first_step": trainer.step,
             "steps": 0, "seconds": 0.0, "command": _command_line()}
    trainer.history.append(chunk)

    stop = {"now": False}

    def ask_to_stop(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, ask_to_stop)
    signal.signal(signal.SIGINT, ask_to_stop)

    log = (work / "log.jsonl").open("a")
    deadline = time.monotonic() + minutes * 60
    last_checkpoint = time.monotonic()
    next_snapshot = (math.floor(trainer.seconds / 60 / settings.snapshot_minutes) + 1) \
        * settings.snapshot_minutes
    durations: list[float] = []
    losses: list[float] = []
    report_every = 20 if trainer.device.type == "cpu" else 200
    while not stop["now"] and time.monotonic() < deadline:
        started = time.perf_counter()
        losses.append(trainer.train_step(source.batch(trainer.step)))
        duration = time.perf_counter() - started
        # A step that took far longer than usual was paused (SIGSTOP while a benchmark ran):
        # count it as a usual step, so the training time stays honest.
        typical = statistics.median(durations[-50:]) if len(durations) >= 10 else duration
        counted = min(duration, 3 * typical)
        trainer.seconds += counted
        chunk["seconds"] += counted
        chunk["steps"] += 1
        durations.append(duration)
        if trainer.step % report_every == 0:
            recent = durations[-report_every:]
            images_per_s = settings.batch * len(recent) / sum(recent)
            record = {"step": trainer.step, "minutes": round(trainer.seconds / 60, 2),
                      "loss": round(statistics.fmean(losses), 5),
                      "images_per_s": round(images_per_s, 1)}
            losses.clear()
            print(json.dumps(record), flush=True)
            log.write(json.dumps(record) + "\n")
            log.flush()
        if trainer.seconds / 60 >= next_snapshot:
            snapshot = {k: v.half() for k, v in trainer.ema.state_dict().items()}
            _atomic_torch_save(
                {"ema": snapshot, "step": trainer.step, "seconds": trainer.seconds,
                 "config": config.to_dict(), "settings": asdict(settings),
                 "started_from": trainer.started_from, "history": trainer.history},
                work / "snapshots" / f"ema-{round(next_snapshot):04d}min.pt",
            )
            next_snapshot += settings.snapshot_minutes
        if time.monotonic() - last_checkpoint > settings.checkpoint_minutes * 60:
            trainer.save()
            last_checkpoint = time.monotonic()
    source.close()
    chunk["seconds"] = round(chunk["seconds"], 1)
    if not chunk["steps"]:  # an export-only run trains nothing: no chunk to record
        trainer.history.remove(chunk)
    trainer.save()
    print(f"saved at step {trainer.step}, {trainer.seconds / 3600:.2f} h of training in all",
          flush=True)
    return trainer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=110.0,
                        help="train this long, then save and stop (default 110, under 2 h)")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK,
                        help="checkpoint folder, kept out of git")
    parser.add_argument("--batch", type=int, default=Settings.batch)
    parser.add_argument("--threads", type=int, default=Settings.threads,
                        help="CPU threads (1 while other work shares the machine: torch's "
                             "threads wait for each other when a core is taken away)")
    parser.add_argument("--device", default=Settings.device,
                        help="cpu, or cuda for the larger GPU configuration")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes drawing batches ahead (default: 0 on the CPU, "
                             "cores - 2 on a GPU)")
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--snapshot-minutes", type=float, default=Settings.snapshot_minutes,
                        help="keep the averaged weights every this many training minutes")
    parser.add_argument("--warmup-steps", type=int, default=Settings.warmup_steps)
    parser.add_argument("--ema-decay", type=float, default=None)
    parser.add_argument("--leave-out", type=float, default=Settings.leave_out,
                        help="probability that a caption leaves out each attribute")
    parser.add_argument("--export", action="store_true",
                        help="after training, write the averaged weights to resources/")
    parser.add_argument("--export-to", type=Path,
                        help="after training, write the averaged weights to this folder "
                             "instead (to evaluate them before shipping)")
    args = parser.parse_args(argv)
    settings = Settings(batch=args.batch, threads=args.threads, device=args.device,
                        warmup_steps=args.warmup_steps, snapshot_minutes=args.snapshot_minutes,
                        leave_out=args.leave_out)
    if args.device != "cpu":
        settings = replace(settings, **GPU_DEFAULTS)
        if args.batch != Settings.batch:
            settings = replace(settings, batch=args.batch)
    workers = args.workers
    if workers is None:
        workers = 0 if args.device == "cpu" else max(1, (os.cpu_count() or 4) - 2)
    settings = replace(settings, workers=workers)
    if args.learning_rate is not None:
        settings = replace(settings, learning_rate=args.learning_rate)
    if args.ema_decay is not None:
        settings = replace(settings, ema_decay=args.ema_decay)
    trainer = train(args.work, args.minutes, settings)
    destination = args.export_to or (SHIPPED if args.export else None)
    if destination is not None:
        from engine.starter.training.export import export_starter

        export_starter(trainer.ema, trainer.config, destination, trainer_record(trainer))
        print(f"exported to {destination}")
    return 0


# The larger configuration for a GPU: the same network (so CPU and GPU chunks resume each
# other and the shipped size stays), a 16x larger batch and a longer moving average.
GPU_DEFAULTS = {"batch": 1024, "learning_rate": 6e-4, "ema_decay": 0.999, "threads": 4}


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"{os.cpu_count()} CPU cores, torch {torch.__version__}"


def _command_line() -> str:
    return " ".join(["python -m engine.starter.training.train", *sys.argv[1:]])


def _first_chunk(record: dict) -> dict:
    """The history entry for weights shipped before chunks were recorded."""
    return {"device": record.get("machine", "CPU"), "batch": record["settings"]["batch"],
            "learning_rate": record["settings"]["learning_rate"], "first_step": 0,
            "steps": record["steps"], "seconds": record["training_seconds"],
            "command": record.get("command", "")}


def trainer_record(trainer: Trainer) -> dict:
    return trainer_record_fields({
        "steps": trainer.step,
        "training_seconds": round(trainer.seconds, 1),
        "settings": asdict(trainer.settings),
        "started_from": trainer.started_from,
        "history": trainer.history,
    })


def trainer_record_fields(record: dict) -> dict:
    """What ``training.json`` says beside the weights: how they were made."""
    return {
        **record,
        "images_seen": sum(c["steps"] * c["batch"] for c in record["history"])
        if record.get("history")
        else record["steps"] * record["settings"].get("batch", Settings.batch),
        "command": "python -m engine.starter.training.train --minutes 110 --export "
                   "(each chunk's own command is in history)",
        "data": "engine.starter.scenes.sample_batch, training split, seeded by (seed, step); "
                "captions leave each attribute out with probability settings.leave_out "
                "(absent: 0)",
        "machine": "; ".join(dict.fromkeys(c["device"] for c in record["history"]))
        if record.get("history")
        else f"{os.cpu_count()} CPU cores, torch {torch.__version__}",
    }


if __name__ == "__main__":
    raise SystemExit(main())
