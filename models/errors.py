"""Errors raised by the models layer. Each carries a stable ``code`` for APIs."""

from __future__ import annotations


class FacegraphError(Exception):
    """Base class: ``code`` is a stable machine-readable identifier."""

    code = "facegraph_error"

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ImageError(FacegraphError):
    """The bytes are not a usable image (client mistake)."""

    code = "invalid_image"


class ImageTooLargeError(ImageError):
    """The image header announces more pixels than allowed."""

    code = "image_too_large"


class ModelLoadError(FacegraphError):
    """A model file is missing, unreadable, or does not fit its family."""

    code = "model_load_error"


class UnknownFamilyError(ModelLoadError):
    code = "unknown_family"


class SignatureError(ModelLoadError):
    """The ONNX inputs/outputs do not match what the family expects."""

    code = "signature_mismatch"


class MisfitError(ModelLoadError):
    """Two models that cannot work together (e.g. an alignment on points the detector does not give)."""

    code = "model_misfit"


class ProviderUnavailableError(ModelLoadError):
    """An explicitly requested execution provider could not be used."""

    code = "provider_unavailable"


class VideoError(FacegraphError):
    """The bytes are not a usable video (client mistake).

    Codes: ``invalid_video`` (not a video, unreadable, or a container other than MP4/QuickTime or
    Matroska/WebM), ``empty_video`` (no bytes, or no frame), ``no_video_stream`` (audio only),
    ``unsupported_video_codec``, ``truncated_video`` (the stream ends before its declared end).
    """

    code = "invalid_video"


class VideoTooLargeError(VideoError):
    """Over a limit: ``video_too_large`` (bytes), ``frame_too_large`` (a frame's declared pixels),
    ``video_too_long`` (duration; a longer clip belongs to ``facegraph batch``)."""

    code = "video_too_large"
