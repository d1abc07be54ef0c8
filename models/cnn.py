"""The digit CNN and its training loop (augmented so it copes with drawn and photographed digits)."""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from models.ensemble import averaged
from models.mnist_data import DigitSplits, load_digits
from models.training import Trained, TrainingContextLike, configure_torch_threads, progress, seed_everything
from service.preprocessing.image import digit_to_mnist, normalise


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class DigitCNN(nn.Module):
    """The classic Conv32 / Conv64 / Dense128 / Dense10 net, with batch norm, doubled convs and dropout."""

    def __init__(self, width: int = 32, dropout: float = 0.3, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(conv_block(1, width), conv_block(width, 2 * width), conv_block(2 * width, 4 * width))
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(4 * width * 3 * 3, 128),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(128, classes),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image))


def augment(batch: torch.Tensor, background: float, generator: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """Small random affine (shift, rotation, scale, shear) and stroke-width changes."""
    n = batch.shape[0]
    uniform = lambda low, high: low + (high - low) * torch.rand(n, generator=generator)  # noqa: E731
    angle = uniform(-15, 15) * strength * math.pi / 180
    scale = 1 + uniform(-0.12, 0.12) * strength
    shear = uniform(-0.15, 0.15) * strength
    shift = torch.stack([uniform(-0.12, 0.12), uniform(-0.12, 0.12)], dim=1) * strength
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin + shear, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], dim=1
    )
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    moved = F.grid_sample(batch - background, grid, align_corners=False, padding_mode="zeros") + background

    choice = torch.rand(n, generator=generator)
    thicker = F.max_pool2d(moved, 3, stride=1, padding=1)
    thinner = -F.max_pool2d(-moved, 3, stride=1, padding=1)
    blend = torch.rand(n, 1, 1, 1, generator=generator)
    dilated = moved + blend * (thicker - moved)
    eroded = moved + blend * (thinner - moved)
    pick = choice.view(n, 1, 1, 1)
    return torch.where(pick < 0.2, dilated, torch.where(pick < 0.35, eroded, moved))


def train_cnn(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    hp: dict,
    seed: int,
) -> tuple[DigitCNN, list[dict]]:
    """Train with AdamW + one-cycle LR; keep the weights of the best validation epoch."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = DigitCNN(width=hp["width"], dropout=hp["dropout"])
    x, y = torch.from_numpy(train_x), torch.from_numpy(train_y)
    vx, vy = torch.from_numpy(val_x), torch.from_numpy(val_y)
    background = float(x.min())
    steps_per_epoch = math.ceil(len(x) / hp["batch_size"])
    total_steps = hp["epochs"] * steps_per_epoch if hp["max_steps"] <= 0 else hp["max_steps"]
    optimiser = torch.optim.AdamW(model.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=hp["lr"], total_steps=total_steps)
    best, best_state, history, step = -1.0, None, [], 0
    bar = progress(total=total_steps, desc="mnist-cnn", unit="step")
    for epoch in range(hp["epochs"]):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), hp["batch_size"]):
            if step >= total_steps:
                break
            index = order[start : start + hp["batch_size"]]
            inputs = augment(x[index], background, generator, hp["augment"])
            loss = F.cross_entropy(model(inputs), y[index], label_smoothing=hp["label_smoothing"])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            step += 1
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}", best_val=f"{best:.4f}")
        model.eval()
        with torch.no_grad():
            accuracy = float((model(vx).argmax(1) == vy).float().mean())
        history.append({"epoch": epoch + 1, "val_accuracy": accuracy})
        if accuracy >= best:
            best, best_state = accuracy, {k: v.clone() for k, v in model.state_dict().items()}
        if step >= total_steps:
            break
    bar.close()
    model.load_state_dict(best_state)
    return model.eval(), history


def architecture(hp: dict) -> nn.Module:
    """The exported graph: `members` CNNs averaged (one CNN when members is 1)."""
    return averaged([DigitCNN(width=hp["width"], dropout=hp["dropout"]) for _ in range(hp["members"])])


def mnist_digits(seed: int) -> tuple[DigitSplits, np.ndarray]:
    """The splits and every digit put through the serving pre-processing (28x28 in [0, 1])."""
    data = load_digits(seed)
    digits = np.stack(
        [digit_to_mnist(image.astype(np.float32)) for image in progress(data.images, desc="pre-process", unit="img")]
    )
    return data, digits


def train(ctx: TrainingContextLike) -> Trained:
    """Stage 1 of the mnist-cnn build: normalisation from the training digits, then each seed."""
    hp = ctx.hyperparameters
    configure_torch_threads()
    seed_everything(hp["seed"])
    started = time.perf_counter()
    data, digits = mnist_digits(hp["seed"])
    train_idx = data.train[: hp["train_subset"]] if hp["train_subset"] else data.train
    mean, std = round(float(digits[train_idx].mean()), 6), round(float(digits[train_idx].std()), 6)
    inputs = normalise(digits, mean, std)
    members, histories = [], []
    for member in range(hp["members"]):
        model, history = train_cnn(
            inputs[train_idx], data.labels[train_idx], inputs[data.validation], data.labels[data.validation], hp, hp["seed"] + member
        )
        members.append(model)
        histories.append(history)
    return Trained(
        averaged(members),
        {"mean": mean, "std": std, "train_n": int(len(train_idx)), "histories": histories,
         "duration_s": round(time.perf_counter() - started, 1)},
    )
