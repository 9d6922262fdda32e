"""A store's images on the training device, in batches."""

from __future__ import annotations

import numpy as np
import torch


class ImageFeed:
    """Batches of a store's images on the device, as ``(B, 1, X, Y, Z)`` float32.

    With ``downsample`` (the model's input pooling) the pooled store is kept instead, and
    batches come out on the pooled grid (the model then runs ``forward_downsampled``).

    On CUDA the whole store is copied to the GPU once (float16) when it fits in 60 % of
    the free memory; on CPU it is read into memory when under ``cpu_limit_bytes``.
    Otherwise batches are read from the memory map.
    """

    def __init__(self, images: np.ndarray, device: torch.device, cpu_limit_bytes: int = 4 << 30, downsample: torch.nn.Module | None = None) -> None:
        self.device = device
        self.images = images
        self.resident: torch.Tensor | None = None
        self.downsample = downsample
        nbytes = images.size * images.dtype.itemsize
        if downsample is not None:  # keep the downsampled store (float32) resident instead
            chunks = []
            with torch.no_grad():
                for start in range(0, len(images), 32):
                    chunk = torch.from_numpy(np.array(images[start : start + 32], dtype=np.float32)).to(device)
                    chunks.append(downsample(chunk[:, None])[:, 0])
            self.resident = torch.cat(chunks)
        elif device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if nbytes < 0.6 * free:
                self.resident = torch.empty(images.shape, dtype=torch.float16, device=device)
                for start in range(0, len(images), 64):
                    chunk = torch.from_numpy(np.array(images[start : start + 64]))  # a writable copy of the memory map
                    self.resident[start : start + 64].copy_(chunk.to(torch.float16), non_blocking=False)
        elif nbytes < cpu_limit_bytes:
            self.resident = torch.from_numpy(np.array(images, dtype=np.float16))

    def batch(self, rows: np.ndarray, rows_on_device: torch.Tensor | None = None) -> torch.Tensor:
        """Images of ``rows``; pass ``rows_on_device`` too to avoid a host-to-device copy."""
        if self.resident is not None:
            idx = rows_on_device if rows_on_device is not None else torch.as_tensor(rows, dtype=torch.long, device=self.resident.device)
            x = self.resident.index_select(0, idx)
        else:
            x = torch.from_numpy(np.array(self.images[np.asarray(rows)])).to(self.device)
        return x.float().unsqueeze(1)
