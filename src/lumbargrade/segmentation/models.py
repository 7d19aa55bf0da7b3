"""Segmentation network registry: ``@register_model`` and ``create_model(name, **kwargs)``.

Every model maps ``[B, in_channels, H, W]`` to logits ``[B, out_channels, H, W]``. Multi-class
networks use ``out_channels=3`` (background, dural sac, disc, softmax); the paper's one network per
structure is :class:`PerStructure` (``per_structure=True``): one single-logit (sigmoid) network
per structure, stacked to ``[B, 2, H, W]`` (sac, disc).

Weights are never downloaded: :func:`create_model` builds an untrained network and weights are
loaded only from an explicit safetensors path (:func:`load_weights`). Torch and MONAI are imported
inside the builders.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "create_model",
    "list_models",
    "load_weights",
    "model_divisor",
    "register_model",
    "save_weights",
]

_REGISTRY: dict[str, Callable[..., Any]] = {}
_DIVISOR: dict[str, int] = {}


def register_model(name: str | None = None, divisor: int = 16) -> Callable:
    """Decorator adding a builder ``f(in_channels, out_channels, **kwargs) -> nn.Module``.

    ``divisor``: the field's sides must be multiples of it.
    """

    def deco(fn: Callable) -> Callable:
        key = name or fn.__name__
        if key in _REGISTRY:
            raise ValueError(f"model {key!r} is already registered")
        _REGISTRY[key] = fn
        _DIVISOR[key] = divisor
        return fn

    return deco


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def model_divisor(name: str) -> int:
    """The number the input's sides must be divisible by for model ``name``."""
    if name not in _DIVISOR:
        raise KeyError(f"unknown segmentation model {name!r}; known: {', '.join(list_models())}")
    return _DIVISOR[name]


def create_model(
    name: str,
    in_channels: int = 1,
    out_channels: int = 3,
    per_structure: bool = False,
    n_structures: int = 2,
    **kwargs: Any,
):
    """Build model ``name`` (untrained).

    ``per_structure=True`` builds ``n_structures`` binary networks (one logit each) wrapped in
    :class:`PerStructure`; otherwise one network with ``out_channels`` logits.
    """
    if name not in _REGISTRY:
        raise KeyError(f"unknown segmentation model {name!r}; known: {', '.join(list_models())}")
    build = _REGISTRY[name]
    if per_structure:
        return _per_structure([build(in_channels, 1, **kwargs) for _ in range(n_structures)])
    return build(in_channels, out_channels, **kwargs)


def _per_structure(nets: list):
    import torch
    from torch import nn

    class PerStructure(nn.Module):
        """One binary network per structure; forward stacks their logits -> ``[B, K, H, W]``."""

        def __init__(self, nets: list) -> None:
            super().__init__()
            self.nets = nn.ModuleList(nets)

        def forward(self, x):
            return torch.cat([n(x) for n in self.nets], dim=1)

    return PerStructure(nets)


@register_model("vnet", divisor=16)
def _vnet(in_channels: int, out_channels: int, dropout_prob: float = 0.5, **kw: Any):
    """The paper's 2D V-Net (MONAI ``VNet(spatial_dims=2, dropout_dim=2)``), about 9.4 M params.

    ``dropout_prob`` is MONAI's default (0.5) in the down and up paths. MONAI's VNet needs
    ``in_channels`` to divide 16; single-channel input is fine.
    """
    from monai.networks.nets import VNet

    return VNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=out_channels,
        dropout_dim=2,
        dropout_prob_down=dropout_prob,
        dropout_prob_up=(dropout_prob, dropout_prob),
        **kw,
    )


@register_model("unet_small", divisor=16)
def _unet_small(
    in_channels: int, out_channels: int, channels: tuple[int, ...] = (8, 16, 32, 64, 128), **kw: Any
):
    """Compact U-Net (batch norm, ReLU, 2 convs per level, 4 poolings; ~0.49 M params): the CPU
    default."""
    return _compact_unet(in_channels, out_channels, tuple(channels), **kw)


@register_model("unet_medium", divisor=16)
def _unet_medium(
    in_channels: int, out_channels: int, channels: tuple[int, ...] = (16, 32, 64, 128, 256), **kw: Any
):
    """The compact U-Net of ``unet_small`` with twice the channels (~1.9 M params): the default
    since training uses domain randomisation (more contrasts to cover than one phantom's)."""
    return _compact_unet(in_channels, out_channels, tuple(channels), **kw)


@register_model("basic_unet_small", divisor=16)
def _basic_unet_small(
    in_channels: int,
    out_channels: int,
    features: tuple[int, ...] = (16, 16, 32, 64, 128, 16),
    **kw: Any,
):
    """MONAI ``BasicUNet`` with small features (instance norm, ~0.5 M params)."""
    from monai.networks.nets import BasicUNet

    return BasicUNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=out_channels,
        features=tuple(features),
        **kw,
    )


def _compact_unet(in_channels: int, out_channels: int, channels: tuple[int, ...]):
    import torch
    from torch import nn

    def block(i: int, o: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(i, o, 3, padding=1, bias=False),
            nn.BatchNorm2d(o),
            nn.ReLU(inplace=True),
            nn.Conv2d(o, o, 3, padding=1, bias=False),
            nn.BatchNorm2d(o),
            nn.ReLU(inplace=True),
        )

    class CompactUNet(nn.Module):
        """U-Net: ``len(channels)`` levels, max-pool down, transposed-conv up, concatenated skips."""

        def __init__(self) -> None:
            super().__init__()
            self.down = nn.ModuleList()
            prev = in_channels
            for c in channels:
                self.down.append(block(prev, c))
                prev = c
            self.up = nn.ModuleList()
            self.dec = nn.ModuleList()
            for c in reversed(channels[:-1]):
                self.up.append(nn.ConvTranspose2d(prev, c, 2, stride=2))
                self.dec.append(block(2 * c, c))
                prev = c
            self.head = nn.Conv2d(prev, out_channels, 1)

        def forward(self, x):
            skips = []
            for i, b in enumerate(self.down):
                if i:
                    x = torch.nn.functional.max_pool2d(x, 2)
                x = b(x)
                skips.append(x)
            for up, dec, skip in zip(self.up, self.dec, reversed(skips[:-1])):
                x = dec(torch.cat([up(x), skip], dim=1))
            return self.head(x)

    return CompactUNet()


@register_model("unet", divisor=16)
def _unet(
    in_channels: int,
    out_channels: int,
    features: tuple[int, ...] = (32, 32, 64, 128, 256, 32),
    **kw: Any,
):
    """Wider U-Net (MONAI ``BasicUNet``, ~1.9 M params) for a GPU."""
    from monai.networks.nets import BasicUNet

    return BasicUNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=out_channels,
        features=tuple(features),
        **kw,
    )


def save_weights(model, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write the model's state dict to a safetensors file (tensors made contiguous, on CPU)."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata=metadata or {})


def load_weights(model, path: str | Path) -> None:
    """Load a safetensors state dict into ``model`` (strict: every key must match)."""
    from safetensors.torch import load_file

    from ..errors import InputError

    p = Path(path)
    if not p.is_file():
        raise InputError(p, "weights file not found")
    try:
        state = load_file(str(p))
    except Exception as e:
        raise InputError(p, f"not a readable safetensors file ({e})") from e
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise InputError(
            p, f"weights do not fit the configured model: {str(e).splitlines()[0]}"
        ) from e
