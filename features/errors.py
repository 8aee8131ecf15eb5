class FeatureError(Exception):
    """Base error of features: inputs cannot produce a complete, valid observation."""


class MissingDataError(FeatureError):
    """A symbol, column or bar needed for the features is absent (or history is too short)."""


class SLModelError(FeatureError):
    """The SL model cannot be fitted or applied to the given features."""
