"""The planner against published figures, with the tables typed in and their sources beside them.

  GPT-2's released checkpoints: exact parameter counts from the shapes alone.
  GPT-3 (Brown et al. 2020, table 2.1): sizes within 2 %, shapes, learning rates and batches.
  Chinchilla (Hoffmann et al. 2022, table 3): compute-optimal tokens within 5 %.
  ZeRO (Rajbhandari et al. 2020, section 3.1 / figure 1): the 7.5B-parameter, 64-device example.
  Korthikanti et al. 2022, eq. 1: the activation count our fused count is derived from.
  llm.c's GPT-2 124M run (karpathy/llm.c discussion #481): 10B tokens, 8 x A100 80GB, ~90 minutes.
"""
import math

import pytest

from tinyllm.model import GPT, GPTConfig, flops_per_token, num_parameters, parameter_counts, preset
from tinyllm.plan import budget, make_plan
from tinyllm.plan.shapes import GPT3, gpt3_hyperparameters, shape_for

# -- the model module's counts from a config alone ----------------------------------------------


@pytest.mark.parametrize("config", [preset("tiny"), preset("default"), preset("bench"),
                                    GPTConfig(vocab_size=97, block_size=13, n_layer=3, n_head=3, n_embd=24)],
                         ids=["tiny", "default", "bench", "odd"])
def test_counts_from_a_config_equal_the_built_models(config):
    model = GPT(config)
    assert num_parameters(config) == model.num_parameters()
    assert sum(parameter_counts(config).values()) == model.num_parameters()
    assert flops_per_token(config) == model.flops_per_token()
    assert flops_per_token(config, 7) == model.flops_per_token(7)


# The released GPT-2 checkpoints' exact counts (Hugging Face gpt2, gpt2-medium, gpt2-large, gpt2-xl,
# model.num_parameters(); Radford et al. 2019 table 2 rounds them to 117M, 345M, 762M, 1542M).
GPT2 = [  # n_layer, n_embd, exact parameters
    (12, 768, 124_439_808), (24, 1024, 354_823_168), (36, 1280, 774_030_080), (48, 1600, 1_557_611_200)]


