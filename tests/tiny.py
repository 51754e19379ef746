"""Tiny tokenizers and models built in-repo, so tests need no download.

Each tokenizer is a byte-level BPE (any UTF-8 text, Japanese included, round-trips) trained here on a
few sentences, with a vocabulary of about 512 tokens: a small vocabulary is what keeps a step at a few
milliseconds (the 49k-token vocabulary, not the layers, is what makes even a 135M model slow on a CPU).

:func:`build_tiny_model` is a Llama with ChatML (the quickstart's SmolLM2 format). :func:`build_family`
builds the architectures the seed notebooks use, each with that family's special tokens, end-of-sequence
ids and chat template as its ``tokenizer_config.json`` / ``generation_config.json`` carry them:

* ``gpt2`` (DialoGPT-small): ``<|endoftext|>`` is BOS, EOS and UNK; no pad token, no chat template;
  dropout 0.1 in attention, residual and embedding, as GPT-2 ships.
* ``qwen2`` (TinySwallow-1.5B): ChatML with Qwen2's default system message; EOS ``<|im_end|>``,
  generation stops at ``<|im_end|>`` or ``<|endoftext|>``; tied embeddings.
* ``gemma`` (gemma-2-2b-jpn-it, a Gemma 2): the tokenizer adds ``<bos>`` and the template renders it
  too; no system role (the template raises); the reply ends with ``<end_of_turn>``, which is not the
  tokenizer's EOS; logit soft-capping and sliding-window attention.
* ``gemma3`` (gemma-3-270m and the Gemma 3 instruct models, text only): Gemma 3's own template, which
  folds a system message into the first user turn; ``<end_of_turn>`` closes a reply; sliding-window
  layers interleaved with global ones, no logit soft-capping, tied embeddings.
* ``llama``: the Llama of :func:`build_tiny_model`.

``hidden_size`` sets the width (32 by default; bitsandbytes' 4-bit CPU kernel needs input widths that are
multiples of 64, so the QLoRA tests build 64-wide models).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Qwen2-Instruct's tokenizer_config.json chat_template.
QWEN2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Gemma 2 instruction-tuned models' tokenizer_config.json chat_template (gemma-2-2b-jpn-it's).
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"
)

# Gemma 3 instruction-tuned models' tokenizer_config.json chat_template (text parts; gemma-3-1b-it's).
GEMMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- if (message['role'] == 'assistant') -%}{%- set role = 'model' -%}"
    "{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

CORPUS = [
    "What is programmatic advertising? It is the automated buying and selling of ad space.",
    "Real-time bidding lets advertisers bid for each impression as a page loads.",
    "A neural network learns weights from data by gradient descent.",
    "Python lists are mutable; tuples are not. Why might that matter for a dictionary key?",
    "Data science combines statistics, programming and domain knowledge.",
    "What do you think happens if the learning rate is too large?",
    "You are a helpful assistant. Answer briefly and correctly.",
    "プログラマティック広告とは、広告枠の売買を自動化する仕組みです。",
    "機械学習モデルはデータから規則を学びます。なぜそう言えるのでしょうか？",
    "データサイエンスでは統計とプログラミングを組み合わせます。",
    "良い質問ですね。あなたはどう考えますか？",
    "The quick brown fox jumps over the lazy dog. 0123456789",
]


def _train_bpe(special_tokens: list[str], vocab_size: int = 512, bos: str | None = None) -> Any:
    """A byte-level BPE trained on CORPUS; ``bos`` is prepended by the tokenizer itself when given."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    if bos is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    return tok


def build_tokenizer(vocab_size: int = 512):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=_train_bpe(SPECIAL_TOKENS, vocab_size),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        chat_template=CHATML,
    )


