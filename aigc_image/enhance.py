"""``EnhancePrompt``: rewrite a prompt into a richer one before generating.

Two enhancers. The built-in one is deterministic and documented (docs/models.md): it tidies
the prompt and adds a fixed description of quality and composition in the prompt's own
language, phrased for the model's ``prompt_style`` (``natural`` sentences for DiT models,
``tags`` for Stable Diffusion). When ``enhance.llm_url`` is set, an OpenAI-compatible chat
endpoint rewrites the prompt instead; if it fails or answers nothing usable, the built-in
rewrite is used and the reason logged, so a create never fails because an LLM is down.
Either way the prompt actually used is reviewed like the original and recorded with the task.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.request
from dataclasses import dataclass
from typing import get_args

from aigc_image.catalog import PromptStyle

log = logging.getLogger(__name__)

STYLES: tuple[PromptStyle, ...] = get_args(PromptStyle)
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_NATURAL_ZH = "画面主体清晰，细节丰富，光影自然，构图均衡，高清画质。"
_NATURAL_EN = "A clear main subject, rich detail, natural lighting, balanced composition, high resolution."
_TAGS = "masterpiece, best quality, highly detailed, sharp focus, natural lighting"
MAX_ENHANCED_CHARS = 2000
SYSTEM_PROMPT = (
    "You rewrite prompts for a text-to-image model. Keep the user's subject, meaning and language; "
    "add concrete visual detail (composition, lighting, style, quality). Answer with the rewritten "
    "prompt only, at most 150 words, no quotes or explanations."
)


def rewrite(prompt: str, style: str) -> str:
    """The built-in enhancement: the same prompt and style always give the same text."""
    text = " ".join(prompt.split()).rstrip(" ,.;。，；")
    if style == "tags":
        return f"{text}, {_TAGS}" if text else _TAGS
    if _CJK.search(text):
        return f"{text}。{_NATURAL_ZH}" if text else _NATURAL_ZH
    return f"{text}. {_NATURAL_EN}" if text else _NATURAL_EN


@dataclass(frozen=True)
class LlmEnhancer:
    """An OpenAI-compatible ``POST {url}/chat/completions``."""

    url: str
    model: str
    api_key: str = ""
    timeout: float = 10.0

    def rewrite(self, prompt: str, style: str) -> str:
        body = {
            "model": self.model,
            "temperature": 0,
            "messages": [
                {
                    "role": "system",
                    "content": SYSTEM_PROMPT + (" Use comma-separated tags." if style == "tags" else ""),
                },
                {"role": "user", "content": prompt},
            ],
        }
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(
            self.url.rstrip("/") + "/chat/completions", data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as reply:
            answer = json.loads(reply.read(1_000_000))
        text = str(answer["choices"][0]["message"]["content"]).strip().strip('"“”')
        if not text or len(text) > MAX_ENHANCED_CHARS:
            raise ValueError(f"the LLM answered {len(text)} characters")
        return text


@dataclass(frozen=True)
class PromptEnhancer:
    llm: LlmEnhancer | None = None

    def enhance(self, prompt: str, style: str) -> tuple[str, str]:
        """(the enhanced prompt, which enhancer made it: ``llm`` or ``built-in``). Blocking."""
        if self.llm is not None:
            try:
                return self.llm.rewrite(prompt, style), "llm"
            except Exception as exc:  # any failure of the optional LLM falls back to the built-in rewrite
                log.warning(
                    "prompt enhancement by LLM failed (%s: %s); using the built-in rewrite", type(exc).__name__, exc
                )
        return rewrite(prompt, style), "built-in"
