"""``python -m vaezoo.runtime``: pull and sample without torch, click or Pillow (the service install).

    python -m vaezoo.runtime pull mlp-vae.mnist5k
    python -m vaezoo.runtime sample mlp-vae.mnist5k -n 64 --seed 0 --out samples.png
"""

from __future__ import annotations

import argparse
import sys

from vaezoo.core.errors import VaezooError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vaezoo.runtime", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pull", help="resolve a shipped name or URL#sha256=HEX into the cache; print the path")
    p.add_argument("spec")
    p.add_argument("--cache-dir")
    s = sub.add_parser("sample", help="write a PNG grid of prior samples")
    s.add_argument("source", help="a file (with a '/' or ending in .onnx: ./NAME for a bare file name), "
                   "a shipped name or URL#sha256=HEX")
    s.add_argument("-n", type=int, default=64)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default="samples.png")
    s.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: its own)")
    s.add_argument("--providers", default=None,
                   help="comma-separated onnxruntime execution providers, in priority order (default: CUDA if usable, then CPU)")
    s.add_argument("--cache-dir")
    sub.add_parser("list", help="the shipped decoders")
    args = parser.parse_args(argv)
    try:
        if args.command == "pull":
            from vaezoo.runtime.pull import pull

            print(pull(args.spec, args.cache_dir, progress=sys.stderr.isatty()))
        elif args.command == "sample":
            from vaezoo.core.png import save_grid
            from vaezoo.runtime.decoder import Decoder

            if not args.out.lower().endswith(".png"):
                raise VaezooError(f"--out must name a .png file, got '{args.out}'")
            providers = [p.strip() for p in args.providers.split(",") if p.strip()] if args.providers is not None else None
            dec = Decoder(args.source, providers=providers, intra_op_threads=args.threads, cache=args.cache_dir)
            print(save_grid(args.out, dec.sample(args.n, seed=args.seed)))
        else:
            from vaezoo.runtime.catalog import list_pretrained

            for e in list_pretrained():
                print(f"{e.name:22s} latent {e.latent_dim:3d}  {e.size_bytes / 1e6:5.2f} MB  {e.description}")
    except VaezooError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
