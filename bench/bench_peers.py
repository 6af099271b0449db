"""Training-step throughput of our ViT_P / ViT_C against timm's and torchvision's VisionTransformer,
model FLOP utilisation, and what limits the step (run by hand; results in docs/benchmarks.md,
"Training step vs timm and torchvision").

Every model of one size is built in this process at the same configuration (width, depth, heads, MLP
width, tokens, class token, exact GELU, LayerNorm eps 1e-6, no dropout); the conv stem is the same
3×3 conv + BN + ReLU layers then a 1×1 conv in all three: torchvision's `conv_stem_configs`, timm's
`embed_layer` (its PatchEmbed with our ConvStem as the projection). Timing: after warm-up, rounds; in
each round every variant runs `steps` training steps (forward, cross-entropy backward, AdamW step), the
order reversed every other round, and a `torch.mm` 2048² in fp32 and bf16 is timed too, so that
machine noise falls on all of them alike. Reported: median images/s over rounds with the interquartile
range, the per-round ratio ours / peer (median, IQR), and MFU = training flops per second (3 × forward
flops, forward flops = 2 × MACs from `model_complexity`) over the matmul rate of the same rounds, and
the same with the flops ours executes (its last block skips the N − 1 other tokens' outputs). Extra
variants: fused AdamW (ours, timm), bf16 autocast where the CPU has native bf16, `--compile`.

    .venv/bin/python bench/bench_peers.py [--sizes vit_xs,vit_s,vit_1gf] [--rounds 5] [--threads 2]
        [--batch 64] [--compile] [--profile]
    .venv/bin/python bench/bench_peers.py --device cuda      # bf16 MFU on a GPU
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import statistics
import time

import timm
import torch
import torch.nn.functional as F
import torchvision
from timm.layers import PatchEmbed
from timm.models.vision_transformer import VisionTransformer as TimmViT
from torch import nn
from torchvision.models.vision_transformer import ConvStemConfig
from torchvision.models.vision_transformer import VisionTransformer as TvViT

from stemsweep.models import SIZES
from stemsweep.models.build import build_model, model_complexity
from stemsweep.models.vit import ConvStem, _checked_stem_layers

# size → (image size, in_chans, classes, batch on CPU, steps per round on CPU)
SETTINGS = {
    "vit_xs": (28, 1, 10, 128, 2),
    "vit_s": (28, 1, 10, 128, 1),
    "vit_1gf": (224, 3, 1000, 8, 2),
}


class TimmConvStem(PatchEmbed):
    """timm's PatchEmbed with our conv stem (3×3 conv + BN + ReLU layers, 1×1 conv) as its projection."""

    layers = None  # set per size before the model is built

    def __init__(self, *, img_size, patch_size, in_chans, embed_dim, **kwargs):
        super().__init__(img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim,
                         **kwargs)
        self.proj = ConvStem(in_chans, embed_dim, patch_size, self.layers)


def build_timm(spec, stem, image_size, in_chans, classes):
    kwargs = {}
    if stem == "conv":
        TimmConvStem.layers = spec.conv_stem
        kwargs["embed_layer"] = TimmConvStem
    return TimmViT(img_size=image_size, patch_size=spec.patch_size, in_chans=in_chans, num_classes=classes,
                   embed_dim=spec.hidden_size, depth=spec.blocks(stem), num_heads=spec.num_heads,
                   mlp_ratio=spec.mlp_mult, qkv_bias=True, class_token=True, global_pool="token",
                   drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0, **kwargs)


def build_torchvision(spec, stem, image_size, in_chans, classes):
    convs = None
    if stem == "conv":
        convs = [ConvStemConfig(out_channels=w, kernel_size=3, stride=s)
                 for s, w in _checked_stem_layers(spec.patch_size, spec.hidden_size, spec.conv_stem)]
    model = TvViT(image_size=image_size, patch_size=spec.patch_size, num_layers=spec.blocks(stem),
                  num_heads=spec.num_heads, hidden_dim=spec.hidden_size, mlp_dim=spec.mlp_mult * spec.hidden_size,
                  num_classes=classes, conv_stem_configs=convs)
    if in_chans != 3:  # torchvision hard-codes 3 input channels: rebuild the first conv for 1
        if stem == "patch":
            old = model.conv_proj
            model.conv_proj = nn.Conv2d(in_chans, old.out_channels, old.kernel_size, old.stride)
        else:
            old = model.conv_proj[0][0]
            model.conv_proj[0][0] = nn.Conv2d(in_chans, old.out_channels, 3, old.stride, 1, bias=False)
    return model


def cpu_has_bf16():
    return torch.ops.mkldnn._is_mkldnn_bf16_supported()


