"""Caption prompts π_v, π_a of P Eq. 14 and the chat-completions requests that carry them (P App. A).

The paper's templates are in an unreleased supplement; it says they are two structurally symmetric Markdown texts
that differ only in modality-specific wording, used with the same MLLM (Qwen2.5-Omni) and the same decoding settings.
Ours are one Markdown template filled with a per-modality word table (`MODALITY_WORDS`), so that property holds by
construction. The text asks for a short caption (at most 40 words) because CLIP's text tower reads 77 tokens.

Requests follow the OpenAI chat-completions format that vLLM serves for Qwen2.5-Omni: one user message whose content
is the media parts followed by the text prompt —

* visual: T ``{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,..."}}`` parts, one per sampled
  frame, in temporal order (P App. A: each frame base64-encoded, inserted in temporal order);
* audio: one ``{"type": "input_audio", "input_audio": {"data": <base64 WAV>, "format": "wav"}}`` part holding the whole
  clip's audio (mono 16-bit PCM at 32 kHz, the model's audio rate).

Both modalities use the same `Decoding` (temperature, top_p, max_tokens, seed). The default is greedy decoding
(temperature 0) for reproducibility; the paper names a temperature τ but not its value.
Changing a template or the word table must change `PROMPT_VERSION` (the cache keys captions by it).
"""

from __future__ import annotations

import base64
import hashlib
import io
import wave
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

from caeav.errors import CaptionError

PROMPT_VERSION = "cae-av-v1"
JPEG_QUALITY = 90
AUDIO_RATE = 32000

PROMPT_TEMPLATE = """# Task
Describe the {modality} content of a {seconds}-second video clip, given as {input}.

# Rules
- Describe only what can be {perceived}: the {sources} that are {perceptible}, and how they change over time.
- Do not describe what might only be {other}, and do not guess.
- If nothing is {perceptible}, say so in a few words.
- Write plain English: one or two sentences, at most 40 words, no lists, no headings, no preamble.

# Output
The caption only."""

MODALITY_WORDS = {
    "visual": {"modality": "visual", "input": "{frames} frames in temporal order", "perceived": "seen",
               "sources": "objects, people, animals, actions and scenes", "perceptible": "visible", "other": "heard"},
    "audio": {"modality": "audio", "input": "its audio track", "perceived": "heard",
              "sources": "sound sources, voices, music and acoustic events", "perceptible": "audible", "other": "seen"},
}


@dataclass(frozen=True)
class Decoding:
    """Decoding settings shared by both modalities (P §III-C: same decoding hyper-parameters)."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 96
    seed: Optional[int] = 0

    def params(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def prompt_text(modality: str, seconds: int, frames: int = 0) -> str:
    """π_v / π_a of Eq. 14: the template filled with `modality`'s words."""
    if modality not in MODALITY_WORDS:
        raise CaptionError(f"unknown modality {modality!r}; choose visual or audio")
    words = dict(MODALITY_WORDS[modality])
    words["input"] = words["input"].format(frames=frames)
    return PROMPT_TEMPLATE.format(seconds=seconds, **words)


def prompt_sha256() -> str:
    """Hash of the template and word table, stored with each caption next to `PROMPT_VERSION`."""
    text = PROMPT_TEMPLATE + repr(sorted((m, sorted(w.items())) for m, w in MODALITY_WORDS.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def jpeg_data_url(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> str:
    """uint8 [H, W, 3] RGB → ``data:image/jpeg;base64,...``."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB").save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def wav_base64(audio: np.ndarray, sample_rate: int = AUDIO_RATE) -> str:
    """Float waveform in [-1, 1] (any shape, read in order) → base64 of a mono 16-bit PCM WAV file."""
    pcm = np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0)
    pcm = np.round(pcm * 32767.0).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _body(model: str, parts: list, text: str, decoding: Decoding, system: Optional[str]) -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": parts + [{"type": "text", "text": text}]})
    return {"model": model, "messages": messages, **decoding.params()}


def visual_request(frames: np.ndarray, model: str, decoding: Decoding = Decoding(), seconds: Optional[int] = None,
                   system: Optional[str] = None) -> dict:
    """Chat-completions body for the visual caption: T JPEG `image_url` parts in temporal order + π_v."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise CaptionError(f"visual caption needs uint8 frames [T, H, W, 3], got shape {frames.shape}")
    parts = [{"type": "image_url", "image_url": {"url": jpeg_data_url(f)}} for f in frames]
    text = prompt_text("visual", seconds if seconds is not None else len(frames), frames=len(frames))
    return _body(model, parts, text, decoding, system)


def audio_request(audio: np.ndarray, model: str, decoding: Decoding = Decoding(), seconds: Optional[int] = None,
                  sample_rate: int = AUDIO_RATE, system: Optional[str] = None) -> dict:
    """Chat-completions body for the audio caption: one `input_audio` WAV part (the whole clip) + π_a."""
    audio = np.asarray(audio)
    if audio.size == 0:
        raise CaptionError("audio caption needs a non-empty waveform")
    if seconds is None:
        seconds = int(round(audio.size / sample_rate))
    part = {"type": "input_audio", "input_audio": {"data": wav_base64(audio, sample_rate), "format": "wav"}}
    return _body(model, [part], prompt_text("audio", seconds), decoding, system)


def caption_from_response(body: dict) -> str:
    """The caption text of a chat-completions response (whitespace collapsed); CaptionError if there is none."""
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise CaptionError(f"the endpoint's answer has no choices[0].message.content: {str(body)[:200]}") from None
    if isinstance(content, list):  # some servers return content parts
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        raise CaptionError("the endpoint's answer content is not text")
    return " ".join(content.split())
