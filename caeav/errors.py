"""Errors a user can cause. The CLI turns each into one line on stderr and a non-zero exit code."""


class CaeavError(Exception):
    """Base class: a problem with the user's input, files or environment (not a bug in caeav)."""

    exit_code = 2


class WeightsError(CaeavError):
    """A weight file is missing, unreadable, or does not fit the model it should load into."""


class MediaError(CaeavError):
    """A video or audio file cannot be decoded into model inputs."""


class DataError(CaeavError):
    """A dataset root or annotation file is missing or malformed."""


class BundleError(CaeavError):
    """An export bundle is incomplete, corrupt, or built for another task/GPU/TensorRT version."""


class CaptionError(CaeavError):
    """The caption cache or caption endpoint cannot be used."""


class ExportError(CaeavError):
    """An export step cannot run here (missing TensorRT / Model Optimizer, unusable calibration data, failed build)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every command stops the same clean way (the CLI exits 143, not 130)."""