def build_tiny_model(path: Path, *, seed: int = 0, hidden_size: int = 32, layers: int = 2) -> Path:
    """Write a random tiny Llama + tokenizer to ``path`` (loadable with from_pretrained)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    model = LlamaForCausalLM(config)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@dataclass(frozen=True)
class Family:
    """What a test needs to know about a tiny model family."""

    name: str
    template: str | None  # the `template:` setting it needs (None: the tokenizer's own)
    end_of_turn: str  # the text that closes an assistant reply
    lora_target: str  # a module name LoRA can target in this architecture


FAMILIES: dict[str, Family] = {
    "llama": Family("llama", None, "<|im_end|>", "q_proj"),
    "gpt2": Family("gpt2", "chatml", "<|im_end|>", "c_attn"),  # DialoGPT has no template: a named one
    "qwen2": Family("qwen2", None, "<|im_end|>", "q_proj"),
    "gemma": Family("gemma", None, "<end_of_turn>", "q_proj"),
    "gemma3": Family("gemma3", None, "<end_of_turn>", "q_proj"),
}


def _gpt2(hidden_size: int) -> tuple[Any, Any]:
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_bpe(["<|endoftext|>"]),
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    eos = tokenizer.eos_token_id
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=512,
        n_embd=hidden_size,
        n_layer=2,
        n_head=4,
        bos_token_id=eos,
        eos_token_id=eos,
    )  # resid_pdrop, embd_pdrop and attn_pdrop stay at GPT-2's 0.1
    return tokenizer, GPT2LMHeadModel(config)


def _qwen2(hidden_size: int) -> tuple[Any, Any]:
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_bpe(SPECIAL_TOKENS),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        chat_template=QWEN2_TEMPLATE,
    )
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.eos_token_id,
    )
    model = Qwen2ForCausalLM(config)
    # Qwen2-Instruct's generation_config.json: stop at <|im_end|> or <|endoftext|>.
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, tokenizer.pad_token_id]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, model


def _gemma_tokenizer(template: str) -> Any:
    """Gemma's special tokens (ids 0..5), a tokenizer that adds ``<bos>``, and ``template``."""
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    return PreTrainedTokenizerFast(
        tokenizer_object=_train_bpe(specials, bos="<bos>"),
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=["<start_of_turn>", "<end_of_turn>"],
        chat_template=template,
    )


def _gemma_stops(tokenizer: Any) -> list[int]:
    """The instruct models' generation_config.json: stop at <eos> or <end_of_turn>."""
    return [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<end_of_turn>")]


def _gemma(hidden_size: int) -> tuple[Any, Any]:
    from transformers import Gemma2Config, Gemma2ForCausalLM

    tokenizer = _gemma_tokenizer(GEMMA_TEMPLATE)
    config = Gemma2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=hidden_size // 4,
        max_position_embeddings=512,
        sliding_window=64,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        attn_implementation="eager",  # Gemma 2's soft-capping needs eager attention
    )
    model = Gemma2ForCausalLM(config)
    model.generation_config.eos_token_id = _gemma_stops(tokenizer)  # gemma-2-*-it's
    return tokenizer, model


def _gemma3(hidden_size: int) -> tuple[Any, Any]:
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    tokenizer = _gemma_tokenizer(GEMMA3_TEMPLATE)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=hidden_size // 4,
        max_position_embeddings=512,
        sliding_window=64,  # as the Gemma 2 model's: longer than the tests' rows (packing needs that)
        layer_types=["sliding_attention", "full_attention"],
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    model = Gemma3ForCausalLM(config)
    model.generation_config.eos_token_id = _gemma_stops(tokenizer)  # gemma-3-*-it's
    return tokenizer, model


def build_family(name: str, path: Path, *, seed: int = 0, hidden_size: int = 32) -> Path:
    """Write a random tiny model of family ``name`` (see FAMILIES) and its tokenizer to ``path``."""
    import torch

    if name == "llama":
        return build_tiny_model(path, seed=seed, hidden_size=hidden_size)
    torch.manual_seed(seed)
    builders = {"gpt2": _gpt2, "qwen2": _qwen2, "gemma": _gemma, "gemma3": _gemma3}
    tokenizer, model = builders[name](hidden_size)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_adapter(model_dir: Path, path: Path, *, seed: int, rank: int = 4) -> Path:
    """A LoRA adapter for the tiny model with random (non-zero) A and B, as peft saves it: a stand-in for
    a trained one that changes the model's output."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    lora = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        target_modules=["q_proj", "v_proj", "up_proj", "down_proj"],
        init_lora_weights=False,  # peft's default makes B zero: an adapter that changes nothing
        task_type="CAUSAL_LM",
    )
    get_peft_model(base, lora).save_pretrained(path)
    return path
