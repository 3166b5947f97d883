"""CorpusError, the error of the corpus readers: corpora.py (audio folders, the entry points)
and manifest.py (CSV manifests) both raise it, so it lives apart from both."""


class CorpusError(ValueError):
    """A corpus cannot be found or read (bad dataset name, missing folder, broken manifest)."""
