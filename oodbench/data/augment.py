"""Batched training augmentation on uint8 images (SPEC sections 2 and 3: RandomCrop(32, pad 4) + flip for in-dist
and auxiliary batches), on whatever device the batch lives on."""

from __future__ import annotations

import torch


def random_crop_flip(
    images: torch.Tensor,
    size: int = 32,
    padding: int = 4,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """torchvision's RandomCrop(size, padding) with zero padding followed by RandomHorizontalFlip(0.5), drawn
    independently for every image of the batch, as one gather (no per-sample Python loop).

    images: uint8 [B, C, S, S] on any device (S = 32 for CIFAR / TinyImages; S = 64 for ImageNet-RC, where the
    32x32 crop is taken out of the 72x72 padded image). Returns uint8 [B, C, size, size] on the same device.
    The crop offsets (top, then left) are uniform in 0..S + 2 * padding - size and each image is flipped with
    probability 1/2, drawn in that order from `generator`, which must live on the images' device (a CPU generator
    for CPU batches, `torch.Generator(device="cuda")` for CUDA batches); None uses that device's default generator.
    """
    if images.ndim != 4:
        raise ValueError(f"random_crop_flip expects [B, C, S, S] images, got {tuple(images.shape)}")
    b, c, h, w = images.shape
    ph, pw = h + 2 * padding, w + 2 * padding
    if ph < size or pw < size:
        raise ValueError(f"cannot crop {size}x{size} out of {h}x{w} images padded by {padding}")
    device = images.device
    top = torch.randint(0, ph - size + 1, (b,), generator=generator, device=device)
    left = torch.randint(0, pw - size + 1, (b,), generator=generator, device=device)
    flip = torch.rand(b, generator=generator, device=device) < 0.5
    padded = images.new_zeros((b, c, ph, pw))
    padded[:, :, padding : padding + h, padding : padding + w] = images
    ar = torch.arange(size, device=device)
    rows = top[:, None] + ar  # [B, size]
    # a flipped crop reads its columns right to left
    cols = left[:, None] + torch.where(flip[:, None], size - 1 - ar, ar)  # [B, size]
    batch = torch.arange(b, device=device)[:, None, None]
    # advanced indices around a slice: the result is [B, size, size, C]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1] (SPEC section 1: pixel space), on the same device."""
    if images.dtype != torch.uint8:
        raise TypeError(f"to_float expects uint8 images, got {images.dtype}")
    return images.to(torch.float32).div_(255.0)


def center_crop(images: torch.Tensor, size: int = 32) -> torch.Tensor:
    """The central `size` x `size` crop of uint8 [B, C, S, S] images (the images themselves when S == size): how
    ImageNet-RC's 64x64 auxiliary images enter anything but the training augmentation (SPEC section 2)."""
    if images.shape[-1] == size:
        return images
    offset = (images.shape[-1] - size) // 2
    return images[:, :, offset : offset + size, offset : offset + size].contiguous()
