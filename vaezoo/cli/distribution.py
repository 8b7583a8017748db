"""Top-level commands for getting decoders out and back in: ``export``, ``publish``, ``pull``, ``pretrained``,
``reproduce pretrained NAME``. Parse, validate, call ``exporters`` / ``vaezoo.tracking.registry``; no logic here."""

from __future__ import annotations

import json
import time

import click

from vaezoo.core.errors import VaezooError


def _default_opset() -> int:
    # imported only when needed: exporters pulls in onnx, which `vaezoo --help` and other commands do not need
    from exporters import OPSET

    return OPSET


class _ComputedDefault(click.Option):
    """An option whose callable default is shown as its value in --help (click shows a callable as '(dynamic)',
    and a show_default string in parentheses); it is called only when the help is written."""

    def get_help_extra(self, ctx: click.Context):
        extra = super().get_help_extra(ctx)
        if "default" in extra and callable(self.default):
            extra["default"] = str(self.default())
        return extra


def _int8_row(row: dict) -> str:
    return (f"  int8 {row['weight_type']:6s} reduce_range={str(row['reduce_range']):5s} per_channel={str(row['per_channel']):5s} "
            f"max |int8 - torch fp32| {row['max_abs_error']:.4f}  mean {row['mean_abs_error']:.5f}")


@click.command("export")
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The .onnx file to write.")
@click.option("--int8", is_flag=True, help="onnxruntime dynamic int8 quantisation (CPU).")
@click.option("--int8-type", type=click.Choice(["quint8", "qint8"]), default="quint8", show_default=True,
              help="Weight type; quint8 is safe on CPUs without VNNI (qint8 can saturate there).")
@click.option("--reduce-range", is_flag=True, help="7-bit int8 weights (the other fix for non-VNNI CPUs).")
@click.option("--per-channel", is_flag=True, help="int8 weights with one scale per output channel (lower error).")
@click.option("--fp16", is_flag=True, help="fp16 weights and arithmetic, float32 z and x (for GPU providers).")
@click.option("--sampler", is_flag=True, help="Graph input is a count n; z is drawn inside (RandomNormalLike).")
@click.option("--sampler-seed", type=int, default=0, show_default=True, help="The sampler's seed, fixed at export.")
@click.option("--opset", cls=_ComputedDefault, type=int, default=_default_opset, show_default=True,
              help="ONNX opset of the graph.")
@click.option("--register", "register_name", default=None, help="Also register the file in the MLflow model registry under NAME.")
@click.option("--alias", default=None, help="With --register: point this alias at the new version.")
@click.option("--tracking-uri", default=None, help="MLflow tracking/registry URI (default as for `vaezoo train`).")
def export_command(run, out, int8, int8_type, reduce_range, per_channel, fp16, sampler, sampler_seed, opset,
                   register_name, alias, tracking_uri) -> None:
    """Export RUN's decoder to one verified ONNX file (checker + onnxruntime vs torch at batch 1, 64, 1024)."""
    from exporters.export import ExportOptions, export_run

    if int8 and fp16:
        raise VaezooError("choose one of --int8 and --fp16")
    if not str(out).endswith(".onnx"):
        raise VaezooError(f"--out must name a .onnx file, got '{out}'")
    if alias and not register_name:
        raise VaezooError("--alias needs --register NAME")
    options = ExportOptions(precision="int8" if int8 else "fp16" if fp16 else "fp32", int8_weight_type=int8_type,
                            int8_reduce_range=reduce_range, int8_per_channel=per_channel, sampler=sampler, sampler_seed=sampler_seed, opset=opset)
    report = export_run(run, out, options)
    diffs = ", ".join(f"batch {b}: {d:.2e}" for b, d in report["parity"]["max_abs_diff"].items())
    click.echo(f"verified: onnx.checker full check; max |onnxruntime - torch| {diffs} (tolerance {report['parity']['tolerance']:g})")
    for row in report.get("int8_error_table", []):
        click.echo(_int8_row(row))
    click.echo(f"written: {out} ({report['size_bytes'] / 1e6:.2f} MB, sha256 {report['sha256']})")
    if register_name:
        from vaezoo.tracking.registry import register_onnx_model

        info = register_onnx_model(out, register_name, alias, tracking_uri, tags={"vaezoo.run": str(run)})
        at = f"@{alias}" if alias else f"/{info['version']}"
        click.echo(f"registered: models:/{register_name}{at} (version {info['version']}, run {info['run_id']})")


