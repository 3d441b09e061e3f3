"""snnsec: backdoor and adversarial security benchmarks for spiking neural networks on event data."""
__version__ = "0.1.0"
