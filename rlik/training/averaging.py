"""The final actor as the uniform mean of its weights over the end of a run (Polyak-Ruppert averaging, as
in stochastic weight averaging).

On the humanoid, neighbouring DDPG actors differ by several points of success: each gradient step moves
the weights about a good region rather than into it. With the learning rate decaying over the last 10 %
of the run, the mean of the actors over those steps lands nearer the middle of that region than any one
of them (RESULTS.md, "Humanoid"). Only the final model uses the mean; training goes on with the last
actor.
"""

from __future__ import annotations

from pathlib import Path

import torch


class ActorAverage:
    """Running uniform mean of an actor's floating-point weights, from env step ``start_step`` on.

    :param start_step: env step from which updates count; a resume with another start begins a new mean.
    """

    def __init__(self, start_step: int) -> None:
        self.start_step = start_step
        self.first_step: int | None = None  # env step of the first update: later than start_step after a resume past it
        self.count = 0
        self.mean: dict[str, torch.Tensor] = {}

    def update(self, actor: torch.nn.Module, step: int) -> None:
        """Add the actor's current weights, at env step ``step``, to the mean."""
        self.first_step = step if self.first_step is None else self.first_step
        self.count += 1
        with torch.no_grad():
            for name, value in actor.state_dict().items():
                if name not in self.mean:
                    self.mean[name] = value.detach().clone()
                elif value.is_floating_point():
                    self.mean[name] += (value - self.mean[name]) / self.count

    def apply(self, actor: torch.nn.Module) -> None:
        """Load the mean into ``actor``; needs at least one update."""
        actor.load_state_dict(self.mean)

    def save(self, path: Path) -> None:
        state = {"start_step": self.start_step, "first_step": self.first_step, "count": self.count, "mean": self.mean}
        torch.save(state, path)

    @classmethod
    def load(cls, path: Path | None, start_step: int) -> ActorAverage:
        """The mean saved at ``path`` (a checkpoint's) if it exists and began at ``start_step``, else an empty one."""
        average = cls(start_step)
        if path is not None and path.exists():
            saved = torch.load(path, map_location="cpu")  # a corrupt file: rlik/training/resume.py names it
            if saved["start_step"] == start_step:
                average.first_step, average.count, average.mean = saved["first_step"], saved["count"], saved["mean"]
        return average
