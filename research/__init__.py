"""Studies: scripts that measured what the product is built on, kept to be rerun, not shipped.

Not part of the edgecxr wheel (pyproject's `packages` leaves it out). Run a study from the repo
root, e.g. `python -m research.shift_stress runs/demo`; results go to research/results/, the
tests to research/tests/ (`make research-test`, not part of `make test`).
"""

import os

# Every study loads TensorFlow; its C++ start-up logging would bury the studies' own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
