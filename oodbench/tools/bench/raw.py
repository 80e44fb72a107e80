"""Raw throughput of a model (forward, forward + input gradient, train step) over a sweep of batch sizes: the reference
of every efficiency figure."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from oodbench.tools.bench.common import rate

if TYPE_CHECKING:
    import torch
    from torch import nn


# ---------------------------------------------------------------------------------------------------------------
# raw throughput
# ---------------------------------------------------------------------------------------------------------------
RAW_MODES = {
    "forward": "eval mode, torch.no_grad(): model(x)",
    "fwd_grad": "eval mode: d/dx sum(oe_loss(model(x))) by torch.autograd.grad (input gradient only)",
    "train": "train mode: cross-entropy forward + backward + SGD (Nesterov) step",
}


def _raw_call(mode: str, model: nn.Module, x: torch.Tensor, optimizer=None, y=None) -> Callable[[], Any]:
    import torch
    import torch.nn.functional as F

    from oodbench.detector import oe_loss

    if mode == "forward":

        def call():
            with torch.no_grad():
                return model(x)

    elif mode in ("fwd_grad", "fwd_grad_params"):
        xg = x.clone().requires_grad_(True)

        def call():
            obj = oe_loss(model(xg)).sum()
            if mode == "fwd_grad":
                return torch.autograd.grad(obj, xg)[0]
            obj.backward()  # the released code's PGD: loss.backward() also fills every parameter's .grad
            return xg.grad

    elif mode == "train":

        def call():
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return loss

    else:
        raise ValueError(f"unknown raw mode '{mode}'")
    return call


def raw_rate(model: nn.Module, mode: str, batch: int, device: torch.device, min_time: float) -> float:
    """Raw images/s of `model` in `mode` (see RAW_MODES; `fwd_grad_params` = the released code's PGD backward)
    at batch size `batch` on random inputs already on the device."""
    import torch

    generator = torch.Generator(device="cpu").manual_seed(batch)
    x = torch.rand((batch, 3, 32, 32), generator=generator).to(device)
    if mode == "train":
        net = copy.deepcopy(model).train()
        optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, nesterov=True)
        y = torch.randint(0, net.num_outputs, (batch,), generator=generator).to(device)
        return rate(_raw_call(mode, net, x, optimizer, y), batch, device, min_time)
    model.eval()
    try:
        return rate(_raw_call(mode, model, x), batch, device, min_time)
    finally:
        model.zero_grad(set_to_none=True)


def _is_oom(error: BaseException) -> bool:
    return "out of memory" in str(error).lower()


def raw_sweep(model: nn.Module, device: torch.device, batch_sizes: tuple[int, ...], min_time: float) -> dict[str, Any]:
    """Forward and fwd+input-grad images/s per batch size (stops at the first size that does not fit)."""
    import torch

    rows = []
    for batch in sorted(set(batch_sizes)):
        try:
            rows.append(
                {
                    "batch": batch,
                    "forward": raw_rate(model, "forward", batch, device, min_time),
                    "fwd_grad": raw_rate(model, "fwd_grad", batch, device, min_time),
                }
            )
        except (RuntimeError, torch.cuda.OutOfMemoryError) as error:
            if not _is_oom(error):
                raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
            rows.append({"batch": batch, "out_of_memory": True})
            break
    ok = [r for r in rows if "forward" in r]
    if not ok:
        raise RuntimeError("no batch size of the sweep fits on the device")
    best = {
        mode: {"batch": max(ok, key=lambda r: r[mode])["batch"], "images_per_s": max(r[mode] for r in ok)}
        for mode in ("forward", "fwd_grad")
    }
    return {"modes": RAW_MODES, "sweep": rows, "best": best}
