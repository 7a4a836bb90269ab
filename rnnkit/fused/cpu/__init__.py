"""The CPU kernels: the compiled step loops (``rnn_cpu.cpp``, built by ``native.py``)."""
