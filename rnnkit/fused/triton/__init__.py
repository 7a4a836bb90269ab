"""The Triton kernels (CUDA; on the CPU only in Triton's interpreter, in tests): the pointwise
step kernels, the persistent whole-sequence kernels and what they share."""
