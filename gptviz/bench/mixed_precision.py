"""The CUDA section: bf16 autocast training steps, eager and with torch.compile, gptviz against transformers at
the GPT-2-small shape, with model FLOPs utilisation (MFU) when the card's dense bf16 peak is known.

On a machine without CUDA the section is one skipped row; `mixed_precision_steps` itself also runs on a CPU (bf16
autocast exists there), which is how the tests reach it. FLOPs and peaks are harness.py's; the models, peers.py's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .harness import peak_bf16_flops, train_flops_per_token
from .peers import build_models, train_step
from .rows import Rows


class MixedPrecision(Rows):
    """Bench's CUDA section (suite.Bench mixes it in)."""

    def cuda_extras(self) -> None:
        if not self.device.startswith("cuda"):
            self.skip("CUDA bf16 / torch.compile / MFU", "no CUDA device (run on a GPU machine)")
            return
        self.mixed_precision_steps((False, True))

    def mixed_precision_steps(self, compile_variants: tuple[bool, ...]) -> None:
        """bf16 autocast training steps, eager and/or compiled, with MFU when the GPU's peak is known.

        Runs on CPU too (bf16 autocast exists there), which is how the tests reach this code without a GPU.
        """
        shape, B, T = self.plan.cuda_train
        cuda = self.device.startswith("cuda")
        peak = peak_bf16_flops(torch.cuda.get_device_name()) if cuda else None
        for compiled in compile_variants:
            m = build_models(shape, self.device)
            ours, hf = m["ours"], m["hf"]
            d = self.data(shape, B, T)
            x, y = d[:, :-1], d[:, 1:]
            V = shape.vocab_size

            def hf_loss(x, y, hf=hf):
                return F.cross_entropy(hf(x, use_cache=False).logits.view(-1, V).float(), y.reshape(-1))

            ours_loss = ours.loss
            if compiled:
                ours_c, hf_c = torch.compile(ours), torch.compile(hf)
                ours_loss = lambda x, y: F.cross_entropy(ours_c(x).view(-1, V).float(), y.reshape(-1))  # noqa: E731
                hf_loss = lambda x, y: F.cross_entropy(
                    hf_c(x, use_cache=False).logits.view(-1, V).float(),  # noqa: E731
                    y.reshape(-1),
                )
            ours.train(), hf.train()
            s_ours = train_step(ours, ours_loss, x, y, self.device, bf16=True)
            s_hf = train_step(hf, hf_loss, x, y, self.device, bf16=True)
            variant = "bf16 autocast" + (" + torch.compile" if compiled else "")
            c = self.compare(
                f"train step {variant} {shape.label()} B{B} T{T}",
                s_ours,
                s_hf,
                B * T,
                warmup=3 if compiled else None,
                peer_name=f"transformers {self.hf_version} sdpa",
            )
            if c is not None:  # a skipped row has no throughput to turn into MFU
                fpt = train_flops_per_token(ours, T)
                mfu = {
                    "name": c.name,
                    "flops_per_token": fpt,
                    "peak_flops": peak,
                    "ours_mfu": fpt * c.ours / peak if peak else None,
                    "peer_mfu": fpt * c.peer / peak if peak else None,
                }
                self.extra["mfu"].append(mfu)
                if peak:
                    c.notes = f"MFU gptviz {mfu['ours_mfu']:.1%}, HF {mfu['peer_mfu']:.1%} of {peak / 1e12:.0f} TFLOP/s"
            del m, ours, hf, s_ours, s_hf
            if cuda:
                torch.cuda.empty_cache()
