"""Event datasets. Importing this package registers every dataset."""
from snnsec.datasets.base import DATASETS, EVENT_DTYPE, DatasetInfo, DatasetSpec, EventDataset

__all__ = ["DATASETS", "EVENT_DTYPE", "DatasetInfo", "DatasetSpec", "EventDataset"]

# One line per dataset file: importing it registers the dataset.
from snnsec.datasets import digits_dvs  # noqa: E402,F401
from snnsec.datasets import spoken_digits  # noqa: E402,F401
from snnsec.datasets import tonic_sets  # noqa: E402,F401
