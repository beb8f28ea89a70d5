"""Grad-CAM for `interpret`: where in each top-loss image the model found the evidence for the class it chose.

The book's chapter 18 recipe with fastai's hooks (`hook_outputs`) on the model's top-level layers: the map is taken
at the last one whose output is still spatial after a convolution (a vision learner's body; the last ReLU of
`small_cnn`), weighted by the mean gradient of the class's logit. The
images go through the learner's validation pipeline (`test_dl`), so the map covers exactly the pixels the model saw,
and the picture shows those pixels (resized, cropped or padded as the model received them), not the file.

The service has its own Grad-CAM (app/core/explain.py, on a served model's prepared tensor, with its limits and
budget); training cannot import it, and this one works on a fastai learner and its DataLoaders instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastai.callback.hook import hook_outputs
from torch import nn

from training.errors import warn
from training.plots import plot_heatmap_grid

WHY = "top_losses_why.png"


def class_maps(learn: Any, files: list[Path], targets: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """For each file, the Grad-CAM map of its class `targets[i]` (scaled to [0, 1] per image, [N, h, w]) and the
    image as the model received it ([N, H, W, 3] uint8, the normalisation undone). ValueError when the model has
    no spatial map after a convolution (then there is nothing to place the evidence on)."""
    dl = learn.dls.test_dl(files, num_workers=0, bs=max(1, len(files)))
    [x] = dl.one_batch()
    model = learn.model.eval()
    children = list(model.children()) or [model]
    with hook_outputs(children, detach=False) as hooks, torch.enable_grad():
        logits = model(x.as_subclass(torch.Tensor).requires_grad_(True))  # a graph even through a frozen body
        acts = spatial_map(children, hooks.stored)
        chosen = logits[torch.arange(len(files)), torch.tensor(targets)]
        [grads] = torch.autograd.grad(chosen.sum(), acts)  # eval mode: each image's gradient is its own
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cams = torch.relu((weights * acts.detach()).sum(dim=1)).float().cpu()
    tops = cams.flatten(1).max(dim=1).values[:, None, None]
    maps = torch.where(tops > 0, cams / tops.clamp_min(1e-12), torch.zeros_like(cams)).numpy()
    shown = dl.decode((x,))[0]  # the batch transforms undone: 0..255 in the model's geometry
    pixels = shown.as_subclass(torch.Tensor).permute(0, 2, 3, 1).clamp(0, 255).byte().cpu().numpy()
    return maps.astype(np.float32), pixels


def spatial_map(children: list[nn.Module], outputs: list[Any]) -> torch.Tensor:
    """The output of the last top-level layer, from the first one holding a convolution on, that is still a
    spatial map (4-D, more than 1x1): a vision learner's body; the last ReLU of `small_cnn`."""
    first_conv = next(
        (
            i
            for i, c in enumerate(children)
            if any(isinstance(m, nn.modules.conv._ConvNd) for m in c.modules())
        ),
        None,
    )
    maps = [
        out for out in outputs[first_conv or 0 :]
        if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[2] * out.shape[3] > 1
    ]  # fmt: skip
    if first_conv is None or not maps:
        raise ValueError(
            "the model gives no spatial map after a convolution: Grad-CAM cannot place the evidence"
        )
    return maps[-1]


def plot_why(
    learn: Any, files: list[Path], targets: list[int], captions: list[str], path: Path
) -> Path | None:
    """top_losses_why.png: each top-loss image as the model saw it, with the Grad-CAM map of the class that misled
    it, so cleaning starts from what the model looked at. A model without a spatial map after a convolution gets a
    warning instead of the picture (and no stale picture of an earlier run is left)."""
    try:
        maps, pixels = class_maps(learn, files, targets)
    except (ValueError, RuntimeError) as e:  # no spatial map; or no gradient reaches it (a frozen body)
        path.unlink(missing_ok=True)
        warn(f"no {path.name}: {e}")
        return None
    images = list(zip(pixels, maps, captions, strict=True))
    return plot_heatmap_grid(
        images, path, title="top losses: where the model saw the class in each caption (Grad-CAM)"
    )
