#!/usr/bin/python3
"""torch_bench.py: the PyTorch (1.13, CPU, fp32) twin of `apprentice bench train|sample`.

Same model (HF Llama: RMSNorm, rotate_half RoPE, SwiGLU, tied embeddings, no biases), same
configs (A, B, C of research/perf-anchors.md), same workloads and the same JSON keys, plus
"system": "pytorch". Optional at run time: nothing in the build or the tests needs it.

  OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 /usr/bin/python3 bench/torch_bench.py train --config C --batch 8 --seq 256 --threads 1
  /usr/bin/python3 bench/torch_bench.py sample --config B --batch 16 --new-tokens 256 --threads 1
  /usr/bin/python3 bench/torch_bench.py            # the whole matrix, like `apprentice bench train` + `sample`
  # side by side: alternate PyTorch and apprentice K rounds per workload, then a markdown table
  # of medians and ratios (all JSON lines go to stdout, the table to stderr)
  /usr/bin/python3 bench/torch_bench.py --apprentice build/apprentice --rounds 3

train: forward + cross-entropy + backward + AdamW(lr 1e-4, wd 0.1) + grad clipping, random tokens,
median step time after warm-up. sample: KV cache preallocated, multinomial at temperature 1,
one start token, median run time after warm-up. peak_gflops is OpenBLAS sgemm 1024^3 called
through ctypes (the same library and measurement as ap_bench_sgemm_peak), falling back to
torch.mm when libopenblas cannot be loaded ("peak_source" says which).
"""
import argparse
import ctypes
import ctypes.util
import json
import math
import os
import resource
import statistics
import sys
import time

CONFIGS = {"A": (128, 4, 4, 384, 64), "B": (288, 6, 6, 768, 512), "C": (512, 8, 8, 1376, 512)}
MAX_POS = 256


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", nargs="?", choices=["train", "sample"])
    p.add_argument("--config", choices=list(CONFIGS))
    p.add_argument("--batch", type=int)
    p.add_argument("--seq", type=int)
    p.add_argument("--new-tokens", type=int, dest="new_tokens")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int)
    p.add_argument("--reps", type=int)
    p.add_argument("--apprentice", metavar="BIN", help="also run BIN bench ... alternately (side by side)")
    p.add_argument("--rounds", type=int, default=3, help="alternations per workload with --apprentice")
    return p.parse_args()


ARGS = parse()
# Thread counts must be fixed before torch (and its OpenBLAS) is loaded.
os.environ.setdefault("OMP_NUM_THREADS", str(ARGS.threads))
os.environ.setdefault("OPENBLAS_NUM_THREADS", str(ARGS.threads))
import torch  # noqa: E402
import torch.nn.functional as Fn  # noqa: E402

torch.set_num_threads(ARGS.threads)

_PEAK = {}


def sgemm_peak(threads, reps=10):
    """OpenBLAS sgemm GFLOP/s on 1024^3 (median of reps after one warm-up)."""
    if threads in _PEAK:
        return _PEAK[threads]
    n = 1024
    source = "openblas"
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("openblas") or "libopenblas.so.0")
        lib.openblas_set_num_threads(threads)
        a = (ctypes.c_float * (n * n))(*([0.1] * (n * n)))
        b = (ctypes.c_float * (n * n))(*([0.2] * (n * n)))
        c = (ctypes.c_float * (n * n))()
        f = lib.cblas_sgemm
        f.argtypes = [ctypes.c_int] * 6 + [ctypes.c_float, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p,
                                           ctypes.c_int, ctypes.c_float, ctypes.c_void_p, ctypes.c_int]

        def run():
            f(101, 111, 111, n, n, n, 1.0, a, n, b, n, 0.0, c, n)  # RowMajor, NoTrans, NoTrans
    except (OSError, AttributeError):
        source = "torch.mm"
        x, y = torch.rand(n, n), torch.rand(n, n)

        def run():
            torch.mm(x, y)
    times = []
    for r in range(reps + 1):
        t0 = time.perf_counter()
        run()
        if r:
            times.append(time.perf_counter() - t0)
    _PEAK[threads] = (2.0 * n ** 3 / statistics.median(times) / 1e9, source)
    return _PEAK[threads]


