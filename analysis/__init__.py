"""Offline analyses of olmo-injection checkpoints and runs (``olmo-inject analyze ...``).

One module per analysis: ``checkpoint_loading`` and ``hf_conversion`` (load an OLMo checkpoint and turn it into
a Hugging Face ``OlmoForCausalLM``), ``das`` (distributed alignment search with pyvene), ``feature_presence``
(PCA probe), ``fourier_modes``, ``layer_localisation`` (MLP ablations, task neurons), ``wandb_logs`` and
``figures`` (the paper's figures from a set of runs). ``cli`` registers the sub-commands.
"""
