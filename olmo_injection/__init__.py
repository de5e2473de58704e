"""olmo-injection: rare synthetic tasks injected into OLMo pre-training, and the measurements around them."""

__version__ = "0.1.0"
