"""A tiny tokenizer and Llama model built in-repo, so tests need no download.

The tokenizer is a byte-level BPE (any UTF-8 text, Japanese included, round-trips) with 512 tokens
and ChatML special tokens and template -- the same conversation format as the quickstart's SmolLM2.
A small vocabulary is what keeps a step at a few milliseconds: the 49k-token vocabulary, not the
layers, is what makes even a 135M model slow on a CPU.
"""

from __future__ import annotations

from pathlib import Path

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
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


def build_tokenizer(vocab_size: int = 512):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
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
