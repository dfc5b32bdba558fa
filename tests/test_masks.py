import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch


from sparsecl.errors import IntegrityError
from sparsecl.mechanisms import make as make_mechanism
from sparsecl.model import GPT, GPTConfig
from sparsecl.model.checkpoint import load_checkpoint, model_masks, save_checkpoint
from sparsecl.topology.allocation import allocate
from sparsecl.topology.store import load_masks, make_masks, mask_hash, masked_blocks, save_masks
from sparsecl.train.loop import make_optimizer, train_phase


def toy_model(params, topology="random", seed=0):
    masks = make_masks(params, topology, seed)
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=64, **params["model"]), masks=masks), masks


@pytest.mark.parametrize("density", [0.01, 0.05, 0.25, 1.0])
def test_random_has_exact_nnz_per_logical_matrix(toy_params, density):
    toy_params["density"] = density
    blocks = masked_blocks(toy_params)
    masks = make_masks(toy_params, "random", 0)
    for name, (n, (n_out, n_in)) in blocks.items():
        per_block = masks[name].view(n, n_out, n_in).sum((1, 2))
        assert per_block.tolist() == [round(density * n_out * n_in)] * n


def test_erk_keeps_total_and_caps_at_one(toy_params):
    blocks = masked_blocks(toy_params)
    total = sum(n * s[0] * s[1] for n, s in blocks.values())
    for density in (0.05, 0.5, 0.9):
        nnz = allocate(blocks, density, "erk")
        kept = sum(blocks[k][0] * v for k, v in nnz.items())
        assert abs(kept - density * total) <= len(blocks) * 3  # rounding per matrix only
        assert all(v <= blocks[k][1][0] * blocks[k][1][1] for k, v in nnz.items())


def test_same_seed_same_mask_other_seed_different(toy_params):
    a, b, c = (make_masks(toy_params, "random", s) for s in (0, 0, 1))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_dense_has_no_masks(toy_params):
    model, masks = toy_model(toy_params, "dense")
    assert masks == {} and model.param_counts()["sparsified_density"] == 1.0


def test_masked_weights_and_adam_moments_stay_exactly_zero(toy_params):
    """60 AdamW steps with weight decay: every masked weight, gradient and Adam moment is exactly 0."""
    toy_params["train"]["weight_decay"] = 0.5
    model, masks = toy_model(toy_params)
    opt = make_optimizer(model, toy_params["train"], torch.device("cpu"))
    x = torch.randint(0, 64, (4, 16))
    for _ in range(60):
        model(x[:, :-1], x[:, 1:])[1].backward()
        opt.step()
        opt.zero_grad(set_to_none=False)
    for name, layer in model.masked_layers().items():
        off = ~masks[name]
        assert off.any()
        assert torch.count_nonzero(layer.weight[off]) == 0
        state = opt.state[layer.weight]
        assert torch.count_nonzero(state["exp_avg"][off]) == 0
        assert torch.count_nonzero(state["exp_avg_sq"][off]) == 0
        assert torch.count_nonzero(layer.weight[~off]) == int((~off).sum()), "kept weights trained"


def test_sparse_init_matches_dense_activation_scale(toy_params):
    toy_params["density"] = 0.05
    toy_params["model"]["n_embd"] = 128
    dense, _ = toy_model(toy_params, "dense")
    sparse, _ = toy_model(toy_params, "random")
    x = torch.randn(512, 128)
    out = [m.transformer.h[0].mlp.c_fc(x).std().item() for m in (dense, sparse)]
    assert out[1] == pytest.approx(out[0], rel=0.15)


def test_chunked_lm_head_loss_equals_the_one_pass_loss_and_gradients(toy_params):
    """On CPU GPT.forward runs the LM head and loss over chunks of tokens: with a 65,536-token vocabulary a
    chunk is 16 tokens, so the 128 tokens here span 8 chunks."""
    vocab = 2**16
    model = GPT(GPTConfig(vocab_size=vocab, **toy_params["model"]))
    idx = torch.randint(0, vocab, (4, 33))
    x, y = idx[:, :-1], idx[:, 1:].reshape(-1)
    logits, loss = model(x, idx[:, 1:])
    loss.backward()
    chunked = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    t = model.transformer
    h = t.wte(x) + t.wpe(torch.arange(x.shape[1]))
    for block in t.h:
        h = block(h)
    one_pass = model.lm_head(t.ln_f(h)).view(-1, vocab)
    reference = torch.nn.functional.cross_entropy(one_pass, y)
    reference.backward()
    torch.testing.assert_close(logits.view(-1, vocab), one_pass.detach())
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
    for a, p in zip(chunked, model.parameters()):
        torch.testing.assert_close(a, p.grad, rtol=1e-5, atol=1e-7)
    without_logits = model(x, idx[:, 1:], return_logits=False)
    assert without_logits[0] is None and torch.equal(without_logits[1], loss)


