from sparsecl.model.gpt import GPT, GPTConfig, MaskedLinear


def config_from_params(params: dict, vocab_size: int) -> GPTConfig:
    return GPTConfig(vocab_size=vocab_size, **params["model"])


def layer_blocks(cfg: GPTConfig) -> dict[str, tuple[int, tuple[int, int]]]:
    """Sparsified layers as name -> (logical blocks, (n_out, n_in) of one block), without allocating weights."
    """
    import torch

    with torch.device("meta"):
        model = GPT(cfg)
    return {name: (m.blocks, m.block_shape) for name, m in model.masked_layers().items()}


__all__ = ["GPT", "GPTConfig", "MaskedLinear", "config_from_params", "layer_blocks"]
