"""numpy float64 transcriptions of TensorFlow 1.15's ``tf.contrib.rnn`` cells, wrappers and
runners, written from TF's public source (each module names the file it follows). They are
the specification the rnnkit ports are tested against, forward and (through
:func:`numeric.numeric_gradients`) gradients; TensorFlow with contrib does not install on
Python 3.11."""
