"""The preference losses: TRL 1.16 as the numeric oracle, and worked examples where TRL has none.

The oracle tests run TRL's own trainers (DPOTrainer; CPOTrainer and ORPOTrainer from
trl.experimental) on the tiny model in float64, take the batch TRL built, and compute our loss on
the very same sequences with our log-prob code: loss and rewards must agree to 1e-6.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings

import pytest
import torch
from datasets import Dataset

from prefkit.data.tokenize import IGNORE_INDEX
from prefkit.model.logps import sequence_logps
from prefkit.train.losses import LOSSES, LossParams, PolicyLogps, log1mexp, preference_loss

TOL = 1e-6


@pytest.fixture(scope="module")
def models(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float64)
    policy = copy.deepcopy(reference)
    torch.manual_seed(0)
    with torch.no_grad():  # move the policy away from the reference so rewards are not all zero
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return tokenizer, policy, reference


def pairs() -> Dataset:
    rows = []
    for i in range(4):
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"Question {i}: what is RTB?"}],
                "chosen": [
                    {"role": "assistant", "content": f"Real-time bidding, an auction per impression {i}."}
                ],
                "rejected": [{"role": "assistant", "content": "No idea." * (i + 1)}],
            }
        )
    return Dataset.from_list(rows)


def ours(name: str, policy, reference, batch, params: LossParams):
    with torch.no_grad():
        logps, counts, logit_sums = sequence_logps(policy, batch)
        ref = sequence_logps(reference, batch)[0] if LOSSES[name].needs_reference else None
    h = logps.shape[0] // 2
    p = PolicyLogps(
        logps[:h],
        logps[h:],
        counts[:h],
        counts[h:],
        ref[:h] if ref is not None else None,
        ref[h:] if ref is not None else None,
    )
    out = preference_loss(name, p, params)
    return out, p, logit_sums, counts


@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge", "ipo"])
def test_dpo_family_matches_trl(models, tmp_path, loss_type):
    from trl import DPOConfig, DPOTrainer

    tokenizer, policy, reference = models
    beta = 0.3
    args = DPOConfig(
        output_dir=str(tmp_path),
        loss_type=[loss_type],
        beta=beta,
        use_cpu=True,
        per_device_train_batch_size=4,
        report_to="none",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trl = DPOTrainer(
            model=policy, ref_model=reference, args=args, train_dataset=pairs(), processing_class=tokenizer
        )
    batch = next(iter(trl.get_train_dataloader()))
    trl.model.train()  # TRL files metrics under "train" only in training mode (the tiny model has no dropout)
    with torch.no_grad():
        trl_loss = trl.compute_loss(trl.model, batch)
    trl_metrics = {k: v[-1] for k, v in trl._metrics["train"].items()}

    p, inputs, sums, counts = _trl_logps(trl, batch)
    h = counts.shape[0] // 2
    out = preference_loss(loss_type, p, LossParams(beta=beta))

    assert out.loss.item() == pytest.approx(trl_loss.item(), abs=TOL)
    assert out.chosen_rewards.mean().item() == pytest.approx(trl_metrics["rewards/chosen"], abs=TOL)
    assert out.rejected_rewards.mean().item() == pytest.approx(trl_metrics["rewards/rejected"], abs=TOL)
    margins = (out.chosen_rewards - out.rejected_rewards).mean().item()
    assert margins == pytest.approx(trl_metrics["rewards/margins"], abs=TOL)
    accuracy = (out.chosen_rewards > out.rejected_rewards).double().mean().item()
    assert accuracy == trl_metrics["rewards/accuracies"]

    # And our own log-prob code reads the same numbers off the model (to float32 precision).
    with torch.no_grad():
        our_sums, our_counts, logit_sums = sequence_logps(policy, inputs)
    assert torch.allclose(our_sums, sums, atol=1e-4)
    assert torch.equal(our_counts.double(), counts)
    assert (logit_sums[:h].sum() / counts[:h].sum()).item() == pytest.approx(
        trl_metrics["logits/chosen"], abs=1e-5
    )


def _trl_logps(trl, batch) -> tuple[PolicyLogps, dict, torch.Tensor, torch.Tensor]:
    """The same log-probs for both sides: TRL's own per-sequence log-prob sums of a DPOTrainer batch. Its
    fused LM head computes them in float32 whatever the model's dtype, so we take those float32 sums as
    they are and run our loss on them in float64."""
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, IGNORE_INDEX)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "labels": labels}
    with torch.no_grad():
        sums = trl.model(**inputs, fused_lm_head=True).log_probs.sum(-1).double()
        ref_sums = trl.ref_model(**inputs, fused_lm_head=True).log_probs.sum(-1).double()
    counts = (labels[:, 1:] != IGNORE_INDEX).sum(-1).double()
    h = counts.shape[0] // 2
    return (
        PolicyLogps(sums[:h], sums[h:], counts[:h], counts[h:], ref_sums[:h], ref_sums[h:]),
        inputs,
        sums,
        counts,
    )


def test_conservative_dpo_matches_trl(models, tmp_path):
    """cDPO (``dpo_label_smoothing``): -(1-e) log s(beta h) - e log s(-beta h). TRL 1.16's ``sigmoid`` no
    longer takes label smoothing; its ``aot`` loss applies exactly this formula to the sorted differences
    of policy and reference log-ratios, which for a batch of one pair is h itself. So TRL's aot on
    one-pair batches is TRL computing cDPO."""
    from trl import DPOConfig, DPOTrainer

    tokenizer, policy, reference = models
    beta, smoothing = 0.3, 0.2
    args = DPOConfig(
        output_dir=str(tmp_path),
        loss_type=["aot"],
        label_smoothing=smoothing,
        beta=beta,
        use_cpu=True,
        per_device_train_batch_size=1,
        report_to="none",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trl = DPOTrainer(
            model=policy, ref_model=reference, args=args, train_dataset=pairs(), processing_class=tokenizer
        )
    trl.model.train()
    compared = 0
    for batch in trl.get_train_dataloader():
        with torch.no_grad():
            trl_loss = trl.compute_loss(trl.model, batch)
        p, _, _, _ = _trl_logps(trl, batch)
        out = preference_loss("sigmoid", p, LossParams(beta=beta, label_smoothing=smoothing))
        plain = preference_loss("sigmoid", p, LossParams(beta=beta))
        assert out.loss.item() == pytest.approx(trl_loss.item(), abs=TOL)
        assert abs(out.loss.item() - plain.loss.item()) > 1e-3  # the smoothing did change the loss
        compared += 1
    assert compared == 4


def _stack_cpo_batch(batch) -> dict[str, torch.Tensor]:
    """TRL's CPO/ORPO batches keep chosen and rejected apart; ours stacks them, right-padded."""
    length = max(batch["chosen_input_ids"].shape[1], batch["rejected_input_ids"].shape[1])

    def pad(t: torch.Tensor, value: int) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, length - t.shape[1]), value=value)

    return {
        "input_ids": torch.cat([pad(batch["chosen_input_ids"], 0), pad(batch["rejected_input_ids"], 0)]),
        "attention_mask": torch.cat(
            [pad(batch["chosen_attention_mask"], 0), pad(batch["rejected_attention_mask"], 0)]
        ),
        "labels": torch.cat(
            [pad(batch["chosen_labels"], IGNORE_INDEX), pad(batch["rejected_labels"], IGNORE_INDEX)]
        ),
    }


