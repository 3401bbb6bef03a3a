"""The TensorFlow-free edge runtime: everything a Raspberry Pi needs to run an edgecxr model.

Nothing in this package may import TensorFlow, Keras, or the train/ and convert/ packages
(tests/test_runtime_tf_free.py runs it with those imports made to fail).
"""