def rss_mb():
    """Peak RSS of this process in MiB (VmHWM; cumulative over the workloads of one run)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Llama(torch.nn.Module):
    """HF LlamaForCausalLM semantics, tied embeddings, MHA; KV-cache path for sampling."""

    def __init__(self, D, L, H, F, V):
        super().__init__()
        self.D, self.L, self.H, self.hd, self.V = D, L, H, D // H, V
        self.embed = torch.nn.Parameter(torch.randn(V, D) * 0.02)
        self.layers = torch.nn.ModuleList()
        for _ in range(L):
            lay = torch.nn.Module()
            lay.n1 = torch.nn.Parameter(torch.ones(D))
            lay.qkv = torch.nn.Linear(D, 3 * D, bias=False)
            lay.o = torch.nn.Linear(D, D, bias=False)
            lay.n2 = torch.nn.Parameter(torch.ones(D))
            lay.gu = torch.nn.Linear(D, 2 * F, bias=False)
            lay.down = torch.nn.Linear(F, D, bias=False)
            for lin in (lay.qkv, lay.o, lay.gu, lay.down):
                torch.nn.init.normal_(lin.weight, std=0.02)
            self.layers.append(lay)
        self.norm = torch.nn.Parameter(torch.ones(D))
        inv = 1.0 / (10000.0 ** (torch.arange(0, self.hd, 2).float() / self.hd))
        ang = torch.outer(torch.arange(MAX_POS).float(), inv)
        emb = torch.cat([ang, ang], dim=-1)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)

    @staticmethod
    def rms(x, w, eps=1e-5):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w

    @staticmethod
    def rot(x):
        h = x.shape[-1] // 2
        return torch.cat([-x[..., h:], x[..., :h]], dim=-1)

    def forward(self, tok, pos0=0, cache=None):
        B, T = tok.shape
        x = self.embed[tok]
        cos, sin = self.cos[pos0:pos0 + T], self.sin[pos0:pos0 + T]
        for li, lay in enumerate(self.layers):
            a = self.rms(x, lay.n1)
            q, k, v = lay.qkv(a).view(B, T, 3, self.H, self.hd).permute(2, 0, 3, 1, 4)
            q = q * cos + self.rot(q) * sin
            k = k * cos + self.rot(k) * sin
            if cache is not None:
                kc, vc = cache[li]
                kc[:, :, pos0:pos0 + T] = k
                vc[:, :, pos0:pos0 + T] = v
                k, v = kc[:, :, :pos0 + T], vc[:, :, :pos0 + T]
            s = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd)
            if T > 1:
                mask = torch.full((T, pos0 + T), float("-inf")).triu(pos0 + 1)
                s = s + mask
            o = (s.softmax(-1) @ v).transpose(1, 2).reshape(B, T, self.D)
            x = x + lay.o(o)
            g, u = lay.gu(self.rms(x, lay.n2)).chunk(2, dim=-1)
            x = x + lay.down(Fn.silu(g) * u)
        return self.rms(x, self.norm) @ self.embed.t()


def matmul_params(D, L, H, F, V):
    return L * (4 * D * D + 3 * D * F) + V * D


def emit(obj):
    print(json.dumps(obj), flush=True)


def train_one(name, B, T, threads, warmup, reps):
    D, L, H, F, V = CONFIGS[name]
    torch.manual_seed(1)
    model = Llama(D, L, H, F, V)
    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    other = [p for n, p in model.named_parameters() if p.dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=1e-4, foreach=False)
    tok = torch.randint(0, V, (B, T))
    tgt = torch.cat([tok[:, 1:], torch.full((B, 1), -100)], dim=1)
    times = []
    for r in range(warmup + reps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=False)
        loss = Fn.cross_entropy(model(tok).view(-1, V), tgt.reshape(-1), ignore_index=-100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if r >= warmup:
            times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    peak, source = sgemm_peak(threads)
    flops = 6 * matmul_params(D, L, H, F, V) + 12 * L * D * T
    emit({"bench": "train", "system": "pytorch", "config": name, "batch": B, "seq": T, "threads": threads,
          "tokens_per_s": B * T / step, "step_ms": step * 1e3, "flops_per_token": flops,
          "mfu": flops * B * T / step / (peak * 1e9), "peak_gflops": peak, "peak_source": source,
          "peak_rss_mb": rss_mb(), "loss_last": loss.item(), "reps": reps, "torch": torch.__version__})


@torch.no_grad()
def sample_one(name, S, new, threads, warmup, reps):
    D, L, H, F, V = CONFIGS[name]
    torch.manual_seed(1)
    model = Llama(D, L, H, F, V)
    cache = [(torch.zeros(S, H, MAX_POS, D // H), torch.zeros(S, H, MAX_POS, D // H)) for _ in range(L)]
    times = []
    for r in range(warmup + reps):
        t0 = time.perf_counter()
        tok = torch.ones(S, 1, dtype=torch.long)
        out = []
        for pos in range(new):
            logits = model(tok, pos, cache)[:, -1]
            probs = torch.softmax(logits, -1)
            tok = torch.multinomial(probs, 1)
            out.append(tok)
        if r >= warmup:
            times.append(time.perf_counter() - t0)
    run = statistics.median(times)
    peak, source = sgemm_peak(threads)
    ctx = sum(1 + k for k in range(new)) / new
    flops = 2 * matmul_params(D, L, H, F, V) + 4 * L * D * ctx
    emit({"bench": "sample", "system": "pytorch", "config": name, "batch": S, "seq": new, "threads": threads,
          "tokens_per_s": S * new / run, "run_ms": run * 1e3, "flops_per_token": flops,
          "mfu": flops * S * new / run / (peak * 1e9), "peak_gflops": peak, "peak_source": source,
          "peak_rss_mb": rss_mb(), "reps": reps, "torch": torch.__version__})


def workloads(a):
    """(kind, config, batch, seq) of this invocation: one, or the default matrix."""
    kinds = [a.kind] if a.kind else ["train", "sample"]
    out = []
    for kind in kinds:
        cfgs = [a.config] if a.config else list(CONFIGS)
        for c in cfgs:
            if kind == "train":
                shapes = [(a.batch or 16, a.seq or 64)] if a.config else [(16, 64), (8, 256)]
            else:
                new = a.new_tokens or a.seq or 256
                shapes = [(a.batch or 1, new)] if a.config else [(1, new), (16, new)]
            out += [(kind, c, b, t) for b, t in shapes]
    return out


def run_torch(a, kind, c, b, t):
    if kind == "train":
        train_one(c, b, t, a.threads, a.warmup if a.warmup is not None else 2, a.reps or 7)
    else:
        sample_one(c, b, t, a.threads, a.warmup if a.warmup is not None else 1, a.reps or 5)


def side_by_side(a):
    """Alternate this process's PyTorch run and `apprentice bench` on every workload."""
    import subprocess
    results = []
    global emit
    plain_emit = emit

    def keep(obj):
        results.append(obj)
        plain_emit(obj)
    emit = keep
    for kind, c, b, t in workloads(a):
        for _ in range(a.rounds):
            run_torch(a, kind, c, b, t)
            cmd = [a.apprentice, "bench", kind, "--config", c, "--batch", str(b),
                   "--seq" if kind == "train" else "--new-tokens", str(t), "--threads", str(a.threads)]
            if a.reps:
                cmd += ["--reps", str(a.reps)]
            if a.warmup is not None:
                cmd += ["--warmup", str(a.warmup)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            for line in out.splitlines():
                keep(json.loads(line))
    rows = {}
    for r in results:
        rows.setdefault((r["bench"], r["config"], r["batch"], r["seq"]), {}).setdefault(r["system"], []).append(r)
    print("| bench | config | batch x seq | PyTorch tok/s | apprentice tok/s | ratio | apprentice MFU | "
          "peak GFLOPS | apprentice peak RSS MB |", file=sys.stderr)
    print("|---|---|---|---:|---:|---:|---:|---:|---:|", file=sys.stderr)
    for (kind, c, b, t), by in rows.items():
        pt = statistics.median(x["tokens_per_s"] for x in by.get("pytorch", [{"tokens_per_s": float("nan")}]))
        ap = by.get("apprentice", [])
        at = statistics.median(x["tokens_per_s"] for x in ap) if ap else float("nan")
        mfu = statistics.median(x["mfu"] for x in ap) if ap else float("nan")
        peak = statistics.median(x["peak_gflops"] for x in ap) if ap else float("nan")
        rss = max(x["peak_rss_mb"] for x in ap) if ap else float("nan")
        print(f"| {kind} | {c} | {b} x {t} | {pt:,.0f} | {at:,.0f} | {at / pt:.2f} | {100 * mfu:.0f}% | "
              f"{peak:.0f} | {rss:.0f} |", file=sys.stderr)


def main():
    a = ARGS
    if a.apprentice:
        return side_by_side(a)
    for kind, c, b, t in workloads(a):
        run_torch(a, kind, c, b, t)


if __name__ == "__main__":
    sys.exit(main())
