"""The GPT-2 model: llm.c's shapes, init, padded vocabulary, and equality with Hugging Face's GPT-2."""

from __future__ import annotations

import math

import pytest
import torch

from gpt2train.export.state_dict import from_hf_state_dict, to_hf_state_dict
from gpt2train.model import GPT, GPTConfig

SMALL = GPTConfig(n_layer=2, n_head=3, n_embd=48, block_size=37)


def small_model(seed: int = 0) -> GPT:
    return GPT(SMALL).init_weights(seed)


@pytest.mark.parametrize("descriptor", ["d6", "d12", "gpt2:d24", "d36", "d48"])
def test_descriptor_sizes(descriptor):
    cfg = GPTConfig.from_descriptor(descriptor)
    with torch.device("meta"):
        model = GPT(cfg)
    C, L, Vp, T = cfg.n_embd, cfg.n_layer, cfg.padded_vocab_size, cfg.block_size
    # wte + wpe + per block (qkv, proj, fc, proj weights and biases, 2 LayerNorms) + ln_f
    assert model.num_params() == Vp * C + T * C + L * (12 * C * C + 13 * C) + 2 * C
    assert cfg.n_embd // cfg.n_head == 64


def test_llmc_reported_parameter_counts():
    # llm.c's logs print these (padded vocabulary included) for -e d12 and -e d48.
    for descriptor, params in (("d12", 124_475_904), ("d48", 1_557_686_400)):
        with torch.device("meta"):
            assert GPT(GPTConfig.from_descriptor(descriptor)).num_params() == params


def test_unknown_descriptor_is_a_clear_error():
    with pytest.raises(ValueError, match="d12"):
        GPTConfig.from_descriptor("d13")


def test_flops_per_token_as_llmc():
    with torch.device("meta"):
        model = GPT(GPTConfig.from_descriptor("d12"))
    assert model.flops_per_token(1024) == 6 * 124_475_904 + 6 * 12 * 768 * 1024


def test_init_is_seeded_and_scaled():
    a, b, c = small_model(1), small_model(1), small_model(2)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.transformer.h[0].mlp.c_fc.weight, c.transformer.h[0].mlp.c_fc.weight)
    big = GPT(GPTConfig(n_layer=4, n_head=4, n_embd=256, block_size=64)).init_weights(0)
    assert big.transformer.h[0].mlp.c_fc.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert big.transformer.h[0].mlp.c_proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(8), rel=0.05)
    assert big.transformer.wte.weight[50257:].abs().sum() == 0  # padded rows start at zero
    assert big.lm_head.weight is big.transformer.wte.weight  # tied


def test_padded_vocab_never_chosen_and_never_scored():
    model = small_model()
    with torch.no_grad():  # make the padded rows win if they were ever looked at
        model.transformer.wte.weight[50257:] = 100.0
    idx = torch.randint(0, 50257, (2, 11))
    logits, loss = model(idx, idx)
    assert logits.shape == (2, 11, 50257)
    assert int(logits.argmax(-1).max()) < 50257
    out = model.generate(idx[:, :3], max_new_tokens=20, temperature=1.0, top_k=None,
                         generator=torch.Generator().manual_seed(0))
    assert int(out.max()) < 50257
    loss.backward()
    assert model.transformer.wte.weight.grad[50257:].abs().sum() == 0  # no gradient into padding


def test_logits_equal_huggingface_gpt2():
    import transformers

    hf_cfg = transformers.GPT2Config(n_layer=SMALL.n_layer, n_head=SMALL.n_head, n_embd=SMALL.n_embd,
                                     n_positions=SMALL.block_size, vocab_size=50257,
                                     activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
                                     attn_pdrop=0.0)
    hf = transformers.GPT2LMHeadModel(hf_cfg).eval()
    ours = small_model(3).eval()
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(ours), strict=False)
    assert [k for k in missing if not k.endswith("attn.bias") and k != "lm_head.weight"] == []
    assert unexpected == []
    hf.tie_weights()
    idx = torch.randint(0, 50257, (3, SMALL.block_size))
    with torch.no_grad():
        expected = hf(idx).logits
        got, _ = ours(idx)
    assert (got - expected).abs().max().item() <= 1e-5

    # and back: HF weights -> our model -> the same logits
    back = from_hf_state_dict(hf.state_dict(), SMALL).eval()
    with torch.no_grad():
        assert torch.equal(back(idx)[0], got)


def test_sequence_longer_than_context_is_an_error():
    with pytest.raises(ValueError, match="exceeds the model's context"):
        small_model()(torch.zeros(1, SMALL.block_size + 1, dtype=torch.long))


def test_kv_cache_equals_running_the_whole_context():
    from gpt2train.model import KVCache

    model = small_model(5).eval()
    block = model.config.block_size
    idx = torch.randint(0, 50257, (2, 7))
    with torch.no_grad():
        full, _ = model(idx)
        cache = KVCache(model.config, 2, block, "cpu", torch.float32)
        parts = [model(idx[:, a:b], cache=cache)[0] for a, b in ((0, 3), (3, 4), (4, 7))]  # a prefix, one, several
        torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=0)

        def recompute(idx, n):  # generation as it was: the whole (cropped) context every step
            for _ in range(n):
                logits, _ = model(idx[:, -block:])
                idx = torch.cat((idx, logits[:, -1].argmax(-1, keepdim=True)), dim=1)
            return idx

        # within the context, up to it exactly, and past it (the window slides)
        for n in (5, block - idx.size(1), block + 9):
            assert torch.equal(model.generate(idx, n, temperature=0), recompute(idx, n)), n