@pytest.mark.parametrize("method", ["simpo", "orpo"])
def test_reference_free_methods_match_trl(models, tmp_path, method):
    from trl.experimental.cpo import CPOConfig, CPOTrainer
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    tokenizer, policy, _ = models
    if method == "simpo":  # pure SimPO is TRL's CPO with cpo_alpha=0
        params = LossParams(beta=2.0, gamma=0.5)
        args = CPOConfig(
            output_dir=str(tmp_path),
            loss_type="simpo",
            cpo_alpha=0.0,
            beta=2.0,
            simpo_gamma=0.5,
            use_cpu=True,
            per_device_train_batch_size=4,
            report_to="none",
            max_length=128,
        )
        cls = CPOTrainer
    else:
        params = LossParams(beta=0.2)
        args = ORPOConfig(
            output_dir=str(tmp_path),
            beta=0.2,
            use_cpu=True,
            per_device_train_batch_size=4,
            report_to="none",
            max_length=128,
        )
        cls = ORPOTrainer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trl = cls(model=policy, args=args, train_dataset=pairs(), processing_class=tokenizer)
    batch = next(iter(trl.get_train_dataloader()))
    with torch.no_grad():
        trl_loss, trl_metrics = trl.get_batch_loss_metrics(trl.model, batch, "train")

    out, _, _, _ = ours(method, policy, None, _stack_cpo_batch(batch), params)
    assert out.chosen_rewards.mean().item() == pytest.approx(float(trl_metrics["rewards/chosen"]), abs=TOL)
    assert out.rejected_rewards.mean().item() == pytest.approx(
        float(trl_metrics["rewards/rejected"]), abs=TOL
    )
    if method == "orpo":
        # TRL's ORPO NLL covers every non-pad token of the chosen sequence, prompt included; prefkit's (like
        # LLaMA-Factory's and its SFT) the chosen response only. Each NLL, worked out here from the model's
        # plain full-vocabulary log-softmax with that token set, must equal its own side's; and TRL's whole
        # loss must be its NLL plus prefkit's odds-ratio term.
        stacked = _stack_cpo_batch(batch)
        rows = batch["chosen_input_ids"].shape[0]

        def nll(labels: torch.Tensor) -> float:
            with torch.no_grad():
                logits = policy(input_ids=stacked["input_ids"][:rows]).logits[:, :-1]
            logp = torch.log_softmax(logits.double(), -1)
            target = labels[:, 1:]
            mask = target != IGNORE_INDEX
            picked = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            return (-(picked * mask).sum() / mask.sum()).item()

        all_tokens = stacked["input_ids"][:rows].masked_fill(
            stacked["attention_mask"][:rows] == 0, IGNORE_INDEX
        )
        response_only = stacked["labels"][:rows]
        assert (response_only != IGNORE_INDEX).sum() < (all_tokens != IGNORE_INDEX).sum()
        assert float(trl_metrics["nll_loss"]) == pytest.approx(nll(all_tokens), abs=TOL)
        assert out.metrics["nll_loss"].item() == pytest.approx(nll(response_only), abs=TOL)
        odds_term = (out.loss - out.metrics["nll_loss"]).item()
        assert trl_loss.item() == pytest.approx(nll(all_tokens) + odds_term, abs=TOL)
        assert out.metrics["log_odds_ratio"].item() == pytest.approx(
            float(trl_metrics["log_odds_ratio"]), abs=TOL
        )
        assert out.metrics["log_odds_chosen"].item() == pytest.approx(
            float(trl_metrics["log_odds_chosen"]), abs=TOL
        )
    else:
        assert out.loss.item() == pytest.approx(trl_loss.item(), abs=TOL)


