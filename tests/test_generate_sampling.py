"""The samplers of tinyllm/sampling.py on hand-made distributions: each filter alone, their
edge cases, and the same seed giving the same ids."""
import numpy as np
import pytest

from tinyllm.sampling import Sampling, filter_probs, penalize_repeats, sample


def draws(logits, settings, n=4000, seed=0, history=None):
    """The frequency of each id over n draws from the same logits (1, V)."""
    rng = np.random.default_rng(seed)
    logits = np.repeat(np.asarray(logits, dtype=np.float32)[None], n, axis=0)    # (n, V)
    hist = None if history is None else np.repeat(np.asarray(history)[None], n, axis=0)
    ids = sample(logits, settings, rng, hist)
    return np.bincount(ids, minlength=logits.shape[1]) / n


def test_temperature_zero_is_argmax_and_draws_nothing():
    rng = np.random.default_rng(0)
    logits = np.array([[0.1, 3.0, -1.0], [5.0, 4.0, 4.9]], dtype=np.float32)
    np.testing.assert_array_equal(sample(logits, Sampling(temperature=0), rng), [1, 0])
    assert rng.random() == np.random.default_rng(0).random()   # the generator did not move


def test_temperature_one_follows_the_softmax():
    logits = np.log([0.5, 0.3, 0.2])
    np.testing.assert_allclose(draws(logits, Sampling()), [0.5, 0.3, 0.2], atol=0.03)


def test_low_temperature_sharpens():
    freq = draws(np.log([0.5, 0.3, 0.2]), Sampling(temperature=0.1))
    assert freq[0] > 0.99


def test_top_k_keeps_the_k_likeliest():
    freq = draws(np.log([0.4, 0.3, 0.2, 0.1]), Sampling(top_k=2))
    assert freq[2] == freq[3] == 0
    np.testing.assert_allclose(freq[:2], [4 / 7, 3 / 7], atol=0.03)


def test_top_p_edge_cases():
    probs = np.array([[0.5, 0.3, 0.2]])
    # 0.5 alone is short of 0.7; 0.5 + 0.3 reaches it, so 0.2 goes
    np.testing.assert_allclose(filter_probs(probs, top_p=0.7), [[0.625, 0.375, 0.0]])
    # a mass exactly reached by the first id keeps it alone
    np.testing.assert_allclose(filter_probs(probs, top_p=0.5), [[1.0, 0.0, 0.0]])
    # a tiny p still keeps the likeliest
    np.testing.assert_allclose(filter_probs(probs, top_p=1e-9), [[1.0, 0.0, 0.0]])
    # 1 is off
    np.testing.assert_array_equal(filter_probs(probs, top_p=1.0), probs)
    # order does not matter: the likeliest id is found wherever it sits
    np.testing.assert_allclose(filter_probs(probs[:, ::-1], top_p=0.7), [[0.0, 0.375, 0.625]])


def test_min_p_keeps_ids_near_the_likeliest():
    probs = np.array([[0.5, 0.3, 0.2], [0.9, 0.05, 0.05]])
    got = filter_probs(probs, min_p=0.5)   # thresholds 0.25 and 0.45
    np.testing.assert_allclose(got, [[0.625, 0.375, 0.0], [1.0, 0.0, 0.0]])
    np.testing.assert_array_equal(filter_probs(probs, min_p=0.0), probs)
    np.testing.assert_allclose(filter_probs(probs, min_p=1.0), [[1, 0, 0], [1, 0, 0]])
    freq = draws(np.log([0.5, 0.3, 0.2]), Sampling(min_p=0.5))
    assert freq[2] == 0


def test_repetition_penalty_on_repeated_ids():
    logits = np.array([[2.0, -1.0, 3.0, 0.5]])
    # id 1 twice in the history is penalized once; positive logits divided, negative multiplied
    got = penalize_repeats(logits, np.array([[0, 1, 1]]), 2.0)
    np.testing.assert_allclose(got, [[1.0, -2.0, 3.0, 0.5]])
    assert penalize_repeats(logits, np.array([[0, 1]]), 1.0) is logits
    # greedy with a penalty turns away from the repeated best id
    rng = np.random.default_rng(0)
    assert sample(logits, Sampling(temperature=0), rng, np.array([[2]]))[0] == 2
    assert sample(logits, Sampling(temperature=0, repetition_penalty=2.0), rng, np.array([[2]]))[0] == 0


def test_rows_are_filtered_independently():
    logits = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7]]))
    ids = sample(logits, Sampling(top_k=1), np.random.default_rng(0))
    np.testing.assert_array_equal(ids, [0, 2])


def test_the_same_seed_gives_the_same_ids():
    logits = np.random.default_rng(1).standard_normal((3, 50)).astype(np.float32)
    settings = Sampling(temperature=0.9, top_k=20, top_p=0.9, min_p=0.02, repetition_penalty=1.2)
    history = np.array([[1, 2], [3, 4], [5, 5]])
    a = [sample(logits, settings, rng, history) for rng in [np.random.default_rng(7)] * 5]
    b = [sample(logits, settings, rng, history) for rng in [np.random.default_rng(7)] * 5]
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kwargs, match", [
    (dict(temperature=-1), "temperature"), (dict(top_p=0), "top_p"), (dict(top_p=1.5), "top_p"),
    (dict(min_p=2), "min_p"), (dict(min_p=-0.1), "min_p"), (dict(top_k=0), "top_k"),
    (dict(top_k=2.5), "top_k"), (dict(repetition_penalty=0), "repetition_penalty"),
    (dict(temperature=float("nan")), "temperature"),
])
def test_bad_settings_name_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Sampling(**kwargs)
