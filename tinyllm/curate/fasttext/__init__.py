"""fastText's model files and training, in NumPy: the parts behind curate/langid.py.

  format.py    the .bin / .ftz file layout (args, dictionary, matrices, product quantization)
  features.py  words, character n-grams and their hashed bucket ids, as fastText computes them
  train.py     supervised training (softmax, hierarchical softmax, one-vs-all) as fastText does it

Not the predictor: that is curate/langid.py (read it first), which uses all three.
"""
