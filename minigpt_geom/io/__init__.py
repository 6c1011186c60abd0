"""Model files, below the model: finding them (the hub, local folders), reading them safely (safetensors and
config.json into tensors and a `GPT2Config`, never unpickling: checkpoint) and writing them whole (atomic,
umask-honouring): a model folder (model_files) as one checkpoint unit behind a link (checkpoint_folder), and
the tensor files a trace is saved in (trace_files).

May import: the package's base (`errors`, `config`) and the libraries that read and write files. Never the model
class or anything above it: a loader returns tensors and a config, and the model builds itself from them.
"""
