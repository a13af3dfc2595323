"""The fp32 GEMM's cache blocks (csrc/matmul.c: KC, NC, MC), side by side on one core.

  python examples/bench_gemm_blocking.py                                  # ours against MC=3072
  python examples/bench_gemm_blocking.py --variants "" " -DKC=384" " -DMC=192 -DKC=384"
  python examples/bench_gemm_blocking.py --variants "" " -DSKINNY_MAX_ROWS=0" --shapes prefill
  python examples/bench_gemm_blocking.py --shapes 32x1152x384:NT 2048x2048x2048

(A variant's leading space keeps argparse from reading "-D..." as an option.)

Each variant is csrc/matmul.c compiled with its -D flags into one program (matmul renamed per
variant), which times every variant on each shape in turn, best of several, by the thread's
CPU time (a loaded machine's descheduled time is not counted), and times the CPU's fp32 peak
beside them: a register-only loop of independent FMAs (16 AVX-512 chains, or 12 AVX2 ones where
the CPU has no AVX-512; two units of latency 4 need 8). "% peak" is GFLOP/s against that loop.
The shapes are the training step's (the bench preset
at batch 8: every Linear's forward, dx and dW) and squares; --shapes prefill gives a 32-token
prompt's Linears instead (csrc/skinny.h's rows), or name shapes. The default pair is the blocking
in use against MC=3072, the A block in L3 as before (for N <= NC the same loop order).
On one thread only: the variants differ in cache blocking, which a second thread would blur.

This is not a test: nothing asserts a time. Read csrc/matmul.c for the blocking, and
examples/bench_matmul.py for ours against NumPy and PyTorch on every thread.
"""
import argparse
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (M, N, K, transpose_a, transpose_b): bench preset, N = 8 * 256 rows, C = 384, V = 8192
SHAPES = [(2048, 1152, 384, 0, 1), (2048, 384, 1152, 0, 0), (1152, 384, 2048, 1, 0),
          (2048, 384, 384, 0, 1), (2048, 1536, 384, 0, 1), (2048, 384, 1536, 0, 0),
          (1536, 384, 2048, 1, 0), (2048, 384, 1536, 0, 1), (2048, 1536, 384, 0, 0),
          (384, 1536, 2048, 1, 0), (2048, 8192, 384, 0, 1), (2048, 384, 8192, 0, 0),
          (8192, 384, 2048, 1, 0), (1024, 1024, 1024, 0, 0), (2048, 2048, 2048, 0, 0)]
# --shapes prefill: a 32-token prompt's Linears, x @ W^T at batch 1 and 8 (M = 32, 256), for
# the bench preset (C 384), the 15M shape (C 288) and gpt2 (C 768): qkv, proj, fc, the MLP's proj
PREFILL = [(M, N, K, 0, 1) for C in (384, 288, 768) for M in (32, 256)
           for N, K in ((3 * C, C), (C, C), (4 * C, C), (C, 4 * C))]

MAIN = r"""
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <time.h>
#include <immintrin.h>
typedef void (*mm_fn)(const float *, const float *, float *, int64_t, int64_t, int64_t, int64_t,
                      int, int);
%(decls)s
static double cpu_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}
#ifdef __AVX512F__   /* 16 independent FMA chains of 16 lanes (32 zmm registers) */
#define CHAINS 16
typedef __m512 vec;
#define vset1 _mm512_set1_ps
#define vfma _mm512_fmadd_ps
#else                /* AVX2: 12 chains of 8 lanes (16 ymm registers; csrc/cpu.c says why 12) */
#define CHAINS 12
typedef __m256 vec;
#define vset1 _mm256_set1_ps
#define vfma _mm256_fmadd_ps
#endif
static double fma_peak(void) {   /* FLOP/s of CHAINS independent FMA chains */
    vec acc[CHAINS], m = vset1(0.999999f), c = vset1(1e-7f);
    for (int i = 0; i < CHAINS; i++) acc[i] = vset1((float)i);
    int64_t iters = 5000000;
    double t = cpu_seconds();
    for (int64_t k = 0; k < iters; k++)
#pragma GCC unroll 16
        for (int i = 0; i < CHAINS; i++) acc[i] = vfma(acc[i], m, c);
    t = cpu_seconds() - t;
    volatile float sink = 0;
    for (int i = 0; i < CHAINS; i++) sink += acc[i][0];
    return iters * (double)CHAINS * sizeof(vec) / sizeof(float) * 2 / t;
}
int main(void) {
    mm_fn fns[] = {%(fns)s};
    int nv = sizeof fns / sizeof fns[0];
    int64_t shapes[][5] = {%(shapes)s};
    int ns = sizeof shapes / sizeof shapes[0];
    size_t n = 8192 * 2048;
    float *a = aligned_alloc(64, n * 4), *b = aligned_alloc(64, n * 4), *c = aligned_alloc(64, n * 4);
    for (size_t i = 0; i < n; i++) a[i] = (float)(i %% 13) / 13 - 0.5f, b[i] = (float)(i %% 11) / 11 - 0.5f;
    double total[16] = {0}, flops = 0, peak = 0;
    for (int s = 0; s < ns; s++) {
        int64_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        int ta = (int)shapes[s][3], tb = (int)shapes[s][4];
        double f = 2.0 * M * N * K, best[16];
        for (int v = 0; v < nv; v++) best[v] = 1e30, fns[v](a, b, c, 1, M, N, K, ta, tb);
        for (int r = 0; r < (f > 1e10 ? 3 : 6); r++)
            for (int v = 0; v < nv; v++) {   /* the variants in turn: the same stretch of load */
                double t = cpu_seconds();
                fns[v](a, b, c, 1, M, N, K, ta, tb);
                t = cpu_seconds() - t;
                best[v] = t < best[v] ? t : best[v];
            }
        for (int r = 0; r < 3; r++) {
            double p = fma_peak();
            peak = p > peak ? p : peak;
        }
        printf("%%d %%ld %%ld %%ld %%d %%d", s, M, N, K, ta, tb);
        for (int v = 0; v < nv; v++) printf(" %%.6f", best[v]), total[v] += best[v];
        printf("\n");
        flops += f;
    }
    printf("peak %%.6e\n", peak);
    return 0;
}
"""


