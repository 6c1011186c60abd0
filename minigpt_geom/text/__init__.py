"""Text in and out of the model: the byte-level BPE tokenizer and its fast backend, reading a corpus, token files
for training, generation (sampling with the KV cache), and the one loader of a model with its tokenizer
(pretrained).

May import: the base, `io` and `model`. Never training, analyses or commands.
"""