def logps(chosen, rejected, ref_chosen=None, ref_rejected=None, n_chosen=None, n_rejected=None):
    t = lambda xs: torch.tensor(xs, dtype=torch.float64)  # noqa: E731
    return PolicyLogps(
        t(chosen),
        t(rejected),
        t(n_chosen or [1.0] * len(chosen)),
        t(n_rejected or [1.0] * len(rejected)),
        t(ref_chosen) if ref_chosen else None,
        t(ref_rejected) if ref_rejected else None,
    )


def test_kto_pair_from_the_papers_definition():
    """KTO (Ethayarajh et al. 2024, eq. 6-8) with lambda_D = lambda_U = 1, on two pairs, beta = 0.5.

    The paper's loss for an example (x, y) with reward r = log pi(y|x) - log pi_ref(y|x):
        desirable y:   1 - s(beta (r - z0)),   undesirable y:   1 - s(beta (z0 - r)),
    where z0, the reference point, estimates KL(pi || pi_ref) from outputs that are not the example's
    own, is clamped at 0, and is not back-propagated through. In the paired form each chosen reply is
    desirable with z0 from the rejected replies, each rejected reply undesirable with z0 from the chosen
    ones (a batch mean of their rewards). The loss is the mean over all 2B examples.

    policy  chosen (-4, -3)   rejected (-6, -2)      reference chosen (-5, -2)   rejected (-5, -4)
    r_c = (-4+5, -3+2) = (1, -1)                     r_r = (-6+5, -2+4) = (-1, 2)
    z0 for the chosen   = max(0, (-1 + 2)/2) = 0.5   z0 for the rejected = max(0, (1 - 1)/2) = 0
    desirable:   1 - s(0.5 (1 - 0.5)) = 1 - s(0.25),     1 - s(0.5 (-1 - 0.5)) = 1 - s(-0.75)
    undesirable: 1 - s(0.5 (0 - -1)) = 1 - s(0.5),       1 - s(0.5 (0 - 2))   = 1 - s(-1)
    loss = (sum of the four) / 4

    Gradient (z0 held fixed): d/dr [1 - s(beta u)] = -beta s(beta u)(1 - s(beta u)) for u = r - z0, so
    d loss / d pi_c[0] = -0.5 s(0.25) (1 - s(0.25)) / 4, and for the undesirable side u = z0 - r:
    d loss / d pi_r[1] = +0.5 s(-1) (1 - s(-1)) / 4. Were z0 differentiated, pi_r[1] would also move z0
    for the chosen half and its gradient would differ.
    """
    s = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    p = logps([-4, -3], [-6, -2], [-5, -2], [-5, -4])
    p.chosen.requires_grad_(True)
    p.rejected.requires_grad_(True)
    out = preference_loss("kto_pair", p, LossParams(beta=0.5))
    expected = ((1 - s(0.25)) + (1 - s(-0.75)) + (1 - s(0.5)) + (1 - s(-1.0))) / 4
    assert out.loss.item() == pytest.approx(expected, abs=1e-12)
    out.loss.backward()
    assert p.chosen.grad[0].item() == pytest.approx(-0.5 * s(0.25) * (1 - s(0.25)) / 4, abs=1e-12)
    assert p.rejected.grad[1].item() == pytest.approx(0.5 * s(-1.0) * (1 - s(-1.0)) / 4, abs=1e-12)
    assert out.chosen_rewards.tolist() == pytest.approx([0.5, -0.5])
    assert out.rejected_rewards.tolist() == pytest.approx([-0.5, 1.0])
    assert out.metrics["kl/chosen"].item() == 0.0 and out.metrics["kl/rejected"].item() == 0.5


