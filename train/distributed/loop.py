"""Training under a tf.distribute strategy, resumable after a worker is killed.

Keras 3's `fit` cannot run under MultiWorkerMirroredStrategy (it reduces its scalar logs along an
axis they do not have: tensorflow/tensorflow#72388), so this is the standard custom loop of the
tf.distribute guide: `strategy.run` of one gradient step, Keras' own optimizer (which all-reduces
the gradients), loss, EarlyStopping and BackupAndRestore callbacks, driven epoch by epoch.

- Each worker's input is its own shard of train/ (sharded by file before decoding), batched at the
  per-replica batch; every worker runs the same number of steps an epoch over an endless shuffle.
- Every worker holds all of validation and scores it itself; the chief's numbers are then
  broadcast, so that early stopping decides the same on every worker (or the others would wait
  forever in the next all-reduce).
- The backup (weights with the optimizer's state, hence the cosine schedule's step; the history so
  far; early stopping's best loss, patience count and best weights) is written after every epoch
  and read back when the same command is started again.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np

from edgecxr.edge_runtime.atomic import write_json_atomic
from edgecxr.edge_runtime.console import console
from edgecxr.edge_runtime.errors import EdgecxrError

from ..fitting import batches_per_epoch, compile_classifier, fit_callbacks

STATE_FILE = "edgecxr_state-{epoch}.json"
BEST_FILE = "edgecxr_best-{epoch}.npz"


class TrainingBackup(keras.callbacks.BackupAndRestore):
    """BackupAndRestore plus what Keras' one leaves out: the history and early stopping's state.

    Those are written per epoch number (this epoch's and the last one's are kept), so that a kill
    between writing them and Keras writing its weights still leaves a matching pair to restore.
    """

    def __init__(self, backup_dir: Path, early_stopping: keras.callbacks.EarlyStopping):
        super().__init__(str(backup_dir), double_checkpoint=True)
        self.directory = Path(backup_dir)
        self.early_stopping = early_stopping
        self.history: dict[str, list[float]] = {}
        self.restored_epoch = 0

    def on_train_begin(self, logs=None):
        # Keras sets the epoch to start from only when it finds a backup: a model trained again (a
        # backbone's second phase) would otherwise start from where the first phase resumed.
        self.model._initial_epoch = 0
        super().on_train_begin(logs)  # weights, optimizer state and the epoch to start from
        self.restored_epoch = int(self.model._initial_epoch or 0)
        if self.restored_epoch:
            self._restore_state(self.restored_epoch)
        else:
            # The untrained state, so that the first epoch's backup keeps a previous one (.bkp) too.
            self._save_model()

    def _restore_state(self, epoch: int) -> None:
        stopping = self.early_stopping
        stopping.on_train_begin()  # a fresh start, then what was saved after `epoch`
        self.history, self.restored_epoch, self.model._initial_epoch = {}, epoch, epoch
        if not epoch:
            return
        state = json.loads((self.directory / STATE_FILE.format(epoch=epoch)).read_text(encoding="utf-8"))
        self.history = state["history"]
        stopping.wait, stopping.best, stopping.best_epoch = state["wait"], state["best"], state["best_epoch"]
        best_path = self.directory / BEST_FILE.format(epoch=epoch)
        if best_path.is_file():
            with np.load(best_path) as saved:
                stopping.best_weights = [saved[f"w{i}"] for i in range(len(saved.files))]

    def fall_back(self, epoch: int) -> None:
        """Restore the previous epoch's backup instead: another worker was killed before it could
        write the epoch this one restored (they all write theirs just after the same all-reduce)."""
        if epoch != self.restored_epoch - 1 or not Path(self._prev_weights_path).is_file():
            raise EdgecxrError(f"the workers' backups are too far apart to resume (epoch {self.restored_epoch} "
                               f"here, {epoch} on another worker); delete {self.directory} on every worker "
                               f"to start over")
        # Keras loads only files named *.weights.h5: the previous backup takes the latest's place.
        shutil.copy(self._prev_weights_path, self._weights_path)
        self.model.load_weights(self._weights_path)
        self._restore_state(epoch)

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        done, stopping = epoch + 1, self.early_stopping
        if stopping.best_weights is not None:
            with (self.directory / BEST_FILE.format(epoch=done)).open("wb") as handle:
                np.savez(handle, **{f"w{i}": w for i, w in enumerate(stopping.best_weights)})
        write_json_atomic(self.directory / STATE_FILE.format(epoch=done), {
            "history": self.history, "wait": stopping.wait, "best_epoch": stopping.best_epoch,
            "best": None if stopping.best is None else float(stopping.best)})
        super().on_epoch_end(epoch, logs)
        for old in (STATE_FILE, BEST_FILE):
            (self.directory / old.format(epoch=done - 2)).unlink(missing_ok=True)


def _agree_with_chief(strategy):
    """A tf.function: the chief's value of a float vector, on every worker."""
    import tensorflow as tf

    @tf.function
    def agree(values):
        def replica(values):
            context = tf.distribute.get_replica_context()
            mine = tf.where(context.replica_id_in_sync_group == 0, values, tf.zeros_like(values))
            return context.all_reduce(tf.distribute.ReduceOp.SUM, mine)
        return strategy.experimental_local_results(strategy.run(replica, args=(values,)))[0]
    return agree


