"""Quantized inference: weights stored as int8 or packed int4 blocks, each with an fp16 scale.

  formats.py   the definition: q8_0 and q4_0 blocks, quantize / dequantize, matmul_q (NumPy)
  layers.py    QuantLinear and QuantEmbedding (inference only) and the recipes that put them
               in a GPT in place of Linear and Embedding (q8_0, q4_0, q4_mixed)
  compare.py   perplexity, KL divergence and top-token agreement of a model against a reference

Not here: the checkpoint file (checkpoint.py writes and reads the quantized tensors) or the
C kernels (csrc/quant.c, bound in backends/c_kernels.py). Read formats.py first.
"""
