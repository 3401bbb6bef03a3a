"""The TensorFlow-free edge runtime: everything a Raspberry Pi needs to run an edgecxr model.

Nothing in this package may import TensorFlow, Keras, or edgecxr.train / edgecxr.convert.
"""
