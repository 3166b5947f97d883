"""The errors a user can cause (bad flags, missing data, ...): the CLI prints them as one line."""
from src.data_processing.audio import AudioError
from src.data_processing.corpora import CorpusError
from src.data_processing.hubert import HubertUnavailable
from src.data_processing.store import FeatureSetNotFound
from src.training.data import DataError
from src.training.experiment import ExperimentError, NonFiniteLoss



class NothingPredicted(ExperimentError):
    """--mode predict could use none of its input files (exit status 1, not 2)."""


USER_ERRORS = (AudioError, CorpusError, HubertUnavailable, FeatureSetNotFound, DataError,
               ExperimentError, NonFiniteLoss)