def test_kto_pair_reference_points_come_from_the_whole_batch():
    """Under DDP each process holds part of the batch; the trainer passes a mean over all of them. Here a
    fake "other process" with rejected rewards (3, 3) joins the batch mean: z0 for the chosen becomes
    max(0, mean(-1, 2, 3, 3)) = 1.75 instead of 0.5."""
    s = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    other = torch.tensor([3.0, 3.0], dtype=torch.float64)
    p = logps([-4, -3], [-6, -2], [-5, -2], [-5, -4])
    p = dataclasses.replace(p, batch_mean=lambda x: torch.cat([x, other if x[1] == 2 else -other]).mean())
    out = preference_loss("kto_pair", p, LossParams(beta=0.5))
    assert out.metrics["kl/rejected"].item() == pytest.approx(1.75)
    desirable = (1 - s(0.5 * (1 - 1.75))) + (1 - s(0.5 * (-1 - 1.75)))
    undesirable = (1 - s(0.5 * (0 + 1))) + (
        1 - s(0.5 * (0 - 2))
    )  # z0 for the rejected: max(0, mean(1,-1,-3,-3))
    assert out.loss.item() == pytest.approx((desirable + undesirable) / 4, abs=1e-12)


def test_conservative_dpo_label_smoothing():
    """h = (-1 - -2) - (-3 - -2) = 2; beta 0.5: loss = -(0.9) log s(1) - 0.1 log s(-1)."""
    s = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    out = preference_loss("sigmoid", logps([-1], [-3], [-2], [-2]), LossParams(beta=0.5, label_smoothing=0.1))
    assert out.loss.item() == pytest.approx(-0.9 * math.log(s(1)) - 0.1 * math.log(s(-1)), abs=1e-12)


def test_pref_ftx_adds_the_chosen_nll():
    """NLL per chosen token over the batch: -(-4 + -6) / (2 + 3) = 2."""
    p = logps([-4, -6], [-5, -5], [-4, -6], [-5, -5], n_chosen=[2, 3], n_rejected=[1, 1])
    base = preference_loss("sigmoid", p, LossParams(beta=0.1)).loss
    with_ftx = preference_loss("sigmoid", p, LossParams(beta=0.1, ftx=0.5)).loss
    assert (with_ftx - base).item() == pytest.approx(0.5 * 2.0, abs=1e-12)


def test_simpo_margin_and_length_normalisation():
    """chosen -6 over 3 tokens = -2/token, rejected -9 over 3 = -3: loss = -log s(2*(1) - 0.5)."""
    out = preference_loss(
        "simpo", logps([-6], [-9], n_chosen=[3], n_rejected=[3]), LossParams(beta=2.0, gamma=0.5)
    )
    assert out.loss.item() == pytest.approx(math.log1p(math.exp(-1.5)), abs=1e-12)
    assert out.chosen_rewards.item() == pytest.approx(-4.0)


def test_log1mexp_is_accurate_at_both_ends():
    import mpmath

    mpmath.mp.dps = 50
    x = torch.tensor([-1e-12, -1e-5, -0.5, -1.0, -30.0, -800.0], dtype=torch.float64)
    expected = torch.tensor([float(mpmath.log(1 - mpmath.exp(v))) for v in x.tolist()], dtype=torch.float64)
    assert torch.allclose(log1mexp(x), expected, rtol=1e-12, atol=0)
    # A response the model is certain of (mean log-prob 0.0) gives a finite ORPO loss, not NaN.
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        p = PolicyLogps(
            torch.tensor([0.0], dtype=dtype),
            torch.tensor([-3.0], dtype=dtype),
            torch.tensor([4.0]),
            torch.tensor([4.0]),
        )
        out = preference_loss("orpo", p, LossParams(beta=0.1))
        assert torch.isfinite(out.loss), dtype


def test_registry_says_which_methods_need_a_reference():
    assert {name for name, spec in LOSSES.items() if spec.needs_reference} == {
        "sigmoid",
        "hinge",
        "ipo",
        "kto_pair",
    }
    assert set(LOSSES) == {"sigmoid", "hinge", "ipo", "kto_pair", "orpo", "simpo"}
    with pytest.raises(ValueError, match="reference"):
        preference_loss("sigmoid", logps([-1], [-2]), LossParams(beta=0.1))
