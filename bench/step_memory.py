"""Where the peak memory of one training step of bench/train_step.py's micro config goes, phase by phase: resident set
size (RSS) beside what the allocator has handed out (glibc `mallinfo2`: heap in use + memory-mapped blocks), sampled
every 2 ms in a background thread during the second step (the first creates the AdamW state).

    .venv/bin/python bench/step_memory.py                         # fused-ckpt-fp32 and fused-fp32
    .venv/bin/python bench/step_memory.py --modes fused-ckpt-fp32@glibc,fused-ckpt-fp32,fused-ckpt-fp32@mmap8

Each mode runs with the training loop's CPU heap policy (`runtime.release_cpu_heap`, `wmtp_nb.cpu_heap`), or with
glibc's default settings when suffixed `@glibc`, or with the policy and a fixed 8 MiB mmap threshold when suffixed
`@mmap8` (train_step.py's suffixes). With glibc's defaults, the gap between RSS and the allocator's figure is freed
memory that glibc keeps in its heap (its dynamic mmap threshold rises to 32 MB after the first large free, so every
tensor below that is carved from the heap, and freed holes between live tensors cannot be returned to the system).
Linux + glibc only.
"""
import argparse, collections, os, resource, subprocess, sys, threading, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / "bench"))


def run(mode: str, a) -> None:
    import train_step as ts
    import wmtp_nb.mtp_loss as ml
    from wmtp_nb.cpu_heap import configure_cpu_heap, heap_stats, rss_mb
    mode, _, heap = mode.partition("@")
    configure_cpu_heap(*ts.HEAP_POLICIES[heap])
    ad, ids, tg, ref = ts.setup(a, ckpt="trunk" if "-ckpt-" in mode else "all" if "-ckptall-" in mode else "")
    step = ts.make_step(mode, ad, ids, tg, ref, {})
    trace, phase, stop = [], ["start"], threading.Event()

    def sample():
        while not stop.is_set():
            h = heap_stats()
            trace.append((phase[0], rss_mb(), h.handed_out, h.in_use + h.free, h.mmapped))
            time.sleep(0.002)
    trunk_pass, trunk_backward = ml.trunk_pass, ml.TrunkPass.backward       # phase markers around the loss's parts

    def marked_trunk_pass(*args, **kw):
        phase[0] = "trunk forward"; out = trunk_pass(*args, **kw); phase[0] = "heads (forward + backward each)"; return out

    def marked_backward(self):
        phase[0] = "trunk backward"; trunk_backward(self); phase[0] = "optimizer step"
    ml.trunk_pass, ml.TrunkPass.backward = marked_trunk_pass, marked_backward
    before = rss_mb()
    step()                                                                  # warm-up: creates the AdamW state
    threading.Thread(target=sample, daemon=True).start()
    step(); stop.set(); time.sleep(0.01)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\n{mode}: RSS before the first step {before:.0f} MB, peak RSS of the process {peak:.0f} MB"
          f" ({dict(glibc='glibc defaults', mmap8='runtime.release_cpu_heap + 8 MiB mmap threshold').get(heap, 'runtime.release_cpu_heap')})")
    print("| phase (second step) | max RSS MB | max allocated MB (heap in use + mmapped) | heap arena MB | mmapped MB |")
    print("|---|---|---|---|---|")
    agg = collections.OrderedDict()
    for p, *v in trace:
        agg[p] = [max(x, y) for x, y in zip(agg.get(p, [0.0] * 4), v)]
    for p, v in agg.items():
        print(f"| {p} | {v[0]:.0f} | {v[1]:.0f} | {v[2]:.0f} | {v[3]:.0f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--modes", default="fused-ckpt-fp32@glibc,fused-ckpt-fp32,fused-ckpt-fp32@mmap8,fused-fp32")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    cfg = argparse.Namespace(dim=512, trunk=4, heads=4, n_heads=8, vocab=32000, batch=4, seq=512, threads=2)
    if a.child: run(a.child, cfg); return
    env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(ROOT)}
    for m in a.modes.split(","):                                            # each mode in a fresh process
        subprocess.run([sys.executable, __file__, "--child", m], check=True, env=env, cwd=ROOT)


if __name__ == "__main__":
    main()
