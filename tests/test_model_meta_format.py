"""Acceptance: a checkpoint in Meta's release format, written here with plain torch (no import of our model), converts,
loads through `MetaLlamaMTPAdapter.from_pretrained`, and its logits equal an independent reference forward computed
straight from the state dict (Meta's complex-number rotary embedding, explicit softmax attention) within 1e-5."""
import inspect, io, json, math

import pytest
import sentencepiece as spm
import torch

DIM, N_LAYERS, N_HEADS, N_KV, NFT, MULT_OF, FFN_MULT, EPS, THETA = 64, 5, 4, 2, 3, 32, 1.3, 1e-5, 500000.0


def _write_tokenizer(path, vocab_size):
    import torch.nn.modules.linear as src_mod  # any code will do as a corpus
    corpus = [l for l in inspect.getsource(src_mod).splitlines() if l.strip()] * 3
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_writer=buf, model_type="bpe",
                                   vocab_size=vocab_size, byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
                                   character_coverage=1.0, minloglevel=2)
    path.write_bytes(buf.getvalue())


def _random_meta_state_dict(vocab, seed=0):
    "Meta's keys, written out by hand; FFN width from Meta's formula."
    g = torch.Generator().manual_seed(seed)
    hd = DIM // N_HEADS
    hidden = int(FFN_MULT * int(2 * 4 * DIM / 3))
    hidden = MULT_OF * ((hidden + MULT_OF - 1) // MULT_OF)
    r = lambda *s: torch.randn(*s, generator=g) * 0.05
    def block(p):
        return {f"{p}.attention.wq.weight": r(N_HEADS * hd, DIM), f"{p}.attention.wk.weight": r(N_KV * hd, DIM),
                f"{p}.attention.wv.weight": r(N_KV * hd, DIM), f"{p}.attention.wo.weight": r(DIM, N_HEADS * hd),
                f"{p}.feed_forward.w1.weight": r(hidden, DIM), f"{p}.feed_forward.w2.weight": r(DIM, hidden),
                f"{p}.feed_forward.w3.weight": r(hidden, DIM),
                f"{p}.attention_norm.weight": 1 + r(DIM), f"{p}.ffn_norm.weight": 1 + r(DIM)}
    sd = {"tok_embeddings.weight": r(vocab, DIM), "norm.weight": 1 + r(DIM), "output.weight": r(vocab, DIM)}
    for i in range(N_LAYERS - NFT + 1):
        sd |= block(f"layers.{i}")
    for j in range(NFT - 1):
        sd |= block(f"extra_heads.{j}")
    return sd


def _reference_logits(sd, tokens):
    "Meta's forward, from the state dict with plain torch ops: [B, S, NFT, V]."
    B, S = tokens.shape
    hd = DIM // N_HEADS
    freqs = 1.0 / (THETA ** (torch.arange(0, hd, 2)[: hd // 2].float() / hd))
    freqs_cis = torch.polar(torch.ones(S, hd // 2), torch.outer(torch.arange(S).float(), freqs))  # [S, hd/2]

    def rms(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * w

    def rot(x):  # [B, S, H, hd]
        xc = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2))
        return torch.view_as_real(xc * freqs_cis[None, :, None, :]).flatten(3)

    def block(x, p):
        h = rms(x, sd[f"{p}.attention_norm.weight"])
        q = (h @ sd[f"{p}.attention.wq.weight"].T).view(B, S, N_HEADS, hd)
        k = (h @ sd[f"{p}.attention.wk.weight"].T).view(B, S, N_KV, hd)
        v = (h @ sd[f"{p}.attention.wv.weight"].T).view(B, S, N_KV, hd)
        q, k = rot(q), rot(k)
        k = torch.cat([k[:, :, i // (N_HEADS // N_KV)][:, :, None] for i in range(N_HEADS)], dim=2)
        v = torch.cat([v[:, :, i // (N_HEADS // N_KV)][:, :, None] for i in range(N_HEADS)], dim=2)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(hd)
        scores = scores + torch.full((S, S), float("-inf")).triu(1)
        att = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).reshape(B, S, -1)
        x = x + att @ sd[f"{p}.attention.wo.weight"].T
        h = rms(x, sd[f"{p}.ffn_norm.weight"])
        ff = (torch.nn.functional.silu(h @ sd[f"{p}.feed_forward.w1.weight"].T) * (h @ sd[f"{p}.feed_forward.w3.weight"].T))
        return x + ff @ sd[f"{p}.feed_forward.w2.weight"].T

    x = sd["tok_embeddings.weight"][tokens]
    n_main = N_LAYERS - NFT + 1
    for i in range(n_main - 1):
        x = block(x, f"layers.{i}")
    heads = [f"layers.{n_main - 1}"] + [f"extra_heads.{j}" for j in range(NFT - 1)]
    outs = [rms(block(x, p), sd["norm.weight"]) @ sd["output.weight"].T for p in heads]
    return torch.stack(outs, dim=2)


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("meta_raw")
    _write_tokenizer(d / "tokenizer.model", 400)
    vocab = spm.SentencePieceProcessor(model_file=str(d / "tokenizer.model")).vocab_size()
    (d / "params.json").write_text(json.dumps({
        "dim": DIM, "n_layers": N_LAYERS, "n_heads": N_HEADS, "n_kv_heads": N_KV, "vocab_size": vocab,
        "multiple_of": MULT_OF, "ffn_dim_multiplier": FFN_MULT, "norm_eps": EPS, "rope_theta": THETA,
        "n_future_tokens": NFT}))
    torch.save(_random_meta_state_dict(vocab), d / "consolidated.pth")
    return d


def test_meta_checkpoint_converts_loads_and_matches_reference(raw_dir, tmp_path):
    from wmtp_nb.model import MetaLlamaMTPAdapter
    from wmtp_nb.storage import convert_meta_checkpoint, verify_storage
    out = convert_meta_checkpoint(raw_dir, tmp_path / "models_v2" / "meta-mtp")
    assert verify_storage(tmp_path) == {"meta-mtp": []}
    ad = MetaLlamaMTPAdapter.from_pretrained(out, device="cpu", dtype=torch.float32, initialize_value_head=False)
    assert ad.value_head is None and ad.n_future_tokens == NFT
    sp = spm.SentencePieceProcessor(model_file=str(ad.tokenizer_path))
    rows = [[1] + sp.encode("def forward(self, input):\n    return F.linear(input, self.weight)"),
            [1] + sp.encode("class Identity(Module):\n    def __init__(self, *args, **kwargs):")]
    n = min(map(len, rows))
    tokens = torch.tensor([r[:n] for r in rows])
    sd = torch.load(raw_dir / "consolidated.pth", weights_only=True)
    with torch.no_grad():
        ours = ad.full_forward(tokens).logits
        ref = _reference_logits(sd, tokens)
    assert ours.shape == ref.shape == (2, tokens.shape[1], NFT, sd["output.weight"].shape[0])
    assert (ours - ref).abs().max().item() < 1e-5
    # and the vendor forward in Meta's convention: head 0 only unless return_all_heads
    with torch.no_grad():
        assert (ad.model(tokens)[:, :, 0] - ref[:, :, 0]).abs().max().item() < 1e-5