def parse_shapes(names):
    """[(M, N, K, ta, tb)] of --shapes' words."""
    shapes = []
    for name in names:
        if name in ("train", "prefill"):
            shapes += SHAPES if name == "train" else PREFILL
            continue
        size, _, op = name.partition(":")
        try:
            M, N, K = map(int, size.split("x"))
        except ValueError:
            sys.exit(f"--shapes: {name!r} is not 'train', 'prefill' or MxNxK[:op], e.g. 32x1152x384:NT")
        if op not in ("", "NN", "NT", "TN", "TT"):
            sys.exit(f"--shapes: op {op!r} in {name!r} must be NN, NT, TN or TT")
        shapes.append((M, N, K, op[:1] == "T", op[1:] == "T"))
    return shapes


def run(variants, cc, shapes=SHAPES):
    """-> (rows [(M, N, K, ta, tb, [seconds per variant])], peak FLOP/s)."""
    with tempfile.TemporaryDirectory() as tmp:
        objects = []
        for i, flags in enumerate(variants):
            obj = os.path.join(tmp, f"v{i}.o")
            subprocess.run([cc, "-O3", "-march=native", "-std=c11", "-ffp-contract=fast", "-c",
                            f"-Dmatmul=matmul_v{i}", f"-Dmatmul_rounded=matmul_rounded_v{i}",
                            f"-Dmatmul_skinny_q=matmul_skinny_q_v{i}",   # every extern symbol
                            *flags.split(), "-I", os.path.join(ROOT, "csrc"),
                            os.path.join(ROOT, "csrc", "matmul.c"), "-o", obj], check=True)
            objects.append(obj)
        decls = "\n".join(f"void matmul_v{i}(const float *, const float *, float *, int64_t, "
                          f"int64_t, int64_t, int64_t, int, int);" for i in range(len(variants)))
        source = MAIN % dict(decls=decls, fns=", ".join(f"matmul_v{i}" for i in range(len(variants))),
                             shapes=", ".join("{%d, %d, %d, %d, %d}" % s for s in shapes))
        main_c, exe = os.path.join(tmp, "main.c"), os.path.join(tmp, "bench")
        with open(main_c, "w") as f:
            f.write(source)
        subprocess.run([cc, "-O3", "-march=native", "-o", exe, main_c, *objects, "-lm"], check=True)
        out = subprocess.run([exe], capture_output=True, text=True, check=True,
                             env=dict(os.environ, OMP_NUM_THREADS="1")).stdout.split("\n")
    rows = [line.split() for line in out if line and not line.startswith("peak")]
    peak = float(next(line.split()[1] for line in out if line.startswith("peak")))
    return [(*map(int, r[1:6]), [float(x) for x in r[6:]]) for r in rows], peak


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", default=["", "-DMC=3072"],
                   help="-D flags of each build of csrc/matmul.c; '' is the one in use "
                        "(default: %(default)s)")
    p.add_argument("--shapes", nargs="+", default=["train"],
                   help="'train' (the training step's, default), 'prefill' (a 32-token prompt's), "
                        "or MxNxK[:op] with op NN, NT, TN or TT (default NN)")
    args = p.parse_args()
    rows, peak = run(args.variants, os.environ.get("CC", "cc"), parse_shapes(args.shapes))
    names = [v or "(as built)" for v in args.variants]
    print(f"one thread, thread CPU time; fp32 peak by the FMA loop beside them: {peak / 1e9:.1f} "
          f"GFLOP/s (load average {os.getloadavg()[0]:.1f})")
    print(f"{'M':>5} {'N':>5} {'K':>5} {'op':>3} " + " ".join(f"{n[:16]:>16}" for n in names))
    flops = 0.0
    totals = [0.0] * len(names)
    for M, N, K, ta, tb, seconds in rows:
        f = 2.0 * M * N * K
        flops += f
        totals = [t + s for t, s in zip(totals, seconds)]
        op = ("T" if ta else "N") + ("T" if tb else "N")
        print(f"{M:>5} {N:>5} {K:>5} {op:>3} " +
              " ".join(f"{f / s / 1e9:>9.1f} ({100 * f / s / peak:3.0f}%)" for s in seconds))
    print("all shapes  " + " ".join(f"{flops / t / 1e9:>9.1f} ({100 * flops / t / peak:3.0f}%)"
                                    for t in totals))
    print("ratios to the first: " + ", ".join(f"{n} {totals[0] / t:.3f}x"
                                              for n, t in zip(names[1:], totals[1:])))


if __name__ == "__main__":
    sys.exit(main())