@click.command("publish")
@click.argument("run", type=click.Path(exists=True))
@click.option("--name", required=True, help="Registered model name.")
@click.option("--alias", default=None, help="Point this alias at the new version (models:/NAME@ALIAS).")
@click.option("--tracking-uri", default=None, help="MLflow tracking/registry URI (default as for `vaezoo train`).")
def publish_command(run, name, alias, tracking_uri) -> None:
    """Register RUN's decoder (a run folder, exported and verified here, or an .onnx file) as an MLflow ONNX
    model with a signature, an input example and pip requirements; `vaezoo pull models:/NAME@ALIAS` gets it back."""
    import tempfile
    from pathlib import Path

    from vaezoo.tracking.registry import parse_registry_uri, register_onnx_model

    parse_registry_uri(f"models:/{name}@{alias}" if alias else f"models:/{name}/1")  # bad names fail before any work
    with tempfile.TemporaryDirectory() as tmp:
        src, tags, parent = Path(run), {"vaezoo.run": str(Path(run).resolve())}, None
        if src.is_dir():
            from exporters.export import ExportOptions, export_run

            report = export_run(src, Path(tmp) / "decoder.onnx", ExportOptions())
            tags["vaezoo.config_hash"] = report.get("config_hash", "")
            prior = json.loads((src / "run.json").read_text()) if (src / "run.json").is_file() else {}
            # the training run is the parent only where it lives in the same store
            if prior.get("mlflow_run_id") and prior.get("tracking_uri") == _uri(tracking_uri):
                parent = tags["vaezoo.train_run_id"] = prior["mlflow_run_id"]
            src = Path(tmp) / "decoder.onnx"
        elif src.suffix != ".onnx":
            raise VaezooError(f"RUN must be a run folder or an .onnx file, got '{run}'")
        info = register_onnx_model(src, name, alias, tracking_uri, tags=tags, parent_run_id=parent)
    click.echo(f"published: {info['uri']} (version {info['version']}, run {info['run_id']}, sha256 {info['sha256']})")
    click.echo(f"serve it:  mlflow models serve -m {info['uri']} --env-manager local")


def _uri(explicit: str | None) -> str:
    from vaezoo.tracking import tracking_uri

    return tracking_uri(explicit)


@click.command("pull")
@click.argument("spec")
@click.option("--cache-dir", default=None, help="Cache folder. [$VAEZOO_CACHE, else the user cache dir]")
@click.option("--tracking-uri", default=None, help="For models:/NAME@ALIAS: the MLflow registry URI.")
@click.option("--no-progress", is_flag=True)
def pull_command(spec, cache_dir, tracking_uri, no_progress) -> None:
    """Fetch a decoder into the cache and print its path.

    SPEC is a shipped name (mlp-vae.mnist5k), https://...#sha256=HEX, or models:/NAME@ALIAS.
    """
    from vaezoo.tracking.registry import pull_any

    click.echo(str(pull_any(spec, cache_dir, progress=not no_progress, tracking_uri=tracking_uri)))


