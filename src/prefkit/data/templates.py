"""Named chat templates, for tokenizers that carry none (or when the user asks for one by name).

By default prefkit renders conversations with the tokenizer's own ``chat_template`` -- the one the
model was trained with. ``template: NAME`` in the config picks one of these instead. Every template
here is a Jinja string used through ``tokenizer.apply_chat_template(chat_template=...)``, so named and
own templates go down exactly one code path.

LLaMA-Factory users write its template names (``qwen3_nothink``, ``qwen2_vl``, ...); the ones that are
the same conversation format under another name are aliases below, so their YAML loads unchanged.
"""

from __future__ import annotations

import difflib

from prefkit.data.examples import ExampleError
from prefkit.errors import PrefkitError

# ChatML: <|im_start|>role\ncontent<|im_end|>\n  (SmolLM2, Qwen, TinySwallow, ...)
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Qwen2/2.5: ChatML with a default system message when the conversation has none.
QWEN = (
    "{% if messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}" + CHATML
)

LLAMA3 = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{{ message['content'] + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)

# Gemma has no system role: the system text leads the first user turn. The assistant is 'model'.
GEMMA = (
    "{{ bos_token }}"
    "{% set system = messages[0]['content'] + '\\n\\n' if messages[0]['role'] == 'system' else '' %}"
    "{% for message in messages if message['role'] != 'system' %}"
    "{% set role = 'model' if message['role'] == 'assistant' else 'user' %}"
    "{% set content = system + message['content'] if loop.first else message['content'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + content + '<end_of_turn>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)

# Mistral [INST]: no system role either; the reply follows [/INST] directly and ends with EOS.
MISTRAL = (
    "{{ bos_token }}"
    "{% set system = messages[0]['content'] + '\\n\\n' if messages[0]['role'] == 'system' else '' %}"
    "{% for message in messages if message['role'] != 'system' %}"
    "{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + (system + message['content'] if loop.first else message['content']) + ' [/INST]' }}"
    "{% else %}{{ ' ' + message['content'] + eos_token }}{% endif %}"
    "{% endfor %}"
)

TEMPLATES: dict[str, str] = {
    "chatml": CHATML,
    "qwen": QWEN,
    "llama3": LLAMA3,
    "gemma": GEMMA,
    "mistral": MISTRAL,
}

# LLaMA-Factory names that are one of the formats above.
ALIASES: dict[str, str] = {
    "qwen2": "qwen",
    "qwen2_5": "qwen",
    "qwen2_vl": "qwen",
    "qwen3": "chatml",
    "qwen3_nothink": "chatml",
    "smollm": "chatml",
    "smollm2": "chatml",
    "llama3_1": "llama3",
    "llama3_2": "llama3",
    "gemma2": "gemma",
    "gemma3": "gemma",
    "mistral_small": "mistral",
}

# Words meaning "the tokenizer's own template".
OWN = ("default", "auto", "own", "tokenizer")


class TemplateError(PrefkitError):
    """A chat template that is unknown or cannot be used."""


class ConversationRejected(TemplateError, ExampleError):
    """The chat template itself refused a conversation with its ``raise_exception`` (Gemma's "System role
    not supported", Mistral's and Gemma's user/assistant alternation). A problem of that one example, so
    `prefkit data check` and `prefkit train` report it as ``file:line`` like any other."""

    def __init__(self, reason: str) -> None:
        hint = ""
        if "system" in reason.lower():
            hint = (
                " -- remove the system message, or set `template:` to one that puts it in the first user "
                "turn (prefkit's `gemma` and `mistral` do)"
            )
        ExampleError.__init__(
            self, f"the model's chat template refuses this conversation: {reason}{hint}", "template"
        )


def resolve_template(name: str | None) -> str | None:
    """The Jinja template for ``name``; None means the tokenizer's own."""
    if name is None or name.lower() in OWN:
        return None
    key = ALIASES.get(name.lower(), name.lower())
    if key in TEMPLATES:
        return TEMPLATES[key]
    known = sorted([*TEMPLATES, *ALIASES])
    close = difflib.get_close_matches(name.lower(), known, n=1)
    hint = f" -- did you mean '{close[0]}'?" if close else ""
    raise TemplateError(
        f"template: unknown template '{name}'{hint} Known: {', '.join(known)}; "
        "or leave `template` unset to use the tokenizer's own chat template."
    )
