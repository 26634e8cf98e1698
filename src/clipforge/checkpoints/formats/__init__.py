"""Foreign checkpoint formats: each module maps its keys/config to clipforge's and back.

Detection order matters: the first format whose ``matches`` accepts a state dict wins.
"""

from . import hf, native, open_clip, openai

STATE_FORMATS = (hf, native, openai)  # open_clip state dicts use the OpenAI layout

__all__ = ["STATE_FORMATS", "hf", "native", "open_clip", "openai"]