@pytest.mark.parametrize("n_layer, n_embd, published", GPT2)
def test_gpt2_counts_exactly(n_layer, n_embd, published):
    config = GPTConfig(vocab_size=50257, block_size=1024, n_layer=n_layer, n_head=n_embd // 64, n_embd=n_embd)
    # GPT-2 ties lm_head to wte, and has biases that tinyllm's bias-free layers and RMSNorm do not:
    # per block ln_1 and ln_2 biases (2C), c_attn 3C, attn c_proj C, c_fc 4C, mlp c_proj C = 11C; ln_f C
    ours = num_parameters(config) - parameter_counts(config)["lm_head"]
    assert ours + 11 * n_embd * n_layer + n_embd == published


# -- GPT-3, Brown et al. 2020, table 2.1 (typed into tinyllm/plan/shapes.py as GPT3) -------------

@pytest.mark.parametrize("row", GPT3, ids=[r[0] for r in GPT3])
def test_gpt3_sizes_within_2_percent_of_their_shapes(row):
    name, params, n_layer, d_model = row[:4]
    config = GPTConfig(vocab_size=50257, block_size=2048, n_layer=n_layer, n_head=1, n_embd=d_model)
    tied = num_parameters(config) - parameter_counts(config)["lm_head"]   # GPT-3 ties its embeddings
    assert abs(tied / params - 1) < 0.02, (name, tied)


@pytest.mark.parametrize("row", GPT3, ids=[r[0] for r in GPT3])
def test_gpt3_hyperparameters_reproduced_at_the_tables_sizes(row):
    name, params, *_, batch, lr = row
    assert gpt3_hyperparameters(params) == pytest.approx({"lr": lr, "batch_tokens": batch}, rel=1e-9)
    plan = make_plan(params=params, hardware="64xH100", tokens=1e9 if params < 1e10 else 1e11)
    assert plan["hyperparameters"]["lr"] == pytest.approx(lr, rel=1e-9)
    assert plan["hyperparameters"]["batch_tokens"] == pytest.approx(batch, rel=0.06)  # whole sequences


@pytest.mark.parametrize("row", GPT3, ids=[r[0] for r in GPT3])
def test_shape_rule_returns_the_tables_shape_at_its_sizes(row):
    name, _, n_layer, d_model = row[:4]
    # ask for the size (as tinyllm counts it) of the table's own shape: the rule should give it back
    target = num_parameters(GPTConfig(vocab_size=50257, block_size=2048, n_layer=n_layer, n_head=1,
                                      n_embd=d_model))
    config = shape_for(target)
    assert config.n_layer == n_layer
    assert abs(config.n_embd / d_model - 1) < 0.01, (name, config)   # 13B: 5140 as printed -> 5120


@pytest.mark.parametrize("params", [20e6, 125e6, 1e9, 3e9, 10e9, 70e9, 1e12])
def test_shapes_hit_the_target_size(params):
    config = shape_for(params)
    assert abs(num_parameters(config) / params - 1) < 0.07
    assert config.n_embd % config.n_head == 0


# -- Chinchilla, Hoffmann et al. 2022, table 3: parameters, FLOPs, tokens -----------------------
CHINCHILLA_TABLE_3 = [
    (400e6, 1.92e19, 8.0e9), (1e9, 1.21e20, 20.2e9), (10e9, 1.23e22, 205.1e9),
    (67e9, 5.76e23, 1.5e12), (175e9, 3.85e24, 3.7e12), (280e9, 9.90e24, 5.9e12),
    (520e9, 3.43e25, 11.0e12), (1e12, 1.27e26, 21.2e12), (10e12, 1.30e28, 216.2e12)]


@pytest.mark.parametrize("params, flops, tokens", CHINCHILLA_TABLE_3)
def test_chinchilla_tokens_within_5_percent(params, flops, tokens):
    if params == 67e9:   # its "1.5 Trillion" is rounded: its FLOPs column gives 5.76e23 / (6 x 67e9) = 1.43T
        tokens = flops / (6 * params)
    assert abs(budget.chinchilla_tokens(params) / tokens - 1) < 0.05


def test_plan_uses_chinchilla_by_default():
    plan = make_plan(params=1e9, hardware="8xH100")
    N = plan["model"]["parameters"]
    assert plan["tokens"]["budget"] == pytest.approx(budget.chinchilla_tokens(N))
    assert plan["tokens"]["budget"] == pytest.approx(20.2e9, rel=0.05)
    assert make_plan(params=10e9, hardware="64xH100")["tokens"]["budget"] == pytest.approx(205e9, rel=0.05)


# -- ZeRO, Rajbhandari et al. 2020: 7.5B parameters on 64 devices, K = 12 -----------------------
@pytest.mark.parametrize("stage, published_gb", [(0, 120), (1, 31.4), (2, 16.6), (3, 1.9)])
def test_zero_paper_worked_example(stage, published_gb):
    assert budget.model_state_bytes(7.5e9, 64, stage) / 1e9 == pytest.approx(published_gb, rel=0.015)


# -- Korthikanti et al. 2022, eq. 1: s b h (34 + 5 a s / h) bytes per layer at 16 bits ----------
def test_fused_activations_are_korthikanti_less_softmax_and_dropout():
    config = GPTConfig(vocab_size=50257, block_size=2048, n_layer=1, n_head=16, n_embd=1024)
    s, b, h, a = 2048, 3, 1024, 16
    paper = budget.korthikanti_layer_bytes(s, b, h, a)
    assert paper == s * b * h * 34 + 5 * a * s * s * b
    # fused attention drops the scores, softmax and its dropout mask (5 a s^2 b), dropout off drops
    # the two output masks (2 s b h); what is left is 32 s b h, plus the fp32 log-sum-exp (4 s b a)
    ours = budget.activation_bytes(config, b, "bf16") - 4 * s * b * config.vocab_size
    assert ours == paper - 5 * a * s * s * b - 2 * s * b * h + 4 * s * b * a


# -- a published run: llm.c's GPT-2 124M (karpathy/llm.c discussion #481) -----------------------
def test_llmc_gpt2_124m_time_within_20_percent():
    # 10B FineWeb tokens, 8 x A100 80GB SXM, "about 90 minutes". At the A100's 312 TFLOP/s bf16 that
    # is 63% MFU by our FLOP count (10e9 x 854.5 MFLOP / (8 x 312e12 x 5400 s)); we plan at 0.6
    plan = make_plan(preset="gpt2", hardware="8xA100-80GB", tokens=10e9, mfu=0.6)
    assert plan["model"]["flops_per_token"] == pytest.approx(854.5e6, rel=1e-3)
    assert abs(plan["compute"]["seconds"] / (90 * 60) - 1) < 0.20
    implied = 10e9 * plan["model"]["flops_per_token"] / (8 * 312e12 * 90 * 60)
    assert math.isclose(implied, 0.634, rel_tol=0.01)
