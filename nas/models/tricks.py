"""Training tricks as components of an architecture: what Page's "How to train your ResNet"
(posts 5-8, 2018) and Keller Jordan's airbench94 (2024) add to the fast recipe.

Each trick is one field; the default is off, which is today's recipe (Page's post 4), and
the canonical form leaves fields at their default out, so every stored hash is unchanged.
They live in the `ArchConfig` (as `tricks`, like `drop`), not in the experiment's recipe,
because the search point is the architecture: a space entry ``tricks.activation`` is
sampled like ``L1.residual``, `nas ablate` switches a trick off like a residual block, and
two trials that differ in a trick never share a hash. Torch-free, like the rest of the configs.

Where each one acts:
  - the network (`nas.models.tricks_nn`, `nas.models.whitening`): activation, pool order,
    ghost batch norm, frozen BN scales, patch whitening; exported in model.py;
  - the loop (`nas.training.loop`): EMA of the weights, lookahead, bias lr, alternating flip;
  - evaluation (`nas.training.tta`): test-time augmentation; model.py's ``forward_tta``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from nas.config.validate import Rule, at_least, at_most, check_fields, interval, one_of, positive, setting, store_floats

ACTIVATIONS = ("relu", "celu", "gelu")
TTA_LEVELS = ("none", "flip", "flip_translate")
DEFAULT_CELU_ALPHA = 0.075  # Page post 6
MAX_EPOCH = 10_000  # as nas.training.recipe.MAX_EPOCHS: catches typos
_OFF_OR_DECAY = Rule(lambda v: v == 0 or 0 < v < 1, "0 (off) or in (0, 1)")
_OFF_OR_GHOST = Rule(lambda v: v == 0 or v >= 2, "0 (off) or at least 2 images (BatchNorm needs 2)")


@dataclass(frozen=True)
class TricksConfig:
    """The tricks one trial trains and evaluates with; every default is off (Page's post-4 recipe)."""

    EXAMPLE: ClassVar[str] = "{activation: celu, ema_decay: 0.99}"

    # -- the network --
    # relu | celu (Page post 6: CELU(0.075), smoother, 52 -> 46 s) | gelu (airbench94)
    activation: str = setting("relu", one_of(ACTIVATIONS))
    celu_alpha: float = setting(DEFAULT_CELU_ALPHA, positive("(CELU's alpha; celu only)"))  # CELU's alpha; celu only
    # Page post 5: conv -> pool -> BN -> act, so BN and the activation run on a quarter of the
    # pixels (64 -> 59 s at the same accuracy); false: conv -> BN -> act -> pool
    pool_before_bn: bool = False
    # Page post 6 (ghost batch norm): images per BatchNorm group in training, each normalised by
    # its own statistics (a noisier, regularising BN); 0: the whole batch. Must divide the batch.
    ghost_batch: int = setting(0, _OFF_OR_GHOST & at_most(50_000), types="an integer (images; 0 = off)")
    # Page post 6 / airbench's BatchNorm(weight=False): BN scales fixed at 1, not trained
    freeze_bn_scale: bool = False
    # Page post 7 / airbench's init_whitening_conv: a fixed 3x3 conv whitening the image patches
    # (fitted before training on WHITEN_IMAGES training images), then a learnable 1x1 conv as prep
    whiten: bool = False
    # -- the loop --
    # Page post 8: evaluate an exponential moving average of the weights (and BN statistics);
    # decay per step in (0, 1), 0: off
    ema_decay: float = setting(0.0, _OFF_OR_DECAY, types="a number (per-step decay; 0 = off)")
    # epoch (from 0) the averaging starts; before it the average follows the weights
    ema_start: int = setting(0, at_least(0) & at_most(MAX_EPOCH))
    # airbench94 (its 0.95**5): every LOOKAHEAD_EVERY steps the slow weights move towards the fast
    # ones by 1 - decay * (step / steps)**3 (a cubic ramp) and the fast ones restart from them;
    # decay in (0, 1), 0: off
    lookahead: float = setting(0.0, _OFF_OR_DECAY, types="a number (decay per sync; 0 = off)")
    # airbench94's bias_scaler: BatchNorm weights and biases learn this many times faster
    # (their weight decay per step unchanged); 1: as every weight
    bias_lr: float = setting(1.0, interval(0, 1000, open_low=True))
    # airbench94: each image flips in every other epoch (from a random start per image)
    # instead of at random in every epoch; needs the dataset's flip on
    alternating_flip: bool = False
    # -- evaluation --
    # none | flip (Page post 8 / airbench: mean of logits over the image and its mirror) |
    # flip_translate (airbench94's level 2: also shifted by one pixel up-left and down-right)
    tta: str = setting("none", one_of(TTA_LEVELS))

    def __post_init__(self) -> None:
        check_fields(self)
        store_floats(self, "celu_alpha", "ema_decay", "lookahead", "bias_lr")
        # One training, one canonical form: settings of a trick that is off are its defaults.
        if self.activation != "celu":
            object.__setattr__(self, "celu_alpha", DEFAULT_CELU_ALPHA)
        if self.ema_decay == 0:
            object.__setattr__(self, "ema_start", 0)

    @property
    def changes_network(self) -> bool:
        """Whether the trained network differs from the plain one (what width slicing refuses)."""
        return (self.activation != "relu" or self.pool_before_bn or self.ghost_batch > 0
                or self.freeze_bn_scale or self.whiten)


# Not fields: fixed by their sources, one value for every trial.
WHITEN_IMAGES = 5000  # training images whose 3x3 patches fit the whitening (Page: 10000)
WHITEN_EPS = 1e-2  # added to the patch covariance's eigenvalues (Page post 7)
LOOKAHEAD_EVERY = 5  # steps between lookahead syncs (airbench94)