def _lowest_over_workers(strategy, value: int) -> int:
    """The smallest of every replica's `value` (an all-reduced sum of one-hot rows: CPU
    collectives offer neither min nor a working all-gather here)."""
    import tensorflow as tf

    replicas = strategy.num_replicas_in_sync

    @tf.function
    def spread(value):
        def replica(value):
            context = tf.distribute.get_replica_context()
            row = tf.one_hot(context.replica_id_in_sync_group, replicas) * value
            return context.all_reduce(tf.distribute.ReduceOp.SUM, row)
        return strategy.experimental_local_results(strategy.run(replica, args=(value,)))[0]
    return int(round(float(tf.reduce_min(spread(tf.constant(float(value)))))))


def fit_distributed(model, strategy, train_dataset_fn, val_dataset, n_train: int, scaling: dict, config,
                    backup_dir: Path, epochs: int | None = None, learning_rate: float | None = None):
    """Train `model` (built under the strategy's scope) for one phase. Returns (model, history).

    `train_dataset_fn(batch_size, pipeline)`: this worker's endless training stream; `scaling`:
    distribution.scaled(...); `epochs` and `learning_rate` (already scaled) default to the config's
    and the scaled one. The phase compiles its own optimizer, so the trainable variables may change
    between phases. The model's variables are the strategy's: copy its weights into a plain model
    before saving or predicting outside the strategy.
    """
    import tensorflow as tf

    epochs = config.epochs if epochs is None else epochs
    learning_rate = scaling["learning_rate"] if learning_rate is None else learning_rate
    global_batch = scaling["global_batch"]
    steps = batches_per_epoch(n_train, global_batch)
    with strategy.scope():
        compile_classifier(model, learning_rate, epochs * steps, config.label_smoothing)
        model.optimizer.build(model.trainable_variables)
    per_example_loss = keras.losses.BinaryCrossentropy(label_smoothing=config.label_smoothing, reduction=None)
    mean_loss = keras.losses.BinaryCrossentropy(label_smoothing=config.label_smoothing)
    stream = iter(strategy.distribute_datasets_from_function(
        lambda context: train_dataset_fn(context.get_per_replica_batch_size(global_batch), context.input_pipeline_id)))

    @tf.function
    def train_step(iterator):
        def replica_step(x, y, weights):
            with tf.GradientTape() as tape:
                probabilities = model(x, training=True)
                # Keras' sample-weighted mean: the sum over the global batch, divided by its size.
                loss = tf.nn.compute_average_loss(per_example_loss(y, probabilities) * weights,
                                                  global_batch_size=global_batch)
                if model.losses:
                    loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            gradients = tape.gradient(loss, model.trainable_variables)
            model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            correct = tf.reduce_sum(tf.cast(tf.equal(tf.cast(probabilities > 0.5, tf.float32), y), tf.float32))
            return loss, correct, tf.cast(tf.shape(y)[0], tf.float32)
        results = strategy.run(replica_step, args=next(iterator))
        return [strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None) for value in results]

    @tf.function(reduce_retracing=True)
    def forward(x):
        return model(x, training=False)

    def validate() -> list[float]:
        labels, probabilities = [], []
        for x, y in val_dataset:
            probabilities.append(forward(x).numpy())
            labels.append(y.numpy())
        y, p = np.concatenate(labels), np.concatenate(probabilities)
        loss = float(mean_loss(y, p)) + float(sum(float(v) for v in model.losses))
        auc = keras.metrics.AUC()
        auc.update_state(y, p)
        return [loss, float(np.mean((p > 0.5) == (y > 0.5))), float(auc.result())]

    agree = _agree_with_chief(strategy)
    stopping, progress = fit_callbacks(epochs, steps, config.patience)
    backup = TrainingBackup(backup_dir, stopping)
    callbacks = keras.callbacks.CallbackList([stopping, progress, backup], model=model)
    model.stop_training = False
    callbacks.on_train_begin()
    lowest = _lowest_over_workers(strategy, backup.restored_epoch)
    if lowest != backup.restored_epoch:
        backup.fall_back(lowest)
    if backup.restored_epoch:
        console.print(f"resuming after epoch {backup.restored_epoch} from the backup in {backup_dir}",
                      highlight=False)
    for epoch in range(backup.restored_epoch, epochs):
        callbacks.on_epoch_begin(epoch)
        loss_sum = correct = seen = 0.0
        for step in range(steps):
            loss, right, count = train_step(stream)
            loss_sum, correct, seen = loss_sum + float(loss), correct + float(right), seen + float(count)
            callbacks.on_train_batch_end(step, {"loss": loss_sum / (step + 1)})
        shared = agree(tf.constant([loss_sum / steps, correct / seen, *validate()], tf.float32)).numpy()
        logs = dict(zip(("loss", "accuracy", "val_loss", "val_accuracy", "val_auc"), map(float, shared)))
        callbacks.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callbacks.on_train_end()  # early stopping restores the best weights; the backup is deleted
    shutil.rmtree(backup_dir, ignore_errors=True)
    return model, backup.history
