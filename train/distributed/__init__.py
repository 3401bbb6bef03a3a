"""Training under tf.distribute (`edgecxr train --distribute mirrored|multi-worker`): who this
process is and its strategy (strategy.py), the resumable custom loop (loop.py), a run's part on each
worker (run.py), and the ImageNet backbones' two phases on sharded activations (transfer.py)."""
