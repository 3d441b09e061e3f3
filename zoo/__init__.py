"""Model zoo: spiking and ANN models on event frames. Importing this package registers every model."""
from snnsec.zoo.base import MODELS, InputSpec, ModelEntry, create_model

# One line per model file: importing it registers the model.
from snnsec.zoo import (  # noqa: E402,F401
    delay_snn, razor_snn, resnet18, sew_resnet, spike_driven_transformer, spikformer, spiking_cnn, spikingformer,
    vit, xformer,
)

__all__ = ["MODELS", "InputSpec", "ModelEntry", "create_model"]