def skipped_forward_macs(size, image_size):
    """Multiply-adds per image of the paper's count that our ViT does not run: its last block computes
    the class token's output only, so the query, output projection, MLP and attention of the other
    N − 1 tokens are skipped (keys and values are still computed for all N). Peers run all of it."""
    spec = SIZES[size]
    n = (image_size // spec.patch_size) ** 2 + 1
    d, m = spec.hidden_size, spec.mlp_mult * spec.hidden_size
    return (n - 1) * (2 * d * d + 2 * d * m + 2 * n * d)


def count_params(model):
    return sum(p.numel() for p in model.parameters())


def mm_rate(device, dtype, n=2048, reps=2):
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start)


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


class Variant:
    def __init__(self, name, impl, stem, model, *, bf16=False, threads=None, fused=False, compiled=False):
        self.name, self.impl, self.stem, self.bf16, self.threads = name, impl, stem, bf16, threads
        self.fused, self.compiled = fused, compiled
        self.model = model
        self.forward = torch.compile(model) if compiled else model
        self.opt = torch.optim.AdamW(model.parameters(), 1e-3, fused=fused or None)

    def step(self, x, y, device):
        ctx = torch.autocast(device, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        with ctx:
            loss = F.cross_entropy(self.forward(x), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


def make_variants(size, args, image_size, in_chans, classes):
    spec = SIZES[size]
    torch.manual_seed(0)
    variants = []
    for stem in ("patch", "conv"):
        ours = build_model(size, stem, num_classes=classes, in_chans=in_chans, image_size=image_size)
        variants.append(Variant(f"ours {stem}", "ours", stem, ours))
        variants.append(Variant(f"timm {stem}", "timm", stem, build_timm(spec, stem, image_size, in_chans, classes)))
        variants.append(Variant(f"torchvision {stem}", "torchvision", stem,
                                build_torchvision(spec, stem, image_size, in_chans, classes)))
        # Same parameter count as ours is the check that the configurations coincide.
        n = count_params(ours)
        for v in variants[-2:]:
            assert count_params(v.model) == n, (v.name, count_params(v.model), n)
    # (impl, stem, options) of the extra variants, each a copy of that model with its own optimizer
    if args.device == "cpu":
        extra = [("ours", "patch", {"fused": True}), ("timm", "patch", {"fused": True})]
        if cpu_has_bf16():  # without native bf16 (AVX2 only) autocast runs bf16 matmuls ~200× slower
            extra += [("ours", "patch", {"bf16": True}), ("ours", "conv", {"bf16": True}),
                      ("timm", "patch", {"bf16": True})]
        if args.threads > 1 and size != "vit_1gf":
            extra.append(("ours", "patch", {"threads": 1}))
    else:
        extra = [(impl, stem, {"bf16": True}) for impl in ("ours", "timm", "torchvision")
                 for stem in ("patch", "conv")]
    if args.compile:
        extra += [("ours", "patch", {"compiled": True}), ("timm", "patch", {"compiled": True})]
    base = {v.name: v for v in variants}
    for impl, stem, options in extra:
        clone = copy.deepcopy(base[f"{impl} {stem}"].model)
        label = f"{impl} {stem}" + "".join(
            {"bf16": " bf16", "fused": " fused AdamW", "compiled": " compiled"}.get(k, f" {v} thread")
            for k, v in options.items())
        variants.append(Variant(label, impl, stem, clone, **options))
    for v in variants:
        v.model.to(args.device).train()
    return variants


def bench_size(size, args):
    image_size, in_chans, classes, batch, steps = SETTINGS[size]
    if args.device == "cuda":
        batch, steps = batch * 8, 5
    batch = args.batch or batch
    variants = make_variants(size, args, image_size, in_chans, classes)
    x = torch.randn(batch, in_chans, image_size, image_size, device=args.device)
    y = torch.randint(0, classes, (batch,), device=args.device)
    for v in variants:  # warm-up: oneDNN / cuBLAS choose their kernels on first use
        torch.set_num_threads(v.threads or args.threads)
        for _ in range(2):
            v.step(x, y, args.device)
    torch.set_num_threads(args.threads)
    rates = {v.name: [] for v in variants}
    mm_dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    if args.device == "cpu" and not cpu_has_bf16():
        del mm_dtypes["bf16"]  # emulated: a 2048² product takes minutes, and no variant runs in bf16
    mm = {name: [] for name in mm_dtypes}
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    for r in range(args.rounds):
        order = variants if r % 2 == 0 else variants[::-1]
        for name, dt in mm_dtypes.items():
            mm[name].append(mm_rate(args.device, dt, n=2048 if args.device == "cpu" else 8192,
                                    reps=2 if args.device == "cpu" else 20))
        for v in order:
            torch.set_num_threads(v.threads or args.threads)
            sync(args.device)
            start = time.perf_counter()
            for _ in range(steps):
                v.step(x, y, args.device)
            sync(args.device)
            rates[v.name].append(batch * steps / (time.perf_counter() - start))
        torch.set_num_threads(args.threads)
        print(f"  {size} round {r + 1}/{args.rounds} done, load {os.getloadavg()[0]:.2f}", flush=True)
    return variants, rates, mm, batch, steps


def med_iqr(values, fmt="{:.0f}"):
    values = sorted(values)
    if len(values) >= 2:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    else:
        q1 = q3 = values[0]
    return f"{fmt.format(statistics.median(values))} ({fmt.format(q1)}–{fmt.format(q3)})"


def report(size, variants, rates, mm, batch, steps, args):
    image_size, in_chans, classes, *_ = SETTINGS[size]
    fp32 = statistics.median(mm["fp32"])
    bf16 = statistics.median(mm["bf16"]) if mm.get("bf16") else None
    print(f"\n### {size}: {image_size}²×{in_chans}, batch {batch}, {args.rounds} rounds × {steps} steps, "
          f"{args.threads} threads, device {args.device}")
    print(f"torch.mm rate, GFLOP/s: fp32 {med_iqr([m / 1e9 for m in mm['fp32']])}, bf16 "
          + (med_iqr([m / 1e9 for m in mm["bf16"]]) if bf16 else "— (no native bf16 on this CPU)"))
    print("| variant | img/s median (IQR) | ours / this (per round) | train GFLOP/s | MFU vs fp32 mm "
          "| MFU vs bf16 mm | executed GFLOP/s, vs fp32 mm |")
    print("|---|---|---|---|---|---|---|")
    for v in variants:
        fwd = model_complexity(size, v.stem, classes, in_chans, image_size)["flops_b"] * 1e9 * 2
        executed = fwd - 2 * skipped_forward_macs(size, image_size) if v.impl == "ours" else fwd
        rate = statistics.median(rates[v.name])
        # peers: against ours at the same stem and precision; ours' variants: against ours fp32
        ours_name = f"ours {v.stem}" + (v.name.split(v.stem, 1)[1] if v.impl != "ours" else "")
        if ours_name != v.name:
            ratio = med_iqr([a / b for a, b in zip(rates[ours_name], rates[v.name])], "{:.2f}")
        else:
            ratio = "—"
        achieved = rate * 3 * fwd
        fmt = "{:.0f}" if rate >= 100 else "{:.1f}"
        done = rate * 3 * executed
        print(f"| {v.name} | {med_iqr(rates[v.name], fmt)} | {ratio} | {achieved / 1e9:.0f} | "
              f"{100 * achieved / fp32:.0f}% | {f'{100 * achieved / bf16:.0f}%' if bf16 else '—'} | "
              f"{done / 1e9:.0f}, {100 * done / fp32:.0f}% |")
    for stem in ("patch", "conv"):
        peers = {impl: statistics.median(rates[f"{impl} {stem}"]) for impl in ("timm", "torchvision")}
        best = max(peers, key=peers.get)
        per_round = [a / b for a, b in zip(rates[f"ours {stem}"], rates[f"{best} {stem}"])]
        print(f"ours {stem} / faster peer ({best}): {med_iqr(per_round, '{:.2f}')}")


def profile(args):
    image_size, in_chans, classes, batch, _ = SETTINGS["vit_xs"]
    torch.set_num_threads(args.threads)
    for stem in ("patch",):
        model = build_model("vit_xs", stem, num_classes=classes, in_chans=in_chans, image_size=image_size)
        v = Variant(f"ours {stem}", "ours", stem, model)
        x, y = torch.randn(batch, in_chans, image_size, image_size), torch.randint(0, classes, (batch,))
        for _ in range(3):
            v.step(x, y, "cpu")
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(2):
                v.step(x, y, "cpu")
        print(f"\n### profile: ours vit_xs {stem}, 2 steps, batch {batch} (self CPU time)")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="vit_xs,vit_s,vit_1gf")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=None, help="override the per-size batch")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--profile", action="store_true", help="also profile one vit_xs step")
    parser.add_argument("--compile", action="store_true",
                        help="add torch.compile'd ours and timm (ViT_P; ~1 min of compiling each)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no GPU here")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, timm {timm.__version__}; "
          f"load average {os.getloadavg()}; {time.strftime('%Y-%m-%d %H:%M')}")
    if args.device == "cuda":
        print(f"GPU: {torch.cuda.get_device_name()}")
    t0 = time.perf_counter()
    for size in filter(None, args.sizes.split(",")):
        report(size, *bench_size(size, args), args)
    if args.profile:
        profile(args)
    print(f"\nwall {time.perf_counter() - t0:.0f} s; load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
