"""What one caption request of a clip is: the media sent, the request body, its headers and the metadata stored with
the answer. One definition for `caeav captions generate` (a dataset's clips) and `caeav infer --caption-endpoint`
(a video the cache has never seen), so both ask the endpoint exactly the same thing for the same clip.

* media (`caption_media`): the clip as the dataset loader decodes it (`caeav.media.decode_raw` from second 0: the
  task's T frames by its sampling rule, resized to `frame_size` px squares, and T seconds of mono 32 kHz audio);
* body (`caption_request`): `caeav.captions.prompts.visual_request` / `audio_request` with T as the clip's seconds;
* headers (`caption_headers`): ``X-Caeav-Clip`` (the clip id, URL-quoted) and ``X-Caeav-Modality``;
* metadata (`caption_params`): decoding settings, prompt hash, frame size, frames and attempts, as the cache keeps them.

Torch-free.
"""

from __future__ import annotations

import urllib.parse
from typing import Optional

from .prompts import Decoding, audio_request, prompt_sha256, visual_request
from .sources import DEFAULT_FRAME_SIZE

MODALITY_ORDER = ("visual", "audio")


def caption_media(video, segments: int, sampling: str, frame_size: int = DEFAULT_FRAME_SIZE, strict: bool = False):
    """The `caeav.media.RawClip` a clip's caption requests carry (module docstring); MediaError for a bad file."""
    from caeav.media.decode import decode_raw

    return decode_raw(video, segments, frame_size, sampling=sampling, strict=strict)


def caption_request(modality: str, raw, model: str, segments: int, decoding: Decoding = Decoding(),
                    system: Optional[str] = None) -> dict:
    """The chat-completions body asking for `modality`'s caption of the clip `raw` (T = `segments` seconds)."""
    if modality == "visual":
        return visual_request(raw.frames, model, decoding, segments, system)
    return audio_request(raw.audio, model, decoding, segments, system=system)


def caption_headers(clip_id: str, modality: str) -> dict:
    """The HTTP headers of one caption request (they name the clip and modality in the server's logs)."""
    return {"X-Caeav-Clip": urllib.parse.quote(clip_id, safe=""), "X-Caeav-Modality": modality}


def caption_params(decoding: Decoding, frame_size: Optional[int], frames: int, attempts: int) -> dict:
    """The `params` stored with a generated caption in the cache."""
    return {"decoding": decoding.params(), "prompt_sha256": prompt_sha256(), "frame_size": frame_size,
            "frames": frames, "attempts": attempts}
