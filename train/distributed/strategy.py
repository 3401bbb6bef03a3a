"""Who this process is in a distributed training, and the tf.distribute strategy it trains under.

`--distribute mirrored` is one machine's devices (MirroredStrategy); `--distribute multi-worker`
is one process per machine (MultiWorkerMirroredStrategy), each told its place by the standard
TF_CONFIG variable. The first worker (or the task typed "chief") is the chief: the only process that
writes the run folder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from edgecxr.edge_runtime.errors import EdgecxrError

MODES = ("none", "mirrored", "multi-worker")
# Several workers sharing one machine (tests, the benchmark) must not each claim every core.
THREADS_ENV = "EDGECXR_TF_THREADS"


@dataclass(frozen=True)
class Role:
    mode: str
    worker: int  # 0-based index among all workers, the chief first
    workers: int
    chief: bool


def role(mode: str) -> Role:
    """This process's place, from TF_CONFIG for multi-worker; read without starting TensorFlow."""
    if mode not in MODES:
        raise EdgecxrError(f"--distribute must be one of {', '.join(MODES)}, not {mode!r}")
    if mode != "multi-worker":
        return Role(mode, 0, 1, True)
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise EdgecxrError("--distribute multi-worker needs TF_CONFIG (the cluster and this task); "
                           "see docs/distributed.md")
    try:
        config = json.loads(raw)
        cluster, task = config["cluster"], config["task"]
        task_type, index = str(task["type"]), int(task["index"])
        chiefs, workers = list(cluster.get("chief", [])), list(cluster.get("worker", []))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise EdgecxrError(f"TF_CONFIG is not a cluster and task description: {exc}") from None
    if task_type not in ("chief", "worker") or len(chiefs) > 1 or not workers + chiefs:
        raise EdgecxrError("TF_CONFIG: expected workers (and at most one chief) and a chief or worker task")
    members = len(chiefs) + len(workers)
    position = index if task_type == "chief" else index + len(chiefs)
    if position >= members:
        raise EdgecxrError(f"TF_CONFIG: task {task_type} {index} is not in the cluster")
    return Role(mode, position, members, position == 0)


def start_strategy(role: Role):
    """The strategy for `role`, or None for `none`. Must run before TensorFlow does anything else:
    a multi-worker strategy configures the process's collective runtime at creation."""
    if role.mode == "none":
        return None
    import tensorflow as tf

    threads = os.environ.get(THREADS_ENV)
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(int(threads))
    if role.mode == "mirrored":
        return tf.distribute.MirroredStrategy()
    # AUTO: ring all-reduce over gRPC between CPUs, NCCL where every worker has GPUs.
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.AUTO)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def scaled(batch_size: int, learning_rate: float, replicas: int) -> dict:
    """--batch-size is each replica's batch; the global batch grows with the replicas, and the
    learning rate with it (the linear scaling rule), so each example moves the weights as much
    as in a single-process run."""
    return {"replicas": replicas, "per_replica_batch": batch_size, "global_batch": batch_size * replicas,
            "learning_rate": learning_rate * replicas, "learning_rate_scale": replicas}
