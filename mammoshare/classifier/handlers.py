"""Ignite pieces that plug the classifier evaluation into MONAI workflows.

- :class:`ClassificationReport`: collects a MONAI evaluator's outputs and calls
  :func:`~mammoshare.classifier.report.write_evaluation` when the run completes.
- :class:`PredictionsWriter`: collects outputs and calls
  :func:`~mammoshare.classifier.report.write_predictions_csv` (inference, labels not needed).
- :class:`ClassifierCheckpointer`: ``last.pt`` for ``--resume`` (network, optimizer, the
  validation's best and early stopping's state).
- :class:`PositiveClassAUPRC`, :class:`PositiveClassAUROC`: MONAI's ``AveragePrecision`` / ``ROCAUC``
  handlers on P(positive class), for the validation key metric
  (``SupervisedEvaluator(key_val_metric={"val_auprc": PositiveClassAUPRC()})``).
- :class:`BestValidationWriter`: writes the validation evaluator's best key metric and its epoch
  into the run's training-counts file (next to ``model.pt``), where the study reads it.

Engine outputs may be decollated lists of ``{"pred", "label"}`` dicts or batched dicts
(``decollate=False``); ``"pred"`` holds log-probabilities ``(2,)`` per patch (0 healthy, 1 lesion).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.exceptions import NotComputableError
from monai.handlers import AveragePrecision, ROCAUC

from ..datalist import write_training_counts
from ..distributed import is_main_process
from ..handlers import TrainingCheckpointer
from ..hashing import sha256_file
from .metrics import METRIC_NAMES, as_pred_row, class_probabilities, label_value, positive_index
from .report import write_evaluation, write_predictions_csv

__all__ = [
    "OutputCollector",
    "ClassificationReport",
    "PredictionsWriter",
    "positive_class_output_transform",
    "PositiveClassAUPRC",
    "PositiveClassAUROC",
    "BestValidationWriter",
    "ClassifierCheckpointer",
]

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# engine outputs -> per-patch values
# ----------------------------------------------------------------------------------------------


def _split_batched(data: Any, n: int | None = None) -> list:
    """A decollated list of per-sample dicts stays as it is; a batched dict (``decollate=False``) is
    split into per-sample dicts (tensors and lists of length B indexed, other values repeated)."""
    if data is None:
        return [{}] * (n or 0)
    if isinstance(data, (list, tuple)):
        return [d if isinstance(d, Mapping) else {} for d in data]
    if isinstance(data, Mapping):
        if n is None:
            pred = data.get("pred")
            n = int(pred.shape[0]) if isinstance(pred, torch.Tensor) and pred.ndim > 0 else 0
        samples = [{} for _ in range(n)]
        for key, value in data.items():
            if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim > 0 and value.shape[0] == n:
                for i in range(n):
                    samples[i][key] = value[i]
            elif isinstance(value, (list, tuple)) and len(value) == n:
                for i in range(n):
                    samples[i][key] = value[i]
        return samples
    raise TypeError(f"unexpected engine data of type {type(data).__name__}")


def _string_or_none(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)) and len(value) == 1:  # a collated string left in a list
        value = value[0]
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else value.tolist()
    text = str(value)
    return text if text != "" else None


def _stack_output(output: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Engine output (decollated list of dicts or batched dict) -> (preds (B, 2) float, labels (B,)
    float or None if no sample holds a label)."""
    if isinstance(output, Mapping):
        preds = torch.as_tensor(output["pred"]).detach().float().reshape(-1, 2)
        label = output.get("label")
        labels = None if label is None else torch.as_tensor(label).detach().float().reshape(-1)
        if labels is not None and labels.numel() != preds.shape[0]:
            raise ValueError(f"{preds.shape[0]} predictions but {labels.numel()} labels in the engine output")
        return preds.cpu(), None if labels is None else labels.cpu()
    samples = _split_batched(output)
    preds = torch.as_tensor(np.stack([as_pred_row(s["pred"]) for s in samples])).float() if samples else \
        torch.zeros((0, 2))
    raw = [s.get("label") for s in samples]
    if any(r is None for r in raw):
        return preds, None
    labels = torch.tensor([label_value(r) for r in raw], dtype=torch.float32)
    return preds, labels


# ----------------------------------------------------------------------------------------------
# Ignite handlers
# ----------------------------------------------------------------------------------------------