def test_checkpoint_round_trip_keeps_masks_and_outputs(tmp_path, toy_params):
    model, masks = toy_model(toy_params)
    save_masks(tmp_path / "m.pt", masks, "random", 0)
    blob = load_masks(tmp_path / "m.pt")
    tokens = np.random.default_rng(0).integers(0, 64, 5000).astype(np.uint16)
    train_phase(model, tokens, 2000, toy_params["train"], seed=0, phase=0, mechanism=make_mechanism("none", {}),
                device=torch.device("cpu"), resume_file=tmp_path / "r.pt", label="t")
    save_checkpoint(tmp_path / "c.pt", model, phase=0)
    loaded, meta = load_checkpoint(tmp_path / "c.pt", blob)
    assert meta["phase"] == 0
    assert all(torch.equal(model_masks(loaded)[k], masks[k]) for k in masks)
    x = torch.randint(0, 64, (2, 16))
    model.eval(), loaded.eval()
    assert torch.equal(model(x)[0], loaded(x)[0])
    # Compact: bool buffers in the model, 1 bit an entry in the checkpoint, no mask among the weights.
    assert all(layer.mask.dtype == torch.bool for layer in loaded.masked_layers().values())
    ck = torch.load(tmp_path / "c.pt", weights_only=False)
    assert not any(k.endswith(".mask") for k in ck["model"])
    assert {k: v["bits"].numel() for k, v in ck["masks"].items()} == {k: (m.numel() + 7) // 8 for k, m in masks.items()}
    assert ck["mask_sha256"] == blob["sha256"] == mask_hash(masks)


def test_a_checkpoint_with_corrupted_packed_masks_is_refused(tmp_path, toy_params):
    """The checkpoint's own masks are checked against its hash before they are compared with the topology's."""
    model, masks = toy_model(toy_params)
    save_masks(tmp_path / "m.pt", masks, "random", 0)
    save_checkpoint(tmp_path / "c.pt", model)
    ck = torch.load(tmp_path / "c.pt", weights_only=False)
    ck["masks"][next(iter(ck["masks"]))]["bits"][3] ^= 0x04
    torch.save(ck, tmp_path / "c.pt")
    with pytest.raises(IntegrityError, match="masks do not match their stored sha256"):
        load_checkpoint(tmp_path / "c.pt", load_masks(tmp_path / "m.pt"))


def test_masked_multiply_with_a_bool_mask_is_exact(toy_params):
    """weight * bool mask equals the weight where kept and +0 elsewhere, bit for bit: what the float mask
    gave, in forward and backward."""
    model, masks = toy_model(toy_params)
    layer = next(iter(model.masked_layers().values()))
    w = layer.weight.detach().clone().requires_grad_(True)
    as_float = w * layer.mask.to(w.dtype)
    assert torch.equal(layer.effective_weight, as_float)
    g = torch.randn_like(w)
    (layer.effective_weight * g).sum().backward()
    assert torch.equal(layer.weight.grad, g * layer.mask.to(w.dtype))


def test_checkpoint_with_other_masks_is_refused(tmp_path, toy_params):
    model, masks = toy_model(toy_params, seed=0)
    save_checkpoint(tmp_path / "c.pt", model)
    save_masks(tmp_path / "other.pt", make_masks(toy_params, "random", 1), "random", 1)
    with pytest.raises(ValueError, match="do not match topology"):
        load_checkpoint(tmp_path / "c.pt", load_masks(tmp_path / "other.pt"))


def test_corrupted_mask_file_is_detected(tmp_path, toy_params):
    masks = make_masks(toy_params, "random", 0)
    save_masks(tmp_path / "m.pt", masks, "random", 0)
    blob = torch.load(tmp_path / "m.pt", weights_only=True)
    name = next(iter(blob["packed"]))
    blob["packed"][name]["bits"][0] ^= 0x80  # one flipped connection: entry (0, 0)
    torch.save(blob, tmp_path / "m.pt")
    with pytest.raises(ValueError, match="corrupted"):
        load_masks(tmp_path / "m.pt")


def storage_bytes(path) -> list[int]:
    """Offsets of the bytes of a torch archive's tensor storage records (`<archive>/data/<n>`, stored
    uncompressed): here the packed mask bits."""
    with zipfile.ZipFile(path) as z:
        infos = z.infolist()
    raw = Path(path).read_bytes()
    out = []
    for info in (i for i in infos if i.filename.split("/")[-2:-1] == ["data"]):
        name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26: info.header_offset + 30])
        start = info.header_offset + 30 + name_len + extra_len
        out += range(start, start + info.file_size)
    return out


def test_any_flipped_byte_of_a_mask_file_is_refused_or_harmless(tmp_path, toy_params):
    """Flip one byte at a time across the whole file: loading either raises IntegrityError or (a byte of zip
    bookkeeping torch does not read) gives exactly the saved masks. Never other masks, never another error;
    and every flip in the packed bits is refused."""
    masks = make_masks(toy_params, "random", 0)
    save_masks(tmp_path / "m.pt", masks, "random", 0)
    raw = (tmp_path / "m.pt").read_bytes()
    records = set(storage_bytes(tmp_path / "m.pt"))
    assert len(records) == sum((m.numel() + 7) // 8 for m in masks.values())
    refused = 0
    for pos in sorted(set(range(0, len(raw), 37)) | set(sorted(records)[::7])):
        flipped = bytearray(raw)
        flipped[pos] ^= 0x01
        (tmp_path / "f.pt").write_bytes(bytes(flipped))
        try:
            blob = load_masks(tmp_path / "f.pt")
        except IntegrityError:
            refused += 1
            continue
        assert pos not in records, pos
        assert blob["masks"].keys() == masks.keys() and all(torch.equal(blob["masks"][k], masks[k]) for k in masks)
    assert refused > 0.5 * len(range(0, len(raw), 37))
    (tmp_path / "f.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(IntegrityError, match="cannot be read"):
        load_masks(tmp_path / "f.pt")


def test_a_checkpoint_with_corrupted_weights_is_refused(tmp_path, toy_params):
    model, masks = toy_model(toy_params)
    save_masks(tmp_path / "m.pt", masks, "random", 0)
    save_checkpoint(tmp_path / "c.pt", model)
    ck = torch.load(tmp_path / "c.pt", weights_only=False)
    ck["model"]["transformer.wte.weight"][0, 0] += 1e-3  # a silent change a reader could not see
    torch.save(ck, tmp_path / "c.pt")
    with pytest.raises(IntegrityError, match="weights do not match their stored sha256"):
        load_checkpoint(tmp_path / "c.pt", load_masks(tmp_path / "m.pt"))

