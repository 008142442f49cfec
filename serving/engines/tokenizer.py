"""The model's tokenizer and end-of-sequence ids, loaded the same way for every engine."""

from __future__ import annotations

from typing import Any

from serving.engines.base import EngineError
from serving.engines.settings import EngineSettings


def load_tokenizer(settings: EngineSettings) -> Any:
    """The model's Hugging Face tokenizer, with the settings' chat template in place of its own."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(settings.model, trust_remote_code=settings.trust_remote_code)
    try:
        template = settings.chat_template_text()
    except (OSError, ValueError) as err:
        raise EngineError(str(err)) from None
    if template is not None:
        tokenizer.chat_template = template
    return tokenizer


def eos_token_ids(model: str, tokenizer: Any) -> list[int]:
    """Every id that ends a reply: the generation config's (an int or a list) and the tokenizer's own."""
    from transformers import GenerationConfig

    ids: set[int] = set()
    try:
        eos = GenerationConfig.from_pretrained(model).eos_token_id
    except OSError:  # no generation_config.json: the model config's
        from transformers import AutoConfig

        try:
            eos = getattr(AutoConfig.from_pretrained(model).get_text_config(), "eos_token_id", None)
        except (OSError, ValueError):
            eos = None
    if isinstance(eos, int):
        ids.add(eos)
    elif eos:
        ids.update(int(i) for i in eos)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return sorted(ids)
