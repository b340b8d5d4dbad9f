"""Errors a user can cause. The CLI prints them on one line and exits with code 2."""


class N2CError(Exception):
    """Base class: the message names the problem and the fix."""


class ModelLoadError(N2CError):
    """The model file is missing, unreadable or of a format n2c does not accept."""


class UnsupportedLayerError(N2CError):
    """The network contains an operation n2c cannot convert."""


class CalibrationError(N2CError):
    """Thresholds are missing and no calibration data was given."""


class NIRFormatError(N2CError):
    """A NIR file is unreadable, inconsistent or uses unknown nodes."""


class DatasetError(N2CError):
    """A data set is unknown or unavailable."""


class QuantizationError(N2CError):
    """A layer does not fit Loihi's integer formats."""


class MappingError(N2CError):
    """A network does not fit the cores of a chip (or cannot be mapped onto them)."""

    reason: str | None = None  # for one layer's neuron that cannot fit a core: what it needs, and the fix
