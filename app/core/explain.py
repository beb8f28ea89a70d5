"""Grad-CAM ("why this answer?"): where in the image the evidence for one class is, from the learner's own model.

The book's chapter 18 way, with hooks: one forward pass keeps the activations of the last layer of the body (the
last top-level layer whose output is still a spatial map, H x W > 1, after a convolution: the `body` of a fastai
vision learner, the last ReLU of `small_cnn`); one backward pass from the target class's score (the logit, before
softmax or sigmoid) gives their gradients; the map is ReLU(sum over channels of activation x mean gradient),
scaled to [0, 1]. The input is the SAME prepared tensor an answer uses (`backend.prepare`, then the learner's batch
transforms), so the prediction that comes with the map equals /predict's. Runs on the model thread only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from app.core.explanation import ExplainUnsupported, Explanation, target_index
from app.core.prediction import from_probabilities


def _has_conv(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in module.modules())


def grad_cam(
    model: nn.Module, batch: torch.Tensor, activation: Any, classes: list[str], target: str | None
) -> Explanation:
    """Explain one input (`batch`: [1, C, H, W], already through the batch transforms) for `target`."""
    layers = list(model.children()) if isinstance(model, nn.Sequential) else []
    if not _has_conv(model):
        raise ExplainUnsupported("the model has no convolutional layer: Grad-CAM needs a spatial feature map")
    outputs: list[torch.Tensor | None] = [None] * len(layers)

    def keep(i: int) -> Any:
        def hook(_m: nn.Module, _i: Any, out: Any) -> None:
            outputs[i] = out if isinstance(out, torch.Tensor) else None

        return hook

    last_conv: list[torch.Tensor] = []
    if layers:
        handles = [layer.register_forward_hook(keep(i)) for i, layer in enumerate(layers)]
    else:  # not a Sequential: the output of its last convolution
        conv = [m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)][-1]
        handles = [conv.register_forward_hook(lambda _m, _i, out: last_conv.append(out))]
    try:
        with torch.enable_grad():
            logits = model(batch.as_subclass(torch.Tensor))
            chosen = _body_output(layers, outputs) if layers else last_conv[-1]
            probs = activation(logits.detach()).float().cpu().numpy()
            [prediction] = from_probabilities(probs, classes)
            index = target_index(classes, target, prediction)
            [grads] = torch.autograd.grad(logits[0, index], chosen)
    finally:
        for handle in handles:
            handle.remove()
    weights = grads[0].mean(dim=(1, 2), keepdim=True)
    cam = torch.relu((weights * chosen[0].detach()).sum(dim=0)).float().cpu().numpy()
    top = float(cam.max())
    scaled = cam / top if top > 0 else np.zeros_like(cam)
    return Explanation(prediction, classes[index], scaled.astype(np.float32))


def _body_output(layers: list[nn.Module], outputs: list[torch.Tensor | None]) -> torch.Tensor:
    """The output of the last top-level layer that is a spatial map (4-D, more than 1x1) after a convolution."""
    seen_conv = False
    chosen = None
    for layer, out in zip(layers, outputs, strict=True):
        seen_conv = seen_conv or _has_conv(layer)
        if seen_conv and out is not None and out.dim() == 4 and out.shape[2] * out.shape[3] > 1:
            chosen = out
    if chosen is None:
        raise ExplainUnsupported(
            "no layer of the model's body gives a spatial map after a convolution: Grad-CAM cannot place the evidence"
        )
    return chosen


def explain_prepared(backend: Any, prepared: torch.Tensor, target: str | None) -> Explanation:
    """Explain one input prepared by a fastai backend's `prepare` (on the model thread)."""
    model = getattr(backend, "model", None)
    if model is None or not hasattr(backend, "batch_tfms"):
        raise ExplainUnsupported("this backend keeps no torch model: no gradients to explain with")
    with torch.no_grad():
        batch = backend.batch_tfms(torch.stack([prepared]).to(backend._device))
    return grad_cam(model, batch, backend.activation, backend.classes, target)


def graph_bytes(backend: Any) -> int:
    """An upper bound of what one explanation holds on top of an answer: every layer's output kept for the
    backward pass, and as much again for their gradients (measured once on a blank input at model size)."""
    model: nn.Module = backend.model
    total = [0]

    def count(_m: nn.Module, _i: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor):
            total[0] += out.nelement() * out.element_size()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            size = backend.input_size
            model(torch.zeros(1, 3, size, size, device=backend._device))
    finally:
        for handle in handles:
            handle.remove()
    return 2 * total[0]
