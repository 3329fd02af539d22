"""How far a batch is: jobs done and left, pictures per minute, and the time left at that
rate, in the words the command line and the window both show."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BatchProgress:
    jobs_done: int  # finished this run, failed ones included
    jobs: int  # to run this run (jobs already in the library are not counted)
    pictures_done: int
    pictures: int
    failed: int
    seconds: float

    @property
    def per_minute(self) -> float | None:
        """Pictures per minute so far; None until one is made."""
        if self.pictures_done == 0 or self.seconds <= 0:
            return None
        return self.pictures_done * 60.0 / self.seconds

    @property
    def seconds_left(self) -> float | None:
        rate = self.per_minute
        if rate is None:
            return None
        return (self.pictures - self.pictures_done) * 60.0 / rate

    @property
    def fraction(self) -> float:
        return self.pictures_done / self.pictures if self.pictures else 1.0

    def line(self) -> str:
        """E.g. "3/12 jobs · 6/24 pictures · 4.1 pictures/min · about 4 min left"."""
        parts = [f"{self.jobs_done}/{self.jobs} jobs",
                 f"{self.pictures_done}/{self.pictures} pictures"]
        if self.failed:
            parts.append(f"{self.failed} failed")
        if self.per_minute is not None:
            parts.append(f"{self.per_minute:.1f} pictures/min")
        if self.seconds_left is not None and self.jobs_done < self.jobs:
            parts.append(f"about {duration(self.seconds_left)} left")
        return " · ".join(parts)


def duration(seconds: float) -> str:
    """A duration as people say it: "40 s", "3 min", "1 h 20 min"."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"
