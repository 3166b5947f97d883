"""Names of the model inputs shared by the models and the data pipeline (no TensorFlow import)."""

# Key of the (B,) int32 true frame count of each utterance, beside one (B, T, D) array per stream.
LENGTH_INPUT = "length"
