"""History of generated images for the discriminators (Shrivastava et al. 2017; CycleGAN section 4)."""
from __future__ import annotations

import random

import torch


class ImagePool:
    """Keeps up to `size` past fakes; each query returns, per image, either the new fake or
    (with probability 1/2 once full) a stored one that the new fake replaces.

    It owns its random generator so that a resumed run draws the same choices.
    """

    def __init__(self, size: int, seed: int = 0):
        self.size = size
        self.images: list[torch.Tensor] = []
        self.rng = random.Random(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        chosen = []
        for image in images.detach():
            if len(self.images) < self.size:
                self.images.append(image)
                chosen.append(image)
            elif self.rng.random() > 0.5:
                slot = self.rng.randint(0, self.size - 1)
                chosen.append(self.images[slot])
                self.images[slot] = image
            else:
                chosen.append(image)
        return torch.stack(chosen)

    def state_dict(self) -> dict:
        stored = torch.stack(self.images).cpu() if self.images else torch.empty(0)
        return {"size": self.size, "images": stored, "rng_state": self.rng.getstate()}

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        if state["size"] != self.size:
            raise ValueError(f"image pool size mismatch: checkpoint has {state['size']}, config has {self.size}")
        self.images = [image.to(device) for image in state["images"]]
        self.rng.setstate(state["rng_state"])
