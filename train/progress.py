"""A rich progress display for Keras training: one bar over epochs, one over the current epoch."""

from __future__ import annotations

import keras

from edgecxr.edge_runtime.console import console, progress_bar


class RichProgress(keras.callbacks.Callback):
    def __init__(self, epochs: int, steps_per_epoch: int):
        super().__init__()
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.progress = progress_bar(transient=True)

    def on_train_begin(self, logs=None):
        self.progress.start()
        self.epoch_task = self.progress.add_task("epochs", total=self.epochs)
        self.batch_task = self.progress.add_task("epoch 1", total=self.steps_per_epoch)

    def on_epoch_begin(self, epoch, logs=None):
        self.progress.reset(self.batch_task, total=self.steps_per_epoch, description=f"epoch {epoch + 1}")

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        suffix = f" loss {loss:.3f}" if loss is not None else ""
        self.progress.update(self.batch_task, completed=batch + 1, description=f"epoch {self.epoch_index + 1}{suffix}")

    @property
    def epoch_index(self) -> int:
        return int(self.progress.tasks[self.epoch_task].completed)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.progress.advance(self.epoch_task)
        shown = "  ".join(f"{k} {v:.4f}" for k, v in logs.items() if isinstance(v, float) and k != "learning_rate")
        console.print(f"epoch {epoch + 1:>3}/{self.epochs}  {shown}", highlight=False)

    def on_train_end(self, logs=None):
        self.progress.stop()
