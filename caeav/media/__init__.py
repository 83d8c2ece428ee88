"""Media decoding: a video file (or pre-extracted frames and waveforms) -> model inputs. Torch-free (numpy, PyAV,
Pillow), shared by the training loaders, calibration and the runtime so they all see identical inputs.

    from caeav.media import decode_clip, probe, sampling_for_task
    clip = decode_clip("v.mp4", segments=10, size=192, sampling=sampling_for_task("ave"))
    clip.frames  # float32 [10, 3, 192, 192], ImageNet-normalised
    clip.audio   # float32 [10, 32000], mono 32 kHz
"""

from .container import probe
from .decode import decode_clip, decode_raw, to_model_inputs
from .preprocess import load_image, normalize_frames, resize_rgb, segment_waveform
from .sampling import SAMPLINGS, TASK_SAMPLING, TASK_SEGMENTS, frame_instants, linspace_indices, sampling_for_task
from .types import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SAMPLE_RATE,
    AudioInfo,
    ClipMedia,
    MediaInfo,
    MediaWarning,
    RawClip,
    VideoInfo,
)

__all__ = [
    "AudioInfo", "ClipMedia", "IMAGENET_MEAN", "IMAGENET_STD", "MediaInfo", "MediaWarning", "RawClip", "SAMPLE_RATE",
    "SAMPLINGS", "TASK_SAMPLING", "TASK_SEGMENTS", "VideoInfo", "decode_clip", "decode_raw", "frame_instants",
    "linspace_indices", "load_image", "normalize_frames", "probe", "resize_rgb", "sampling_for_task",
    "segment_waveform", "to_model_inputs",
]
