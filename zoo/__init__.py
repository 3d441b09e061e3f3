"""Model zoo: spiking and ANN models on event frames. Importing this package registers every model."""
from snnsec.zoo.base import MODELS, InputSpec, ModelEntry, create_model

# One line per model file: importing it registers the model.
from snnsec.zoo import sew_resnet, spike_driven_transformer, spikformer, spikingformer, spiking_cnn  # noqa: E402,F401

__all__ = ["MODELS", "InputSpec", "ModelEntry", "create_model"]