class OutputCollector:
    """Ignite handler base: collects the per-patch network outputs (``self.preds``, ``(2,)`` each),
    labels, patient ids and image paths of a MONAI workflow, reset at ``STARTED`` and appended at
    ``ITERATION_COMPLETED``; a subclass's :meth:`completed` uses them at ``COMPLETED``."""

    def __init__(self, pred_key: str = "pred", label_key: str = "label",
                 patient_key: str = "patient_id", image_path_key: str = "image_path"):
        self.pred_key = pred_key
        self.label_key = label_key
        self.patient_key = patient_key
        self.image_path_key = image_path_key
        self.reset()

    def reset(self, engine: Engine | None = None) -> None:
        self.preds: list[np.ndarray] = []
        self.labels: list[float | None] = []
        self.patient_ids: list[str | None] = []
        self.image_paths: list[str | None] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def collect(self, engine: Engine) -> None:
        outputs = _split_batched(engine.state.output)
        batch = engine.state.batch
        samples = _split_batched(batch, len(outputs)) if isinstance(batch, (list, tuple, Mapping)) else []
        if len(samples) != len(outputs):
            samples = [{}] * len(outputs)
        for out, sample in zip(outputs, samples):
            if self.pred_key not in out:
                raise KeyError(f"engine output has no {self.pred_key!r}: keys {sorted(out)}")
            self.preds.append(as_pred_row(out[self.pred_key]))
            label = out.get(self.label_key)
            if label is None:
                label = sample.get(self.label_key)
            self.labels.append(None if label is None else label_value(label))
            self.patient_ids.append(_string_or_none(sample.get(self.patient_key)))
            self.image_paths.append(_string_or_none(sample.get(self.image_path_key)))

    def completed(self, engine: Engine) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class ClassificationReport(OutputCollector):
    """Ignite handler: the evaluation files of a MONAI ``SupervisedEvaluator`` run.

    Collects, at every ``ITERATION_COMPLETED``, the per-patch ``"pred"`` (log-probabilities (2,))
    and ``"label"`` of ``engine.state.output`` and the ``"patient_id"`` / ``"image_path"`` strings of
    ``engine.state.batch`` (decollated lists of dicts, or batched dicts); at ``COMPLETED`` it calls
    :func:`write_evaluation` into ``output_dir``, logs the metrics with the positive class and keeps
    the result in ``self.result``. Patches without a patient id are their own bootstrap cluster
    (with a warning). ``extra`` is stored in ``metrics.json``.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        positive_class: str = "lesion",
        n_bootstrap: int = 1000,
        seed: int = 0,
        threshold: float = 0.5,
        extra: Mapping | None = None,
        **keys: str,
    ):
        positive_index(positive_class)
        super().__init__(**keys)
        self.output_dir = Path(output_dir)
        self.positive_class = positive_class
        self.n_bootstrap = int(n_bootstrap)
        self.seed = int(seed)
        self.threshold = float(threshold)
        self.extra = dict(extra) if extra is not None else {}
        self.result: dict | None = None

    def completed(self, engine: Engine) -> None:
        if not self.preds:
            logger.warning("ClassificationReport: no patches were evaluated; nothing written")
            return
        if any(label is None for label in self.labels):
            raise ValueError("ClassificationReport needs a label for every patch (1 = lesion, 0 = healthy)")
        probabilities = class_probabilities(np.stack(self.preds))[:, positive_index(self.positive_class)]
        image_paths = self.image_paths if any(p is not None for p in self.image_paths) else None
        if image_paths is not None:
            image_paths = ["" if p is None else p for p in image_paths]
        self.result = write_evaluation(
            self.output_dir,
            np.asarray(self.labels).round().astype(np.int64),
            probabilities,
            self.patient_ids,
            positive_class=self.positive_class,
            image_paths=image_paths,
            n_bootstrap=self.n_bootstrap,
            seed=self.seed,
            extra=self.extra,
            threshold=self.threshold,
        )
        r = self.result
        ci = r["confidence_intervals"]

        def fmt(name: str) -> str:
            low, high = ci[name]["low"], ci[name]["high"]
            interval = "" if low is None else f" [{low:.4f}, {high:.4f}]"
            return f"{name} {r[name]:.4f}{interval}"

        logger.info(
            "evaluation (positive class: %s, %d patches, %d patients, %g%% CI from %d patient-level bootstrap "
            "resamples): %s; written to %s",
            self.positive_class, r["n_patches"], r["n_patients"], 100 * r["ci_level"], r["n_bootstrap"],
            ", ".join(fmt(name) for name in METRIC_NAMES), self.output_dir,
        )


class PredictionsWriter(OutputCollector):
    """Ignite handler for inference: collects ``"pred"`` of ``engine.state.output`` and the
    ``"image_path"`` / ``"patient_id"`` of ``engine.state.batch`` (labels if present) and writes
    :func:`write_predictions_csv` to ``output_path`` at ``COMPLETED``."""

    def __init__(self, output_path: str | os.PathLike, threshold: float = 0.5, **keys: str):
        super().__init__(**keys)
        self.output_path = Path(output_path)
        self.threshold = float(threshold)

    def completed(self, engine: Engine) -> None:
        labels = self.labels if all(label is not None for label in self.labels) else None
        patient_ids = self.patient_ids if any(p is not None for p in self.patient_ids) else None
        write_predictions_csv(
            self.output_path,
            self.image_paths,
            np.stack(self.preds) if self.preds else np.zeros((0, 2)),
            patient_ids=patient_ids,
            labels=labels,
            threshold=self.threshold,
        )
        logger.info("predictions of %d patches written to %s", len(self.preds), self.output_path)


# ----------------------------------------------------------------------------------------------
# validation metrics
# ----------------------------------------------------------------------------------------------


def positive_class_output_transform(positive_class: str = "lesion") -> Callable:
    """An Ignite ``output_transform``: MONAI engine output (decollated list of ``{"pred", "label"}``
    dicts, or a batched dict) -> ``(P(positive class) (B,) float32, y_true (B,) int64)`` with
    ``y_true = (label == positive label)``."""
    pos = positive_index(positive_class)

    def transform(output: Any) -> tuple[torch.Tensor, torch.Tensor]:
        preds, labels = _stack_output(output)
        if labels is None:
            raise ValueError("the engine output holds no labels: validation metrics need them")
        probabilities = torch.softmax(preds.double(), dim=1)[:, pos].float()
        return probabilities, (labels.round().long() == pos).long()

    return transform


class _PositiveClassMetric:
    """What both validation metrics add to their MONAI handler: the output transform to
    P(positive class), and a clear error instead of NaN (no patch, or one class only)."""

    metric_name = ""

    def __init__(self, positive_class: str = "lesion"):
        self.positive_class = positive_class
        super().__init__(output_transform=positive_class_output_transform(positive_class))

    def compute(self) -> Any:
        buffer = self.metric_fn.get_buffer()  # this run's patches, gathered over all ranks
        y = None if buffer is None else buffer[1]
        if y is None or y.numel() == 0:
            raise NotComputableError(f"{self.metric_name} needs at least one patch before it can be computed")
        if y.min() == y.max():
            raise ValueError(
                f"{self.metric_name} (positive class {self.positive_class}) is undefined: the evaluated patches "
                "hold one class only"
            )
        return super().compute()


class PositiveClassAUPRC(_PositiveClassMetric, AveragePrecision):
    """MONAI ``AveragePrecision`` handler (equal to sklearn's ``average_precision_score``) of
    P(positive class) over all patches of a run. Reads MONAI engine outputs (decollated
    ``{"pred", "label"}`` dicts) directly, so
    ``SupervisedEvaluator(key_val_metric={"val_auprc": PositiveClassAUPRC()})`` works; one class only
    raises ValueError."""

    metric_name = "AUPRC"


class PositiveClassAUROC(_PositiveClassMetric, ROCAUC):
    """MONAI ``ROCAUC`` handler (equal to sklearn's ``roc_auc_score``) of P(positive class) over all
    patches of a run (same input as :class:`PositiveClassAUPRC`; AUROC is the same for both positive
    classes)."""

    metric_name = "AUROC"


class BestValidationWriter:
    """Ignite handler of a validation evaluator with a key metric: whenever an epoch improves it,
    adds ``"best_validation": {<key metric name>: best value, "epoch": its epoch}`` to
    ``output_dir``'s :data:`~mammoshare.datalist.TRAINING_COUNTS_FILE` (the run's record of what it
    trained on), after MONAI has updated ``engine.state.best_metric``; the study reads it there."""

    def __init__(self, output_dir: str | os.PathLike):
        self.output_dir = Path(output_dir)
        self.written_epoch: int | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        name, epoch = getattr(engine.state, "key_metric_name", None), int(getattr(engine.state, "best_metric_epoch", -1))
        if name is None or epoch < 0 or epoch == self.written_epoch:
            return
        best = {name: float(engine.state.best_metric), "epoch": epoch}
        write_training_counts(self.output_dir, {"best_validation": best}, update=True)
        self.written_epoch = epoch


class ClassifierCheckpointer(TrainingCheckpointer):
    """What a classifier run keeps to resume (``--resume True``), under ``output_dir``.

    - ``last.pt`` at every epoch end, after that epoch's validation: the network, the optimizer, the
      AMP loss scaler, epoch and iteration, the validation's best metric and its epoch, the best
      checkpoint saver's record (so that a resumed run replaces ``model.pt`` only with a better
      epoch) and early stopping's counter. For resuming only; never shared.
    - ``model.pt`` stays the validation's best checkpoint (``best_saver`` writes it); at completion
      only the run's length is added to its training counts.

    In: the trainer's ``network`` and ``optimizer``, the validation ``evaluator``, its key-metric
    ``best_saver`` (MONAI ``CheckpointSaver``) and ``early_stop`` (MONAI ``EarlyStopHandler``, or
    None). With the per-epoch :class:`~mammoshare.handlers.EpochSeeder`, a resumed run is bitwise
    equal to an uninterrupted one on CPU when every epoch is a whole pass over the training set (the
    default ``--epoch_length None``; a shorter epoch continues the previous epoch's loader, which a
    resumed run starts anew).
    """

    MODEL_DESCRIPTION = "the best checkpoint by validation"

    def __init__(
        self,
        output_dir: str | os.PathLike,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        evaluator: Engine,
        best_saver: Any = None,
        early_stop: Any = None,
        resume: bool = False,
        seed: int | None = None,
    ):
        super().__init__(output_dir, resume=resume, seed=seed)
        self.network, self.optimizer, self.evaluator = network, optimizer, evaluator
        self.best_saver, self.early_stop = best_saver, early_stop

    def _key_metric_checkpoint(self):
        return getattr(self.best_saver, "_key_metric_checkpoint", None)

    def _early_stopping(self):
        return getattr(self.early_stop, "_handler", None)

    def training_state(self, engine: Engine) -> dict[str, Any]:
        network = getattr(self.network, "module", self.network)  # DDP: the wrapped network
        validation = self.evaluator.state
        saver, stopping = self._key_metric_checkpoint(), self._early_stopping()
        return {
            "network": network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            **self.progress(engine),
            "validation": {"best_metric": float(validation.best_metric), "best_metric_epoch": int(validation.best_metric_epoch)},
            # plain floats and strings: last.pt is read back with weights_only=True
            "best_saver": {key: [(float(p), str(f)) for p, f in items] for key, items in saver.state_dict().items()}
            if saver is not None else None,
            "early_stop": {k: v.item() if hasattr(v, "item") else v for k, v in stopping.state_dict().items()}
            if stopping is not None else None,
        }

    def restore(self, state: dict[str, Any], engine: Engine) -> None:
        network = getattr(self.network, "module", self.network)
        try:
            network.load_state_dict(state["network"])
        except RuntimeError as e:
            raise ValueError(f"{self.last_path} holds another network than this run's (--classifier must be that of the run): "
                             f"{str(e).splitlines()[0]}") from None
        self.optimizer.load_state_dict(state["optimizer"])
        best, epoch = state["validation"]["best_metric"], state["validation"]["best_metric_epoch"]
        self.evaluator.state.best_metric, self.evaluator.state.best_metric_epoch = best, epoch
        name = getattr(self.evaluator.state, "key_metric_name", None)
        # the training counts were written anew when this run started (by process 0 of several)
        if name is not None and epoch >= 0 and is_main_process():
            write_training_counts(self.output_dir, {"best_validation": {name: float(best), "epoch": int(epoch)}}, update=True)
        saver, stopping = self._key_metric_checkpoint(), self._early_stopping()
        if saver is not None and state.get("best_saver") is not None:
            saver.load_state_dict(state["best_saver"])
        if stopping is not None and state.get("early_stop") is not None:
            stopping.load_state_dict(state["early_stop"])

    def model_weights(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError("the classifier's model.pt is the validation's best checkpoint")

    def save_model(self, engine: Engine) -> None:
        fields = {"epochs": int(engine.state.epoch), "iterations": int(engine.state.iteration)}
        if self.model_path.is_file():
            fields.update(weights_file=self.model_path.name, weights_sha256=sha256_file(self.model_path))
        write_training_counts(self.output_dir, fields, update=True)