@click.group("pretrained", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print the manifest.")
@click.pass_context
def pretrained_group(ctx, as_json) -> None:
    """List the shipped pretrained decoders with their metrics (subcommand: build)."""
    if ctx.invoked_subcommand is not None:
        return
    from vaezoo.runtime.catalog import list_pretrained, load_manifest

    if as_json:
        click.echo(json.dumps(load_manifest(), indent=2))
        return
    entries = list_pretrained()
    if not entries:
        click.echo("no pretrained decoders built yet (vaezoo pretrained build NAME)")
        return
    click.echo(f"{'name':20s} {'latent':>6s} {'params':>8s} {'MB':>5s} {'ELBO':>8s} {'LL (IS)':>8s} {'AU':>3s}  train")
    for e in entries:
        m = e.metrics
        click.echo(f"{e.name:20s} {e.latent_dim:6d} {e.parameter_count:8d} {e.size_bytes / 1e6:5.2f} "
                   f"{m.test_elbo:8.2f} {m.test_ll_is:8.2f} {m.active_units:3d}  {e.training.seconds:.0f} s")
    click.echo("nats per test image; LL: importance-sampled log-likelihood with "
               f"{entries[0].metrics.ll_is_samples} samples; AU: active units; `vaezoo pull NAME` to fetch one")


@pretrained_group.command("build")
@click.argument("names", nargs=-1, required=True)
@click.option("--work-dir", default="runs/pretrained", show_default=True, help="Where the training runs go.")
@click.option("--out-dir", default=None, help="Where the .onnx files and manifest.json go. [vaezoo/pretrained]")
def pretrained_build(names, work_dir, out_dir) -> None:
    """(Maintainers) train, evaluate and export recipes into the package's pretrained folder."""
    from exporters.pretrained import build

    for name in names:
        entry = build(name, work_dir, out_dir)
        click.echo(json.dumps({k: entry[k] for k in ("name", "file", "sha256", "size_bytes", "metrics")}, indent=2))


@pretrained_group.command("check")
@click.argument("names", nargs=-1)
def pretrained_check(names) -> None:
    """Recheck shipped decoders: sha256, onnxruntime vs torch at batch 1/64/1024, int8 error by weight type."""
    from exporters.pretrained import check
    from vaezoo.runtime.catalog import list_pretrained

    for name in names or [e.name for e in list_pretrained()]:
        r = check(name)
        diffs = ", ".join(f"{b}: {d:.1e}" for b, d in r["parity"]["max_abs_diff"].items())
        click.echo(f"{name}: sha256 ok; max |onnxruntime - torch| by batch {diffs}")
        for row in r["int8"]:
            click.echo(_int8_row(row))


@click.group("reproduce")
def reproduce_group() -> None:
    """Rerun the recipe behind a published artefact and check it."""


@reproduce_group.command("pretrained")
@click.argument("name")
@click.option("--work-dir", default=None, help="Where the rerun goes. [runs/reproduce/<time>]")
@click.option("--no-progress", is_flag=True)
def reproduce_pretrained(name, work_dir, no_progress) -> None:
    """Retrain pretrained decoder NAME from its manifest recipe; exit 1 if a metric leaves its tolerance."""
    from exporters.pretrained import reproduce

    work_dir = work_dir or f"runs/reproduce/{time.strftime('%Y%m%d-%H%M%S')}"
    result = reproduce(name, work_dir, progress=not no_progress)
    click.echo(f"{'metric':16s} {'shipped':>10s} {'rerun':>10s} {'diff':>9s} {'tolerance':>9s}")
    for r in result["rows"]:
        click.echo(f"{r['metric']:16s} {r['shipped']:10.3f} {r['rerun']:10.3f} {r['diff']:+9.3f} {r['tolerance']:9g}"
                   f"  {'ok' if r['ok'] else 'OUT OF TOLERANCE'}")
    click.echo(f"training {result['training_seconds']} s; run: {result['run_dir']}; rebuilt decoder "
               f"{'byte-identical to' if result['identical_file'] else 'differs from'} the shipped file")
    if result["version_note"]:
        click.echo(result["version_note"])
    if not result["ok"]:
        click.echo(f"FAILED: {name} does not reproduce within tolerance", err=True)
        raise click.exceptions.Exit(1)
    click.echo(f"reproduced: {name}")


COMMANDS = (export_command, publish_command, pull_command, pretrained_group, reproduce_group)
