"""How a fit trains: the :class:`Recipe` of every stage, the named :data:`PRESETS`, and
the settings record a checkpoint keeps of them (:func:`sfvq_ext.fit` explains the
method; the curve surgery between windows is :mod:`sfvq_ext.curve_surgery`)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

__all__ = ["Recipe", "PRESETS", "learning_rate_at", "legacy_settings", "flat_settings", "recipe_record"]


@dataclass(frozen=True)
class Recipe:
    """How every stage of a fit trains (see :data:`PRESETS`).

    Attributes:
        batch_size: rows per step (summed over ranks); ``None``: an epoch's rows / 64,
            clamped to [64, 1024] (so small data still gets steps enough to converge).
        lr: Adam's learning rate; with ``lr_unit="data"`` in units of the data's
            spread (the root mean square of the per-component standard deviations of
            the initialisation sample) at batch 1024, scaled by ``sqrt(batch / 1024)``
            for other batch sizes (smaller batches, noisier steps); with
            ``"absolute"`` in the data's own units, as given.
        lr_unit: ``"data"`` or ``"absolute"``.
        schedule: ``"plateau"``: the rate is multiplied by ``gamma`` whenever a window's
            mean loss fails to beat the best window so far by the fraction ``tol``, and
            the stage stops at the ``decays + 1``-th such window (or after ``epochs``
            epochs); ``"milestones"``: ``epochs`` epochs, the rate multiplied by
            ``gamma`` at each of ``milestones`` (fractions of the stage).
        epochs: epochs per stage (``"milestones"``) or the most epochs per stage (``"plateau"``).
        milestones, gamma: as above.
        window: rows per loss window (losses are averaged over it; revival looks at it).
        tol, decays: the plateau rule, as above.
        revive: at the end of a window in which some segment got no row, move the
            vertices of such stretches onto the busiest segments (:func:`revive_unused`)
            and shorten the unused segments left between the used pieces by reversing
            stretches of the curve (:func:`shorten_bridges`), at most ``MAX_REVIVALS`` (3)
            times per stage.
        expand_eps: spacing of the new vertices when the curve doubles (:func:`sfvq_ext.expand`).
    """

    batch_size: int | None
    lr: float
    lr_unit: str
    schedule: str
    epochs: int
    milestones: tuple[float, ...] = (0.6, 0.8)
    gamma: float = 0.5
    window: int = 65_536
    tol: float = 0.01
    decays: int = 2
    revive: bool = False
    expand_eps: float = 0.01

    def check(self) -> None:
        """Raise ``ValueError`` naming the first setting out of range."""
        for name in ("batch_size", "epochs", "window"):
            value = getattr(self, name)
            if value is None and name == "batch_size":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"fit: {name} must be an int >= 1, got {value!r}")
        if not isinstance(self.revive, bool):
            raise ValueError(f"fit: revive must be True or False, got {self.revive!r}")
        if not isinstance(self.decays, int) or self.decays < 0:
            raise ValueError(f"fit: decays must be an int >= 0, got {self.decays!r}")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise ValueError(f"fit: lr must be positive and finite, got {self.lr!r}")
        if self.lr_unit not in ("data", "absolute"):
            raise ValueError(f"fit: lr_unit must be 'data' or 'absolute', got {self.lr_unit!r}")
        if self.schedule not in ("plateau", "milestones"):
            raise ValueError(f"fit: schedule must be 'plateau' or 'milestones', got {self.schedule!r}")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"fit: gamma must be in (0, 1], got {self.gamma!r}")
        if not 0 <= self.tol < 1:
            raise ValueError(f"fit: tol must be in [0, 1), got {self.tol!r}")
        if not all(0 < m < 1 for m in self.milestones):
            raise ValueError(f"fit: milestones must be fractions in (0, 1), got {self.milestones!r}")
        if not 0 < self.expand_eps < 0.5:
            raise ValueError(f"fit: expand_eps must be in (0, 0.5), got {self.expand_eps!r}")


PRESETS = {
    # Measured in benchmarks/fit_quality.py (results/fit_quality.md): against "authors" at the
    # old defaults (batch 256) a lower curve error, more segments in use, in less time.
    "default": Recipe(batch_size=None, lr=0.01, lr_unit="data", schedule="plateau", epochs=20, window=65_536,
                      tol=0.01, decays=2, revive=True),
    # Vali & Bäckström's train.py (Interspeech 2023), reproduced by benchmarks/authors_example.py.
    "authors": Recipe(batch_size=64, lr=1e-3, lr_unit="absolute", schedule="milestones", epochs=5),
}


def learning_rate_at(step: int, total: int, lr: float, milestones=(0.6, 0.8), gamma: float = 0.5) -> float:
    """The stage's learning rate at ``step`` of ``total``: ``lr`` times ``gamma`` per milestone passed."""
    passed = sum(step >= round(m * total) for m in milestones)
    return lr * gamma**passed


_LEGACY = ("epochs", "batch_size", "lr", "expand_eps", "milestones", "gamma")


def legacy_settings(settings: dict) -> dict:
    """The settings of a checkpoint written before presets existed (its recipe was the
    authors' milestone schedule) in today's form."""
    recipe = dataclasses.replace(PRESETS["authors"], **{k: settings[k] for k in _LEGACY if k in settings})
    rest = {k: v for k, v in settings.items() if k not in _LEGACY}
    return {**rest, "preset": "authors", "recipe": recipe_record(recipe)}


def flat_settings(settings: dict) -> dict:
    """The recipe's fields by name, beside the other settings (to compare and name them one by one)."""
    return {**{k: v for k, v in settings.items() if k != "recipe"}, **settings.get("recipe", {})}


def recipe_record(recipe: Recipe) -> dict:
    record = dataclasses.asdict(recipe)
    record["milestones"] = list(recipe.milestones)  # as JSON reads it back
    return record
