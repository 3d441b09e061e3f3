"""Event datasets. Importing this package registers every dataset."""
from snnsec.datasets.base import DATASETS, EVENT_DTYPE, DatasetInfo, DatasetSpec, EventDataset

__all__ = ["DATASETS", "EVENT_DTYPE", "DatasetInfo", "DatasetSpec", "EventDataset"]
