"""Offline analyses of olmo-injection checkpoints and runs (``olmo-inject analyze ...``).

One module per analysis: ``checkpoint_loading`` and ``hf_conversion`` (load an OLMo checkpoint and turn it into
a Hugging Face ``OlmoForCausalLM``), ``das`` (distributed alignment search with pyvene), ``feature_presence``
(PCA probe), ``fourier_modes``, ``layer_localisation`` (MLP ablations, task neurons), ``run_logs`` (a run's
config and metrics record from its save folder), ``run_table`` (model size and schedule from a run's config),
``figures`` (the paper's figures from a set of runs) and ``learning_curves`` (one run's learning curves and
table). Every representational number comes with its null or baseline. ``cli`` registers the sub-commands.
"""
