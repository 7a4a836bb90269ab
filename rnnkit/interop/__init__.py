"""Weights from elsewhere: TensorFlow checkpoints read without TensorFlow (``tf_checkpoint``)."""
